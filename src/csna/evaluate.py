"""metrics.json for a trained run (design §6, "Interface: metrics.json").

"in" are the units used for training and validation, "out" the held-out test units, as in the
treatment-effect literature; data evaluated without a split is all "out". With the Meta Utility
Layer trained, the plain names describe the gated model and ``*_full`` the same model with
every block run. Population quantities (ATE, ATT, overlap) use every row of the data given;
the doubly-robust ATE / ATT (csna.dr) the non-test rows with an out-of-fold μ̂.

Shape alphabet: n rows, p features, K treatments, C classes, k nodes, d width, h heads,
nb gated blocks.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from . import losses as L
from . import metrics as M
from .config import Config, DataConfig
from .splits import base_split_seed
from .data import CausalData, DataError
from .data.chunks import row_split
from .data.tables import data_fingerprint
from .dr import dr_effects
from .propensity import arm_shares, stabilised_weights
from .predict import predict_features
from .prepare import load_data
from .rundir import Run

BATCH = 4096  # rows per forward pass; metrics never depend on it
JACOBIAN_ROWS = 256  # the spectral norm is a per-row quantity; a few hundred rows estimate it well
Z_NOISE = 0.01  # z-stability perturbation, in standard deviations of each feature
N_BOOT = 1000


@dataclass
class Evaluation:
    """The metrics and the arrays the figures are drawn from."""

    metrics: dict[str, Any]
    arrays: dict[str, Any] = field(default_factory=dict)


def _source_key(d: DataConfig) -> str:
    return d.source if d.source in ("ihdp", "synthetic") else str(Path(d.source).resolve())


def splits_for_data(run: Run, data: CausalData, data_cfg: Config) -> dict[str, np.ndarray] | None:
    """The split to evaluate ``data`` (read with ``data_cfg``, e.g. ``csna evaluate --data``) by.

    The run's own split when ``data`` is the table the run was trained on: the same source read
    the same way, or the same content (``data_fingerprint``: covariates, treatment, outcome)
    as the run's source reads now. A streamed run's rows split by their row hash. Otherwise
    None: every row is new data, "out" of sample.
    """
    own = run.cfg.data
    same_source = (_source_key(own) == _source_key(data_cfg.data)
                   and replace(own, source="") == replace(data_cfg.data, source=""))
    if not same_source:
        try:
            own_data = load_data(run.cfg)
        except (DataError, OSError):  # the training table is gone: nothing to compare with
            return None
        if data_fingerprint(own_data) != data_fingerprint(data):
            return None
    if own.stream:
        seed = base_split_seed(run.cfg)
        part = row_split(np.arange(data.n), tuple(own.split), seed)  # (n,) 0 train, 1 val, 2 test
        return {k: np.flatnonzero(part == i) for i, k in enumerate(("train", "val", "test"))}
    return run.splits


def split_indices_of(run: Run, data: CausalData) -> dict[str, np.ndarray]:
    """train / val / test rows of ``data``; without a usable split, every row is test."""
    s = run.splits
    if s is None or max((int(np.max(v)) for v in s.values() if len(v)), default=-1) >= data.n:
        empty = np.zeros(0, dtype=np.int64)
        return {"train": empty, "val": empty, "test": np.arange(data.n)}
    return {k: np.asarray(v, dtype=np.int64) for k, v in s.items()}


def gate_mode_of(run: Run) -> str:
    """How users run the model: hard gates once phase 4 trained the Meta Utility Layer."""
    return "hard" if run.gated and run.model.n_blocks else "off"


# --- effect and task metrics of the core issue ----------------------------------------------


def effect_metrics(mu_hat: np.ndarray, data: CausalData, idx: np.ndarray, suffix: str) -> dict[str, float]:
    """√PEHE, ε_ATE, ε_ATT on rows ``idx``, and Pearson r of τ̂ for "out" (needs the true μ)."""
    out: dict[str, float] = {}
    if data.mu is None or mu_hat.shape[1] < 2 or len(idx) == 0:
        return out
    tau = data.mu[idx, 1] - data.mu[idx, 0]
    tau_hat = mu_hat[idx, 1] - mu_hat[idx, 0]
    out[f"sqrt_pehe_{suffix}"] = M.sqrt_pehe(tau, tau_hat)
    out[f"eps_ate_{suffix}"] = M.eps_ate(tau, tau_hat)
    if (data.T[idx] == 1).any():
        out[f"eps_att_{suffix}"] = M.eps_att(tau, tau_hat, data.T[idx])
    if suffix == "out":
        out["pearson_ite"] = M.pearson(tau, tau_hat)
    return out


def factual_metrics(res: dict[str, np.ndarray], data: CausalData, idx: np.ndarray, kind: str) -> dict[str, float]:
    t = data.T[idx]
    y = data.Y[idx]
    out: dict[str, float] = {}
    if len(idx) == 0:
        return out
    if kind == "continuous":
        f = res["mu"][idx, t]
        out["mse_out"] = M.mse(y, f)
        out["rmse_out"] = M.rmse(y, f)
    else:
        p = res["probs"][idx, t]  # (n, C)
        out["accuracy_out"] = M.accuracy(y, p.argmax(-1))
        if kind == "binary" and len(np.unique(y)) == 2:
            out["auc_out"] = M.auc_roc(y, p[:, 1])
    return out


def core_metrics(run: Run, data: CausalData) -> dict[str, Any]:
    """The effect and task metrics of issue 2 for the gated model and, when gated, the full one."""
    x = run.prep.features(data.X)
    splits = split_indices_of(run, data)
    idx_in = np.sort(np.concatenate([splits["train"], splits["val"]]))
    idx_out = np.asarray(splits["test"])
    m: dict[str, Any] = {"n_train": int(len(splits["train"])), "n_val": int(len(splits["val"])),
                         "n_test": int(len(idx_out)),
                         # no row of the data trained or selected the model: every row is "out"
                         "eval_new_data": len(idx_in) == 0}
    variants = [("", True)] + ([("_full", False)] if run.gated else [])
    for suffix, gates in variants:
        t0 = time.perf_counter()
        res = predict_features(run, x, gates=gates)
        wall = (time.perf_counter() - t0) * 1000.0
        mu_hat = res["mu"]
        part: dict[str, Any] = {}
        if mu_hat.shape[1] >= 2:
            ite = mu_hat[:, 1] - mu_hat[:, 0]
            part["ate_hat"] = float(ite.mean())
            part["ate_hat_out"] = float(ite[idx_out].mean()) if len(idx_out) else float("nan")
        part.update(effect_metrics(mu_hat, data, idx_in, "in"))
        part.update(effect_metrics(mu_hat, data, idx_out, "out"))
        part.update(factual_metrics(res, data, idx_out, run.prep.outcome_type))
        part["wall_predict_all_ms"] = wall
        m.update({f"{k}{suffix}": v for k, v in part.items()})
    if data.mu is not None and data.mu.shape[1] >= 2:
        m["ate_true"] = float((data.mu[:, 1] - data.mu[:, 0]).mean())
    return m


# --- forward passes ---------------------------------------------------------------------------


def _chunks(x: np.ndarray, device: torch.device):
    for i in range(0, len(x), BATCH):
        yield torch.from_numpy(np.ascontiguousarray(x[i:i + BATCH], dtype=np.float32)).to(device)


@torch.no_grad()
def forward_rows(model, x: np.ndarray, gate_mode: str = "off") -> dict[str, np.ndarray]:
    """One pass over ``x`` (n, p) in batches.

    Returns pred (n, K) standardised means or (n, K, C) logits, prop (n, K) probabilities,
    z and h (n, k, d), u and gates (n, nb) when gated, and attn (h, k, k): the last attention
    block's map averaged over the rows it ran on (all rows with ``gate_mode="off"``).
    """
    model.eval()
    dev = model.y_mean.device
    keep: dict[str, list[torch.Tensor]] = {}
    attn_sum, attn_rows = None, 0
    for xb in _chunks(x, dev):
        out = model(xb, gate_mode=gate_mode)
        parts = {"pred": out.pred, "prop": torch.softmax(out.prop_logits, -1), "z": out.z, "h": out.h,
                 "u": out.u, "gates": out.gates}
        for k, v in parts.items():
            if v is not None:
                keep.setdefault(k, []).append(v.double().cpu())
        if out.r is not None and len(model.attention):
            ran = out.gates[:, -1] > 0.5 if out.gates is not None else None
            if ran is None or bool(ran.any()):
                a = model.attention[-1].last_attn.double().cpu()  # (B_on, h, k, k)
                attn_sum = a.sum(0) if attn_sum is None else attn_sum + a.sum(0)
                attn_rows += a.shape[0]
    res = {k: torch.cat(v).numpy() for k, v in keep.items()}
    if attn_sum is not None:
        res["attn"] = (attn_sum / attn_rows).numpy()
    return res


@torch.no_grad()
def flops_per_sample(model, x: np.ndarray, gate_mode: str = "off") -> float:
    """FLOPs per row of a real forward pass over ``x``, counted by ``FlopCounterMode``."""
    model.eval()
    if len(x) == 0:
        return float("nan")
    with FlopCounterMode(display=False) as fc:
        for xb in _chunks(x, model.y_mean.device):
            model(xb, gate_mode=gate_mode)
    return float(fc.get_total_flops()) / len(x)


@torch.no_grad()
def wall_ms(model, x: np.ndarray, gate_mode: str = "off", repeats: int = 5) -> float:
    """Median wall time in ms of one forward pass over all of ``x`` (after a warm-up pass)."""
    model.eval()
    dev = model.y_mean.device
    xs = list(_chunks(x, dev))

    def once() -> float:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        for xb in xs:
            model(xb, gate_mode=gate_mode)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        return (time.perf_counter() - t0) * 1000.0

    once()
    return statistics.median(once() for _ in range(repeats))


# --- everything together ----------------------------------------------------------------------


def noise_variance(data: CausalData) -> np.ndarray:
    """True outcome-noise variance per treatment (K,), for KL(P_true(Y|do(t)) ‖ P̂(Y|do(t))).

    ``data.extra["noise_var"]`` when the source states it, 1 for IHDP (unit-variance noise),
    else the factual residual variance around the true μ, per arm.
    """
    if "noise_var" in data.extra:
        return np.broadcast_to(np.asarray(data.extra["noise_var"], dtype=np.float64), (data.n_treatments,))
    if data.name.startswith("ihdp"):
        return np.ones(data.n_treatments)
    r2 = (data.Y.astype(np.float64) - data.mu[np.arange(data.n), data.T]) ** 2  # (n,)
    return np.array([r2[data.T == t].mean() if (data.T == t).any() else r2.mean()
                     for t in range(data.n_treatments)])


def causal_metrics(run: Run, data: CausalData, fw: dict[str, np.ndarray], te: np.ndarray) -> dict[str, Any]:
    """On the rows ``te``: kl_do_ipw, L_causal's KL(P̂(Y|do(t)) ‖ P_IPW(Y|do(t))) against the
    observed outcomes reweighted by the saved propensity (fitted on training rows, so
    out-of-sample here), which the truth makes small; kl_do_obs, the seed's literal
    KL(P(Y|do(T)) ‖ P(Y|T)) of the model, a diagnostic of how confounded the data look to it
    (zero for a model that ignores confounding); and, with the truth, kl_do_true."""
    model, kind = run.model, run.prep.outcome_type
    out: dict[str, Any] = {}
    t = torch.from_numpy(data.T[te].astype(np.int64))
    pred = torch.from_numpy(fw["pred"])  # (n, K) or (n, K, C)
    sigma2 = model.sigma2.detach().cpu().double()  # (K,) in standardised units
    min_group = 4
    if int(torch.bincount(t, minlength=model.n_treatments).max()) >= min_group:
        out["kl_do_obs"] = float(M.causal_kl_obs(pred, t, kind, sigma2 if kind == "continuous" else None, min_group))
    else:
        out["kl_do_obs"] = None
    out["kl_do_ipw"] = None
    # Its noise: at the true model on a confounded SCM it exceeds 0.05 nats on 43% of draws with
    # 100 test rows and 0% with 1,000; the report judges it only with enough rows per arm.
    out["kl_do_ipw_min_arm"] = int(torch.bincount(t, minlength=model.n_treatments).min()) if len(te) else 0
    prop = run.prep.propensity
    if prop is not None and len(te) and int(torch.bincount(t, minlength=model.n_treatments).min()) >= min_group:
        e = prop.predict_proba(run.prep.features(data.X.iloc[te]))  # (n, K)
        w = torch.from_numpy(stabilised_weights(e, data.T[te].astype(np.int64),
                                                arm_shares(data.T[te], model.n_treatments)))
        y = data.Y[te].astype(np.float64)
        y_t = torch.from_numpy((y - float(model.y_mean)) / float(model.y_std) if kind == "continuous"
                               else y.astype(np.int64))
        out["kl_do_ipw"] = float(L.causal_kl(pred, t, kind, y_t, w, sigma2 if kind == "continuous" else None,
                                             min_group))
    if data.mu is not None and kind != "multiclass" and len(te):
        if kind == "continuous":
            y_std, y_mean = float(model.y_std), float(model.y_mean)
            mu_hat = fw["pred"] * y_std + y_mean  # (n, K) outcome units
            out["kl_do_true"] = M.kl_do_true_vs_hat(data.mu[te], mu_hat, kind, noise_variance(data),
                                                    sigma2.numpy() * y_std**2)
        else:
            mu_hat = torch.softmax(pred, -1)[..., 1].numpy()  # (n, K) P(Y=1 | x, do(t))
            out["kl_do_true"] = M.kl_do_true_vs_hat(data.mu[te], mu_hat, kind)
    return out


def stability_metrics(run: Run, x_out: np.ndarray, z: np.ndarray) -> dict[str, Any]:
    """z_stability and the Jacobian spectral norm of ∂z/∂x (mean and max over ≤ 256 test rows)."""
    model, seed = run.model, run.cfg.train.seed
    dev = model.y_mean.device
    rng = np.random.default_rng(seed)
    noisy = x_out + (Z_NOISE * x_out.std(axis=0)) * rng.standard_normal(x_out.shape)  # (n, p)
    with torch.no_grad():
        z_noisy = torch.cat([model.encode(xb).double().cpu() for xb in _chunks(noisy, dev)]).numpy()
    n = len(x_out)
    xj = torch.from_numpy(np.ascontiguousarray(x_out[:JACOBIAN_ROWS], dtype=np.float32)).to(dev)
    j_mean, j_max = M.jacobian_spectral_norm(model.encode, xj, iters=20, seed=seed)
    return {"z_stability": M.z_stability(z.reshape(n, -1), z_noisy.reshape(n, -1)),
            "jacobian_spectral_norm": j_mean, "jacobian_spectral_norm_max": j_max}


def block_gates(model, fw: dict[str, np.ndarray], n: int) -> np.ndarray:
    """(n, nb) 0/1: which rows each block ran on in the pass ``fw`` (0 for blocks its depth skips)."""
    names = [name for name, _ in model.blocks()]
    depth = int(model.depth)
    reached = np.array([depth >= (2 if nm.startswith("lattice") else 3) for nm in names], dtype=np.float64)
    g = np.broadcast_to(reached, (n, len(names))).copy()
    if "gates" in fw:
        g[:, : fw["gates"].shape[1]] = fw["gates"]
    return g


def attention_by_distance(attn: np.ndarray, dist: np.ndarray, unrelated: np.ndarray) -> dict[str, Any]:
    """Mean attention weight per (query, key) pair: self, causally near (|d| ≤ 1), far, unrelated.

    Args:
        attn: (h, k, k) attention averaged over rows.
        dist: (k, k) causal distances; unrelated: (k, k) bool.
    """
    k = dist.shape[0]
    eye = np.eye(k, dtype=bool)
    related = ~unrelated & ~eye
    groups = {"self": eye, "near": related & (np.abs(dist) <= 1), "far": related & (np.abs(dist) >= 2),
              "unrelated": unrelated}
    return {f"attn_weight_{g}": (float(attn[:, mask].mean()) if mask.any() else None) for g, mask in groups.items()}


def evaluate_run(run: Run, data: CausalData, quiet: bool = False) -> Evaluation:
    """Every metric of design §6 for ``run`` on ``data``, plus the arrays the figures need."""
    t_start = time.perf_counter()
    model = run.model
    model.eval()
    kind, seed = run.prep.outcome_type, run.cfg.train.seed
    x = run.prep.features(data.X)  # (n, p)
    splits = split_indices_of(run, data)
    te = splits["test"]
    x_out = x[te]
    m = core_metrics(run, data)
    m["ensemble_members"] = len(run.all_members())
    # The stability, structure, attention and gate metrics below read the first member only.
    m["structure_members"] = 1
    mode = gate_mode_of(run)
    names = [name for name, _ in model.blocks()]
    arrays: dict[str, Any] = {"block_names": names, "gated": run.gated, "k": model.k,
                              "node_names": list(model.node_names), "te": te,
                              "outcome_type": kind}

    # population effects with their interval, and overlap (every row of the data given)
    res_all = predict_features(run, x, gates=True)
    prop = res_all["propensity"]  # (n, K)
    if res_all["mu"].shape[1] >= 2:
        m.update(M.ate_with_ci(res_all["mu"][:, 1] - res_all["mu"][:, 0], data.T, n_boot=N_BOOT, seed=seed))
        # Doubly robust, cross-fitted over the non-test rows (csna.dr): consistent when either
        # the outcome model or the propensity is right, with a standard error.
        m.update(dr_effects(run, data))
    ov = M.overlap_report(prop)
    m.update(overlap_frac_extreme=ov["frac_extreme"], propensity_min=ov["min"], propensity_max=ov["max"])
    if ov["warn"] and not quiet:
        print(f"csna: warning: poor overlap: {ov['frac_extreme']:.0%} of units have a propensity ê(x) "
              f"outside [0.05, 0.95]; effects there are extrapolation", file=sys.stderr)
    arrays.update(propensity=prop, T=data.T)
    if data.mu is not None and res_all["mu"].shape[1] >= 2 and len(te):
        arrays.update(tau_true=data.mu[te, 1] - data.mu[te, 0],
                      tau_hat=res_all["mu"][te, 1] - res_all["mu"][te, 0])

    A_t = model.lattice.adjacency().detach()  # (k, k)
    dist, unrel = model.causal_distances(A_t)  # what attention reads: A's dominant orientation
    A = A_t.double().cpu().numpy()
    arrays.update(A=A, dist=dist.cpu().numpy(), unrelated=unrel.cpu().numpy())
    m["graph_connectivity"] = M.graph_connectivity(A, model.cfg.edge_eps)
    arrays["theta"] = [(blk.attn.theta0.detach().cpu().numpy(), blk.attn.w.detach().cpu().numpy())
                       for blk in model.attention]
    arrays["d_max"] = model.cfg.d_max

    if len(te):
        fw = forward_rows(model, x_out, mode)
        fw_full = fw if mode == "off" else forward_rows(model, x_out, "off")
        fw_hard = fw if mode == "hard" or not model.n_blocks else forward_rows(model, x_out, "hard")
        m.update(causal_metrics(run, data, fw, te))
        m.update(stability_metrics(run, x_out, fw["z"]))
        if "h" in fw:
            m["laplacian_smoothness"] = M.laplacian_smoothness_np(fw["h"], A)
        gates = block_gates(model, fw, len(te))
        m["utility_entropy"] = M.utility_entropy(gates) if names else 0.0
        for i, name in enumerate(names):
            m[f"gate_rate_{name.replace('.', '_')}"] = float(gates[:, i].mean())
        m["gate_threshold"] = float(model.gate_threshold)  # the bar phase 4 calibrated
        if "attn" in fw_full:
            m.update(attention_by_distance(fw_full["attn"], arrays["dist"], arrays["unrelated"]))
            arrays["attn"] = fw_full["attn"]
        if "u" in fw_hard:
            arrays["u"] = fw_hard["u"]
        # Compute is the whole ensemble's: every member runs (its own gates) on every row.
        members = run.all_members()
        m["flops_full"] = sum(flops_per_sample(r.model, x_out, "off") for r in members)
        m["flops_gated"] = (m["flops_full"] if mode == "off" else
                            sum(flops_per_sample(r.model, x_out, gate_mode_of(r)) for r in members))
        # Signed: the controller costs FLOPs too, and gates that skip little make the gated pass
        # dearer than the full one; that shows as a negative reduction, never as 0.
        m["flops_reduction"] = M.flops_reduction(m["flops_full"], m["flops_gated"])
        m["wall_full_ms"] = sum(wall_ms(r.model, x_out, "off") for r in members)
        m["wall_gated_ms"] = (m["wall_full_ms"] if mode == "off" else
                              sum(wall_ms(r.model, x_out, gate_mode_of(r)) for r in members))
    m["time_evaluate_s"] = time.perf_counter() - t_start
    return Evaluation(m, arrays)


def write_metrics(metrics: dict[str, Any], run_dir: str | Path) -> Path:
    path = Path(run_dir) / "metrics.json"
    clean = {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in metrics.items()}
    path.write_text(json.dumps(clean, indent=2, sort_keys=True) + "\n")
    return path
