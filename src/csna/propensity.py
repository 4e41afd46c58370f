"""The propensity model ê(x) = P(T = t | x) of csna's causal terms and doubly-robust estimates.

Design §4 and §8.3: the reference of L_causal reweights the units that received t by
P(T = t) / ê_t(x), and the doubly-robust ATE / ATT divide residuals by ê. That ê must not read
the representation L_Dis balances (balancing removes what predicts treatment, so a propensity
read from it is pulled towards the marginal and looks better than the data), and it must be
out-of-fold for the rows it weighs (an in-sample fit is overconfident exactly where weights
explode). So it is a separate model on the preprocessed covariates: a multinomial logistic
regression (scikit-learn), cross-fitted over the training rows, plus one fit on all of them
for new rows, saved as plain numbers in preprocess.json.

Shape alphabet: n rows, p features, K treatments.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

FOLDS = 5  # cross-fitting folds
C = 1.0  # inverse L2 strength of the logistic regression (scikit-learn's default)
E_FLOOR = 1e-3  # ê is clipped to [E_FLOOR, 1 − E_FLOOR] before anything divides by it
WEIGHT_CLIP = (0.1, 10.0)  # stabilised inverse-propensity weights are clipped to this range


@dataclass
class Propensity:
    """A fitted multinomial logistic regression ê(x), stored as numbers (JSON-safe).

    Prediction is written out here (a softmax of a linear map) rather than by rebuilding a
    scikit-learn object, so preprocess.json stays plain numbers that any reader can load.
    """

    coef: np.ndarray  # (K, p); for K = 2 row 0 is zero and row 1 is scikit-learn's coef_
    intercept: np.ndarray  # (K,)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(n, K) probabilities, clipped to [E_FLOOR, 1 − E_FLOOR] and renormalised. A row with
        a non-finite covariate reads it as 0 (the training mean of a standardised column), so
        one bad value cannot make a weight NaN."""
        X = np.nan_to_num(np.asarray(X, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        logits = X @ self.coef.T + self.intercept  # (n, K)
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        p = np.clip(p, E_FLOOR, 1.0 - E_FLOOR)
        return p / p.sum(axis=1, keepdims=True)

    def to_dict(self) -> dict:
        return {"coef": self.coef.tolist(), "intercept": self.intercept.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> Propensity:
        return cls(np.asarray(d["coef"], dtype=np.float64), np.asarray(d["intercept"], dtype=np.float64))


def fit_propensity(X: np.ndarray, t: np.ndarray, K: int) -> Propensity:
    """Fit ê on rows ``X`` (n, p) with treatments ``t`` (n,) in 0…K−1. An arm absent from
    ``t`` gets probability E_FLOOR everywhere (a large negative logit)."""
    X = np.nan_to_num(np.asarray(X, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    t = np.asarray(t, dtype=np.int64)
    present = np.unique(t)
    coef, intercept = np.zeros((K, X.shape[1])), np.full(K, -50.0)
    if len(present) == 1:
        intercept[present[0]] = 0.0
        return Propensity(coef, intercept)
    lr = LogisticRegression(C=C, max_iter=2000).fit(X, t)
    if len(lr.classes_) == 2:  # scikit-learn's binary form: one row, the logit of the second class
        coef[lr.classes_[1]], intercept[lr.classes_[1]] = lr.coef_[0], lr.intercept_[0]
        intercept[lr.classes_[0]] = 0.0
    else:
        coef[lr.classes_], intercept[lr.classes_] = lr.coef_, lr.intercept_
    return Propensity(coef, intercept)


def crossfit_propensity(X: np.ndarray, t: np.ndarray, K: int, seed: int = 0, folds: int = FOLDS) -> np.ndarray:
    """Out-of-fold ê for every row: (n, K), row i predicted by a model fitted without it.

    Folds are stratified by treatment; when the smallest group has fewer rows than ``folds``,
    as many folds as it allows (at least 2); with fewer than 2 rows in some group, an in-sample
    fit (there is nothing to hold out).
    """
    t = np.asarray(t, dtype=np.int64)
    counts = np.bincount(t, minlength=K)
    k = int(min(folds, counts[counts > 0].min()))
    if k < 2:
        return fit_propensity(X, t, K).predict_proba(X)
    out = np.zeros((len(t), K))
    for fit_idx, held in StratifiedKFold(k, shuffle=True, random_state=seed).split(X, t):
        out[held] = fit_propensity(X[fit_idx], t[fit_idx], K).predict_proba(X[held])
    return out


def stabilised_weights(e: np.ndarray, t: np.ndarray, share: np.ndarray) -> np.ndarray:
    """(n,) weights P(T = t_i) / ê_{t_i}(x_i), clipped to WEIGHT_CLIP: they carry the units that
    received t_i to the whole population (mean ≈ 1 within each arm when ê is right).

    Args:
        e: (n, K) propensities; t: (n,) received treatments; share: (K,) P(T = t) estimates.
    """
    w = share[t] / e[np.arange(len(t)), t]
    return np.clip(w, *WEIGHT_CLIP)


CROSSFIT_ROWS = 200_000  # rows cross-fitted at most; the rest get the fit on those (out-of-sample for them)


def arm_shares(t: np.ndarray, K: int) -> np.ndarray:
    """(K,) P(T = t) estimated by the share of each treatment among ``t``."""
    return np.bincount(np.asarray(t, dtype=np.int64), minlength=K) / max(len(t), 1)


def crossfit_weights(X: np.ndarray, t: np.ndarray, K: int, seed: int = 0) -> np.ndarray:
    """(n,) stabilised weights of rows ``X`` (n, p) from cross-fitted ê (``crossfit_propensity``).
    Past CROSSFIT_ROWS rows, a seeded random CROSSFIT_ROWS of them are cross-fitted and the
    others get the model fitted on those (out-of-sample for them): a random subset, never the
    first rows, which in a file sorted by treatment or by date would hold one arm or a drifted
    share."""
    t = np.asarray(t, dtype=np.int64)
    e = np.zeros((len(t), K))
    if len(t) <= CROSSFIT_ROWS:
        e[:] = crossfit_propensity(X, t, K, seed)
    else:
        pick = np.zeros(len(t), dtype=bool)
        pick[np.random.default_rng(seed).choice(len(t), CROSSFIT_ROWS, replace=False)] = True
        e[pick] = crossfit_propensity(X[pick], t[pick], K, seed)
        e[~pick] = fit_propensity(X[pick], t[pick], K).predict_proba(X[~pick])
    return stabilised_weights(e, t, arm_shares(t, K))
