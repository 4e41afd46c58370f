"""``CSNAEstimator``: fit / effect / ate in EconML's vocabulary, on top of ``ensemble.train_run``.

Shape alphabet: n rows, p covariates, K treatments.

Config overrides are keyword arguments in which ``__`` stands for the dot of a config key::

    CSNAEstimator(phase1__epochs=5, train__seed=1)        # phase1.epochs=5, train.seed=1
    CSNAEstimator("my.yaml", model__k=4)

They are applied on top of ``config``: a ``Config`` (used as it is), a YAML path, or None. A path
or None is resolved exactly as ``csna train --data table.csv`` resolves it for a user table
(defaults, the file, the overrides). An unknown key
or a bad value raises ``ConfigError`` when the estimator is built. The ``data.*`` keys that name a
source (source, treatment, outcome, covariates, replication, synthetic_*) are not used: ``fit``
takes the data, and the fitted config records ``data.source: in-memory``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import checkpoint as ckpt
from . import metrics as M
from .config import Config, ConfigError, _apply, _nest, dump_config, load_config
from .config import validate as validate_config
from .data import CausalData, DataError, split_indices, validate
from .dr import dr_effects
from .ensemble import train_run
from .perf import tune_malloc
from .phases import PHASES
from .predict import predict_features, select_covariates
from .rundir import PREPROCESS_FILE, SPLITS_FILE, Run, environment, load_run, member_dir, write_effect_scale
from .splits import base_split_seed

IN_MEMORY = "in-memory"


class CSNAEstimator:
    """Treatment effects with the causal structural neural architecture.

    Args:
        config: a ``Config``, a path to a YAML config, or None for the defaults.
        **overrides: config keys with ``__`` for ``.``, e.g. ``phase3__lr=1e-4``.

    Attributes (after ``fit`` or ``load``):
        covariates_: input column names (a DataFrame's, or ``x0 … x{p−1}`` for arrays).
        n_treatments_: K.
        outcome_type_: "continuous", "binary" or "multiclass".
        config_: the resolved ``Config`` the model was trained with.
        model_: the trained ``CSNAModel``.
        run_: the ``rundir.Run`` (model, preprocessing, splits).
    """

    def __init__(self, config: Config | str | Path | None = None, **overrides: Any):
        self.config = config
        self._overrides = dict(overrides)
        self._resolve()  # fail on a bad key now, not after a long fit
        tune_malloc()

    # ------------------------------------------------------------------ config
    def _resolve(self) -> Config:
        flat = {}
        for kw, value in self._overrides.items():
            if kw.startswith("_") or kw.endswith("_") or "___" in kw:
                raise ConfigError(f"CSNAEstimator({kw}=...): not a config key; write e.g. phase1__epochs=5")
            flat[kw.replace("__", ".")] = value
        try:
            if isinstance(self.config, Config):
                cfg = copy.deepcopy(self.config)
                for key, value in flat.items():
                    _apply(cfg, _nest(key, value))
                validate_config(cfg)
                return cfg
            if self.config is not None and not isinstance(self.config, (str, Path)):
                raise ConfigError(f"config must be a Config, a YAML path or None, got {type(self.config).__name__}")
            # Arrays get what `csna train --data table.csv` gets.
            return load_config(self.config, flat, data_source=IN_MEMORY)
        except ConfigError as exc:
            dotted = {k.replace("__", "."): k for k in self._overrides}
            msg = str(exc)
            for key, kw in dotted.items():
                if f"'{key}'" in msg and key != kw:
                    msg += f" (given as {kw}=...)"
                    break
            raise ConfigError(msg) from None

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """scikit-learn style: ``config`` and every override, as given."""
        return {"config": self.config, **self._overrides}

    def set_params(self, **params: Any) -> CSNAEstimator:
        """scikit-learn style; checks the new keys at once. Refit to use them."""
        old = (self.config, dict(self._overrides))
        self.config = params.pop("config", self.config)
        self._overrides.update(params)
        try:
            self._resolve()
        except ConfigError:
            self.config, self._overrides = old
            raise
        return self

    def __repr__(self) -> str:
        parts = ([f"config={self.config!r}"] if self.config is not None else [])
        parts += [f"{k}={v!r}" for k, v in self._overrides.items()]
        return f"CSNAEstimator({', '.join(parts)})"

    # ------------------------------------------------------------------ fit
    def fit(self, Y, T, *, X) -> CSNAEstimator:
        """Train the four phases on (Y, T, X).

        Args:
            Y: (n,) or (n, 1) outcome: continuous, or 0/1 (binary; ``data.outcome_type`` may
                force a type, e.g. multiclass with class indices 0, 1, …).
            T: (n,) integer treatment in 0..K−1, every value present.
            X: (n, p) covariates: a DataFrame (names kept; strings and categories are one-hot
                encoded) or a numeric array (named x0 … x{p−1}).

        Returns:
            self.

        Raises:
            DataError: mismatched lengths, NaN/Inf values, a single treatment group, …
        """
        cfg = self._resolve()
        cfg.data.source = IN_MEMORY
        data = _causal_data(Y, T, X, cfg)
        # Every row trains: the train and validation shares of data.split, rescaled; the
        # validation rows pick the best epoch. Hold out your own test rows.
        f_train, f_val = cfg.data.split[0], cfg.data.split[1]
        seed = base_split_seed(cfg)
        try:
            tr, va, te = split_indices(data.n, (f_train / (f_train + f_val), f_val / (f_train + f_val), 0.0),
                                       seed=seed, stratify=data.T)
        except ValueError as exc:  # sklearn: too few rows to put every group in both parts
            raise DataError(f"too few rows to split {data.n} rows into training and validation parts "
                            f"with every treatment group in each ({str(exc).splitlines()[0]})") from None
        run = train_run(cfg, data=data, splits={"train": tr, "val": va, "test": te})
        self._set_run(run)
        return self

    def _set_run(self, run: Run) -> None:
        self.run_, self.model_, self.config_ = run, run.model, run.cfg
        self._dr: dict[tuple[int, int], dict[str, float]] = {}  # dr_summary by (T0, T1)
        self.covariates_ = list(run.prep.pre.input_columns_)
        self.n_treatments_ = run.prep.n_treatments
        self.outcome_type_ = run.prep.outcome_type

    def _fitted(self) -> Run:
        if getattr(self, "run_", None) is None:
            raise RuntimeError("this CSNAEstimator is not fitted; call fit(Y, T, X=X) or CSNAEstimator.load(dir)")
        return self.run_

    # ------------------------------------------------------------------ scoring
    def _scores(self, X, gates: bool = True) -> dict[str, np.ndarray]:
        run = self._fitted()
        frame = select_covariates(run, _as_frame(X, self.covariates_), where="X")
        return predict_features(run, run.prep.features(frame), gates=gates)

    def predict(self, X, T=None, gates: bool = True) -> np.ndarray:
        """Expected outcome E[Y | x, do(t)] (P(Y=1 | …) for a binary outcome).

        Args:
            X: (n, p) covariates; a DataFrame is matched by column name (extra columns are
                ignored), an array must hold the ``covariates_`` in order.
            T: None for every treatment, an int, or (n,) ints: the treatment of each row.
            gates: use the Meta Utility Layer's gates when phase 4 was trained; False runs
                every block.

        Returns:
            (n, K) when T is None, else (n,).
        """
        mu = self._scores(X, gates)["mu"]  # (n, K)
        return mu if T is None else _take(mu, T, "T")

    def effect(self, X, *, T0=0, T1=1) -> np.ndarray:
        """(n,) τ̂(x) = μ̂_T1(x) − μ̂_T0(x); T0, T1 are ints or (n,) arrays."""
        mu = self.predict(X)
        return _take(mu, T1, "T1") - _take(mu, T0, "T0")

    def ate(self, X=None, *, T0=0, T1=1, method: str = "plugin") -> float:
        """Average effect of T1 against T0.

        Args:
            X: (n, p) covariates for ``method="plugin"``; None for ``"dr"``.
            method: "plugin", the mean of ``effect`` over the rows of X; or "dr", the
                doubly-robust (AIPW) estimate over the data given to ``fit`` (see
                ``dr_summary``, which also gives its standard error).
        """
        if _method(method, X, "ate") == "dr":
            return self.dr_summary(T0=T0, T1=T1)["ate"]
        return float(self.effect(X, T0=T0, T1=T1).mean())

    def att(self, X=None, T=None, *, T0=0, T1=1, method: str = "plugin") -> float:
        """Average effect of T1 against T0 on the units that received T1.

        Args:
            X, T: (n, p) covariates and (n,) received treatments for ``method="plugin"``,
                the mean of ``effect`` over the rows with T == T1; None for ``"dr"``.
            method: "plugin" or "dr" (over the data given to ``fit``, as in ``ate``).
        """
        if _method(method, X, "att", T) == "dr":
            return self.dr_summary(T0=T0, T1=T1)["att"]
        if T is None:
            raise ValueError("att(X, T): the plug-in ATT needs T, the treatment each row of X received")
        t = _as_vector(T, "T")
        if len(t) != len(X):
            raise DataError(f"T has {len(t)} rows but X has {len(X)}")
        treated = t == T1
        if not treated.any():
            raise DataError(f"no row of T received treatment {T1}")
        return float(self.effect(X, T0=T0, T1=T1)[treated].mean())

    def dr_summary(self, *, T0=0, T1=1) -> dict[str, float]:
        """Doubly-robust ATE and ATT of T1 against T0 over the data given to ``fit``, with
        standard errors: {"ate", "ate_se", "att", "att_se", "rows"}.

        ``csna.dr``: μ̂ of a row averages the members that did not train on it (``rows`` counts the
        rows that have one; with one member only its validation rows), ê is a cross-fitted logistic
        regression. Consistent when either is right; ``estimate ± 1.96 · se`` is a 95% interval.

        Raises:
            RuntimeError: a loaded estimator (it does not keep the fit data); not fitted.
        """
        run, k = self._fitted(), self.n_treatments_
        if T0 == T1 or any(not isinstance(v, (int, np.integer)) or not 0 <= v < k for v in (T0, T1)):
            raise DataError(f"T0, T1 must be two different int treatments in 0..{k - 1}, got {T0!r}, {T1!r}")
        if run.data is None:
            raise RuntimeError("the doubly-robust estimates need the data given to fit, which a loaded estimator "
                               "does not keep: fit it again, or read ate_dr / att_dr in csna evaluate's metrics.json")
        key = (int(T0), int(T1))
        if key not in self._dr:
            res = dr_effects(run, run.data, t1=key[1], t0=key[0])
            if not res:
                raise RuntimeError("the rows each ensemble member trained on are unknown")
            # None (no row of T0 or T1 held out) reads as NaN here, as the plug-in's empty mean would.
            names = {"ate": "ate_dr", "ate_se": "ate_dr_se", "att": "att_dr", "att_se": "att_dr_se"}
            self._dr[key] = {a: float("nan") if res[b] is None else res[b] for a, b in names.items()}
            self._dr[key]["rows"] = res["dr_rows"]
        return dict(self._dr[key])

    def ate_interval(self, X, *, T0=0, T1=1, alpha: float = 0.05, n_boot: int = 1000,
                     seed: int = 0) -> tuple[float, float]:
        """Percentile bootstrap (1 − alpha) interval of ``ate`` over the rows of X.

        It reflects resampling of the units only, not the uncertainty of the fitted model.
        """
        return M.bootstrap_ci(self.effect(X, T0=T0, T1=T1), n_boot=n_boot, alpha=alpha, seed=seed)

    def propensity(self, X) -> np.ndarray:
        """(n, K) ê_t(x) = P(T = t | x) from the model's propensity head."""
        return self._scores(X)["propensity"]

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path) -> Path:
        """Write a run directory that ``load``, ``rundir.load_run`` and ``csna predict`` read:
        config.yaml, env.json, preprocess.json, splits.json and the checkpoint of the last
        trained phase (written by ``Trainer.save_phase_checkpoint``, or copied from the run
        directory this estimator was loaded from); an ensemble's other members each get such a
        directory of their own under ``members/<j>/``.

        Returns:
            the run directory.

        Raises:
            CheckpointError: the directory already holds a checkpoint of another phase.
        """
        rd = _save_run(self._fitted(), Path(path))
        write_effect_scale(rd, self.run_.effect_scale)
        for j, member in enumerate(self.run_.members, start=1):
            _save_run(member, member_dir(rd, j))
        return rd

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> CSNAEstimator:
        """A fitted estimator from a run directory written by ``save`` or by ``csna train``."""
        run = load_run(path, device=device)
        est = cls(config=run.cfg)
        est._set_run(run)
        return est


