"""The `CausalData` container, its validation, and loading user tables (CSV / Parquet).

Shape alphabet: n units, p covariates, K treatments.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

OUTCOME_TYPES = ("continuous", "binary", "multiclass")
_PARQUET_SUFFIXES = (".parquet", ".pq")
# The one list of truth column names: what `csna data synthetic` writes (`truth_column`), and
# what no reader ever takes as a covariate.
TRUTH_COLUMNS = re.compile(r"mu\d+")  # mu0, mu1, ...: true E[Y(t) | x]


class DataError(ValueError):
    """A data set is unusable; the message names what is wrong and where."""


@dataclass
class CausalData:
    """Covariates, treatment and outcome of n units, plus the truth when it is known.

    Attributes:
        X: (n, p) covariates with their original column names.
        T: (n,) int64 treatment in 0..K-1.
        Y: (n,) float32 for continuous outcomes, int64 class index otherwise.
        mu: (n, K) float64 true E[Y(t) | x] (P(Y=1 | x, do(t)) when binary), or None.
            For evaluation only: never train or select models on it.
        outcome_type: "continuous", "binary" or "multiclass".
        n_treatments: K.
        name: where the data came from ("ihdp-3", "synthetic", a file name).
        graph: (k, k) true latent DAG, A[i, j] = 1 meaning i -> j, or None.
        extra: anything else a source knows (parameters, propensities, latents).
    """

    X: pd.DataFrame
    T: np.ndarray
    Y: np.ndarray
    mu: np.ndarray | None
    outcome_type: str
    n_treatments: int
    name: str
    graph: np.ndarray | None = None
    extra: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.T)

    @property
    def p(self) -> int:
        return self.X.shape[1]

    @property
    def mu0(self) -> np.ndarray | None:
        return None if self.mu is None else self.mu[:, 0]

    @property
    def mu1(self) -> np.ndarray | None:
        return None if self.mu is None else self.mu[:, 1]

    @property
    def ite_true(self) -> np.ndarray | None:
        """(n,) true mu1 - mu0, or None."""
        return None if self.mu is None else self.mu[:, 1] - self.mu[:, 0]

    def subset(self, idx) -> CausalData:
        """Rows `idx` (integer indices or a boolean mask), same metadata.

        Per-unit arrays in `extra` (first dimension n) are subset too, so propensities
        and latents stay aligned with their rows.
        """
        idx = np.asarray(idx)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        n = self.n
        extra = {k: v[idx] if isinstance(v, np.ndarray) and v.ndim >= 1 and len(v) == n else v
                 for k, v in self.extra.items()}
        return replace(
            self,
            X=self.X.iloc[idx].reset_index(drop=True),
            T=self.T[idx],
            Y=self.Y[idx],
            mu=None if self.mu is None else self.mu[idx],
            extra=extra,
        )


def truth_column(t: int) -> str:
    """Name of the column holding the true E[Y(t) | x] of treatment t in a table."""
    return f"mu{t}"


def column_roles(path, names: list[str], treatment: str, outcome: str,
                 covariates: list[str] | None) -> tuple[list[str], list[str]]:
    """(covariates, truth columns) of a table with columns ``names``; the rule of both the
    in-memory and the streamed reader.

    Truth columns (``TRUTH_COLUMNS``) are never covariates: without ``covariates`` they are
    dropped with a one-line note on stderr; naming one is an error.

    Raises:
        DataError: a missing treatment, outcome or covariate column, a covariate that is
            truth, treatment or outcome, or no covariate at all.
    """
    names = [str(c) for c in names]
    available = ", ".join(names)
    for role, name in (("treatment", treatment), ("outcome", outcome)):
        if name not in names:
            raise DataError(f"{role} column '{name}' not in {path}; available: {available}")
    truth = [c for c in names if TRUTH_COLUMNS.fullmatch(c) and c not in (treatment, outcome)]
    if covariates is None:
        covariates = [c for c in names if c not in (treatment, outcome) and c not in truth]
        if truth:
            print(f"csna: note: {path}: dropped truth columns {', '.join(truth)} (never covariates)",
                  file=sys.stderr)
    missing = [c for c in covariates if c not in names]
    if missing:
        raise DataError(f"covariate column(s) {missing} not in {path}; available: {available}")
    leaked = [c for c in covariates if c in truth or c in (treatment, outcome)]
    if leaked:
        raise DataError(f"column(s) {leaked} of {path} cannot be covariates (truth, treatment or outcome)")
    if not covariates:
        raise DataError(f"no covariate columns in {path}")
    return list(covariates), truth


def data_fingerprint(data: CausalData) -> str:
    """SHA-256 of the covariates (names, dtypes, values), treatment and outcome of ``data``:
    equal for the same table read the same way, whatever its file is called."""
    h = hashlib.sha256()
    head = [[str(c) for c in data.X.columns], [str(t) for t in data.X.dtypes], str(data.Y.dtype), data.outcome_type]
    h.update(json.dumps(head).encode())
    h.update(pd.util.hash_pandas_object(data.X, index=False).to_numpy().tobytes())  # (n,) uint64
    h.update(np.ascontiguousarray(data.T, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(data.Y).tobytes())
    return h.hexdigest()


def _nonfinite_count(col: pd.Series) -> int:
    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        values = col.to_numpy(dtype=np.float64, na_value=np.nan)
        return int(np.count_nonzero(~np.isfinite(values)))
    return int(col.isna().sum())


def _check_covariates(X: pd.DataFrame, where: str) -> None:
    for name in X.columns:
        bad = _nonfinite_count(X[name])
        if bad:
            col = X[name]
            if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
                mask = ~np.isfinite(col.to_numpy(dtype=np.float64, na_value=np.nan))
            else:
                mask = col.isna().to_numpy()
            first = int(np.flatnonzero(mask)[0])
            raise DataError(f"covariate '{name}' has {bad} NaN/Inf values in {where} (first at data row {first + 1}); "
                            "use --impute (config key data.impute) to fill them with training medians")


def _check_treatment(T: np.ndarray, where: str, column: str = "treatment") -> int:
    """Returns K after checking that the values are exactly the integers 0..K-1."""
    T = np.asarray(T)
    if T.dtype == bool or not np.issubdtype(T.dtype, np.number):
        raise DataError(f"treatment '{column}' in {where} must be integer-coded 0..K-1, got dtype {T.dtype}")
    if np.issubdtype(T.dtype, np.floating):
        bad = ~np.isfinite(T) | (T != np.round(T))
        if bad.any():
            raise DataError(f"treatment '{column}' in {where} has {int(bad.sum())} non-integer or NaN values")
    values = np.unique(T)
    k = len(values)
    if k < 2:
        raise DataError(f"treatment '{column}' in {where} has only one treatment group ({values.tolist()})")
    if not np.array_equal(values, np.arange(k)):
        raise DataError(f"treatment '{column}' in {where} must take the values 0..{k - 1}, got {values.tolist()}")
    return k


def _check_outcome(Y: np.ndarray, where: str, column: str = "outcome") -> None:
    Y = np.asarray(Y)
    if not np.issubdtype(Y.dtype, np.number) and Y.dtype != bool:
        raise DataError(f"outcome '{column}' in {where} must be numeric, got dtype {Y.dtype}")
    finite = np.isfinite(Y.astype(np.float64))
    bad = int(np.count_nonzero(~finite))
    if bad:
        first = int(np.flatnonzero(~finite)[0])
        raise DataError(f"outcome '{column}' in {where} has {bad} NaN/Inf values (first at data row {first + 1})")


def _check_classes(Y: np.ndarray, outcome_type: str, where: str, column: str = "outcome") -> None:
    """An outcome that takes one value only cannot be learned: one class of a classification
    outcome, or a constant continuous one."""
    values = np.unique(np.asarray(Y))
    if len(values) >= 2:
        return
    if outcome_type == "continuous":
        raise DataError(f"outcome '{column}' in {where} is constant ({values.tolist()}); nothing to learn")
    raise DataError(f"{outcome_type} outcome '{column}' in {where} has one class only ({values.tolist()}); "
                    "a classifier needs at least two")


def validate(data: CausalData, allow_missing: bool = False) -> None:
    """Checks covariates, treatment and outcome of any `CausalData`.

    Args:
        allow_missing: accept NaN/Inf covariates (they are imputed later).

    Raises:
        DataError: on mismatched lengths, NaN/Inf covariates or outcomes, treatment
            values that are not 0..K-1 with K = data.n_treatments, one group only, or an
            outcome with a single value (one class).
    """
    where = f"'{data.name}'"
    if not (len(data.X) == len(data.T) == len(data.Y)):
        raise DataError(f"lengths differ in {where}: X {len(data.X)}, T {len(data.T)}, Y {len(data.Y)}")
    if data.outcome_type not in OUTCOME_TYPES:
        raise DataError(f"outcome_type '{data.outcome_type}' of {where} is not one of {OUTCOME_TYPES}")
    if len(data.T) == 0:
        raise DataError(f"{where} has no rows")
    if not allow_missing:
        _check_covariates(data.X, where)
    _check_outcome(data.Y, where)
    _check_classes(data.Y, data.outcome_type, where)
    k = _check_treatment(data.T, where)
    if k != data.n_treatments:
        raise DataError(f"treatment in {where} takes {k} values but n_treatments is {data.n_treatments}")
    if data.mu is not None and data.mu.shape != (data.n, data.n_treatments):
        raise DataError(f"mu in {where} has shape {data.mu.shape}, expected {(data.n, data.n_treatments)}")


def check_path(path) -> tuple[Path, str]:
    """(path, "csv" or "parquet") of an existing, non-empty table file.

    Raises:
        DataError: missing file, a directory, an unknown extension or an empty file.
    """
    path = Path(os.fspath(path))
    if not path.exists():
        raise DataError(f"table not found: {path}")
    if path.is_dir():
        raise DataError(f"expected a table file, got a directory: {path}")
    suffix = path.suffix.lower()
    if suffix not in (".csv", *_PARQUET_SUFFIXES):
        raise DataError(f"unknown table format '{suffix}' of {path}; use .csv, .parquet or .pq")
    if path.stat().st_size == 0:
        raise DataError(f"table is empty: {path}")
    return path, "csv" if suffix == ".csv" else "parquet"


def read_frame(path) -> pd.DataFrame:
    """Reads a whole CSV or Parquet table (chosen by extension), e.g. new rows to predict.

    Raises:
        DataError: missing file, a directory, an unknown extension, an unreadable or
            empty table.
    """
    path, kind = check_path(path)
    try:
        df = pd.read_csv(path) if kind == "csv" else pd.read_parquet(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, OSError, ValueError) as err:
        raise DataError(f"cannot read {path}: {str(err).splitlines()[0]}") from err
    if len(df) == 0:
        raise DataError(f"table has no rows: {path}")
    return df


def _infer_outcome_type(y: pd.Series) -> str:
    integer = pd.api.types.is_integer_dtype(y) or pd.api.types.is_bool_dtype(y)
    if integer and set(pd.unique(y).tolist()) == {0, 1}:
        return "binary"
    return "continuous"


def load_table(path, *, treatment: str, outcome: str, covariates: list[str] | None = None,
               outcome_type: str = "auto", impute: bool = False) -> CausalData:
    """Loads a CSV or Parquet table (chosen by extension) as `CausalData`.

    String, categorical and bool covariates are kept as they are; `Preprocessor`
    one-hot encodes them.

    Args:
        path: a .csv, .parquet or .pq file.
        treatment: name of the integer-coded treatment column, values exactly 0..K-1.
        outcome: name of the outcome column.
        covariates: covariate column names; default every column but treatment, outcome and
            truth (``TRUTH_COLUMNS``; dropped with a note on stderr). Naming a truth column
            is an error.
        outcome_type: "auto" (integers {0, 1} -> binary, else continuous), or one of
            "continuous", "binary", "multiclass".
        impute: accept NaN/Inf covariates, to be filled later with training medians
            (``prepare.fit_preparation``); otherwise they are an error.

    Returns:
        CausalData with X (n, p), T (n,) int64, Y (n,) float32 or int64, and mu (n, K) from
        the columns mu0..mu{K-1} when the table has them all (for evaluation only), else None.

    Raises:
        DataError: with a one-line message naming the problem and the file.
    """
    path = Path(os.fspath(path))
    df = read_frame(path)
    df.columns = [str(c) for c in df.columns]
    covariates, truth = column_roles(path, list(df.columns), treatment, outcome, covariates)

    X = df[covariates].reset_index(drop=True)
    if not impute:
        _check_covariates(X, str(path))
    t_raw = df[treatment]
    if t_raw.isna().any():
        raise DataError(f"treatment '{treatment}' in {path} has {int(t_raw.isna().sum())} NaN values")
    k = _check_treatment(t_raw.to_numpy(), str(path), treatment)
    y_raw = df[outcome]
    _check_outcome(y_raw.to_numpy(dtype=np.float64, na_value=np.nan)
                   if pd.api.types.is_numeric_dtype(y_raw) else y_raw.to_numpy(), str(path), outcome)

    if outcome_type == "auto":
        outcome_type = _infer_outcome_type(y_raw)
    if outcome_type not in OUTCOME_TYPES:
        raise DataError(f"outcome_type '{outcome_type}' is not 'auto' or one of {OUTCOME_TYPES}")
    if outcome_type == "continuous":
        Y = y_raw.to_numpy(dtype=np.float32)
    else:
        y64 = y_raw.to_numpy(dtype=np.float64)
        if (y64 != np.round(y64)).any() or (y64 < 0).any():
            raise DataError(f"{outcome_type} outcome '{outcome}' in {path} must be class indices 0, 1, ...")
        if outcome_type == "binary" and (y64 > 1).any():
            raise DataError(f"binary outcome '{outcome}' in {path} has values other than 0 and 1")
        Y = y64.astype(np.int64)
    _check_classes(Y, outcome_type, str(path), outcome)
    mu_cols = [truth_column(t) for t in range(k)]
    mu = df[mu_cols].to_numpy(dtype=np.float64) if all(c in truth for c in mu_cols) else None

    return CausalData(X=X, T=t_raw.to_numpy().astype(np.int64), Y=Y, mu=mu,
                      outcome_type=outcome_type, n_treatments=k, name=path.name)
