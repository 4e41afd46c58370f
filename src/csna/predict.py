"""Scoring rows with a trained model: outcomes under every treatment, effects, propensities.

Shape alphabet: n rows, K treatments, C classes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .runner import Run


@torch.no_grad()
def predict_features(run: Run, x: np.ndarray, gates: bool = True, batch_size: int = 4096) -> dict[str, np.ndarray]:
    """Args: x (n, p) preprocessed features; ``gates`` uses the Meta Utility Layer's hard gates
    when phase 4 was trained (``False`` runs every block).

    Returns: ``mu`` (n, K) expected outcome under each treatment (P(Y=1) for a binary outcome,
    the expected class index for multiclass), ``probs`` (n, K, C) for classification,
    ``propensity`` (n, K), ``gates`` (n, n_blocks) when gated.
    """
    model = run.model
    model.eval()
    dev = model.y_mean.device
    mode = "hard" if (gates and run.gated and model.n_blocks) else "off"
    mus, props, probs, gs = [], [], [], []
    for i in range(0, max(len(x), 1), batch_size):
        xb = torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size], dtype=np.float32)).to(dev)
        if xb.shape[0] == 0:
            break
        out = model(xb, gate_mode=mode)
        y = model.to_outcome_units(out.pred)
        if model.n_classes:
            probs.append(y.float().cpu())
            classes = torch.arange(model.n_classes, device=y.device, dtype=y.dtype)
            mu = y[..., 1] if model.n_classes == 2 else (y * classes).sum(-1)  # (n, K)
        else:
            mu = y
        mus.append(mu.float().cpu())
        props.append(torch.softmax(out.prop_logits, -1).float().cpu())
        if out.gates is not None:
            gs.append(out.gates.float().cpu())
    k = model.n_treatments
    res = {"mu": torch.cat(mus).numpy().astype(np.float64) if mus else np.zeros((0, k)),
           "propensity": torch.cat(props).numpy().astype(np.float64) if props else np.zeros((0, k))}
    if probs:
        res["probs"] = torch.cat(probs).numpy()
    if gs:
        res["gates"] = torch.cat(gs).numpy()
    return res


def predict_frame(run: Run, X: pd.DataFrame, gates: bool = True) -> pd.DataFrame:
    """The ``csna predict`` table: ``mu_0 … mu_{K−1}``, ``ite`` (mu_1 − mu_0 when K = 2,
    else ``ite_t`` = mu_t − mu_0 for each t ≥ 1) and ``propensity_t`` columns."""
    res = predict_features(run, run.prep.features(X), gates=gates)
    mu, prop = res["mu"], res["propensity"]
    k = mu.shape[1]
    cols: dict[str, np.ndarray] = {f"mu_{t}": mu[:, t] for t in range(k)}
    if k == 2:
        cols["ite"] = mu[:, 1] - mu[:, 0]
        cols["propensity_1"] = prop[:, 1]
    else:
        for t in range(1, k):
            cols[f"ite_{t}"] = mu[:, t] - mu[:, 0]
        for t in range(k):
            cols[f"propensity_{t}"] = prop[:, t]
    return pd.DataFrame(cols, index=X.index)
