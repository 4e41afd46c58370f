"""The training loop: the four phases of seed §V, one function each step, one registry
(``phases.PHASES``) saying what each phase trains.

Shape alphabet: B batch, p features, K treatments, n gateable blocks.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from . import losses as L
from .checkpoint import FORMAT, LATEST, CheckpointError, atomic_save, rng_state, set_rng_state
from .config import Config, PhaseConfig
from .dist import DistContext, current
from .logger import RunLogger
from .model import CSNAModel
from .phases import PHASES, get_phase, lambda_factor, lr_factor, warmup_steps
from .resume import TrainingInterrupted, signals_saved, test_hook


EVAL_BATCH = 8192  # rows per forward pass of the validation-type passes (bounded memory)
# Hard-gate thresholds phase 4 chooses among on validation rows (Trainer.calibrate_gates).
GATE_THRESHOLDS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
LOSS_SCALE_ROWS = 50_000  # training rows the phase-4 reward's loss scale is measured on, at most
CATE_ROWS = 2048  # training rows (besides the validation rows) the effect-drift guard reads, at most


class GateCalibration(NamedTuple):
    """What ``Trainer.calibrate_gates`` chose and how it fared on the guards."""

    reward: float  # mean validation reward at the threshold
    threshold: float
    loss: float  # gated validation loss (counterfactual drift term included)
    ate_drift: float  # |shift of the average effect|, standardised units or probability
    cate_drift: float  # RMS shift of τ̂(x) over the full model's validation error (a ratio)
    passed: bool  # every guard holds


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


class TensorSource:
    """Training rows held in memory; each epoch a seeded permutation cut into global batches."""

    def __init__(self, split: Split):
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    @property
    def device(self) -> torch.device:
        return self.split.x.device

    def num_batches(self, batch_size: int) -> int:
        n = len(self.split)
        full, rest = divmod(n, batch_size)
        return full + (1 if rest >= 2 or (rest and full == 0) else 0)

    def batches(self, batch_size: int, seed: int, start: int = 0):
        """Yields (batch number, global batch) from batch ``start`` on."""
        order = batch_order(len(self.split), batch_size, seed, self.device)
        for b in range(start, len(order)):
            yield b, self.split.rows(order[b])

    def probe(self, n: int) -> Split:
        """The first ``n`` training rows (a fixed sample for statistics)."""
        return self.split.rows(torch.arange(min(n, len(self.split)), device=self.device))


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


def phase_seed(seed: int, n: int) -> int:
    """Every RNG is reseeded at the start of each phase, so a phase depends only on the
    model it starts from, the seed and its number (a phase checkpoint is a resume point)."""
    return seed * 10 + n


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
                  step: int, stable_every: int, ctx: DistContext | None = None,
                  global_batch: Split | None = None, local: torch.Tensor | None = None,
                  metric: str = "mmd", arm_weight: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Every part of L_total that this phase switches on and whose λ is non-zero.

    ``arm_weight`` (K,): weights of the factual loss by received treatment (``train.balance_arms``).

    In a data-parallel run (``ctx``), ``batch`` holds this rank's rows of ``global_batch``
    (indices ``local``): per-sample means are scaled and batch-level terms read the gathered
    global batch, as ``csna.dist`` explains. A single process gets exactly the plain losses.
    """
    ph = get_phase(phase_n)
    ctx = ctx or DistContext()
    gb = global_batch if global_batch is not None else batch
    s = ctx.scale(len(batch), len(gb))
    kind = "multiclass" if model.n_classes > 2 else ("binary" if model.n_classes == 2 else "continuous")
    if arm_weight is None:
        parts = {"task": L.task_loss(out.pred, batch.y, batch.t, kind) * s}
    else:
        per = L.task_loss(out.pred, batch.y, batch.t, kind, reduction="none")  # (B,)
        parts = {"task": (per * arm_weight[batch.t]).mean() * s}
    on = lambda name: name in ph.losses and lambdas.get(name, 0.0) > 0  # noqa: E731
    if on("causal"):
        sigma2 = model.sigma2 if kind == "continuous" else None
        parts["causal"] = L.causal_kl(ctx.gather(out.pred), gb.t, kind, sigma2)
    if on("geometric") and out.h is not None and out.adjacency is not None:
        parts["geometric"] = L.laplacian_smoothness(out.h, out.adjacency) * s
    if on("dc") and out.adjacency is not None:
        parts["dc"] = L.dag_penalty(out.adjacency)
    if on("dis"):
        parts["dis"] = L.discrepancy(ctx.gather(out.rep), gb.t, model.n_treatments, metric)
    if on("stable") and step % max(1, stable_every) == 0:
        # Scaled by N when computed every N steps: same expected contribution, N× cheaper.
        # Per latent coordinate (÷ k·d): the raw ‖∂z/∂x‖_F² sums k·d·p terms and would swamp
        # every other part at the seed's λ_Stable = 0.3.
        n_out = model.cfg.k * model.cfg.d
        proj = None
        if ctx.enabled:  # the projection belongs to the sample: drawn for the global batch
            proj = torch.randn(1, len(gb), n_out, device=batch.x.device)[:, local]
        parts["stable"] = (L.jacobian_penalty(model.encoder, batch.x, projections=proj)
                           * (max(1, stable_every) / n_out) * s)
    return parts


