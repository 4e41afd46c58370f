"""Train/val/test splits and the covariate preprocessor fitted on the training split.

Shape alphabet: n units, p input columns, p_out output features.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import skew
from sklearn.model_selection import train_test_split

from csna.data.tables import DataError

_FORMAT_VERSION = 1


def split_indices(n: int, fractions=(0.63, 0.27, 0.10), seed: int = 0,
                  stratify: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random train/val/test indices, deterministic in `seed`.

    Args:
        n: number of units.
        fractions: (train, val, test), non-negative and summing to 1.
        seed: seed of the permutation.
        stratify: (n,) labels (e.g. treatment) whose proportions each split keeps.

    Returns:
        train, val, test: sorted int64 indices, disjoint, together 0..n-1.
    """
    f = np.asarray(fractions, dtype=np.float64)
    if f.shape != (3,) or (f < 0).any() or abs(f.sum() - 1.0) > 1e-6:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    idx = np.arange(n)
    if stratify is None:
        perm = np.random.default_rng(seed).permutation(n)
        n_train, n_val = int(round(f[0] * n)), int(round(f[1] * n))
        n_val = min(n_val, n - n_train)
        parts = perm[:n_train], perm[n_train:n_train + n_val], perm[n_train + n_val:]
    else:
        labels = np.asarray(stratify)
        if labels.shape != (n,):
            raise ValueError(f"stratify must have shape ({n},), got {labels.shape}")
        empty = idx[:0]
        rest, test = (idx, empty) if f[2] == 0 else train_test_split(
            idx, test_size=f[2], random_state=seed, stratify=labels)
        val_share = f[1] / (f[0] + f[1])
        train, val = (rest, empty) if f[1] == 0 else train_test_split(
            rest, test_size=val_share, random_state=seed, stratify=labels[rest])
        parts = train, val, test
    return tuple(np.sort(part).astype(np.int64) for part in parts)


def _is_categorical(col: pd.Series) -> bool:
    return pd.api.types.is_bool_dtype(col) or not pd.api.types.is_numeric_dtype(col)


def _as_str(col: pd.Series) -> pd.Series:
    """Categories are compared as strings so that they survive a JSON round trip."""
    return col.astype(object).where(col.notna(), None).map(lambda v: None if v is None else str(v))


QUANTILES = 1000  # at most this many quantiles of a column kept by the "quantile" scaling
# "auto" scaling: a column whose training skewness exceeds this in absolute value gets the quantile
# scaling, the others are standardised. |skew| > 1 is the usual mark of a highly skewed column; 2
# leaves roughly symmetric measurements (IHDP's birth weight −0.5, neonatal health −0.9) as they are
# and catches lognormal ones (income-like, lab values: 2–20).
SKEW_QUANTILE = 2.0


def _quantile_map(values: np.ndarray, quantiles: list[float]) -> np.ndarray:
    """scikit-learn's QuantileTransformer (normal output) of one column, rebuilt from its
    fitted quantiles: the transform is kept as plain numbers in preprocess.json, not a pickle."""
    from sklearn.preprocessing import QuantileTransformer

    q = np.asarray(quantiles, dtype=np.float64)[:, None]  # (n_quantiles, 1)
    qt = QuantileTransformer(n_quantiles=len(q), output_distribution="normal")
    qt.quantiles_, qt.references_, qt.n_features_in_ = q, np.linspace(0, 1, len(q)), 1
    return qt.transform(values[:, None])[:, 0]