def _save_run(run: Run, rd: Path) -> Path:
    """``CSNAEstimator.save`` of one ensemble member."""
    last = max(run.phases_trained, default=0)
    if last == 0:
        raise ckpt.CheckpointError("no phase was trained (every phase has epochs 0): nothing to save")
    ph = PHASES[last]
    others = [p.checkpoint for p in PHASES.values() if p is not ph and (rd / p.checkpoint).exists()]
    if others:
        raise ckpt.CheckpointError(f"{rd} already holds another csna run ({', '.join(others)}); "
                                   "save to a new directory")
    rd.mkdir(parents=True, exist_ok=True)
    dump_config(run.cfg, rd / "config.yaml")
    (rd / "env.json").write_text(json.dumps(environment(run.cfg, run.model.y_mean.device), indent=2))
    (rd / PREPROCESS_FILE).write_text(json.dumps(run.prep.to_dict(), indent=2))
    if run.splits is not None:
        (rd / SPLITS_FILE).write_text(json.dumps({k: np.asarray(v).tolist() for k, v in run.splits.items()}))
    if run.trainer is not None:
        trainer, kept = run.trainer, run.trainer.run_dir
        trainer.run_dir = rd
        try:
            trainer.save_phase_checkpoint(last)
        finally:
            trainer.run_dir = kept
    elif run.run_dir is not None and Path(run.run_dir).resolve() != rd.resolve():
        ckpt.atomic_save(ckpt.load(Path(run.run_dir) / ph.checkpoint), rd / ph.checkpoint)
    elif run.checkpoint is not None:  # a member trained in a worker process, held in memory
        ckpt.atomic_save(run.checkpoint, rd / ph.checkpoint)
    return rd