class Trainer:
    """Runs the phases on prepared tensors and writes phase checkpoints to ``run_dir``.

    With a run directory, the whole training state (model, optimizer, schedulers, position in
    the data, best-validation state, history, every RNG state) is written to ``latest.pt``
    every ``train.checkpoint_every`` steps and at every epoch end, so a killed run resumes
    exactly where it stopped (``fit(resume=state)``). SIGINT/SIGTERM save that state and raise
    ``TrainingInterrupted``.
    """

    def __init__(self, model: CSNAModel, cfg: Config, train, val: Split,
                 run_dir: Path | None = None, logger: RunLogger | None = None,
                 meta: dict[str, Any] | None = None, progress: Callable | None = None):
        """``train``: a ``Split`` held in memory, or any batch source with the methods of
        ``TensorSource`` (e.g. a stream over a table larger than memory)."""
        self.model, self.cfg, self.val = model, cfg, val
        self.source = TensorSource(train) if isinstance(train, Split) else train
        self.ctx = current()
        self.fwd: nn.Module = model
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.logger = logger or RunLogger(None)
        self.meta = meta or {}
        self.progress = progress
        self.kind = ("multiclass" if model.n_classes > 2 else
                     "binary" if model.n_classes == 2 else "continuous")
        self.global_step = 0
        self.results: dict[int, PhaseResult] = {}
        self._signal: int | None = None
        self._hook = test_hook()
        self.arm_weight = self.arm_weights() if cfg.train.balance_arms else None

    def arm_weights(self) -> torch.Tensor:
        """(K,) factual-loss weights 1 / (K·π_t), π_t the share of treatment t among the
        training rows (the first LOSS_SCALE_ROWS of them), so every arm weighs the same in
        L_task whatever its size (TARNet's and CFR's weighting); mean weight 1 over the rows."""
        t = self.source.probe(LOSS_SCALE_ROWS).t
        K = self.model.n_treatments
        share = torch.bincount(t, minlength=K).double() / max(len(t), 1)  # (K,)
        w = torch.where(share > 0, 1.0 / (K * share.clamp_min(1e-12)), torch.zeros_like(share))
        w = w / (w[t].mean() if len(t) else 1.0)
        return w.to(torch.float32)

    # ------------------------------------------------------------------ phases
    def fit(self, phases: tuple[int, ...] = (1, 2, 3, 4), resume: dict[str, Any] | None = None
            ) -> dict[int, PhaseResult]:
        """Train ``phases`` in order.

        Args:
            phases: the phase numbers to run.
            resume: a state read from ``latest.pt`` or a phase checkpoint (``checkpoint.load``);
                its results and global step are taken over, and if it is a mid-phase state of
                the first phase in ``phases``, that phase continues from it. The model must
                already hold the state's ``model_state``.
        """
        if resume is not None:
            try:
                self.global_step = int(resume.get("global_step", 0))
                self.results = {int(k): PhaseResult(**v) for k, v in (resume.get("results") or {}).items()}
            except (TypeError, ValueError) as exc:
                raise CheckpointError(f"the saved training state in {self.run_dir} is not one this csna "
                                      f"version reads: {exc}") from None
        with signals_saved(self):
            for n in phases:
                if self.cfg.phase(n).epochs <= 0:
                    continue
                state = resume if (resume is not None and resume.get("kind") == "latest"
                                   and int(resume["phase"]) == n and not resume.get("done")) else None
                self.results[n] = self.run_phase(n, state) if n < 4 else self.run_meta_phase(state)
                self.save_phase_checkpoint(n)
                self._hook(n, "end")
                self._save_latest(n, None, done=True)
                if self._signal is not None:
                    raise TrainingInterrupted(self._signal, n, 0, self.run_dir)
        return self.results

    def _wrap(self) -> None:
        """The module the training forward runs through: the model itself, or, in a
        data-parallel run, a DistributedDataParallel wrapper over the parameters that train now
        (rebuilt whenever that set changes)."""
        if not self.ctx.enabled:
            return
        from torch.nn.parallel import DistributedDataParallel as DDP

        self.fwd = self.model  # drop the previous wrapper (and its gradient hooks) first
        dev = self.source.device
        # find_unused_parameters: a gated block that no row of a batch runs gets no gradient.
        self.fwd = DDP(self.model, device_ids=[dev.index] if dev.type == "cuda" else None,
                       find_unused_parameters=True, broadcast_buffers=False)

    def _local(self, batch_g: Split) -> tuple[Split, torch.Tensor]:
        """This rank's rows of a global batch (all of them in a single process)."""
        if not self.ctx.enabled:
            return batch_g, torch.arange(len(batch_g), device=batch_g.x.device)
        idx = self.ctx.local_rows(len(batch_g), batch_g.x.device)
        return batch_g.rows(idx), idx

    def _noise(self, gen: torch.Generator | None, n_global: int, local: torch.Tensor) -> torch.Tensor | None:
        """Uniforms for the per-sample gate draws of a global batch, this rank's rows.
        Drawn on the CPU so a seed gives the same draws on every device."""
        if gen is None or self.model.n_blocks == 0:
            return None
        u = torch.rand(n_global, self.model.n_blocks, generator=gen)  # (N, n)
        return u.to(local.device)[local]

    def autocast(self) -> torch.autocast:
        """The training step's precision (``train.precision``): bf16 autocast or plain fp32.
        Gradients and optimizer state stay fp32 either way; bf16 needs no loss scaling."""
        return torch.autocast(self.source.device.type, dtype=torch.bfloat16,
                              enabled=self.cfg.train.precision == "bf16")

    def _optimizer(self, params, lr: float) -> torch.optim.Optimizer:
        t = self.cfg.train
        # fused AdamW where the device supports it (fewer kernel launches on CUDA).
        fused = params[0].is_cuda if params else False
        return torch.optim.AdamW(params, lr=lr, betas=(t.beta1, t.beta2), weight_decay=t.weight_decay,
                                 fused=fused or None)

    def _start(self, n: int, state: dict[str, Any] | None, fresh: dict[str, Any], objects: dict[str, Any]
               ) -> dict[str, Any]:
        """The progress of phase ``n``: fresh (and every RNG seeded for the phase), or taken
        from a saved mid-phase ``state`` with the optimizer, schedulers and RNGs restored."""
        if state is None:
            set_seed(phase_seed(self.cfg.train.seed, n))
            return fresh
        try:
            for name, obj in objects.items():
                if obj is not None and name != "generator" and state.get(name) is not None:
                    obj.load_state_dict(state[name])
            if objects.get("generator") is not None and state.get("generator_state") is not None:
                objects["generator"].set_state(state["generator_state"].cpu())  # map_location may have moved it
            set_rng_state(state["rng"])
            return dict(state["progress"])
        except (ValueError, KeyError, TypeError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"{self.run_dir / LATEST} does not match this config (phase {n}): "
                                  f"{first[:200]}") from None

    def _after_step(self, n: int, st: dict[str, Any], objects: dict[str, Any]) -> None:
        """Latest-state checkpoint every ``train.checkpoint_every`` steps; stop on a signal."""
        every = self.cfg.train.checkpoint_every
        if every > 0 and st["step"] % every == 0:
            self._save_latest(n, st, objects)
        self._hook(n, st["step"])
        if self._signal is not None:
            self._save_latest(n, st, objects)
            raise TrainingInterrupted(self._signal, n, st["step"], self.run_dir)

    def _save_latest(self, n: int, st: dict[str, Any] | None, objects: dict[str, Any] | None = None,
                     done: bool = False) -> None:
        if self.run_dir is None:
            return
        objects = objects or {}
        gen = objects.get("generator")
        atomic_save({
            "format": FORMAT,
            "kind": "latest",
            "phase": n,
            "done": done,
            "global_step": self.global_step,
            "results": {k: dataclasses.asdict(v) for k, v in self.results.items()},
            "progress": st,
            "optimizer": objects["optimizer"].state_dict() if objects.get("optimizer") else None,
            "scheduler": objects["scheduler"].state_dict() if objects.get("scheduler") else None,
            "plateau": objects["plateau"].state_dict() if objects.get("plateau") else None,
            "generator_state": gen.get_state() if gen is not None else None,
            "rng": rng_state(),
            "model_state": self.model.state_dict(),
            "config": self.cfg.to_dict(),
            "meta": self.meta,
        }, self.run_dir / LATEST)

    def _skip(self, n: int, st: dict[str, Any], epoch: int) -> None:
        """Count a non-finite batch; too many in a row end training with a clear error."""
        st["skipped"] += 1
        st["consecutive"] += 1
        self.logger.scalar("train/skipped_batches", st["skipped"], self.global_step)
        if st["consecutive"] >= self.cfg.train.max_bad_batches:
            raise TrainingError(
                f"phase {n}, epoch {epoch + 1}: {st['consecutive']} non-finite batches in a row; "
                "the last good checkpoint is kept"
            )

    def run_phase(self, n: int, resume: dict[str, Any] | None = None) -> PhaseResult:
        """Phases 1–3: supervised training of the modules the registry names."""
        ph, pc = get_phase(n), self.cfg.phase(n)
        model, cfg = self.model, self.cfg
        model.depth.fill_(ph.depth)
        params = set_trainable(model, ph.trains)
        set_theta_learnable(model, False)
        opt = self._optimizer(params, pc.lr)
        self._wrap()
        steps_per_epoch = self.source.num_batches(cfg.train.batch_size)
        total = steps_per_epoch * pc.epochs
        if cfg.train.max_steps:
            total = min(total, cfg.train.max_steps)
        warm = warmup_steps(pc.warmup_steps, total, pc.warmup_max_fraction)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, warm, total, pc.scheduler))
        plateau = (torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=2)
                   if pc.scheduler == "plateau" else None)
        theta_from = (int(pc.theta_learnable_from * total) if n == 3 else None)
        drop = float(getattr(pc, "block_drop", 0.0)) if n == 3 else 0.0
        gen = torch.Generator().manual_seed(cfg.train.seed + 3) if drop > 0 else None
        objects = {"optimizer": opt, "scheduler": sched, "plateau": plateau, "generator": gen}
        st = self._start(n, resume, {
            "epoch": 0, "batch": 0, "step": 0, "best_val": math.inf, "best_state": None, "bad_epochs": 0,
            "skipped": 0, "consecutive": 0, "history": [], "sums": {}, "count": 0, "prev_z": None,
        }, objects)
        if theta_from is not None and st["step"] > theta_from:
            set_theta_learnable(model, True)
            self._wrap()
        probe = self.source.probe(256).x
        epoch = st["epoch"]
        bar = self.progress(total, f"phase {n}") if self.progress else None
        for epoch in range(st["epoch"], pc.epochs):
            model.train()
            for b, batch_g in self.source.batches(cfg.train.batch_size,
                                                  cfg.train.seed * 1000 + n * 100 + epoch, st["batch"]):
                if cfg.train.max_steps and st["step"] >= cfg.train.max_steps:
                    break
                step = st["step"]
                if theta_from is not None and step == theta_from:
                    # θ0 and w are already in the optimizer; AdamW skips them while their grad is
                    # None (frozen), and updates them from here on (seed §V Phase 3).
                    set_theta_learnable(model, True)
                    self._wrap()
                batch, local = self._local(batch_g)
                lam = {k: getattr(pc, f"lambda_{k}") * lambda_factor(step, warm, pc.lambda_schedule)
                       for k in ("causal", "geometric", "dc", "dis", "stable")}
                with self.autocast():
                    if drop > 0:  # stochastic depth: the backbone learns to do without skipped blocks
                        out = self.fwd(batch.x, depth=ph.depth, gate_mode="drop", drop_rate=drop,
                                       noise=self._noise(gen, len(batch_g), local))
                    else:
                        out = self.fwd(batch.x, depth=ph.depth)
                    parts = compute_parts(model, out, batch, n, lam, step, getattr(pc, "stable_every", 1),
                                          self.ctx, batch_g, local, self.cfg.train.discrepancy,
                                          self.arm_weight)
                    total_loss, reg = L.total_loss(parts, lam)
                    prop_loss = (nn.functional.cross_entropy(out.prop_logits, batch.t)
                                 * self.ctx.scale(len(batch), len(batch_g)))
                ok = bool(torch.isfinite(total_loss))
                gnorm = torch.tensor(float("nan"))
                if ok:
                    opt.zero_grad(set_to_none=True)
                    (total_loss + prop_loss).backward()
                    gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
                    ok = bool(torch.isfinite(gnorm))
                if not ok:
                    opt.zero_grad(set_to_none=True)
                    self._skip(n, st, epoch)
                else:
                    st["consecutive"] = 0
                    opt.step()
                    if self.kind == "continuous":
                        self._update_sigma2(self.ctx.gather(out.pred.detach()), batch_g)
                    logs = {f"loss/{k}": float(v.detach()) for k, v in parts.items()}
                    logs.update({"loss/total": float(total_loss.detach()), "loss/reg": float(reg.detach()),
                                 "loss/propensity": float(prop_loss.detach()), "grad_norm": float(gnorm),
                                 "lr": opt.param_groups[0]["lr"]})
                    logs.update({f"lambda/{k}": v for k, v in lam.items()})
                    self.logger.scalars(logs, self.global_step)
                    for k, v in logs.items():
                        st["sums"][k] = st["sums"].get(k, 0.0) + v
                    st["count"] += 1
                    if bar is not None:
                        bar(float(total_loss.detach()))
                sched.step()
                st["step"] += 1
                st["batch"] = b + 1
                self.global_step += 1
                self._after_step(n, st, objects)
            val = self.validation_loss(ph.depth)
            rec = {k: v / max(st["count"], 1) for k, v in st["sums"].items() if k.startswith("loss/")}
            rec.update({"epoch": epoch + 1, "val/task": val, "skipped": st["skipped"]})
            if model.n_blocks:
                from .metrics import graph_connectivity
                rec["graph_connectivity"] = graph_connectivity(model.lattice.adjacency().detach().cpu().numpy())
            st["history"].append(rec)
            self.logger.scalars({"val/task": val, "graph/connectivity": rec.get("graph_connectivity", 0.0),
                                 "train/skipped_batches": st["skipped"]}, self.global_step)
            if plateau is not None:
                plateau.step(val)
            if val < st["best_val"] - 1e-6:
                st["best_val"], st["bad_epochs"] = val, 0
                st["best_state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                st["bad_epochs"] += 1
            stop = bool(cfg.train.max_steps and st["step"] >= cfg.train.max_steps)
            stop = stop or bool(pc.early_stopping_patience and st["bad_epochs"] >= pc.early_stopping_patience
                                and epoch + 1 >= pc.min_epochs)
            if n == 1 and not stop:
                z_stats = self._z_stats(probe)
                if st["prev_z"] is not None and epoch + 1 >= pc.min_epochs:
                    change = max(float((a - b_).norm() / (b_.norm() + 1e-8)) for a, b_ in zip(z_stats, st["prev_z"]))
                    rec["z_change"] = change
                    stop = change < getattr(pc, "z_tolerance", 0.0)
                st["prev_z"] = list(z_stats)
            st.update(epoch=epoch + 1, batch=0, sums={}, count=0)
            if stop or epoch + 1 >= pc.epochs:
                break
            self._save_latest(n, st, objects)  # epoch end
            if self._signal is not None:
                raise TrainingInterrupted(self._signal, n, st["step"], self.run_dir)
        if bar is not None:
            bar(None)
        if st["best_state"] is not None:
            model.load_state_dict(st["best_state"])
        return PhaseResult(n, epoch + 1, st["step"], st["best_val"], st["skipped"], st["history"])

    def run_meta_phase(self, resume: dict[str, Any] | None = None) -> PhaseResult:
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
        self._wrap()
        gen = torch.Generator().manual_seed(cfg.train.seed + 4)
        steps_per_epoch = self.source.num_batches(cfg.train.batch_size)
        total = steps_per_epoch * pc.epochs
        warm = warmup_steps(pc.warmup_steps, total, pc.warmup_max_fraction)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, warm, total, pc.scheduler))
        objects = {"optimizer": opt, "scheduler": sched, "generator": gen}
        st = self._start(4, resume, {
            "epoch": 0, "batch": 0, "step": 0, "best_val": -math.inf, "best_state": None,
            "skipped": 0, "consecutive": 0, "history": [], "sums": {}, "count": 0, "u_epoch": [],
        }, objects)
        # Accuracy guard (issue 4): a controller is kept only if its gated validation loss stays
        # within phase4.loss_tolerance of the same model with every block run. The starting
        # controller runs every block, so it is the fallback when no epoch qualifies.
        full_val = self.validation_loss(3)
        # η is priced in a loss unit ℓ̄ (phase4.loss_unit): R_b = −ℓ_b/ℓ̄ − η Σ C_i g_bi. With
        # "outcome" (default) ℓ̄ is the outcome's own variance / class entropy, so η = 0.05 means
        # "running every block is worth 5% of the outcome's variance" on every data set; "train"
        # and "val" use the full model's mean loss. (The raw −ℓ_b of design §3.5 is the same
        # family with η' = η·ℓ̄.)
        if "loss_scale" not in st:
            if pc.loss_unit == "outcome":
                unit = self.outcome_loss_unit()
            elif pc.loss_unit == "val":
                unit = full_val
            else:
                unit = self.mean_finite_loss(self.source.probe(LOSS_SCALE_ROWS))
            st["loss_scale"] = max(unit, 1e-8)
        self._loss_scale = st["loss_scale"]
        # The guard allows loss_tolerance of the same unit: relative to the full model's loss for
        # "train"/"val", of the outcome's own loss scale for "outcome".
        slack = st["loss_scale"] if pc.loss_unit == "outcome" else abs(full_val)
        limit = full_val + pc.loss_tolerance * slack
        if st["best_state"] is None and st["epoch"] == 0 and st["step"] == 0:
            cal = self.calibrate_gates(costs, pc.eta, limit, pc.ate_tolerance, pc.cate_tolerance)
            st["best_val"] = cal.reward if cal.passed else -math.inf
            st["best_state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        bar = self.progress(total, "phase 4") if self.progress else None
        all_params = [p for g in groups_ for p in g["params"]]
        epoch = st["epoch"]
        for epoch in range(st["epoch"], pc.epochs):
            model.train()
            for b, batch_g in self.source.batches(cfg.train.batch_size,
                                                  cfg.train.seed * 1000 + 400 + epoch, st["batch"]):
                if cfg.train.max_steps and st["step"] >= cfg.train.max_steps:
                    break
                step = st["step"]
                batch, local = self._local(batch_g)
                noise = self._noise(gen, len(batch_g), local)
                # Non-finite inputs are skipped before the forward: NaN utilities cannot be sampled.
                ok = bool(torch.isfinite(batch.x).all())
                if ok:
                    with self.autocast():
                        loss, logs, out = self._meta_loss(batch, noise, costs, step, batch_g, local)
                    ok = bool(torch.isfinite(loss))
                if ok:
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    gnorm = torch.nn.utils.clip_grad_norm_(all_params, cfg.train.grad_clip)
                    ok = bool(torch.isfinite(gnorm))
                if not ok:
                    opt.zero_grad(set_to_none=True)
                    self._skip(4, st, epoch)
                else:
                    st["consecutive"] = 0
                    opt.step()
                    logs["grad_norm"] = float(gnorm)
                    logs["lr"] = opt.param_groups[0]["lr"]
                    self.logger.scalars(logs, self.global_step)
                    st["u_epoch"].append(out.u.detach())
                    for k, val in logs.items():
                        st["sums"][k] = st["sums"].get(k, 0.0) + val
                    st["count"] += 1
                    if bar is not None:
                        bar(logs["rl/reward"])
                sched.step()
                st["step"] += 1
                st["batch"] = b + 1
                self.global_step += 1
                self._after_step(4, st, objects)
            if st["u_epoch"]:
                u_all = torch.cat(st["u_epoch"])  # (N, n)
                for i, (name, _) in enumerate(model.blocks()):
                    self.logger.histogram(f"utility/{name}", u_all[:, i], self.global_step)
                # Seed §IX: watch that u does not collapse to one side. Mean binary entropy of
                # u in bits: 1 at u = 0.5, 0 when every utility sits at 0 or 1.
                u_c = u_all.clamp(1e-6, 1 - 1e-6)
                ent = float(-(u_c * torch.log2(u_c) + (1 - u_c) * torch.log2(1 - u_c)).mean())
                self.logger.scalar("rl/utility_entropy_bits", ent, self.global_step)
                if ent < pc.collapse_entropy and not getattr(self, "_warned_collapse", False):
                    self._warned_collapse = True
                    side = "run" if float(u_all.mean()) >= 0.5 else "skip"
                    print(f"csna: warning: phase 4 epoch {epoch + 1}: utilities collapsed to '{side}' "
                          f"(entropy {ent:.3f} bits < {pc.collapse_entropy}); raise phase4.entropy_beta "
                          f"or change phase4.eta", file=sys.stderr)
            cal = self.calibrate_gates(costs, pc.eta, limit, pc.ate_tolerance, pc.cate_tolerance)
            val_reward, val_loss, drift = cal.reward, cal.loss, cal.ate_drift
            rec = {k: v / max(st["count"], 1) for k, v in st["sums"].items()}
            rec.update({"epoch": epoch + 1, "val/reward": val_reward, "val/task_gated": val_loss,
                        "val/gate_threshold": float(model.gate_threshold),
                        "val/task_full": full_val, "val/ate_drift": drift, "val/cate_drift": cal.cate_drift,
                        "skipped": st["skipped"]})
            st["history"].append(rec)
            self.logger.scalars({"val/reward": val_reward, "val/task_gated": val_loss,
                                 "train/skipped_batches": st["skipped"]}, self.global_step)
            if cal.passed and val_reward > st["best_val"] + 1e-6:
                st["best_val"] = val_reward
                st["best_state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
            st.update(epoch=epoch + 1, batch=0, sums={}, count=0, u_epoch=[])
            if (cfg.train.max_steps and st["step"] >= cfg.train.max_steps) or epoch + 1 >= pc.epochs:
                break
            self._save_latest(4, st, objects)  # epoch end
            if self._signal is not None:
                raise TrainingInterrupted(self._signal, 4, st["step"], self.run_dir)
        if bar is not None:
            bar(None)
        if st["best_state"] is not None:
            model.load_state_dict(st["best_state"])
        return PhaseResult(4, epoch + 1, st["step"], st["best_val"], st["skipped"], st["history"])

    def _meta_loss(self, batch: Split, noise: torch.Tensor | None, costs: torch.Tensor, step: int,
                   batch_g: Split, local: torch.Tensor) -> tuple[torch.Tensor, dict[str, float], Any]:
        """Actor-critic loss of one phase-4 batch (plus L_total when fine-tuning the backbone)."""
        pc, model = self.cfg.phase4, self.model
        out = self.fwd(batch.x, depth=3, gate_mode="sample", noise=noise, with_value=True)
        per_sample = L.task_loss(out.pred, batch.y, batch.t, self.kind, reduction="none")  # (B,)
        with torch.no_grad():
            full = model(batch.x, depth=3, gate_mode="off")
        if pc.cf_weight > 0:  # the counterfactual arms must not drift from the full model's
            per_sample = per_sample + pc.cf_weight * L.counterfactual_drift(out.pred, full.pred, batch.t, self.kind)
        r = L.reward(per_sample.detach() / self._loss_scale, out.gates, costs, pc.eta)  # (B,)
        # Self-critical baseline: the same sample's reward with every block run, from a no-grad
        # pass. Each sample's own difficulty cancels out of the advantage, which leaves the effect
        # of its gates; the critic V(z) learns what is left (the expected gain of gating).
        # Without it the per-sample loss noise swamped the compute signal and the gate rate
        # drifted up instead of down.
        with torch.no_grad():
            per_full = L.task_loss(full.pred, batch.y, batch.t, self.kind, reduction="none")
            r_full = L.reward(per_full / self._loss_scale, torch.ones_like(out.gates), costs, pc.eta)
        gain = r - r_full  # (B,)
        v = out.value  # (B,) the critic's V(z)
        adv = L.advantage(gain, v)
        loss = ((L.actor_loss(out.u, out.gates, adv, pc.entropy_beta) + L.critic_loss(v, gain))
                * self.ctx.scale(len(batch), len(batch_g)))
        logs = {"rl/reward": float(r.detach().mean()), "rl/value": float(v.detach().mean()),
                "rl/gate_rate": float(out.gates.mean()), "rl/compute": float((out.gates * costs).sum(1).mean())}
        if pc.finetune_backbone:
            lam = {k: getattr(pc, f"lambda_{k}") for k in ("causal", "geometric", "dc", "dis", "stable")}
            parts = compute_parts(model, out, batch, 4, lam, step, pc.stable_every, self.ctx, batch_g, local,
                                  self.cfg.train.discrepancy, self.arm_weight)
            total_loss, _ = L.total_loss(parts, lam)
            loss = loss + total_loss
            logs["loss/total"] = float(total_loss.detach())
        return loss, logs, out

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
    def _eval_pass(self, sp: Split, depth: int, gate_mode: str = "off",
                   z: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(pred, gates) of the model in evaluation mode over ``sp``, EVAL_BATCH rows at a time,
        so a large validation sample never becomes one huge batch; ``z`` (n, k, d) is the
        encoder's output for ``sp`` when the caller already has it."""
        self.model.eval()
        preds, gates = [], []
        for i in range(0, len(sp), EVAL_BATCH):
            zi = None if z is None else z[i:i + EVAL_BATCH]
            out = self.model(sp.x[i:i + EVAL_BATCH], depth=depth, gate_mode=gate_mode, z=zi)
            preds.append(out.pred)
            gates.append(out.gates)
        g = torch.cat(gates) if gates and gates[0] is not None else None
        return torch.cat(preds), g

    @torch.no_grad()
    def _encode(self, sp: Split) -> torch.Tensor:
        """The encoder's output z (n, k, d) over ``sp`` in evaluation mode, in _eval_pass's chunks."""
        self.model.eval()
        return torch.cat([self.model.encoder(sp.x[i:i + EVAL_BATCH]) for i in range(0, len(sp), EVAL_BATCH)])

    @torch.no_grad()
    def validation_loss(self, depth: int, split: Split | None = None) -> float:
        """Factual loss on the validation split: the only model-selection signal (no
        counterfactual information is used)."""
        sp = self.val if split is None else split
        pred, _ = self._eval_pass(sp, depth)
        return float(L.task_loss(pred, sp.y, sp.t, self.kind))

    @torch.no_grad()
    def mean_finite_loss(self, split: Split) -> float:
        """Mean factual loss of the full model over the rows whose loss is finite (a row with
        NaN covariates must not turn the reward's scale into NaN)."""
        pred, _ = self._eval_pass(split, 3)
        per = L.task_loss(pred, split.y, split.t, self.kind, reduction="none")
        per = per[torch.isfinite(per)]
        return float(per.mean()) if per.numel() else 1.0

    @torch.no_grad()
    def ate_drift(self) -> float:
        """How far gating moves the average effect on the validation rows: the largest
        |mean(μ̂_k − μ̂_0) gated − the same with every block run| over treatments k, in
        standardised outcome units (probabilities for a classification outcome). Per-sample
        losses cannot see a small shift that every sample shares, yet it is all of the ATE's error.
        No outcome is used: the reference is the model itself."""
        g, _ = self._eval_pass(self.val, 3, "hard")
        f, _ = self._eval_pass(self.val, 3, "off")
        return self._ate_shift(g, f)

    def _ate_shift(self, g: torch.Tensor, f: torch.Tensor) -> float:
        """ate_drift's figure from gated and full predictions (n, K) or (n, K, C)."""
        if self.kind != "continuous":  # probability of the last class
            g, f = torch.softmax(g, -1)[..., -1], torch.softmax(f, -1)[..., -1]
        eff_g, eff_f = (g - g[:, :1]).mean(0), (f - f[:, :1]).mean(0)  # (K,)
        return float((eff_g - eff_f).abs().max())

    def _effects(self, pred: torch.Tensor) -> torch.Tensor:
        """(n, K − 1) individual effects μ̂_k − μ̂_0 of predictions (n, K) or (n, K, C):
        standardised outcome units, or the probability of the last class."""
        if self.kind != "continuous":
            pred = torch.softmax(pred, -1)[..., -1]
        return pred[:, 1:] - pred[:, :1]

    def _error_scale(self, ref: torch.Tensor) -> float:
        """The full model's own validation error, the yardstick of the effect-drift guard:
        factual RMSE (standardised units), or √Brier of the received arm for classes."""
        f = L.factual(ref, self.val.t)  # (n,) or (n, C)
        if self.kind == "continuous":
            err = (f - self.val.y.to(f.dtype)).pow(2)
        else:
            err = (torch.softmax(f, -1) - F.one_hot(self.val.y.long(), f.shape[-1]).to(f.dtype)).pow(2).sum(-1)
        err = err[torch.isfinite(err)]
        return max(float(err.mean().sqrt()) if err.numel() else 1.0, 1e-8)

    @torch.no_grad()
    def calibrate_gates(self, costs: torch.Tensor, eta: float, limit: float, ate_tolerance: float,
                        cate_tolerance: float = 0.0) -> GateCalibration:
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

        Returns:
            The chosen threshold's figures, or 0.5's when none passes (``passed`` False).
        """
        model, w = self.model, self.cfg.phase4.cf_weight
        # The encoder's output does not depend on the gates: computed once, not once per bar
        # (it is about 40% of a forward pass). Same chunks as _eval_pass, so the same numbers.
        model.eval()
        z_val = self._encode(self.val)
        ref, _ = self._eval_pass(self.val, 3, "off", z_val)
        extra = None
        if cate_tolerance > 0:
            scale = self._error_scale(ref)
            extra = self.source.probe(CATE_ROWS)
            z_x = self._encode(extra)
            ref_x, _ = self._eval_pass(extra, 3, "off", z_x)
        found: dict[float, GateCalibration] = {}
        for t in GATE_THRESHOLDS:
            model.gate_threshold.fill_(t)
            pred, gates = self._eval_pass(self.val, 3, "hard", z_val)
            per = L.task_loss(pred, self.val.y, self.val.t, self.kind, reduction="none")
            if w > 0:
                per = per + w * L.counterfactual_drift(pred, ref, self.val.t, self.kind)
            r = float(L.reward(per / getattr(self, "_loss_scale", 1.0), gates, costs, eta).mean())
            loss, ate = float(per.mean()), self._ate_shift(pred, ref)
            cate = 0.0
            if extra is not None:
                pred_x, _ = self._eval_pass(extra, 3, "hard", z_x)
                shift = torch.cat([self._effects(pred) - self._effects(ref),
                                   self._effects(pred_x) - self._effects(ref_x)])  # (n, K − 1)
                shift = shift[torch.isfinite(shift).all(1)]
                cate = float(shift.pow(2).mean().sqrt()) / scale if shift.numel() else 0.0
            ok = loss <= limit and ate <= ate_tolerance and (extra is None or cate <= cate_tolerance)
            found[t] = GateCalibration(r, t, loss, ate, cate, ok)
        ok = [f for f in found.values() if f.passed]
        # max() keeps the first of equal rewards: the lowest threshold, i.e. the most blocks run.
        best = max(ok, key=lambda f: f.reward) if ok else found.get(0.5) or found[GATE_THRESHOLDS[0]]
        model.gate_threshold.fill_(best.threshold)
        return best

    @torch.no_grad()
    def outcome_loss_unit(self) -> float:
        """The loss of knowing nothing about x: the variance of the (standardised) training
        outcome, or the cross-entropy of the training class frequencies."""
        y = self.source.probe(LOSS_SCALE_ROWS).y
        if self.kind == "continuous":
            return float(y.float().var()) if len(y) > 1 else 1.0
        freq = torch.bincount(y, minlength=max(self.model.n_classes, 2)).double()
        freq = freq[freq > 0] / freq.sum()
        return float(-(freq * freq.log()).sum())

    @torch.no_grad()
    def gated_validation_loss(self) -> float:
        """Factual validation loss of the model as it will be used: hard gates."""
        return float(self._gated_validation_losses()[0].mean())

    @torch.no_grad()
    def _gated_validation_losses(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per validation row: the gated model's factual loss plus phase4.cf_weight × its
        counterfactual drift from the full model (n_val,), and the gates (n_val, n)."""
        pred, gates = self._eval_pass(self.val, 3, "hard")
        per = L.task_loss(pred, self.val.y, self.val.t, self.kind, reduction="none")
        w = self.cfg.phase4.cf_weight
        if w > 0:
            ref, _ = self._eval_pass(self.val, 3, "off")
            per = per + w * L.counterfactual_drift(pred, ref, self.val.t, self.kind)
        return per, gates

    @torch.no_grad()
    def validation_reward(self, costs: torch.Tensor, eta: float) -> float:
        per, gates = self._gated_validation_losses()
        return float(L.reward(per / getattr(self, "_loss_scale", 1.0), gates, costs, eta).mean())

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
            # A phase checkpoint is also a resume point: the next phase reseeds every RNG.
            "kind": "phase",
            "done": True,
            "global_step": self.global_step,
            "results": {k: dataclasses.asdict(v) for k, v in self.results.items()},
            "rng": rng_state(),
        }
        atomic_save(payload, self.run_dir / ph.checkpoint)


def phase_config(cfg: Config, n: int) -> PhaseConfig:
    return cfg.phase(n)
