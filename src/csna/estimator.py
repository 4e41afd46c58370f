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
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from .config import Config, ConfigError, _apply, _nest, load_config
from .config import validate as validate_config
from .data import DataError, split_indices
from .dr import dr_effects
from .ensemble import train_run
from .estimator_inputs import (as_frame, as_vector, causal_data, check_method, check_sample_weight, join_covariates,
                               take)
from .inference import (AverageInference, EffectInference, jackknife_stderr, level_variance, member_effects,
                        train_share)
from .perf import tune_malloc
from .predict import predict_features, select_covariates
from .projection import Projection, fit_projection
from .rundir import Run, load_run, member_dir, save_run, write_effect_scale
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
    def fit(self, Y, T, *, X=None, W=None, sample_weight=None) -> CSNAEstimator:
        """Train the four phases on (Y, T, X, W).

        Args:
            Y: (n,) or (n, 1) outcome: continuous, or 0/1 (binary; ``data.outcome_type`` may
                force a type, e.g. multiclass with class indices 0, 1, …).
            T: (n,) integer (or boolean) treatment in 0..K−1, every value present.
            X: (n, p) effect modifiers: a DataFrame (names kept; strings and categories are
                one-hot encoded) or a numeric array (named x0 … x{p−1}); None for a constant
                effect.
            W: (n, q) controls that join the adjustment set (arrays: named w0 … w{q−1}); a
                column X also has is read once. With W, ``effect(X)`` is the projection of the
                model's τ̂(x, w) on X (``csna.projection``).
            sample_weight: None or equal weights. csna does not weight rows in training yet;
                other weights raise ``ValueError`` rather than being ignored.

        Returns:
            self.

        Raises:
            DataError: mismatched lengths, NaN/Inf values, a single treatment group, no X and no W, …
        """
        cfg = self._resolve()
        cfg.data.source = IN_MEMORY
        frame, modifiers, controls = join_covariates(X, W)
        check_sample_weight(sample_weight, len(frame))
        data = causal_data(Y, T, frame, cfg)
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
        self.effect_modifiers_, self.controls_ = modifiers, controls
        if controls or not modifiers:
            member_tau = member_effects(run, run.prep.features(data.X))[:, :, 1:]  # (M, n, K − 1)
            self.projection_ = fit_projection(member_tau, data.X[modifiers] if modifiers else None, seed)
        return self

    def _set_run(self, run: Run) -> None:
        self.run_, self.model_, self.config_ = run, run.model, run.cfg
        self._dr: dict[tuple[int, int], dict[str, float]] = {}  # dr_summary by (T0, T1)
        self.covariates_ = list(run.prep.pre.input_columns_)
        self.effect_modifiers_, self.controls_ = list(self.covariates_), []
        self.projection_: Projection | None = None
        self.n_treatments_ = run.prep.n_treatments
        self.outcome_type_ = run.prep.outcome_type

    def _fitted(self) -> Run:
        if getattr(self, "run_", None) is None:
            raise RuntimeError("this CSNAEstimator is not fitted; call fit(Y, T, X=X) or CSNAEstimator.load(dir)")
        return self.run_

    def __deepcopy__(self, memo: dict) -> CSNAEstimator:
        """A copy that shares nothing mutable; the fitted model is copied, the training loop
        (its logger and open files) is not. DoWhy's refuters copy an estimator this way."""
        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            if key == "run_" and value is not None:
                value = copy.deepcopy(_without_trainers(value), memo)
            else:
                value = copy.deepcopy(value, memo)
            setattr(new, key, value)
        return new

    # ------------------------------------------------------------------ scoring
    def _features(self, X, what: str = "X") -> np.ndarray:
        run = self._fitted()
        return run.prep.features(select_covariates(run, as_frame(X, self.covariates_), where=what))

    def _scores(self, X, gates: bool = True) -> dict[str, np.ndarray]:
        return predict_features(self._fitted(), self._features(X), gates=gates)

    def _member_table(self, X) -> np.ndarray:
        """(M, n, K) each member's effects against arm 0 given the effect modifiers X."""
        if self.projection_ is None:
            if X is None:
                raise ValueError("X is required: the model's effects vary with its covariates "
                                 f"{', '.join(self.covariates_[:6])}{' …' if len(self.covariates_) > 6 else ''}")
            return member_effects(self._fitted(), self._features(X))
        frame = None if X is None or not self.effect_modifiers_ else as_frame(X, self.effect_modifiers_)
        eff = self.projection_.member_effects(frame)  # (M, n, K − 1)
        return np.concatenate([np.zeros(eff.shape[:2] + (1,)), eff], axis=2)

    def predict(self, X, T=None, gates: bool = True) -> np.ndarray:
        """Expected outcome E[Y | x, do(t)] (P(Y=1 | …) for a binary outcome).

        Args:
            X: (n, p) covariates (X and W of ``fit``); a DataFrame is matched by column name
                (extra columns are ignored), an array must hold the ``covariates_`` in order.
            T: None for every treatment, an int, or (n,) ints: the treatment of each row.
            gates: use the Meta Utility Layer's gates when phase 4 was trained; False runs
                every block.

        Returns:
            (n, K) when T is None, else (n,).
        """
        mu = self._scores(X, gates)["mu"]  # (n, K)
        return mu if T is None else take(mu, T, "T")

    def effect(self, X=None, *, T0=0, T1=1) -> np.ndarray:
        """(n,) τ̂(x) = μ̂_T1(x) − μ̂_T0(x); T0, T1 are ints or (n,) arrays. With controls W, the
        projection on X; (1,) when the model has no effect modifiers and X is None."""
        if self.projection_ is None and X is not None:
            mu = self.predict(X)
        else:
            mu = self._member_table(X).mean(axis=0)  # (n, K) effects against arm 0
        return take(mu, T1, "T1") - take(mu, T0, "T0")

    def const_marginal_effect(self, X=None) -> np.ndarray:
        """(n, K − 1): the effect of each arm 1 … K−1 against arm 0 (EconML's name; with a
        discrete treatment the marginal effect does not depend on the treatment level)."""
        k = self._fitted().prep.n_treatments
        return np.stack([self.effect(X, T0=0, T1=t) for t in range(1, k)], axis=1)

    def marginal_effect(self, T, X=None) -> np.ndarray:
        """(n, K − 1): ``const_marginal_effect(X)``; ``T`` is accepted for EconML's signature."""
        return self.const_marginal_effect(X)

    def effect_inference(self, X=None, *, T0=0, T1=1) -> EffectInference:
        """Pointwise inference on ``effect(X)``: the members' delete-d jackknife standard error and
        the shared level's (``csna.inference``; ValueError with one member). It covers the fit's variance, not its bias;
        the measured coverage is in ``benchmarks/RESULTS.md``."""
        table = self._member_table(X)  # (M, n, K)
        if len(table) < 2:
            raise ValueError("pointwise intervals come from the ensemble's members: fit with train__ensemble >= 2 "
                             "(the default is 4), or use ate_inference() / att_inference() (doubly robust)")
        n = table.shape[1]
        contrast = np.stack([take(m, T1, "T1") - take(m, T0, "T0") for m in table])  # (M, n)
        stderr = jackknife_stderr(contrast, train_share(self._fitted()))
        lv = np.broadcast_to(level_variance(self._fitted()), table.shape[1:])  # (n, K)
        stderr = np.sqrt(stderr**2 + take(lv, T1, "T1") + take(lv, T0, "T0"))
        return EffectInference(self.effect(X, T0=T0, T1=T1).reshape(n), stderr)

    def effect_interval(self, X=None, *, T0=0, T1=1, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper), each (n,): the (1 − alpha) intervals of ``effect_inference``."""
        return self.effect_inference(X, T0=T0, T1=T1).conf_int(alpha)

    def ate(self, X=None, *, T0=0, T1=1, method: str = "plugin") -> float:
        """Average effect of T1 against T0.

        Args:
            X: (n, p) covariates for ``method="plugin"`` (None: only for a model without effect
                modifiers); None for ``"dr"``.
            method: "plugin", the mean of ``effect`` over the rows of X; or "dr", the
                doubly-robust (AIPW) estimate over the data given to ``fit`` (see
                ``dr_summary``, which also gives its standard error).
        """
        if check_method(method, X, "ate", constant=self.projection_ is not None and not self.effect_modifiers_) == "dr":
            return self.dr_summary(T0=T0, T1=T1)["ate"]
        return float(self.effect(X, T0=T0, T1=T1).mean())

    def ate_inference(self, X=None, *, T0=0, T1=1) -> AverageInference:
        """With X None: the doubly-robust ATE over the data given to ``fit``, with its
        influence-function standard error (``dr_summary``). With X: the mean of ``effect(X)``
        with the members' standard error of ``effect_inference(X).population_summary()``."""
        if X is None:
            s = self.dr_summary(T0=T0, T1=T1)
            return AverageInference(s["ate"], s["ate_se"], s["rows"])
        return self.effect_inference(X, T0=T0, T1=T1).population_summary()

    def ate_interval(self, X=None, *, T0=0, T1=1, alpha: float = 0.05) -> tuple[float, float]:
        """(lower, upper) of the (1 − alpha) interval of ``ate_inference(X)``."""
        return self.ate_inference(X, T0=T0, T1=T1).conf_int(alpha)

    def att_inference(self, *, T0=0, T1=1) -> AverageInference:
        """The doubly-robust ATT over the data given to ``fit``, with its standard error."""
        s = self.dr_summary(T0=T0, T1=T1)
        return AverageInference(s["att"], s["att_se"], s["rows"])

    def att_interval(self, *, T0=0, T1=1, alpha: float = 0.05) -> tuple[float, float]:
        """(lower, upper) of the (1 − alpha) interval of ``att_inference()``."""
        return self.att_inference(T0=T0, T1=T1).conf_int(alpha)

    def att(self, X=None, T=None, *, T0=0, T1=1, method: str = "plugin") -> float:
        """Average effect of T1 against T0 on the units that received T1.

        Args:
            X, T: (n, p) covariates and (n,) received treatments for ``method="plugin"``,
                the mean of ``effect`` over the rows with T == T1; None for ``"dr"``.
            method: "plugin" or "dr" (over the data given to ``fit``, as in ``ate``).
        """
        if check_method(method, X, "att", T) == "dr":
            return self.dr_summary(T0=T0, T1=T1)["att"]
        if T is None:
            raise ValueError("att(X, T): the plug-in ATT needs T, the treatment each row of X received")
        t = as_vector(T, "T")
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
            ValueError: the estimator was fitted with controls W or without X: its effect is a
                scikit-learn projection (``csna.projection``), and csna writes no pickles.
        """
        run = self._fitted()
        if self.projection_ is not None:
            raise ValueError("save: this estimator was fitted with controls W (or without X), and its effect given X "
                             "is a scikit-learn projection that csna cannot write without a pickle; fit with all "
                             "covariates as X to save it")
        rd = save_run(run, Path(path))
        write_effect_scale(rd, self.run_.effect_scale)
        for j, member in enumerate(self.run_.members, start=1):
            save_run(member, member_dir(rd, j))
        return rd

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> CSNAEstimator:
        """A fitted estimator from a run directory written by ``save`` or by ``csna train``."""
        run = load_run(path, device=device)
        est = cls(config=run.cfg)
        est._set_run(run)
        return est


def _without_trainers(run: Run) -> Run:
    """``run`` and its members without their training loops (loggers, open files)."""
    return replace(run, trainer=None, members=[replace(m, trainer=None) for m in run.members])
