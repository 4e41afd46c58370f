"""The training loop: the four phases of seed §V, one function each step, one registry
(``phases.PHASES``) saying what each phase trains.

Shape alphabet: B batch, p features, K treatments, n gateable blocks.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from . import losses as L
from .checkpoint import FORMAT, atomic_save
from .config import Config, PhaseConfig
from .logger import RunLogger
from .model import CSNAModel
from .phases import PHASES, get_phase, lambda_factor, lr_factor, warmup_steps


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. too many non-finite batches in a row)."""


@dataclass
class Split:
    x: torch.Tensor  # (n, p) float32
    t: torch.Tensor  # (n,) int64
    y: torch.Tensor  # (n,) float32 (standardised) or int64

    def __len__(self) -> int:
        return self.x.shape[0]

    def rows(self, idx: torch.Tensor) -> "Split":
        return Split(self.x[idx], self.t[idx], self.y[idx])


@dataclass
class PhaseResult:
    phase: int
    epochs: int
    steps: int
    best_val: float
    skipped: int
    history: list[dict[str, float]] = field(default_factory=list)


def set_seed(seed: int) -> None:
    import random

    import numpy as np

    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def set_trainable(model: CSNAModel, groups: tuple[str, ...]) -> list[nn.Parameter]:
    """Freeze everything but ``groups``; returns the parameters to optimise.

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


def set_theta_learnable(model: CSNAModel, flag: bool) -> None:
    for blk in model.attention:
        blk.attn.set_theta_learnable(flag)


def batch_order(n: int, batch_size: int, seed: int, device: torch.device) -> list[torch.Tensor]:
    """A seeded permutation cut into batches; a final batch of one row is dropped (batch-level
    losses need at least two rows)."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g).to(device)
    out = [perm[i:i + batch_size] for i in range(0, n, batch_size)]
    if len(out) > 1 and len(out[-1]) < 2:
        out = out[:-1]
    return out


def compute_parts(model: CSNAModel, out, batch: Split, phase_n: int, lambdas: dict[str, float],
                  step: int, stable_every: int) -> dict[str, torch.Tensor]:
    """Every part of L_total that this phase switches on and whose λ is non-zero."""
    ph = get_phase(phase_n)
    kind = "multiclass" if model.n_classes > 2 else ("binary" if model.n_classes == 2 else "continuous")
    parts = {"task": L.task_loss(out.pred, batch.y, batch.t, kind)}
    on = lambda name: name in ph.losses and lambdas.get(name, 0.0) > 0  # noqa: E731
    if on("causal"):
        sigma2 = model.sigma2 if kind == "continuous" else None
        parts["causal"] = L.causal_kl(out.pred, batch.t, kind, sigma2)
    if on("geometric") and out.h is not None and out.adjacency is not None:
        parts["geometric"] = L.laplacian_smoothness(out.h, out.adjacency)
    if on("dc") and out.adjacency is not None:
        parts["dc"] = L.dag_penalty(out.adjacency)
    if on("dis"):
        parts["dis"] = L.discrepancy(out.rep, batch.t, model.n_treatments)
    if on("stable") and step % max(1, stable_every) == 0:
        # Scaled by N when computed every N steps: same expected contribution, N× cheaper.
        # Per latent coordinate (÷ k·d): the raw ‖∂z/∂x‖_F² sums k·d·p terms and would swamp
        # every other part at the seed's λ_Stable = 0.3.
        n_out = model.cfg.k * model.cfg.d
        parts["stable"] = L.jacobian_penalty(model.encoder, batch.x) * (max(1, stable_every) / n_out)
    return parts


