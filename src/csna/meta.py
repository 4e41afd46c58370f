"""Phase 4 (seed §V, design §3.5): the Meta Utility Layer's actor-critic, the calibration of
its hard gates on validation rows, and the accuracy guards that calibration applies.

The policy-gradient terms (reward, advantage, actor and critic losses) and the guards are pure
functions of tensors; ``run_meta_phase`` is the phase-4 step loop, run by ``Trainer.fit`` with
the trainer's shared machinery (batches, checkpoints, data-parallel scaling).

Shape alphabet: B batch, K treatments, C outcome classes, nb gated blocks, n validation rows.
"""

from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from . import losses as L
from .gate_sweep import GatePaths, sweep_rows
from .phases import PHASES, PhaseResult, learning_rate, set_trainable, warmup_steps
from .sources import EVAL_BATCH, Split

if TYPE_CHECKING:  # annotations only: train.py imports this module
    from .model import CSNAModel
    from .train import Trainer

# Hard-gate thresholds phase 4 chooses among on validation rows (calibrate_gates).
GATE_THRESHOLDS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
LOSS_SCALE_ROWS = 50_000  # training rows the phase-4 reward's loss scale is measured on, at most
CATE_ROWS = 2048  # training rows (besides the validation rows) the effect-drift guard reads, at most
PATH_CACHE_BLOCKS = 6  # GatePaths for up to this many gated blocks (2^(nb+1) − 1 block passes a row, once)
_U_CLAMP = 1e-6


class GateCalibration(NamedTuple):
    """What ``calibrate_gates`` chose and how it fared on the guards."""

    reward: float  # mean validation reward at the threshold
    threshold: float
    loss: float  # gated validation loss (counterfactual drift term included)
    ate_drift: float  # |shift of the average effect|, standardised units or probability
    cate_drift: float  # RMS shift of τ̂(x) over the full model's validation error (a ratio)
    passed: bool  # every guard holds


# --------------------------------------------------------------- policy gradient
def reward(per_sample_loss: Tensor, gates: Tensor, costs: Tensor, eta: float) -> Tensor:
    """Per-sample reward R_b = -ℓ_b - η Σ_i C_i g_bi (design §3.5, §8.1).

    Args:
        per_sample_loss: ``(B,)`` task loss of each sample (``task_loss(..., "none")``).
        gates: ``(B, nb)`` 0/1 gates actually used.
        costs: ``(nb,)`` normalised block costs.
        eta: price of compute.

    Returns:
        ``(B,)``, detached: a REINFORCE reward is a number, never differentiated.
    """
    spent = gates.to(costs.dtype) @ costs  # (B,)
    return (-per_sample_loss - eta * spent).detach()


def advantage(reward: Tensor, value: Tensor) -> Tensor:
    """Â = R - V(s), detached so the actor loss does not train the critic. ``(B,)``."""
    return (reward - value).detach()


def actor_loss(u: Tensor, gates: Tensor, adv: Tensor, beta: float) -> Tensor:
    """REINFORCE loss of the gate policy with an entropy bonus.

    ``-mean_b Σ_i Â_b log π(g_bi) - β · mean H(u)``, log π(g) = g log u + (1-g) log(1-u),
    H the binary entropy in nats.

    Args:
        u: ``(B, nb)`` run probabilities in (0, 1), clamped to [1e-6, 1-1e-6].
        gates: ``(B, nb)`` sampled 0/1 gates.
        adv: ``(B,)`` advantages (detached here as well).
        beta: entropy weight; keeps u from collapsing to 0 or 1.
    """
    u = u.clamp(_U_CLAMP, 1.0 - _U_CLAMP)
    g = gates.to(u.dtype)
    log_pi = g * torch.log(u) + (1.0 - g) * torch.log1p(-u)  # (B, nb)
    pg = -(adv.detach()[:, None] * log_pi).sum(dim=1).mean()
    entropy = -(u * torch.log(u) + (1.0 - u) * torch.log1p(-u))  # (B, nb)
    return pg - beta * entropy.mean()


def critic_loss(value: Tensor, reward: Tensor) -> Tensor:
    """mean (V(s) - R)², with R detached as the regression target."""
    return (value - reward.detach()).pow(2).mean()


