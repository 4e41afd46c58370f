"""metrics.json for a trained run (design §6, "Interface: metrics.json").

"in" are the units used for training and validation, "out" the held-out test units, as in the
treatment-effect literature. With the Meta Utility Layer trained, the plain names describe the
gated model and ``*_full`` the same model with every block run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import metrics as M
from .data import CausalData
from .predict import predict_features
from .runner import Run


def effect_metrics(mu_hat: np.ndarray, data: CausalData, idx: np.ndarray, suffix: str) -> dict[str, float]:
    """√PEHE, ε_ATE, ε_ATT and Pearson r of τ̂ on rows ``idx`` (needs the true μ)."""
    out: dict[str, float] = {}
    if data.mu is None or mu_hat.shape[1] < 2 or len(idx) == 0:
        return out
    tau = data.mu[idx, 1] - data.mu[idx, 0]
    tau_hat = mu_hat[idx, 1] - mu_hat[idx, 0]
    out[f"sqrt_pehe_{suffix}"] = M.sqrt_pehe(tau, tau_hat)
    out[f"eps_ate_{suffix}"] = M.eps_ate(tau, tau_hat)
    if (data.T[idx] == 1).any():
        out[f"eps_att_{suffix}"] = M.eps_att(tau, tau_hat, data.T[idx])
    return out


def factual_metrics(res: dict[str, np.ndarray], data: CausalData, idx: np.ndarray, kind: str) -> dict[str, float]:
    t = data.T[idx]
    y = data.Y[idx]
    out: dict[str, float] = {}
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
    splits = run.splits
    idx_in = np.sort(np.concatenate([splits["train"], splits["val"]]))
    idx_out = np.asarray(splits["test"])
    m: dict[str, Any] = {"n_train": int(len(splits["train"])), "n_val": int(len(splits["val"])),
                         "n_test": int(len(idx_out))}
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


def write_metrics(metrics: dict[str, Any], run_dir: str | Path) -> Path:
    path = Path(run_dir) / "metrics.json"
    clean = {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in metrics.items()}
    path.write_text(json.dumps(clean, indent=2, sort_keys=True) + "\n")
    return path
