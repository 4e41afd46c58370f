"""The training loop: phases 1–3 of seed §V (supervised training of the modules the one
registry ``phases.PHASES`` names), and the machinery every phase shares: batches, data-parallel
rows, precision, the learning-rate schedule, skipped batches, checkpoints. Phase 4, the Meta
Utility Layer's reinforcement learning, is ``csna.meta``.

Shape alphabet: B batch, p features, K treatments, n gateable blocks.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from . import losses as L
from .checkpoint import LATEST, CheckpointError, atomic_save
from .config import Config
from .dist import current
from .logger import RunLogger
from .meta import LOSS_SCALE_ROWS, run_meta_phase
from .metrics import graph_connectivity
from .model import CSNAModel
from .nn.structure import STRUCTURE_LR_SCALE, dag_weight, project_to_dag
from .phases import (PhaseResult, get_phase, lambda_factor, learning_rate, plateau_factor, set_trainable,
                     warmup_steps)
from .propensity import Propensity, arm_shares, crossfit_weights, fit_propensity, stabilised_weights
from .resume import (TrainingError, TrainingInterrupted, phase_checkpoint, restore_progress, signals_saved,
                     test_hook, training_state)
from .schedule import resolve_schedule
from .skeleton import PC_ROWS, apply_skeleton_prior
from .sources import EVAL_BATCH, Split, TensorSource

__all__ = ["Trainer", "TrainingError", "TrainingInterrupted", "set_seed", "phase_seed"]

def set_seed(seed: int) -> None:
    """Seed torch, numpy and Python's random (design §5: seeds fixed everywhere)."""
    import random

    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def phase_seed(seed: int, n: int) -> int:
    """Every RNG is reseeded at the start of each phase, so a phase depends only on the
    model it starts from, the seed and its number (a phase checkpoint is a resume point)."""
    return seed * 10 + n


def uses_causal(cfg: Config) -> bool:
    """Whether any phase computes L_causal (and so needs inverse-propensity weights): phases 1–3
    always do, for the logs when λ_causal is 0 (``losses.compute_parts``)."""
    return any("causal" in get_phase(n).losses for n in (1, 2, 3))


def set_theta_learnable(model: CSNAModel, flag: bool) -> None:
    for blk in model.attention:
        blk.attn.set_theta_learnable(flag)