# ------------------------------------------------ guards: pure functions of predictions
def counterfactual_drift(pred: Tensor, ref: Tensor, t: Tensor, outcome_type: str) -> Tensor:
    """Per sample, how far the predictions for the treatments a unit did *not* receive moved
    from a reference model's (the same model with every block run): the mean over those arms of
    the squared difference of standardised means, or of class probabilities summed over classes.

    The factual task loss cannot see these arms, so a gate that leaves the factual prediction
    alone but moves a counterfactual one would cost nothing, while individual effects
    τ̂ = μ̂₁ − μ̂₀ depend on both. No counterfactual outcome is used: the reference is the model.

    Args:
        pred, ref: ``(B, K)`` means or ``(B, K, C)`` logits.
        t: ``(B,)`` received treatments.
        outcome_type: "continuous", "binary" or "multiclass".

    Returns:
        ``(B,)``.
    """
    L.check_outcome_type(outcome_type)
    if outcome_type == "continuous":
        sq = (pred - ref).pow(2)  # (B, K)
    else:
        sq = (torch.softmax(pred, -1) - torch.softmax(ref, -1)).pow(2).sum(-1)  # (B, K)
    K = sq.shape[1]
    other = torch.ones_like(sq).scatter_(1, t[:, None], 0.0)  # (B, K) 1 on the arms not received
    return (sq * other).sum(1) / max(K - 1, 1)


def effects(kind: str, pred: Tensor) -> Tensor:
    """(n, K − 1) individual effects μ̂_k − μ̂_0 of predictions (n, K) or (n, K, C):
    standardised outcome units, or the probability of the last class (``kind`` is the outcome
    type)."""
    if kind != "continuous":
        pred = torch.softmax(pred, -1)[..., -1]
    return pred[:, 1:] - pred[:, :1]


def ate_shift(kind: str, g: Tensor, f: Tensor) -> float:
    """How far gating moves the average effect: the largest |mean(μ̂_k − μ̂_0) gated − the same
    with every block run| over treatments k, from gated and full predictions (n, K) or
    (n, K, C); standardised units, or the probability of the last class."""
    if kind != "continuous":  # probability of the last class
        g, f = torch.softmax(g, -1)[..., -1], torch.softmax(f, -1)[..., -1]
    eff_g, eff_f = (g - g[:, :1]).mean(0), (f - f[:, :1]).mean(0)  # (K,)
    return float((eff_g - eff_f).abs().max())


def error_scale(ref: Tensor, val: Split, kind: str) -> float:
    """The full model's own error on the rows ``val`` from its predictions ``ref`` (n, K) or
    (n, K, C), the yardstick of the effect-drift guard: factual RMSE (standardised units), or
    √Brier of the received arm for classes."""
    f = L.factual(ref, val.t)  # (n,) or (n, C)
    if kind == "continuous":
        err = (f - val.y.to(f.dtype)).pow(2)
    else:
        err = (torch.softmax(f, -1) - F.one_hot(val.y.long(), f.shape[-1]).to(f.dtype)).pow(2).sum(-1)
    err = err[torch.isfinite(err)]
    return max(float(err.mean().sqrt()) if err.numel() else 1.0, 1e-8)