class Preprocessor:
    """Standardises continuous columns, keeps binary ones as 0/1, one-hot encodes the rest.

    Numeric columns with more than 2 distinct values: (x - mean) / std (population std of
    the fit data; 0 becomes 1), or with ``numeric="quantile"`` the normal scores of their
    training ranks (scikit-learn's QuantileTransformer: skew and outliers squashed, a value
    beyond the training range maps to the extreme score); ``numeric="auto"``: the quantile
    scaling where the training skewness exceeds ``SKEW_QUANTILE``, standardised otherwise.
    With ``clip_sd`` > 0 a standardised value is clipped to ±``clip_sd`` (training standard
    deviations from the training mean), at fit and at prediction alike. Numeric columns with at
    most 2 values {lo, hi}: (x - lo) / (hi - lo), i.e. 0/1. Bool, string and categorical
    columns: one output "col=value" per category seen at fit; an unknown category gives all
    zeros.
    """

    def __init__(self, numeric: str = "standard", clip_sd: float = 0.0) -> None:
        if numeric not in ("standard", "quantile", "auto"):
            raise ValueError(f"numeric must be standard, quantile or auto, got {numeric!r}")
        if not clip_sd >= 0:
            raise ValueError(f"clip_sd must be >= 0 (0: no clipping), got {clip_sd!r}")
        self.numeric = numeric
        self.clip_sd = float(clip_sd)
        self.input_columns_: list[str] = []
        self.feature_names_: list[str] = []
        self._specs: list[dict] = []

    def fit(self, X: pd.DataFrame) -> Preprocessor:
        """Learns the transform from X (n, p), the training split only."""
        specs = []
        for name in X.columns:
            col = X[name]
            if _is_categorical(col):
                cats = sorted(set(_as_str(col).dropna()))
                specs.append({"name": str(name), "kind": "onehot", "categories": cats})
                continue
            values = col.to_numpy(dtype=np.float64, na_value=np.nan)
            values = values[np.isfinite(values)]
            distinct = np.unique(values)
            if len(distinct) > 2 and (self.numeric == "quantile" or self.numeric == "auto"
                                      and abs(float(skew(values))) > SKEW_QUANTILE):
                from sklearn.preprocessing import QuantileTransformer

                qt = QuantileTransformer(n_quantiles=min(QUANTILES, len(values)), output_distribution="normal",
                                         subsample=10**9).fit(values[:, None])
                specs.append({"name": str(name), "kind": "quantile", "quantiles": qt.quantiles_[:, 0].tolist()})
            elif len(distinct) > 2:
                std = float(values.std())
                specs.append({"name": str(name), "kind": "standard", "shift": float(values.mean()),
                              "scale": std if std > 0 else 1.0, **({"clip": self.clip_sd} if self.clip_sd else {})})
            else:
                lo = float(distinct[0]) if len(distinct) else 0.0
                hi = float(distinct[-1]) if len(distinct) else 1.0
                specs.append({"name": str(name), "kind": "binary", "shift": lo,
                              "scale": hi - lo if hi > lo else 1.0})
        self._set(specs)
        return self

    def _set(self, specs: list[dict]) -> None:
        self._specs = specs
        self.input_columns_ = [s["name"] for s in specs]
        self.feature_names_ = [name for s in specs for name in _output_names(s)]

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        """Applies the fitted transform.

        Args:
            X: (n, p) with at least the fitted columns, in any order.

        Returns:
            (n, p_out) float32, columns in the order of `feature_names_`.
        """
        if not self._specs:
            raise DataError("Preprocessor is not fitted; call fit on the training covariates first")
        columns = {str(c): c for c in X.columns}
        missing = [s["name"] for s in self._specs if s["name"] not in columns]
        if missing:
            raise DataError(f"columns {missing} missing from the data to transform; "
                            f"available: {', '.join(columns)}")
        out = np.zeros((len(X), len(self.feature_names_)), dtype=np.float32)  # (n, p_out)
        j = 0
        for s in self._specs:
            col = X[columns[s["name"]]]
            if s["kind"] == "onehot":
                codes = pd.Index(s["categories"]).get_indexer(_as_str(col))  # (n,), -1 if unseen
                rows = np.flatnonzero(codes >= 0)
                out[rows, j + codes[rows]] = 1.0
                j += len(s["categories"])
            else:
                try:
                    values = col.to_numpy(dtype=np.float64, na_value=np.nan)
                except (TypeError, ValueError):
                    raise DataError(f"column '{s['name']}' must be numeric as in training, "
                                    f"got dtype {col.dtype}") from None
                if s["kind"] == "quantile":
                    out[:, j] = _quantile_map(values, s["quantiles"])
                elif "clip" in s:  # NaN stays NaN (the imputation or the error comes before)
                    out[:, j] = np.clip((values - s["shift"]) / s["scale"], -s["clip"], s["clip"])
                else:
                    out[:, j] = (values - s["shift"]) / s["scale"]
                j += 1
        return out

    def fit_transform(self, X: pd.DataFrame) -> np.ndarray:
        return self.fit(X).transform(X)

    def to_dict(self) -> dict:
        """Plain values only, so the preprocessor can live inside a checkpoint or JSON file."""
        return {"version": _FORMAT_VERSION, "columns": [dict(s) for s in self._specs]}

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessor:
        if set(d) != {"version", "columns"} or d["version"] != _FORMAT_VERSION:
            raise DataError(f"not a Preprocessor v{_FORMAT_VERSION} dict: keys {sorted(d)}")
        allowed = {"onehot": {"name", "kind", "categories"},
                   "standard": {"name", "kind", "shift", "scale"},
                   "binary": {"name", "kind", "shift", "scale"},
                   "quantile": {"name", "kind", "quantiles"}}
        optional = {"standard": {"clip"}}  # absent in files written before data.clip_sd existed
        for s in d["columns"]:
            need = allowed.get(s.get("kind"))
            if need is None or not need <= set(s) <= need | optional.get(s["kind"], set()):
                raise DataError(f"bad Preprocessor column spec: {s}")
        obj = cls()
        obj._set([dict(s) for s in d["columns"]])
        return obj

    def to_json(self, path) -> None:
        """Writes atomically: a temporary file in the same folder, then os.replace."""
        path = Path(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.to_dict(), f, indent=1)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise

    @classmethod
    def from_json(cls, path) -> Preprocessor:
        with open(path) as f:
            return cls.from_dict(json.load(f))

    def __repr__(self) -> str:
        kinds = [s["kind"] for s in self._specs]
        return (f"Preprocessor(standard={kinds.count('standard')}, binary={kinds.count('binary')}, "
                f"onehot={kinds.count('onehot')}, p_out={len(self.feature_names_)})")


def _output_names(spec: dict) -> list[str]:
    if spec["kind"] == "onehot":
        return [f"{spec['name']}={c}" for c in spec["categories"]]
    return [spec["name"]]
