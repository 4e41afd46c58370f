"""The neural peers as seed ensembles built with csna's own member recipe (like for like).

csna's default is an ensemble of four; comparing it with peers trained once would credit its
architecture with what averaging buys. Here a peer's ensemble is made exactly as csna makes
its own (``member_splits``, the function csna's ensemble uses):

* member j has seed ``seed + j``;
* member 0 keeps the given split; with ``resplit`` (csna's ``train.ensemble_resplit``) member
  j ≥ 1 redraws its training and validation rows from the non-test rows, stratified by
  treatment, ``random_state=j``; the test rows never move;
* each member tunes its grid and stops early on its own validation rows, as the single peer
  does (``neural.fit_predict``);
* the ensemble predicts the mean of the members' μ̂ (probabilities for a binary outcome), and
  its fit costs the sum of theirs.

Member 0 is therefore the single peer itself: same seed, same split, same grid (checked bit for
bit in ``tests/test_bench_peers.py``). The benches fit it once and score it twice
(``EnsembleFit.members``; ``csna.bench.run.pair_singles``), which changes no figure and saves
about a sixth of the neural peers' cost (12.3 of 78 core-minutes of a suite replication).

Shape alphabet: n rows, p features.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..ensemble import member_splits
from .neural import NeuralFit, fit_predict

MEMBERS = 4


@dataclass
class EnsembleFit(NeuralFit):
    """The ensemble's fit, and each member's own fit with its wall seconds."""

    members: list[tuple[NeuralFit, float]] = field(default_factory=list)


def member_split_list(splits: dict[str, np.ndarray], t: np.ndarray, members: int = MEMBERS,
                      resplit: bool = True) -> list[dict[str, np.ndarray]]:
    """The rows each member trains, validates and is tested on: csna's ``member_splits``.

    Args:
        splits: the first member's split (train, val, test row indices).
        t: (n,) 0/1 treatment of every row (the redrawn splits are stratified by it).
    """
    return [member_splits(splits, t, j, resplit) for j in range(members)]


def fit_predict_ensemble(kind: str, x: np.ndarray, t: np.ndarray, y: np.ndarray, splits: dict[str, np.ndarray],
                         binary: bool, seed: int = 0, members: int = MEMBERS, resplit: bool = True,
                         ipm: str = "wass", max_epochs: int | None = None,
                         n_configs: int | None = None) -> EnsembleFit:
    """Fit ``members`` peers of ``kind`` with csna's member recipe; predict their mean.

    Args:
        x: (n, p) preprocessed features; t: (n,) 0/1; y: (n,) outcome (continuous or 0/1).
        splits: train, val and test row indices (the first member's; csna's own split).
        max_epochs, n_configs: a smaller budget per member (tests, quick looks).

    Returns:
        ``EnsembleFit``: mu (n, 2), the mean of the members' in outcome units; flops summed
        over the members; ``members``, each member's ``NeuralFit`` and seconds.
    """
    fits = []
    for j, sp in enumerate(member_split_list(splits, t, members, resplit)):
        t0 = time.perf_counter()
        fit = fit_predict(kind, x, t, y, sp["train"], sp["val"], binary, seed + j, ipm=ipm, max_epochs=max_epochs,
                          n_configs=n_configs)
        fits.append((fit, time.perf_counter() - t0))
    mu = np.mean(np.stack([f.mu for f, _ in fits]), axis=0)  # (members, n, 2) → (n, 2)
    return EnsembleFit(mu, float(sum(f.flops for f, _ in fits)), fits)
