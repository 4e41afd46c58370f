"""Gradient-boosting peers: T-, S- and X-learners on LightGBM, and EconML's CausalForestDML and
DRLearner with LightGBM nuisance models.

Every LightGBM model gets the same tuning budget (``csna.boosting``): a few tree shapes, each
boosted with early stopping on the validation rows; the shape and number of rounds with the
lowest validation loss are then refitted on train + validation.

Shape alphabet: n rows, p features.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..boosting import lgbm, tune, tuned_fit

PROPENSITY_CLIP = 0.01


def _mean(model, x: np.ndarray, classify: bool) -> np.ndarray:
    return model.predict_proba(x)[:, 1] if classify else model.predict(x)


def t_learner(x, t, y, train, val, binary, seed=0) -> np.ndarray:
    """(n, 2) one tuned model per arm."""
    mu = np.zeros((len(x), 2))
    for a in (0, 1):
        tr, va = train[t[train] == a], val[t[val] == a]
        mu[:, a] = _mean(tuned_fit(x, y, tr, va, binary, seed), x, binary)
    return mu


def s_learner(x, t, y, train, val, binary, seed=0) -> np.ndarray:
    """(n, 2) one tuned model on [x, t], evaluated at t = 0 and t = 1."""
    xt = np.column_stack([x, t])  # (n, p + 1)
    model = tuned_fit(xt, y, train, val, binary, seed)
    return np.stack([_mean(model, np.column_stack([x, np.full(len(x), a)]), binary) for a in (0, 1)], 1)


def x_learner(x, t, y, train, val, binary, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """Künzel et al. (2019): T-learner outcomes, imputed effects per arm, propensity-weighted.

    Returns: τ̂ (n,) and the stage-one outcomes (n, 2).
    """
    mu = t_learner(x, t, y, train, val, binary, seed)
    d = np.where(t == 1, y - mu[:, 0], mu[:, 1] - y)  # (n,) imputed effect, from the other arm's model
    tau = np.zeros((len(x), 2))
    for a in (0, 1):
        tr, va = train[t[train] == a], val[t[val] == a]
        tau[:, a] = tuned_fit(x, d, tr, va, False, seed).predict(x)
    g = np.clip(_mean(tuned_fit(x, t, train, val, True, seed), x, True), PROPENSITY_CLIP, 1 - PROPENSITY_CLIP)
    return g * tau[:, 0] + (1 - g) * tau[:, 1], mu


def causal_forest(x, t, y, train, val, binary, seed=0) -> np.ndarray:
    """EconML CausalForestDML with tuned LightGBM nuisances; forest tuned by EconML's ``tune``
    (out-of-sample R-score on its own split of the fit rows). Returns τ̂ (n,)."""
    from econml.dml import CausalForestDML

    rows = np.concatenate([train, val])
    py = tune(x[train], y[train], x[val], y[val], False, seed)
    pt = tune(x[train], t[train], x[val], t[val], True, seed)
    est = CausalForestDML(model_y=lgbm(py, False, seed), model_t=lgbm(pt, True, seed), discrete_treatment=True,
                          cv=3, n_estimators=400, random_state=seed, n_jobs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.tune(y[rows], t[rows], X=x[rows])
        est.fit(y[rows], t[rows], X=x[rows])
        return np.asarray(est.effect(x), dtype=np.float64).reshape(-1)


def dr_learner(x, t, y, train, val, binary, seed=0) -> np.ndarray:
    """EconML DRLearner with tuned LightGBM nuisances; the final CATE model (linear or a small
    LightGBM) is the one with the lower DR loss on the validation rows. Returns τ̂ (n,)."""
    from econml.dr import DRLearner
    from econml.sklearn_extensions.linear_model import StatsModelsLinearRegression

    xt = np.column_stack([x, t])
    pr = tune(xt[train], y[train], xt[val], y[val], False, seed)
    pt = tune(x[train], t[train], x[val], t[val], True, seed)
    finals = [lambda: lgbm(dict(num_leaves=7, min_child_samples=20, n_estimators=100), False, seed),
              lambda: StatsModelsLinearRegression()]

    def make(final):
        return DRLearner(model_propensity=lgbm(pt, True, seed), model_regression=lgbm(pr, False, seed),
                         model_final=final(), cv=3, min_propensity=PROPENSITY_CLIP, random_state=seed)

    rows = np.concatenate([train, val])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = [make(f).fit(y[train], t[train], X=x[train]).score(y[val], t[val], X=x[val]) for f in finals]
        est = make(finals[int(np.argmin(scores))]).fit(y[rows], t[rows], X=x[rows])
        return np.asarray(est.effect(x), dtype=np.float64).reshape(-1)
