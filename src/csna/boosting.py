"""LightGBM as csna tunes it, for the tree peers of ``csna bench`` and for the effect shrinkage's
outcome model m̂(x) = E[Y | x] (``csna.shrink``).

Every LightGBM model gets the same tuning budget: a few tree shapes, each boosted with early
stopping on validation rows; the shape and number of rounds with the lowest validation loss are
then refitted on train + validation. ``crossfit_outcome`` gives out-of-fold predictions of such
a model, as the R-loss needs them.

Shape alphabet: n rows, p features.
"""

from __future__ import annotations

from typing import Any

import numpy as np

FOLDS = 5  # cross-fitting folds of crossfit_outcome
INNER_VAL = 0.2  # share of a fold's fitting rows that tune the model


# Tree shapes tried per model; learning rate and the rest are shared.
SHAPES = [dict(num_leaves=7, min_child_samples=10), dict(num_leaves=15, min_child_samples=5),
          dict(num_leaves=31, min_child_samples=20), dict(num_leaves=3, min_child_samples=10)]
BASE = dict(learning_rate=0.05, n_estimators=2000, subsample=0.8, subsample_freq=1, colsample_bytree=0.8,
            reg_lambda=1.0, n_jobs=1, verbose=-1)


def lgbm(params: dict[str, Any], classify: bool, seed: int):
    import lightgbm as lgb

    cls = lgb.LGBMClassifier if classify else lgb.LGBMRegressor
    return cls(**{**BASE, **params, "random_state": seed})


def _eval_kwargs(x_va: np.ndarray, y_va: np.ndarray) -> dict[str, Any]:
    """LightGBM 4.7 renamed ``eval_set`` to ``eval_X`` / ``eval_y``; older releases know only the former."""
    import inspect

    import lightgbm as lgb

    if "eval_X" in inspect.signature(lgb.LGBMModel.fit).parameters:
        return {"eval_X": (x_va,), "eval_y": (y_va,)}
    return {"eval_set": [(x_va, y_va)]}


def tune(x_tr: np.ndarray, y_tr: np.ndarray, x_va: np.ndarray, y_va: np.ndarray, classify: bool,
         seed: int = 0) -> dict[str, Any]:
    """The LightGBM parameters (shape and rounds) with the lowest validation loss.

    A target with a single class (or too few rows) cannot be tuned: the first shape with 100
    rounds is returned.
    """
    import lightgbm as lgb

    if len(y_tr) < 10 or len(y_va) < 2 or (classify and (np.unique(y_tr).size < 2 or np.unique(y_va).size < 2)):
        return {**SHAPES[0], "n_estimators": 100}
    best: tuple[float, dict[str, Any]] = (float("inf"), {})
    metric = "binary_logloss" if classify else "l2"
    for shape in SHAPES:
        model = lgbm(shape, classify, seed)
        model.fit(x_tr, y_tr, eval_metric=metric, callbacks=[lgb.early_stopping(50, verbose=False)],
                  **_eval_kwargs(x_va, y_va))
        rounds = max(1, int(model.best_iteration_ or BASE["n_estimators"]))
        loss = float(model.best_score_["valid_0"][metric])
        if loss < best[0]:
            best = (loss, {**shape, "n_estimators": rounds})
    return best[1]


def tuned_fit(x: np.ndarray, y: np.ndarray, train: np.ndarray, val: np.ndarray, classify: bool, seed: int):
    """Tune on (train, val) rows of ``x``, ``y``, then refit on both."""
    params = tune(x[train], y[train], x[val], y[val], classify, seed)
    rows = np.concatenate([train, val])
    if classify and np.unique(y[rows]).size < 2:
        return _Constant(float(y[rows].mean()))
    return lgbm(params, classify, seed).fit(x[rows], y[rows])


class _Constant:
    def __init__(self, value: float) -> None:
        self.value = value

    def predict(self, x):
        return np.full(len(x), self.value)

    def predict_proba(self, x):
        return np.stack([np.full(len(x), 1 - self.value), np.full(len(x), self.value)], 1)


def crossfit_outcome(x: np.ndarray, y: np.ndarray, seed: int = 0, folds: int = FOLDS) -> np.ndarray:
    """Out-of-fold predictions (n,) of a LightGBM regression of ``y`` (n,) on ``x`` (n, p): each
    fold is predicted by a model tuned (``tuned_fit``) on a random INNER_VAL of the other folds'
    rows and refitted on all of them."""
    from sklearn.model_selection import KFold

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    out = np.zeros(len(y))
    for i, (fit_idx, held) in enumerate(KFold(min(folds, len(y)), shuffle=True, random_state=seed).split(x)):
        perm = np.random.default_rng(seed + i).permutation(fit_idx)
        k = int(round((1.0 - INNER_VAL) * len(perm)))
        out[held] = tuned_fit(x, y, perm[:k], perm[k:], False, seed).predict(x[held])
    return out
