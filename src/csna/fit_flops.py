"""FLOPs of a csna fit, counted the way ``csna bench`` counts its neural peers' (``bench.neural``).

Issue 16 asks for fit time and FLOPs per fit beside accuracy, for csna as for the peers. A peer's
count is one training step's FLOPs times the steps it took plus one validation pass per epoch;
this module gives csna's by the same rule, phase by phase and member by member:

- phases 1–3: one step (forward, the phase's parts of L_total, the propensity loss, backward) on
  ``train.batch_size`` training rows, times the phase's steps (an epoch's last, shorter batch
  counted on its own rows; phase 3's stochastic depth on one seeded draw of its skips); one validation pass per epoch;
  phase 1 also encodes its 256-row stability probe each epoch;
- phase 4: one actor-critic step (``meta.meta_loss``: the sampled and the full pass, backward),
  times its steps; the gate calibration on the validation rows (``meta.calibrate_gates``) once
  per epoch and once before the first, and, with the backbone frozen, the paths it reads
  (``meta.CalibrationRows``) once;
- summed over the ensemble's members, each on its own training and validation rows.

Counted by ``torch.utils.flop_counter.FlopCounterMode`` on a copy of each trained member, after
training, so the fit itself is untouched (same numbers, same time) and every RNG is restored.
What it leaves out, like the peers' count: elementwise work, the optimizer update, L_Stable's
double backward (FlopCounterMode cannot run inside ``torch.autograd.grad``), and the scikit-learn
or LightGBM models beside the network (cross-fitted propensities, the effect shrinkage). The
weights of the trained model stand in for those of every step: the count of a step does not
depend on them, except through how many rows phase 4's gates send through each block.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from . import losses as L
from .dist import DistContext
from .phases import get_phase, set_trainable
from .prepare import to_split
from .rundir import Run
from .sources import Split

PROBE_ROWS = 256  # phase 1's z-stability probe (Trainer.run_phase)


def _count(fn) -> float:
    with FlopCounterMode(display=False) as fc:
        fn()
    return float(fc.get_total_flops())


def _trainer(model, cfg, train: Split, val: Split):
    """The parts of a Trainer that the counted passes read, on ``model``: no propensity is fitted
    (L_causal's weights are ones; its cost is elementwise) and nothing is logged."""
    from .train import Trainer

    train = Split(train.x, train.t, train.y, torch.ones(len(train), device=train.x.device))
    return Trainer(model, cfg, train, val)


def step_flops(tr, n: int, batch: Split, costs: torch.Tensor | None = None) -> float:
    """FLOPs of one training step of phase ``n`` on ``batch``, on ``tr.model``."""
    model, cfg = tr.model, tr.cfg
    model.zero_grad(set_to_none=True)
    if n == 4:
        from .meta import meta_loss

        set_trainable(model, ("utility",) + (get_phase(3).trains if cfg.phase4.finetune_backbone else ()))
        model.train()
        local = torch.arange(len(batch), device=batch.x.device)
        return _count(lambda: meta_loss(tr, batch, None, costs, 0, batch, local)[0].backward())
    ph, pc = get_phase(n), cfg.phase(n)
    set_trainable(model, ph.trains)
    model.train()
    lam = {k: getattr(pc, f"lambda_{k}") for k in ("causal", "geometric", "dc", "dis")}
    lam.update(stable=0.0, effect=cfg.train.effect_smoothing)
    if n == 2 and model.structure is not None:
        lam.update(structure=pc.lambda_structure, sparse=pc.lambda_sparse, dc=1.0)

    drop = float(getattr(pc, "block_drop", 0.0)) if n == 3 else 0.0
    # Phase 3's stochastic depth skips blocks for some rows: counted on one seeded draw of it.
    noise = tr.gate_noise(torch.Generator().manual_seed(cfg.train.seed + 3), len(batch),
                          torch.arange(len(batch), device=batch.x.device)) if drop > 0 else None

    def step():
        out = (model(batch.x, depth=ph.depth, gate_mode="drop", drop_rate=drop, noise=noise) if drop > 0
               else model(batch.x, depth=ph.depth))
        parts = L.compute_parts(model, out, batch, n, lam, 0, 1, DistContext(), batch, None,
                                cfg.train.discrepancy, tr.arm_weight, cfg.train.causal_reference)
        total, _ = L.total_loss(parts, lam)
        (total + model.propensity_loss(out, batch.t)).backward()
    return _count(step)


def member_flops(member: Run, data, device: torch.device | None = None) -> float:
    """FLOPs of one trained member's four phases (module docstring); ``data`` holds the rows its
    ``splits`` index."""
    from .meta import CalibrationRows, calibrate_gates

    counts = member.phase_counts
    if not counts:
        raise ValueError("this run does not record its phases' steps (phase_counts); train it again")
    model = copy.deepcopy(member.model)
    dev = device or next(model.parameters()).device
    train = to_split(member.prep, data, np.asarray(member.splits["train"]), dev)
    val = to_split(member.prep, data, np.asarray(member.splits["val"]), dev)
    cfg = member.cfg
    tr = _trainer(model, cfg, train, val)
    bs = min(cfg.train.batch_size, len(train))
    per_epoch = tr.source.num_batches(bs)
    rest = min(len(train) - (per_epoch - 1) * bs, bs)  # rows of an epoch's last batch (bs: a full one)
    batch, last = (tr.source.split.rows(torch.arange(r, device=dev)) for r in (bs, rest))

    def steps_flops(n: int, steps: int, costs=None) -> float:
        """``steps`` steps of phase n, an epoch's last batch holding ``rest`` rows."""
        short = steps // per_epoch if rest < bs else 0
        out = (steps - short) * step_flops(tr, n, batch, costs)
        return out + (short * step_flops(tr, n, last, costs) if short else 0.0)

    total = 0.0
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        for n in sorted(c for c in counts if c < 4):
            steps, epochs = counts[n]
            depth = get_phase(n).depth
            total += steps_flops(n, steps)
            total += epochs * _count(lambda: tr.validation_loss(depth))
            if n == 1:
                probe = train.x[:PROBE_ROWS]
                total += epochs * _count(lambda: tr._z_stats(probe))
        if counts.get(4, (0, 0))[0] > 0 and model.n_blocks:
            steps, epochs = counts[4]
            costs = model.measure_block_costs()
            tr.loss_scale = 1.0
            pc = cfg.phase4
            inf = float("inf")
            total += steps_flops(4, steps, costs)
            total += _count(lambda: tr.validation_loss(3))
            rows = []  # with the backbone frozen, the calibration's rows and gate paths are built once
            if not pc.finetune_backbone:
                total += _count(lambda: rows.append(CalibrationRows(tr, pc.cate_tolerance, frozen=True)))
            cal = lambda: calibrate_gates(tr, costs, pc.eta, inf, inf, pc.cate_tolerance, *rows)  # noqa: E731
            total += (epochs + 1) * _count(cal)
    model.zero_grad(set_to_none=True)
    return total


def fit_flops(run: Run, data=None) -> float:
    """FLOPs of the whole fit of ``run``: every member's four phases (module docstring).

    Args:
        data: the table the run was trained on (defaults to ``run.data``).
    """
    data = data if data is not None else run.data
    if data is None:
        raise ValueError("fit_flops needs the training table (data=...)")
    return float(sum(member_flops(m, data) for m in run.all_members()))