class Trainer:
    """Runs the phases on prepared tensors and writes phase checkpoints to ``run_dir``."""

    def __init__(self, model: CSNAModel, cfg: Config, train: Split, val: Split,
                 run_dir: Path | None = None, logger: RunLogger | None = None,
                 meta: dict[str, Any] | None = None, progress: Callable | None = None):
        self.model, self.cfg, self.train, self.val = model, cfg, train, val
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.logger = logger or RunLogger(None)
        self.meta = meta or {}
        self.progress = progress
        self.kind = ("multiclass" if model.n_classes > 2 else
                     "binary" if model.n_classes == 2 else "continuous")
        self.global_step = 0
        self.results: dict[int, PhaseResult] = {}

    # ------------------------------------------------------------------ phases
    def fit(self, phases: tuple[int, ...] = (1, 2, 3, 4)) -> dict[int, PhaseResult]:
        for n in phases:
            if self.cfg.phase(n).epochs <= 0:
                continue
            self.results[n] = self.run_phase(n) if n < 4 else self.run_meta_phase()
            self.save_phase_checkpoint(n)
        return self.results

    def _optimizer(self, params, lr: float) -> torch.optim.Optimizer:
        t = self.cfg.train
        # fused AdamW where the device supports it (fewer kernel launches on CUDA).
        fused = params[0].is_cuda if params else False
        return torch.optim.AdamW(params, lr=lr, betas=(t.beta1, t.beta2), weight_decay=t.weight_decay,
                                 fused=fused or None)

    def run_phase(self, n: int) -> PhaseResult:
        """Phases 1–3: supervised training of the modules the registry names."""
        ph, pc = get_phase(n), self.cfg.phase(n)
        model, cfg = self.model, self.cfg
        model.depth.fill_(ph.depth)
        params = set_trainable(model, ph.trains)
        set_theta_learnable(model, False)
        opt = self._optimizer(params, pc.lr)
        steps_per_epoch = len(batch_order(len(self.train), cfg.train.batch_size, 0, torch.device("cpu")))
        total = steps_per_epoch * pc.epochs
        if cfg.train.max_steps:
            total = min(total, cfg.train.max_steps)
        warm = warmup_steps(pc.warmup_steps, total, pc.warmup_max_fraction)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, warm, total, pc.scheduler))
        plateau = (torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=2)
                   if pc.scheduler == "plateau" else None)
        theta_from = (int(pc.theta_learnable_from * total) if n == 3 else None)
        best_val, best_state, bad_epochs = math.inf, None, 0
        skipped, consecutive, step = 0, 0, 0
        probe = self.train.x[: min(256, len(self.train))]
        prev_z = None
        history: list[dict[str, float]] = []
        epoch = 0
        bar = self.progress(total, f"phase {n}") if self.progress else None
        for epoch in range(pc.epochs):
            model.train()
            sums: dict[str, float] = {}
            count = 0
            for idx in batch_order(len(self.train), cfg.train.batch_size,
                                   cfg.train.seed * 1000 + n * 100 + epoch, self.train.x.device):
                if cfg.train.max_steps and step >= cfg.train.max_steps:
                    break
                if theta_from is not None and step == theta_from:
                    # θ0 and w are already in the optimizer; AdamW skips them while their grad is
                    # None (frozen), and updates them from here on (seed §V Phase 3).
                    set_theta_learnable(model, True)
                batch = self.train.rows(idx)
                lam = {k: getattr(pc, f"lambda_{k}") * lambda_factor(step, warm, pc.lambda_schedule)
                       for k in ("causal", "geometric", "dc", "dis", "stable")}
                out = model(batch.x, depth=ph.depth)
                parts = compute_parts(model, out, batch, n, lam, step, getattr(pc, "stable_every", 1))
                total_loss, reg = L.total_loss(parts, lam)
                prop_loss = nn.functional.cross_entropy(out.prop_logits, batch.t)
                ok = bool(torch.isfinite(total_loss))
                gnorm = torch.tensor(float("nan"))
                if ok:
                    opt.zero_grad(set_to_none=True)
                    (total_loss + prop_loss).backward()
                    gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
                    ok = bool(torch.isfinite(gnorm))
                if not ok:
                    skipped += 1
                    consecutive += 1
                    opt.zero_grad(set_to_none=True)
                    self.logger.scalar("train/skipped_batches", skipped, self.global_step)
                    if consecutive >= cfg.train.max_bad_batches:
                        raise TrainingError(
                            f"phase {n}, epoch {epoch + 1}: {consecutive} non-finite batches in a row; "
                            "the last good phase checkpoint is kept"
                        )
                    step += 1
                    self.global_step += 1
                    sched.step()
                    continue
                consecutive = 0
                opt.step()
                sched.step()
                if self.kind == "continuous":
                    self._update_sigma2(out.pred.detach(), batch)
                logs = {f"loss/{k}": float(v.detach()) for k, v in parts.items()}
                logs.update({"loss/total": float(total_loss.detach()), "loss/reg": float(reg.detach()),
                             "loss/propensity": float(prop_loss.detach()), "grad_norm": float(gnorm),
                             "lr": opt.param_groups[0]["lr"]})
                logs.update({f"lambda/{k}": v for k, v in lam.items()})
                self.logger.scalars(logs, self.global_step)
                for k, v in logs.items():
                    sums[k] = sums.get(k, 0.0) + v
                count += 1
                step += 1
                self.global_step += 1
                if bar is not None:
                    bar(float(total_loss))
            val = self.validation_loss(ph.depth)
            rec = {k: v / max(count, 1) for k, v in sums.items() if k.startswith("loss/")}
            rec.update({"epoch": epoch + 1, "val/task": val, "skipped": skipped})
            if model.n_blocks:
                from .metrics import graph_connectivity
                rec["graph_connectivity"] = graph_connectivity(model.lattice.adjacency().detach().cpu().numpy())
            history.append(rec)
            self.logger.scalars({"val/task": val, "graph/connectivity": rec.get("graph_connectivity", 0.0)},
                                self.global_step)
            if plateau is not None:
                plateau.step(val)
            if val < best_val - 1e-6:
                best_val, bad_epochs = val, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                bad_epochs += 1
            if cfg.train.max_steps and step >= cfg.train.max_steps:
                break
            if pc.early_stopping_patience and bad_epochs >= pc.early_stopping_patience and epoch + 1 >= pc.min_epochs:
                break
            if n == 1:
                z_stats = self._z_stats(probe)
                if prev_z is not None and epoch + 1 >= pc.min_epochs:
                    change = max(float((a - b).norm() / (b.norm() + 1e-8)) for a, b in zip(z_stats, prev_z))
                    rec["z_change"] = change
                    if change < getattr(pc, "z_tolerance", 0.0):
                        break
                prev_z = z_stats
        if bar is not None:
            bar(None)
        if best_state is not None:
            model.load_state_dict(best_state)
        return PhaseResult(n, epoch + 1, step, best_val, skipped, history)

    def run_meta_phase(self) -> PhaseResult:
        """Phase 4: actor-critic training of the Meta Utility Layer (design §3.5)."""
        pc = self.cfg.phase4
        model, cfg = self.model, self.cfg
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
        opt = torch.optim.AdamW(groups_, betas=(cfg.train.beta1, cfg.train.beta2),
                                weight_decay=cfg.train.weight_decay)
        costs = model.measure_block_costs()
        gen = torch.Generator(device=self.train.x.device).manual_seed(cfg.train.seed + 4)
        steps_per_epoch = len(batch_order(len(self.train), cfg.train.batch_size, 0, torch.device("cpu")))
        total = steps_per_epoch * pc.epochs
        warm = warmup_steps(pc.warmup_steps, total, pc.warmup_max_fraction)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, warm, total, pc.scheduler))
        step, skipped, consecutive = 0, 0, 0
        best_val, best_state = -math.inf, None
        history: list[dict[str, float]] = []
        bar = self.progress(total, "phase 4") if self.progress else None
        all_params = [p for g in groups_ for p in g["params"]]
        epoch = 0
        for epoch in range(pc.epochs):
            model.train()
            sums: dict[str, float] = {}
            count = 0
            u_epoch = []
            for idx in batch_order(len(self.train), cfg.train.batch_size,
                                   cfg.train.seed * 1000 + 400 + epoch, self.train.x.device):
                if cfg.train.max_steps and step >= cfg.train.max_steps:
                    break
                batch = self.train.rows(idx)
                out = model(batch.x, depth=3, gate_mode="sample", generator=gen)
                per_sample = L.task_loss(out.pred, batch.y, batch.t, self.kind, reduction="none")  # (B,)
                r = L.reward(per_sample.detach(), out.gates, costs, pc.eta)  # (B,)
                v = model.utility.value(out.z.detach())  # (B,)
                adv = L.advantage(r, v)
                loss = L.actor_loss(out.u, out.gates, adv, pc.entropy_beta) + L.critic_loss(v, r)
                logs = {"rl/reward": float(r.mean()), "rl/value": float(v.mean()),
                        "rl/gate_rate": float(out.gates.mean()), "rl/compute": float((out.gates * costs).sum(1).mean())}
                if pc.finetune_backbone:
                    lam = {k: getattr(pc, f"lambda_{k}") for k in ("causal", "geometric", "dc", "dis", "stable")}
                    parts = compute_parts(model, out, batch, 4, lam, step, pc.stable_every)
                    total_loss, _ = L.total_loss(parts, lam)
                    loss = loss + total_loss
                    logs["loss/total"] = float(total_loss)
                ok = bool(torch.isfinite(loss))
                if ok:
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    gnorm = torch.nn.utils.clip_grad_norm_(all_params, cfg.train.grad_clip)
                    ok = bool(torch.isfinite(gnorm))
                if not ok:
                    skipped += 1
                    consecutive += 1
                    opt.zero_grad(set_to_none=True)
                    if consecutive >= cfg.train.max_bad_batches:
                        raise TrainingError(f"phase 4, epoch {epoch + 1}: {consecutive} non-finite batches in a row")
                    step += 1
                    self.global_step += 1
                    sched.step()
                    continue
                consecutive = 0
                opt.step()
                sched.step()
                logs["grad_norm"] = float(gnorm)
                logs["lr"] = opt.param_groups[0]["lr"]
                self.logger.scalars(logs, self.global_step)
                u_epoch.append(out.u.detach())
                for k, val in logs.items():
                    sums[k] = sums.get(k, 0.0) + val
                count += 1
                step += 1
                self.global_step += 1
                if bar is not None:
                    bar(logs["rl/reward"])
            if u_epoch:
                u_all = torch.cat(u_epoch)  # (N, n)
                for i, (name, _) in enumerate(model.blocks()):
                    self.logger.histogram(f"utility/{name}", u_all[:, i], self.global_step)
            val_reward = self.validation_reward(costs, pc.eta)
            rec = {k: v / max(count, 1) for k, v in sums.items()}
            rec.update({"epoch": epoch + 1, "val/reward": val_reward})
            history.append(rec)
            self.logger.scalars({"val/reward": val_reward}, self.global_step)
            if val_reward > best_val + 1e-6:
                best_val = val_reward
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if cfg.train.max_steps and step >= cfg.train.max_steps:
                break
        if bar is not None:
            bar(None)
        if best_state is not None:
            model.load_state_dict(best_state)
        return PhaseResult(4, epoch + 1, step, best_val, skipped, history)

    # ----------------------------------------------------------------- helpers
    @torch.no_grad()
    def _update_sigma2(self, pred: torch.Tensor, batch: Split, momentum: float = 0.9) -> None:
        var = L.residual_variance(pred, batch.y, batch.t, self.model.n_treatments)  # (K,)
        present = torch.bincount(batch.t, minlength=self.model.n_treatments) >= 2
        s = self.model.sigma2
        s.copy_(torch.where(present & torch.isfinite(var), momentum * s + (1 - momentum) * var, s))

    @torch.no_grad()
    def _z_stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.model.eval()
        z = self.model.encoder(x).flatten(1)  # (n, k·d)
        self.model.train()
        return z.mean(0), torch.cov(z.t())

    @torch.no_grad()
    def validation_loss(self, depth: int) -> float:
        """Factual loss on the validation split: the only model-selection signal (no
        counterfactual information is used)."""
        self.model.eval()
        out = self.model(self.val.x, depth=depth)
        return float(L.task_loss(out.pred, self.val.y, self.val.t, self.kind))

    @torch.no_grad()
    def validation_reward(self, costs: torch.Tensor, eta: float) -> float:
        self.model.eval()
        out = self.model(self.val.x, depth=3, gate_mode="hard")
        per = L.task_loss(out.pred, self.val.y, self.val.t, self.kind, reduction="none")
        return float(L.reward(per, out.gates, costs, eta).mean())

    def save_phase_checkpoint(self, n: int) -> None:
        if self.run_dir is None:
            return
        ph = get_phase(n)
        res = self.results.get(n)
        payload = {
            "format": FORMAT,
            "phase": n,
            "phase_name": ph.name,
            "trained_modules": list(ph.trains) + (list(PHASES[3].trains)
                                                  if n == 4 and self.cfg.phase4.finetune_backbone else []),
            "model_state": copy.copy(self.model.state_dict()),
            "config": self.cfg.to_dict(),
            "meta": self.meta,
            "result": {"epochs": res.epochs, "steps": res.steps, "best_val": res.best_val,
                       "skipped": res.skipped} if res else {},
        }
        atomic_save(payload, self.run_dir / ph.checkpoint)


def phase_config(cfg: Config, n: int) -> PhaseConfig:
    return cfg.phase(n)
