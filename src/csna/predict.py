"""Scoring rows with a trained model: outcomes under every treatment, effects, propensities.

Shape alphabet: n rows, K treatments, C classes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .data import DataError
from .rundir import Run
from .shrink import apply_effect_scale


def select_covariates(run: Run, X: pd.DataFrame, where: str = "the data") -> pd.DataFrame:
    """The training covariate columns of ``X``, matched by name; other columns are ignored.

    Raises:
        DataError: naming every missing column, a numeric covariate of another dtype, or
            the first covariate with NaN/Inf values that the run does not impute.
    """
    names = {str(c): c for c in X.columns}
    wanted = list(run.prep.pre.input_columns_)
    missing = [c for c in wanted if c not in names]
    if missing:
        raise DataError(f"{where}: missing covariate column(s) {', '.join(missing)} used in training")
    frame = X[[names[c] for c in wanted]]
    frame.columns = wanted
    numeric = set(run.prep.pre.feature_names_)  # a scaled column keeps its name; one-hot ones become "c=v"
    for c in wanted:
        if c not in numeric:
            continue  # categories: NaN or unseen values encode as all zeros
        col = frame[c]
        if not pd.api.types.is_numeric_dtype(col):
            raise DataError(f"{where}: column '{c}' must be numeric as in training, got dtype {col.dtype}")
        if c in run.prep.impute:
            continue  # the training median fills NaN/Inf (Prepared.features)
        bad = ~np.isfinite(col.to_numpy(dtype=np.float64, na_value=np.nan))
        if bad.any():
            raise DataError(f"{where}: column '{c}' has {int(bad.sum())} missing or infinite value(s)")
    return frame


@torch.no_grad()
def predict_features(run: Run, x: np.ndarray, gates: bool = True, batch_size: int = 4096,
                     shrink: bool = True) -> dict[str, np.ndarray]:
    """Args: x (n, p) preprocessed features; ``gates`` uses the Meta Utility Layer's hard gates
    when phase 4 was trained (``False`` runs every block); ``shrink`` applies the run's effect
    shrinkage (``csna.shrink``, ``train.effect_shrink``) when it has one.

    Returns: ``mu`` (n, K) expected outcome under each treatment (P(Y=1) for a binary outcome,
    the expected class index for multiclass), ``probs`` (n, K, C) for classification,
    ``propensity`` (n, K), ``gates`` (n, M·n_blocks) when gated, member by member.

    A seed ensemble (M = ``train.ensemble`` members) predicts the mean of its members' ``mu``,
    ``probs`` and ``propensity``; each member runs its own gates. The shrinkage then scales
    each effect μ̂_k − μ̂_0 about its centre, keeping Σ_t ê_t μ̂_t (``apply_effect_scale``).
    """
    parts = member_predictions(run, x, gates, batch_size)
    res = {k: np.mean([p[k] for p in parts], axis=0) for k in ("mu", "propensity", "probs") if k in parts[0]}
    if all("gates" in p for p in parts):
        res["gates"] = np.concatenate([p["gates"] for p in parts], axis=1)
    if shrink and run.effect_scale is not None:
        res.update(apply_effect_scale(run.effect_scale, res["mu"], res["propensity"], run.prep.outcome_type))
    return res


@torch.no_grad()
def member_predictions(run: Run, x: np.ndarray, gates: bool = True,
                       batch_size: int = 4096) -> list[dict[str, np.ndarray]]:
    """``predict_features`` of each member of ``run`` on its own, first member first, without
    the ensemble's effect shrinkage."""
    return [_predict_member(m, x, gates, batch_size) for m in run.all_members()]


def _predict_member(run: Run, x: np.ndarray, gates: bool, batch_size: int) -> dict[str, np.ndarray]:
    """``predict_features`` of one model."""
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


def predict_frame(run: Run, X: pd.DataFrame, gates: bool = True, where: str = "the data") -> pd.DataFrame:
    """The ``csna predict`` table: ``mu_0 … mu_{K−1}``, ``ite`` (mu_1 − mu_0 when K = 2,
    else ``ite_t`` = mu_t − mu_0 for each t ≥ 1) and ``propensity_1`` (K = 2) or one
    ``propensity_t`` per treatment; one row per row of ``X``, same index.

    Args:
        X: (n, ≥p) raw covariates; columns are matched by name (see ``select_covariates``)
            and the training preprocessing is applied.
        where: names the data in error messages (e.g. the file).
    """
    res = predict_features(run, run.prep.features(select_covariates(run, X, where)), gates=gates)
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
