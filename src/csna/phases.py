"""The one registry of the four training phases (seed §II, §V; design §5), and the pure
schedule functions each phase uses."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only
    from torch import nn

    from .model import CSNAModel


@dataclass(frozen=True)
class Phase:
    number: int
    name: str
    trains: tuple[str, ...]  # model module groups whose parameters this phase updates
    depth: int  # 1: heads read z, 2: H, 3: R
    losses: tuple[str, ...]  # the parts of L_total this phase may switch on
    checkpoint: str  # file written at the end of the phase (seed §VIII)


ALL_LOSSES = ("task", "causal", "geometric", "dc", "dis", "stable")
# Phase 2 also learns the graph among variable nodes (model.nodes = variables; csna.nn.structure).
STRUCTURE_LOSSES = ("structure", "sparse", "dc")

PHASES: dict[int, Phase] = {
    1: Phase(1, "causal encoder pre-training", ("encoder", "heads"), 1,
             ("task", "causal", "dis", "effect"), "causal_encoder.pt"),
    2: Phase(2, "lattice (GNN) training", ("encoder", "lattice", "heads"), 2,
             ("task", "causal", "geometric", "dis", "effect") + STRUCTURE_LOSSES, "lattice_encoder.pt"),
    3: Phase(3, "causal attention integration", ("encoder", "lattice", "attention", "heads"), 3,
             ALL_LOSSES + ("effect",), "attention_model.pt"),
    4: Phase(4, "meta utility reinforcement learning", ("utility",), 3,
             ALL_LOSSES, "meta_controller.pt"),
}

CHECKPOINTS = tuple(p.checkpoint for p in PHASES.values())


def get_phase(n: int) -> Phase:
    if n not in PHASES:
        raise KeyError(f"unknown phase {n!r}; valid phases: {sorted(PHASES)}")
    return PHASES[n]


@dataclass
class PhaseResult:
    """How a phase ended: epochs and steps run, best validation figure, batches skipped."""

    phase: int
    epochs: int
    steps: int
    best_val: float
    skipped: int
    history: list[dict[str, float]] = field(default_factory=list)


def set_trainable(model: CSNAModel, groups: tuple[str, ...]) -> list[nn.Parameter]:
    """Freeze everything but the module ``groups`` a phase trains; returns the parameters to
    optimise.

    θ0 and w of the attention stay frozen until phase 3 unfreezes them explicitly.
    """
    params = []
    for name, module in model.module_groups().items():
        on = name in groups
        for pname, p in module.named_parameters():
            theta = pname.endswith(".theta0") or pname.endswith(".w")
            p.requires_grad_(on and not theta)
            if on:
                params.append(p)
    return params


def warmup_steps(requested: int, total_steps: int, max_fraction: float) -> int:
    """The seed's 500–1000 warm-up steps, capped at a fraction of the phase on small data
    (design §8.5), where 500 steps would be most of the run."""
    return int(min(requested, max(0.0, max_fraction) * total_steps))


def lr_factor(step: int, warmup: int, total: int, kind: str) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based): linear warm-up, then
    cosine annealing to zero (``cosine``) or constant (``plateau``/``none``; plateau
    reductions are ``plateau_factor``'s, applied on top by ``learning_rate``)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if kind != "cosine":
        return 1.0
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def lambda_factor(step: int, warmup: int, kind: str) -> float:
    """Scale of every λ within a phase: the seed's λs are starting ratios reached after
    the warm-up (``linear`` / ``cosine`` ramp from 0) or held throughout (``constant``)."""
    if kind == "constant" or warmup <= 0:
        return 1.0
    x = min(1.0, step / warmup)
    if kind == "linear":
        return x
    return 0.5 * (1.0 - math.cos(math.pi * x))


def plateau_factor(val_history: list[float], factor: float = 0.5, patience: int = 2,
                   threshold: float = 1e-4) -> float:
    """The reduce-on-plateau multiplier after the epochs' validation losses ``val_history``:
    ``factor`` to the power of the number of cuts. A cut happens after ``patience`` + 1 epochs
    in a row without a relative improvement of ``threshold`` over the best so far, and the
    count starts again after each cut (the rule of torch's ReduceLROnPlateau, mode "min",
    "rel" threshold, no cool-down). A pure function of the history, so nothing extra is
    checkpointed and the rate cannot be overwritten by another scheduler."""
    best, bad, scale = math.inf, 0, 1.0
    for v in val_history:
        if v < best * (1.0 - threshold):
            best, bad = v, 0
        else:
            bad += 1
        if bad > patience:
            scale *= factor
            bad = 0
    return scale


def learning_rate(base: float, step: int, warmup: int, total: int, kind: str, plateau: float = 1.0) -> float:
    """The learning rate of ``step``: base × warm-up/cosine factor × plateau factor, assigned
    to the optimizer before each step."""
    return base * lr_factor(step, warmup, total, kind) * plateau