# ------------------------------------------------------------------ the phase
def run_meta_phase(tr: Trainer, resume: dict[str, Any] | None = None) -> PhaseResult:
    """Phase 4: actor-critic training of the Meta Utility Layer (design §3.5)."""
    pc = tr.cfg.phase4
    model, cfg = tr.model, tr.cfg
    if model.n_blocks == 0:
        return PhaseResult(4, 0, 0, float("nan"), 0)
    model.depth.fill_(3)
    groups = ("utility",) + (PHASES[3].trains if pc.finetune_backbone else ())
    set_trainable(model, groups)
    actor = [p for n_, p in model.utility.named_parameters() if not n_.startswith("critic")]
    critic = list(model.utility.critic.parameters())
    groups_ = [{"params": actor, "lr": pc.lr}, {"params": critic, "lr": pc.critic_lr}]
    backbone = []
    if pc.finetune_backbone:
        backbone = [p for g in PHASES[3].trains for p in getattr(model, g).parameters() if p.requires_grad]
        groups_.append({"params": backbone, "lr": pc.lr})
    opt = tr._optimizer(groups_, pc.lr)  # every group carries its own lr
    costs = model.measure_block_costs()
    tr.wrap()
    gen = torch.Generator().manual_seed(cfg.train.seed + 4)
    steps_per_epoch = tr.source.num_batches(cfg.train.batch_size)
    total = steps_per_epoch * pc.epochs
    warm = warmup_steps(pc.warmup_steps, total, pc.warmup_max_fraction)
    base_lr = [g["lr"] for g in opt.param_groups]
    objects = {"optimizer": opt, "generator": gen}
    st = tr.start_phase(4, resume, {
        "epoch": 0, "batch": 0, "step": 0, "best_val": -math.inf, "best_state": None,
        "skipped": 0, "consecutive": 0, "history": [], "sums": {}, "count": 0, "u_epoch": [],
    }, objects)
    # Accuracy guard (issue 4): a controller is kept only if its gated validation loss stays
    # within phase4.loss_tolerance of the same model with every block run. The starting
    # controller runs every block, so it is the fallback when no epoch qualifies.
    full_val = tr.validation_loss(3)
    # η is priced in a loss unit ℓ̄ (phase4.loss_unit): R_b = −ℓ_b/ℓ̄ − η Σ C_i g_bi. With
    # "outcome" (default) ℓ̄ is the outcome's own variance / class entropy, so η = 0.05 means
    # "running every block is worth 5% of the outcome's variance" on every data set; "train"
    # and "val" use the full model's mean loss. (The raw −ℓ_b of design §3.5 is the same
    # family with η' = η·ℓ̄.)
    if "loss_scale" not in st:
        if pc.loss_unit == "outcome":
            unit = outcome_loss_unit(tr)
        elif pc.loss_unit == "val":
            unit = full_val
        else:
            unit = mean_finite_loss(tr, tr.source.probe(LOSS_SCALE_ROWS))
        st["loss_scale"] = max(unit, 1e-8)
    tr.loss_scale = st["loss_scale"]
    # The guard allows loss_tolerance of the same unit: relative to the full model's loss for
    # "train"/"val", of the outcome's own loss scale for "outcome".
    slack = st["loss_scale"] if pc.loss_unit == "outcome" else abs(full_val)
    limit = full_val + pc.loss_tolerance * slack
    # With the backbone frozen, what calibration reads of it is computed once for the phase.
    rows = None if pc.finetune_backbone else CalibrationRows(tr, pc.cate_tolerance, frozen=True)
    if st["best_state"] is None and st["epoch"] == 0 and st["step"] == 0:
        cal = calibrate_gates(tr, costs, pc.eta, limit, pc.ate_tolerance, pc.cate_tolerance, rows)
        st["best_val"] = cal.reward if cal.passed else -math.inf
        st["best_state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    bar = tr.progress(total, "phase 4") if tr.progress else None
    all_params = [p for g in groups_ for p in g["params"]]
    warned = False  # the utility-collapse warning is printed once
    epoch = st["epoch"]
    for epoch in range(st["epoch"], pc.epochs):
        model.train()
        for b, batch_g in tr.source.batches(cfg.train.batch_size,
                                            cfg.train.seed * 1000 + 400 + epoch, st["batch"]):
            if cfg.train.max_steps and st["step"] >= cfg.train.max_steps:
                break
            batch_g = tr.weighted(batch_g)
            step = st["step"]
            for g, base in zip(opt.param_groups, base_lr):
                g["lr"] = learning_rate(base, step, warm, total, pc.scheduler)
            batch, local = tr.local_rows(batch_g)
            noise = tr.gate_noise(gen, len(batch_g), local)
            # Non-finite inputs are skipped before the forward: NaN utilities cannot be sampled.
            ok = bool(torch.isfinite(batch.x).all())
            if ok:
                with tr.autocast():
                    loss, logs, out = meta_loss(tr, batch, noise, costs, step, batch_g, local)
                ok = bool(torch.isfinite(loss))
            if ok:
                opt.zero_grad(set_to_none=True)
                loss.backward()
                gnorm = torch.nn.utils.clip_grad_norm_(all_params, cfg.train.grad_clip)
                ok = bool(torch.isfinite(gnorm))
            if not ok:
                opt.zero_grad(set_to_none=True)
                tr.skip_batch(4, st, epoch)
            else:
                st["consecutive"] = 0
                opt.step()
                logs["grad_norm"] = float(gnorm)
                logs["lr"] = opt.param_groups[0]["lr"]
                tr.logger.step_scalars(logs, tr.global_step)
                st["u_epoch"].append(out.u.detach())
                for k, val in logs.items():
                    st["sums"][k] = st["sums"].get(k, 0.0) + val
                st["count"] += 1
                if bar is not None:
                    bar(logs["rl/reward"])
            st["step"] += 1
            st["batch"] = b + 1
            tr.global_step += 1
            tr.after_step(4, st, objects)
        if st["u_epoch"]:
            u_all = torch.cat(st["u_epoch"])  # (N, n)
            for i, (name, _) in enumerate(model.blocks()):
                tr.logger.histogram(f"utility/{name}", u_all[:, i], tr.global_step)
            # Seed §IX: watch that u does not collapse to one side. Mean binary entropy of
            # u in bits: 1 at u = 0.5, 0 when every utility sits at 0 or 1.
            u_c = u_all.clamp(1e-6, 1 - 1e-6)
            ent = float(-(u_c * torch.log2(u_c) + (1 - u_c) * torch.log2(1 - u_c)).mean())
            tr.logger.scalar("rl/utility_entropy_bits", ent, tr.global_step)
            if ent < pc.collapse_entropy and not warned:
                warned = True
                side = "run" if float(u_all.mean()) >= 0.5 else "skip"
                print(f"csna: warning: phase 4 epoch {epoch + 1}: utilities collapsed to '{side}' "
                      f"(entropy {ent:.3f} bits < {pc.collapse_entropy}); raise phase4.entropy_beta "
                      f"or change phase4.eta", file=sys.stderr)
        cal = calibrate_gates(tr, costs, pc.eta, limit, pc.ate_tolerance, pc.cate_tolerance, rows)
        val_reward, val_loss, drift = cal.reward, cal.loss, cal.ate_drift
        rec = {k: v / max(st["count"], 1) for k, v in st["sums"].items()}
        rec.update({"epoch": epoch + 1, "val/reward": val_reward, "val/task_gated": val_loss,
                    "val/gate_threshold": float(model.gate_threshold),
                    "val/task_full": full_val, "val/ate_drift": drift, "val/cate_drift": cal.cate_drift,
                    "skipped": st["skipped"]})
        st["history"].append(rec)
        tr.logger.scalars({"val/reward": val_reward, "val/task_gated": val_loss,
                             "train/skipped_batches": st["skipped"]}, tr.global_step)
        if cal.passed and val_reward > st["best_val"] + 1e-6:
            st["best_val"] = val_reward
            st["best_state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        st.update(epoch=epoch + 1, batch=0, sums={}, count=0, u_epoch=[])
        if (cfg.train.max_steps and st["step"] >= cfg.train.max_steps) or epoch + 1 >= pc.epochs:
            break
        tr.epoch_end(4, st, objects)
    if bar is not None:
        bar(None)
    if st["best_state"] is not None:
        model.load_state_dict(st["best_state"])
    return PhaseResult(4, epoch + 1, st["step"], st["best_val"], st["skipped"], st["history"])


def meta_loss(tr: Trainer, batch: Split, noise: torch.Tensor | None, costs: torch.Tensor, step: int,
              batch_g: Split, local: torch.Tensor) -> tuple[torch.Tensor, dict[str, float], Any]:
    """Actor-critic loss of one phase-4 batch (plus L_total when fine-tuning the backbone)."""
    pc, model = tr.cfg.phase4, tr.model
    out = tr.fwd(batch.x, depth=3, gate_mode="sample", noise=noise, with_value=True)
    per_sample = L.task_loss(out.pred, batch.y, batch.t, tr.kind, reduction="none")  # (B,)
    with torch.no_grad():
        full = model(batch.x, depth=3, gate_mode="off")
    if pc.cf_weight > 0:  # the counterfactual arms must not drift from the full model's
        per_sample = per_sample + pc.cf_weight * counterfactual_drift(out.pred, full.pred, batch.t, tr.kind)
    r = reward(per_sample.detach() / tr.loss_scale, out.gates, costs, pc.eta)  # (B,)
    # Self-critical baseline: the same sample's reward with every block run, from a no-grad
    # pass. Each sample's own difficulty cancels out of the advantage, which leaves the effect
    # of its gates; the critic V(z) learns what is left (the expected gain of gating).
    # Without it the per-sample loss noise swamped the compute signal and the gate rate
    # drifted up instead of down.
    with torch.no_grad():
        per_full = L.task_loss(full.pred, batch.y, batch.t, tr.kind, reduction="none")
        r_full = reward(per_full / tr.loss_scale, torch.ones_like(out.gates), costs, pc.eta)
    gain = r - r_full  # (B,)
    v = out.value  # (B,) the critic's V(z)
    adv = advantage(gain, v)
    loss = ((actor_loss(out.u, out.gates, adv, pc.entropy_beta) + critic_loss(v, gain))
            * tr.ctx.scale(len(batch), len(batch_g)))
    logs = {"rl/reward": float(r.detach().mean()), "rl/value": float(v.detach().mean()),
            "rl/gate_rate": float(out.gates.mean()), "rl/compute": float((out.gates * costs).sum(1).mean())}
    if pc.finetune_backbone:
        lam = {k: getattr(pc, f"lambda_{k}") for k in ("causal", "geometric", "dc", "dis", "stable")}
        parts = L.compute_parts(model, out, batch, 4, lam, step, pc.stable_every, tr.ctx, batch_g, local,
                                tr.cfg.train.discrepancy, tr.arm_weight, tr.cfg.train.causal_reference,
                                tr.cfg.train.factual_weights == "ipw")
        total_loss, _ = L.total_loss(parts, lam)
        loss = loss + total_loss
        logs["loss/total"] = float(total_loss.detach())
    return loss, logs, out


@torch.no_grad()
def calibrate_gates(tr: Trainer, costs: torch.Tensor, eta: float, limit: float, ate_tolerance: float,
                    cate_tolerance: float = 0.0, rows: CalibrationRows | None = None) -> GateCalibration:
    """Set the hard-gate threshold to the one of GATE_THRESHOLDS with the best validation
    reward among those that pass every accuracy guard: gated validation loss ≤ ``limit``,
    ATE drift ≤ ``ate_tolerance`` and, when ``cate_tolerance`` > 0, an RMS shift of the
    individual effects τ̂(x) (over the validation rows and up to CATE_ROWS training rows)
    of at most ``cate_tolerance`` times the full model's validation RMSE; 0.5 when none
    passes.

    Why: the actor is trained on sampled gates, but used with hard ones, and 0.5 is only
    one point of its ranking. On a replication where u ≥ 0.5 moved the effect too far, the
    guard used to throw the whole controller away (0% saved); a higher bar for running a
    block skips more where skipping is safe, a lower one less where it is not.

    The effect-drift guard exists because the loss guard is priced in the outcome's
    variance: where the model explains most of it (IHDP), gates could move τ̂(x) by half
    the model's own error, raising √PEHE by a third, within a 2% loss tolerance. Since
    √PEHE_gated ≤ √PEHE_full + RMS shift, bounding the shift by the model's error bounds
    the harm; it reads no outcome, so training rows count too.

    ``rows``: ``CalibrationRows``, built once per phase; computed afresh when None.

    Returns:
        The chosen threshold's figures, or 0.5's when none passes (``passed`` False).
    """
    model, w = tr.model, tr.cfg.phase4.cf_weight
    rows = CalibrationRows(tr, cate_tolerance, frozen=False) if rows is None else rows
    ref, ref_x, extra, scale = rows.ref, rows.ref_x, rows.extra, rows.scale
    model.eval()
    swept = rows.sweep(model)
    (preds, all_gates), preds_x = swept[0], (swept[1][0] if extra is not None else None)  # (nT, n, …)
    found: dict[float, GateCalibration] = {}
    for j, t in enumerate(GATE_THRESHOLDS):
        pred, gates = preds[j], all_gates[j]
        per = L.task_loss(pred, tr.val.y, tr.val.t, tr.kind, reduction="none")
        if w > 0:
            per = per + w * counterfactual_drift(pred, ref, tr.val.t, tr.kind)
        r = float(reward(per / tr.loss_scale, gates, costs, eta).mean())
        loss, ate = float(per.mean()), ate_shift(tr.kind, pred, ref)
        cate = 0.0
        if extra is not None:
            pred_x = preds_x[j]
            shift = torch.cat([effects(tr.kind, pred) - effects(tr.kind, ref),
                               effects(tr.kind, pred_x) - effects(tr.kind, ref_x)])  # (n, K − 1)
            shift = shift[torch.isfinite(shift).all(1)]
            cate = float(shift.pow(2).mean().sqrt()) / scale if shift.numel() else 0.0
        ok = loss <= limit and ate <= ate_tolerance and (extra is None or cate <= cate_tolerance)
        found[t] = GateCalibration(r, t, loss, ate, cate, ok)
    ok = [f for f in found.values() if f.passed]
    # max() keeps the first of equal rewards: the lowest threshold, i.e. the most blocks run.
    best = max(ok, key=lambda f: f.reward) if ok else found.get(0.5) or found[GATE_THRESHOLDS[0]]
    model.gate_threshold.fill_(best.threshold)
    return best


class CalibrationRows:
    """What ``calibrate_gates`` scores (the validation rows, and up to CATE_ROWS training rows for
    the effect-drift guard) and the full model's predictions there. ``frozen`` (the backbone is
    fixed in phase 4 by default): built once per phase, with every gate path (``GatePaths``), so a
    calibration computes only the controller's utilities; else each sweep runs the blocks."""

    def __init__(self, tr: Trainer, cate_tolerance: float, frozen: bool):
        model = tr.model
        model.eval()
        z_val = tr.encode(tr.val)  # the encoder's output does not depend on the gates
        self.ref, _ = tr.eval_pass(tr.val, 3, "off", z_val)
        self.extra, self.ref_x, self.scale, self.z = None, None, 1.0, [z_val]
        if cate_tolerance > 0:
            self.scale = error_scale(self.ref, tr.val, tr.kind)
            self.extra = tr.source.probe(CATE_ROWS)
            z_x = tr.encode(self.extra)
            self.ref_x, _ = tr.eval_pass(self.extra, 3, "off", z_x)
            self.z.append(z_x)
        self.paths = None
        if frozen and model.n_blocks <= PATH_CACHE_BLOCKS:
            self.paths = [GatePaths(model, z, 3, EVAL_BATCH) for z in self.z]
            self.z = []

    def sweep(self, model: CSNAModel) -> list[tuple[Tensor, Tensor]]:
        """(preds (nT, n, …), gates (nT, n, nb)) at every GATE_THRESHOLDS, per set of rows."""
        if self.paths is not None:
            return [p.sweep(model, GATE_THRESHOLDS) for p in self.paths]
        return [sweep_rows(model, z, GATE_THRESHOLDS, 3, EVAL_BATCH) for z in self.z]


@torch.no_grad()
def outcome_loss_unit(tr: Trainer) -> float:
    """The loss of knowing nothing about x: the variance of the (standardised) training
    outcome, or the cross-entropy of the training class frequencies."""
    y = tr.source.probe(LOSS_SCALE_ROWS).y
    if tr.kind == "continuous":
        return float(y.float().var()) if len(y) > 1 else 1.0
    freq = torch.bincount(y, minlength=max(tr.model.n_classes, 2)).double()
    freq = freq[freq > 0] / freq.sum()
    return float(-(freq * freq.log()).sum())


@torch.no_grad()
def mean_finite_loss(tr: Trainer, split: Split) -> float:
    """Mean factual loss of the full model over the rows whose loss is finite (a row with
    NaN covariates must not turn the reward's scale into NaN)."""
    pred, _ = tr.eval_pass(split, 3)
    per = L.task_loss(pred, split.y, split.t, tr.kind, reduction="none")
    per = per[torch.isfinite(per)]
    return float(per.mean()) if per.numel() else 1.0


@torch.no_grad()
def ate_drift(tr: Trainer) -> float:
    """How far gating moves the average effect on the validation rows: the largest
    |mean(μ̂_k − μ̂_0) gated − the same with every block run| over treatments k, in
    standardised outcome units (probabilities for a classification outcome). Per-sample
    losses cannot see a small shift that every sample shares, yet it is all of the ATE's error.
    No outcome is used: the reference is the model itself."""
    g, _ = tr.eval_pass(tr.val, 3, "hard")
    f, _ = tr.eval_pass(tr.val, 3, "off")
    return ate_shift(tr.kind, g, f)
