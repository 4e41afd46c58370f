"""The one registry of the four training phases (seed §II, §V; design §5), and the pure
schedule functions each phase uses."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Phase:
    number: int
    name: str
    trains: tuple[str, ...]  # model module groups whose parameters this phase updates
    depth: int  # 1: heads read z, 2: H, 3: R
    losses: tuple[str, ...]  # the parts of L_total this phase may switch on
    checkpoint: str  # file written at the end of the phase (seed §VIII)


ALL_LOSSES = ("task", "causal", "geometric", "dc", "dis", "stable")

PHASES: dict[int, Phase] = {
    1: Phase(1, "causal encoder pre-training", ("encoder", "heads"), 1,
             ("task", "causal", "dis"), "causal_encoder.pt"),
    2: Phase(2, "lattice (GNN) training", ("encoder", "lattice", "heads"), 2,
             ("task", "causal", "geometric", "dis"), "lattice_encoder.pt"),
    3: Phase(3, "causal attention integration", ("encoder", "lattice", "attention", "heads"), 3,
             ALL_LOSSES, "attention_model.pt"),
    4: Phase(4, "meta utility reinforcement learning", ("utility",), 3,
             ALL_LOSSES, "meta_controller.pt"),
}

CHECKPOINTS = tuple(p.checkpoint for p in PHASES.values())


def get_phase(n: int) -> Phase:
    if n not in PHASES:
        raise KeyError(f"unknown phase {n!r}; valid phases: {sorted(PHASES)}")
    return PHASES[n]


def warmup_steps(requested: int, total_steps: int, max_fraction: float) -> int:
    """The seed's 500–1000 warm-up steps, capped at a fraction of the phase on small data
    (design §8.5), where 500 steps would be most of the run."""
    return int(min(requested, max(0.0, max_fraction) * total_steps))


def lr_factor(step: int, warmup: int, total: int, kind: str) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based): linear warm-up, then
    cosine annealing to zero (``cosine``) or constant (``plateau``/``none``; plateau
    reductions are applied on top by ReduceLROnPlateau)."""
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
