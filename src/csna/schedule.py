"""How long each phase trains, as a written rule of the table's size (issue 17).

A phase whose ``epochs`` is -1 (the default) trains for ``steps`` optimizer steps at a
reference size of ``REFERENCE_ROWS`` training rows, and for ``sqrt(n_train / REFERENCE_ROWS)``
times as many on a larger table, at most ``MAX_SCALE`` times as many (and never fewer):

    steps(n) = phase.steps · clip(sqrt(n / REFERENCE_ROWS), 1, MAX_SCALE)
    epochs(n) = ceil(steps(n) / ceil(n / batch_size))

so a table of 500 rows gets about as many updates as IHDP's 470 training rows did when the
lengths were chosen, and a larger one more updates but fewer passes over its rows: at 3,150
training rows about 25 epochs of phase 1, at 31,500 about 8 — the square root is the usual
compromise between a fixed number of epochs (cost linear in n, overfits little data) and a
fixed number of steps (a large table is not even seen once). ``min_epochs`` is capped at half
the resolved epochs. An ``epochs`` set to 0 or more is taken as it is, so ``--set
phase1.epochs=3`` means three epochs whatever the size. The resolved epochs are what the run
directory's ``config.yaml`` records (a run is reproduced from it without this rule).
"""

from __future__ import annotations

import math
from dataclasses import replace

from .config import Config

REFERENCE_ROWS = 500
MAX_SCALE = 8.0
AUTO = -1  # phaseN.epochs: from phaseN.steps and the training rows


def step_scale(n_train: int) -> float:
    """How many times a phase's reference ``steps`` a table of ``n_train`` training rows gets."""
    return min(MAX_SCALE, max(1.0, math.sqrt(max(n_train, 1) / REFERENCE_ROWS)))


def phase_epochs(steps: int, n_train: int, batch_size: int) -> int:
    """Epochs of a phase of reference length ``steps`` on ``n_train`` training rows."""
    if steps <= 0:
        return 0
    per_epoch = max(1, math.ceil(n_train / batch_size))
    return max(1, math.ceil(round(steps * step_scale(n_train)) / per_epoch))


def resolve_schedule(cfg: Config, n_train: int) -> Config:
    """``cfg`` with every automatic phase length (``epochs`` -1) made concrete for a table of
    ``n_train`` training rows; a config without one is returned as it is."""
    if all(cfg.phase(n).epochs != AUTO for n in (1, 2, 3, 4)):
        return cfg
    phases = {}
    for n in (1, 2, 3, 4):
        pc = cfg.phase(n)
        if pc.epochs == AUTO:
            epochs = phase_epochs(pc.steps, n_train, cfg.train.batch_size)
            pc = replace(pc, epochs=epochs, min_epochs=min(pc.min_epochs, math.ceil(epochs / 2)))
        phases[f"phase{n}"] = pc
    return replace(cfg, **phases)