class Trainer:
    """Runs the phases on prepared tensors and writes phase checkpoints to ``run_dir``.

    With a run directory, the whole training state (model, optimizer, position in
    the data, best-validation state, history, every RNG state) is written to ``latest.pt``
    every ``train.checkpoint_every`` steps (at epoch ends when it is 0), so a killed run resumes
    exactly where it stopped (``fit(resume=state)``). SIGINT/SIGTERM save that state and raise
    ``TrainingInterrupted``.
    """

    def __init__(self, model: CSNAModel, cfg: Config, train, val: Split,
                 run_dir: Path | None = None, logger: RunLogger | None = None,
                 meta: dict[str, Any] | None = None, progress: Callable | None = None):
        """``train``: a ``Split`` held in memory, or any batch source with the methods of
        ``TensorSource`` (e.g. a stream over a table larger than memory). Automatic phase
        lengths in ``cfg`` are resolved for its rows (csna.schedule; ``train_member`` has
        done so already, for config.yaml)."""
        cfg = resolve_schedule(cfg, len(train) if isinstance(train, Split) else train.n_train)
        self.model, self.cfg, self.val = model, cfg, val
        # L_causal's reference reweights the units that received t by P(T = t)/ê_t(x), with ê
        # cross-fitted and never read from the balanced representation (csna.propensity).
        # Rows held in memory get their weights once; a stream gets a propensity fitted on its
        # probe rows, applied batch by batch (``weighted``).
        self.stream_propensity: Propensity | None = None
        self.stream_shares: np.ndarray | None = None
        if isinstance(train, Split) and train.w is None and uses_causal(cfg):
            w = crossfit_weights(train.x.cpu().numpy(), train.t.cpu().numpy(), model.n_treatments, cfg.train.seed)
            train = Split(train.x, train.t, train.y, torch.from_numpy(w).to(train.x))
        elif not isinstance(train, Split) and uses_causal(cfg):
            probe = train.probe(LOSS_SCALE_ROWS)
            x_p, t_p = probe.x.cpu().numpy(), probe.t.cpu().numpy()
            self.stream_propensity = fit_propensity(x_p, t_p, model.n_treatments)
            self.stream_shares = arm_shares(t_p, model.n_treatments)
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
        self.signal_received: int | None = None  # SIGINT/SIGTERM while training (resume.signals_saved)
        self.loss_scale = 1.0  # phase 4's loss unit ℓ̄ (run_meta_phase sets it)
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

    def weighted(self, batch: Split) -> Split:
        """``batch`` with its inverse-propensity weights: a streamed batch gets them from the
        propensity fitted on the stream's probe rows; rows held in memory have them already."""
        if batch.w is not None or self.stream_propensity is None:
            return batch
        t = batch.t.cpu().numpy()
        w = stabilised_weights(self.stream_propensity.predict_proba(batch.x.cpu().numpy()), t, self.stream_shares)
        return Split(batch.x, batch.t, batch.y, torch.from_numpy(w).to(batch.x))

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
                self.results[n] = self.run_phase(n, state) if n < 4 else run_meta_phase(self, state)
                self.save_phase_checkpoint(n)
                self._hook(n, "end")
                self.save_latest(n, None, done=True)
                if self.signal_received is not None:
                    raise TrainingInterrupted(self.signal_received, n, 0, self.run_dir)
        return self.results

    def wrap(self) -> None:
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

    def local_rows(self, batch_g: Split) -> tuple[Split, torch.Tensor]:
        """This rank's rows of a global batch (all of them in a single process)."""
        if not self.ctx.enabled:
            return batch_g, torch.arange(len(batch_g), device=batch_g.x.device)
        idx = self.ctx.local_rows(len(batch_g), batch_g.x.device)
        return batch_g.rows(idx), idx

    def gate_noise(self, gen: torch.Generator | None, n_global: int, local: torch.Tensor) -> torch.Tensor | None:
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
        # torch's fused AdamW kernel, on CUDA and on CPU alike (torch leaves it off by default):
        # one kernel for every parameter instead of a loop or a chain of multi-tensor ops. On
        # this model's 72 small tensors a CPU step takes a quarter of the foreach update's time
        # (benchmarks/optimizer_step.py); it is the same formula, so the numbers differ from
        # foreach only in float rounding (5e-8 after 100 steps).
        return torch.optim.AdamW(params, lr=lr, betas=(t.beta1, t.beta2), weight_decay=t.weight_decay, fused=True)

    def start_phase(self, n: int, state: dict[str, Any] | None, fresh: dict[str, Any], objects: dict[str, Any]
                    ) -> dict[str, Any]:
        """The progress of phase ``n``: fresh (and every RNG seeded for the phase), or taken
        from a saved mid-phase ``state`` with the optimizer, generator and RNGs restored."""
        if state is None:
            set_seed(phase_seed(self.cfg.train.seed, n))
            return fresh
        return restore_progress(state, objects, self.run_dir / LATEST if self.run_dir else None, n)

    def after_step(self, n: int, st: dict[str, Any], objects: dict[str, Any]) -> None:
        """Latest-state checkpoint every ``train.checkpoint_every`` steps; stop on a signal."""
        every = self.cfg.train.checkpoint_every
        if every > 0 and st["step"] % every == 0:
            self.save_latest(n, st, objects)
        self._hook(n, st["step"])
        if self.signal_received is not None:
            self.save_latest(n, st, objects)
            raise TrainingInterrupted(self.signal_received, n, st["step"], self.run_dir)

    def epoch_end(self, n: int, st: dict[str, Any], objects: dict[str, Any]) -> None:
        """Latest-state checkpoint at an epoch end only when ``train.checkpoint_every`` is 0: the
        step checkpoints bound the work a kill loses, and resuming is exact from any of them,
        while an epoch of a small table is a few steps (175 writes in a member on IHDP)."""
        if self.cfg.train.checkpoint_every == 0:
            self.save_latest(n, st, objects)
        if self.signal_received is not None:
            self.save_latest(n, st, objects)
            raise TrainingInterrupted(self.signal_received, n, st["step"], self.run_dir)

    def save_latest(self, n: int, st: dict[str, Any] | None, objects: dict[str, Any] | None = None,
                    done: bool = False) -> None:
        """Write the training state (``resume.training_state``) to ``latest.pt``, atomically."""
        if self.run_dir is not None:
            atomic_save(training_state(self, n, st, objects, done), self.run_dir / LATEST)

    def skip_batch(self, n: int, st: dict[str, Any], epoch: int) -> None:
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
        learns_graph = n == 2 and model.structure is not None
        if learns_graph:  # the structure score learns at its own, faster rate (csna.nn.structure)
            fast = {id(q) for q in model.structure.parameters()}
            params = [{"params": [q for q in params if id(q) not in fast]},
                      {"params": list(model.structure.parameters()), "lr_scale": STRUCTURE_LR_SCALE}]
        opt = self._optimizer(params, pc.lr)
        params = [q for g in opt.param_groups for q in g["params"]]
        self.wrap()
        steps_per_epoch = self.source.num_batches(cfg.train.batch_size)
        total = steps_per_epoch * pc.epochs
        if cfg.train.max_steps:
            total = min(total, cfg.train.max_steps)
        warm = warmup_steps(pc.warmup_steps, total, pc.warmup_max_fraction)
        theta_from = (int(pc.theta_learnable_from * total) if n == 3 else None)
        drop = float(getattr(pc, "block_drop", 0.0)) if n == 3 else 0.0
        gen = torch.Generator().manual_seed(cfg.train.seed + 3) if drop > 0 else None
        objects = {"optimizer": opt, "generator": gen}
        st = self.start_phase(n, resume, {
            "epoch": 0, "batch": 0, "step": 0, "best_val": math.inf, "best_state": None, "bad_epochs": 0,
            "skipped": 0, "consecutive": 0, "history": [], "sums": {}, "count": 0, "prev_z": None,
        }, objects)
        if learns_graph and pc.skeleton == "pc" and st["step"] == 0:
            apply_skeleton_prior(model, self.source.probe(PC_ROWS))
        if theta_from is not None and st["step"] > theta_from:
            set_theta_learnable(model, True)
            self.wrap()
        probe = self.source.probe(256).x
        epoch = st["epoch"]
        bar = self.progress(total, f"phase {n}") if self.progress else None
        for epoch in range(st["epoch"], pc.epochs):
            model.train()
            # Reduce-on-plateau cuts, from the validation losses of the epochs so far.
            cut = (plateau_factor([h["val/task"] for h in st["history"]]) if pc.scheduler == "plateau"
                   else 1.0)
            for b, batch_g in self.source.batches(cfg.train.batch_size,
                                                  cfg.train.seed * 1000 + n * 100 + epoch, st["batch"]):
                if cfg.train.max_steps and st["step"] >= cfg.train.max_steps:
                    break
                batch_g = self.weighted(batch_g)
                step = st["step"]
                rate = learning_rate(pc.lr, step, warm, total, pc.scheduler, cut)
                for group in opt.param_groups:
                    group["lr"] = rate * group.get("lr_scale", 1.0)
                if theta_from is not None and step == theta_from:
                    # θ0 and w are already in the optimizer; AdamW skips them while their grad is
                    # None (frozen), and updates them from here on (seed §V Phase 3).
                    set_theta_learnable(model, True)
                    self.wrap()
                batch, local = self.local_rows(batch_g)
                lam = {k: getattr(pc, f"lambda_{k}") * lambda_factor(step, warm, pc.lambda_schedule)
                       for k in ("causal", "geometric", "dc", "dis", "stable")}
                lam["effect"] = cfg.train.effect_smoothing
                if learns_graph:
                    lam.update(structure=pc.lambda_structure, sparse=pc.lambda_sparse,
                               dc=dag_weight(step / max(total, 1), pc.dag_start, pc.dag_end))
                with self.autocast():
                    if drop > 0:  # stochastic depth: the backbone learns to do without skipped blocks
                        out = self.fwd(batch.x, depth=ph.depth, gate_mode="drop", drop_rate=drop,
                                       noise=self.gate_noise(gen, len(batch_g), local))
                    else:
                        out = self.fwd(batch.x, depth=ph.depth)
                    parts = L.compute_parts(model, out, batch, n, lam, step, getattr(pc, "stable_every", 1),
                                            self.ctx, batch_g, local, self.cfg.train.discrepancy,
                                            self.arm_weight, self.cfg.train.causal_reference,
                                            self.cfg.train.factual_weights == "ipw")
                    total_loss, reg = L.total_loss(parts, lam)
                    prop_loss = model.propensity_loss(out, batch.t) * self.ctx.scale(len(batch), len(batch_g))
                ok = bool(torch.isfinite(total_loss))
                gnorm = torch.tensor(float("nan"))
                if ok:
                    opt.zero_grad(set_to_none=True)
                    (total_loss + prop_loss).backward()
                    gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
                    ok = bool(torch.isfinite(gnorm))
                if not ok:
                    opt.zero_grad(set_to_none=True)
                    self.skip_batch(n, st, epoch)
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
                    self.logger.step_scalars(logs, self.global_step)
                    for k, v in logs.items():
                        st["sums"][k] = st["sums"].get(k, 0.0) + v
                    st["count"] += 1
                    if bar is not None:
                        bar(float(total_loss.detach()))
                st["step"] += 1
                st["batch"] = b + 1
                self.global_step += 1
                self.after_step(n, st, objects)
            val = self.validation_loss(ph.depth)
            rec = {k: v / max(st["count"], 1) for k, v in st["sums"].items() if k.startswith("loss/")}
            rec.update({"epoch": epoch + 1, "val/task": val, "skipped": st["skipped"]})
            if model.n_blocks:
                rec["graph_connectivity"] = graph_connectivity(model.lattice.adjacency().detach().cpu().numpy())
            st["history"].append(rec)
            self.logger.scalars({"val/task": val, "graph/connectivity": rec.get("graph_connectivity", 0.0),
                                 "train/skipped_batches": st["skipped"]}, self.global_step)
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
            self.epoch_end(n, st, objects)
        if bar is not None:
            bar(None)
        a_end = model.lattice.adjacency().detach().clone() if learns_graph else None
        if st["best_state"] is not None:
            model.load_state_dict(st["best_state"])
        if learns_graph:
            # The graph is the one the whole schedule of h(A) shaped (the last step's, not the best
            # validation epoch's, which may precede the end of the schedule), made a DAG and fixed.
            dag = project_to_dag(a_end.cpu().numpy(), pc.edge_threshold)
            model.fix_graph(torch.as_tensor(dag, dtype=a_end.dtype, device=a_end.device),
                            cfg.model.adjust == "graph")
        return PhaseResult(n, epoch + 1, st["step"], st["best_val"], st["skipped"], st["history"])


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
        z = self.model.encode(x).flatten(1)  # (n, k·d)
        self.model.train()
        return z.mean(0), torch.cov(z.t())

    @torch.no_grad()
    def eval_pass(self, sp: Split, depth: int, gate_mode: str = "off",
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
    def encode(self, sp: Split) -> torch.Tensor:
        """The encoder's output z (n, k, d) over ``sp`` in evaluation mode, in eval_pass's chunks."""
        self.model.eval()
        return torch.cat([self.model.encode(sp.x[i:i + EVAL_BATCH]) for i in range(0, len(sp), EVAL_BATCH)])

    @torch.no_grad()
    def validation_loss(self, depth: int, split: Split | None = None) -> float:
        """Factual loss on the validation split: the only model-selection signal (no
        counterfactual information is used)."""
        sp = self.val if split is None else split
        pred, _ = self.eval_pass(sp, depth)
        return float(L.task_loss(pred, sp.y, sp.t, self.kind))


    def save_phase_checkpoint(self, n: int) -> None:
        if self.run_dir is not None:
            atomic_save(phase_checkpoint(self, n), self.run_dir / get_phase(n).checkpoint)
