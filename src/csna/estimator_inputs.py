"""What ``CSNAEstimator`` accepts: covariates X and controls W as frames, vectors, the fit data
as a checked ``CausalData``, treatments to index effects by. Each raises ``DataError`` (or
``ValueError`` for a misused argument) with one line that names the argument.

Shape alphabet: n rows, p covariates, K treatments.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .config import Config
from .data import CausalData, DataError, validate



def as_frame(X, columns: list[str] | None = None) -> pd.DataFrame:
    """(n, p) DataFrame from a DataFrame (as it is) or a 2-D array (named ``columns`` or x0…)."""
    if isinstance(X, pd.DataFrame):
        dup = X.columns[X.columns.astype(str).duplicated()]
        if len(dup):
            raise DataError(f"X has duplicate column name(s) {', '.join(map(str, dup))}")
        return X
    arr = np.asarray(X)
    if arr.ndim != 2:
        raise DataError(f"X must be 2-D (n, p), got shape {arr.shape}")
    if columns is None:
        columns = [f"x{j}" for j in range(arr.shape[1])]
    elif arr.shape[1] != len(columns):
        raise DataError(f"X has {arr.shape[1]} columns but the model was fitted on {len(columns)}; "
                        "pass a DataFrame to match columns by name")
    return pd.DataFrame(arr, columns=columns)


def as_vector(v, name: str) -> np.ndarray:
    arr = np.asarray(v.to_numpy() if isinstance(v, (pd.Series, pd.DataFrame)) else v)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise DataError(f"{name} must be 1-D (n,), got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{name} must be numeric, got dtype {arr.dtype}")
    return arr


def causal_data(Y, T, X, cfg: Config) -> CausalData:
    """Checked ``CausalData`` (no mu) from user arrays; raises DataError with one line."""
    frame = as_frame(X).reset_index(drop=True)
    y = as_vector(Y, "Y").astype(np.float64)
    t = as_vector(T, "T")
    if t.dtype.kind == "b":  # a boolean treatment (DoWhy passes one): False = 0, True = 1
        t = t.astype(np.int64)
    k = len(np.unique(t[np.isfinite(t.astype(np.float64))]))
    # validate checks lengths, NaN/Inf, 0..K−1 and a second group; with data.impute the
    # training medians fill NaN/Inf covariates later, so only their placeholders are checked here.
    checked = frame.replace([np.inf, -np.inf], np.nan).fillna(0) if cfg.data.impute else frame
    validate(CausalData(checked, t, y, None, "continuous", k, "fit data"))
    counts = np.bincount(t.astype(np.int64), minlength=k)  # (K,)
    if counts.min() < 2:
        raise DataError(f"treatment group {int(counts.argmin())} has {int(counts.min())} row; "
                        "every group needs at least 2 (one to train, one to validate)")
    kind = cfg.data.outcome_type
    if kind == "auto":
        kind = "binary" if set(np.unique(y).tolist()) == {0.0, 1.0} else "continuous"
    if kind == "continuous":
        y_out = y.astype(np.float32)
    else:
        if (y != np.round(y)).any() or (y < 0).any() or (kind == "binary" and (y > 1).any()):
            raise DataError(f"a {kind} Y must hold class indices {'0 and 1' if kind == 'binary' else '0, 1, …'}")
        y_out = y.astype(np.int64)
    return CausalData(X=frame, T=t.astype(np.int64), Y=y_out, mu=None, outcome_type=kind,
                      n_treatments=k, name="fit data")


def check_method(method: str, X, what: str, T=None, constant: bool = False) -> str:
    """Check ``method`` of ``ate`` / ``att`` and that "dr" gets no X (nor T); ``constant``: the
    model has no effect modifiers, so the plug-in needs no X."""
    if method not in ("plugin", "dr"):
        raise ValueError(f"{what}(method={method!r}): method must be 'plugin' or 'dr'")
    if method == "dr" and (X is not None or T is not None):
        raise ValueError(f"{what}(method='dr') takes no X or T: the doubly-robust estimate needs observed outcomes "
                         "and predictions from ensemble members that never trained on each row, which only the "
                         "data given to fit has; call it without X")
    if method == "plugin" and X is None and not constant:
        raise ValueError(f"{what}(X): the plug-in estimate averages effect(X), so X is required")
    return method


def take(mu: np.ndarray, t, name: str) -> np.ndarray:
    """(n,) mu[i, t_i] for an int t or (n,) ints."""
    n, k = mu.shape
    arr = np.asarray(t)
    if arr.dtype.kind == "b":  # a boolean treatment (DoWhy's): False = 0, True = 1
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu" and not (arr.dtype.kind == "f" and np.all(arr == np.round(arr))):
        raise DataError(f"{name} must be integer treatment(s) in 0..{k - 1}, got {t!r}"[:200])
    arr = arr.astype(np.int64)
    if arr.ndim > 1 or (arr.ndim == 1 and len(arr) != n):
        raise DataError(f"{name} must be an int or have shape ({n},), got shape {arr.shape}")
    if ((arr < 0) | (arr >= k)).any():
        raise DataError(f"{name} must be in 0..{k - 1}")
    return mu[:, arr] if arr.ndim == 0 else mu[np.arange(n), arr]


def join_covariates(X, W) -> tuple[pd.DataFrame, list[str], list[str]]:
    """The model's covariates: X's columns, then W's columns that X does not have.

    Returns:
        (frame (n, p), effect-modifier names (X's), control names (W's others)).

    Raises:
        DataError: neither X nor W, or X and W of different lengths.
    """
    if X is None and W is None:
        raise DataError("fit needs covariates: pass X (effect modifiers), W (controls) or both")
    fx = as_frame(X).reset_index(drop=True) if X is not None else None
    fw = None
    if W is not None:
        fw = as_frame(W, None if isinstance(W, pd.DataFrame) else [f"w{j}" for j in range(np.asarray(W).shape[1])])
        fw = fw.reset_index(drop=True)
    if fx is not None and fw is not None and len(fx) != len(fw):
        raise DataError(f"X has {len(fx)} rows but W has {len(fw)}")
    if fw is None:
        return fx, [str(c) for c in fx.columns], []
    if fx is None:
        return fw, [], [str(c) for c in fw.columns]
    extra = [c for c in fw.columns if c not in fx.columns]
    return pd.concat([fx, fw[extra]], axis=1), [str(c) for c in fx.columns], [str(c) for c in extra]


def check_sample_weight(sample_weight, n: int) -> None:
    """None or equal weights pass; csna's training does not weight rows, so other weights raise
    rather than being ignored."""
    if sample_weight is None:
        return
    w = as_vector(sample_weight, "sample_weight").astype(np.float64)
    if len(w) != n:
        raise DataError(f"sample_weight has {len(w)} rows but the data have {n}")
    if not np.all(np.isfinite(w)) or (w <= 0).any() or not np.allclose(w, w[0]):
        raise ValueError("sample_weight: csna does not weight rows in training; pass None (or equal weights)")