# ---------------------------------------------------------------------- inputs


def _as_frame(X, columns: list[str] | None = None) -> pd.DataFrame:
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


def _as_vector(v, name: str) -> np.ndarray:
    arr = np.asarray(v.to_numpy() if isinstance(v, (pd.Series, pd.DataFrame)) else v)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise DataError(f"{name} must be 1-D (n,), got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{name} must be numeric, got dtype {arr.dtype}")
    return arr


def _causal_data(Y, T, X, cfg: Config) -> CausalData:
    """Checked ``CausalData`` (no mu) from user arrays; raises DataError with one line."""
    frame = _as_frame(X).reset_index(drop=True)
    y = _as_vector(Y, "Y").astype(np.float64)
    t = _as_vector(T, "T")
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


def _method(method: str, X, what: str, T=None) -> str:
    """Check ``method`` of ``ate`` / ``att`` and that "dr" gets no X (nor T)."""
    if method not in ("plugin", "dr"):
        raise ValueError(f"{what}(method={method!r}): method must be 'plugin' or 'dr'")
    if method == "dr" and (X is not None or T is not None):
        raise ValueError(f"{what}(method='dr') takes no X or T: the doubly-robust estimate needs observed outcomes "
                         "and predictions from ensemble members that never trained on each row, which only the "
                         "data given to fit has; call it without X")
    if method == "plugin" and X is None:
        raise ValueError(f"{what}(X): the plug-in estimate averages effect(X), so X is required")
    return method


def _take(mu: np.ndarray, t, name: str) -> np.ndarray:
    """(n,) mu[i, t_i] for an int t or (n,) ints."""
    n, k = mu.shape
    arr = np.asarray(t)
    if arr.dtype.kind not in "iu" and not (arr.dtype.kind == "f" and np.all(arr == np.round(arr))):
        raise DataError(f"{name} must be integer treatment(s) in 0..{k - 1}, got {t!r}"[:200])
    arr = arr.astype(np.int64)
    if arr.ndim > 1 or (arr.ndim == 1 and len(arr) != n):
        raise DataError(f"{name} must be an int or have shape ({n},), got shape {arr.shape}")
    if ((arr < 0) | (arr >= k)).any():
        raise DataError(f"{name} must be in 0..{k - 1}")
    return mu[:, arr] if arr.ndim == 0 else mu[np.arange(n), arr]
