"""The effect given X alone when the model also read controls W.

EconML's ``fit(Y, T, X=X, W=W)`` separates the effect modifiers X (``effect(X)`` takes only
them) from controls W that join the adjustment set. csna's network reads X and W together, so
its τ̂(x, w) conditions on both; the effect given X is then E[τ(X, W) | X = x], the regression of
τ̂(x_i, w_i) on x_i over the rows given to ``fit`` (EconML's DML final stage is the same idea
with residuals). Each member's τ'_j is projected on its own, so the members' spread still gives
a standard error (``csna.inference``); with no X the projection is the mean over the rows.

Why scikit-learn's ``HistGradientBoostingRegressor``: nonlinear in X, handles missing values
and is fast at these sizes; a linear projection would flatten the heterogeneity csna found.

Shape alphabet: n rows, K treatments, M members.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd


def _regressor(frame: pd.DataFrame, seed: int):
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    text = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    encode = ColumnTransformer([("text", OneHotEncoder(handle_unknown="ignore", sparse_output=False), text)],
                               remainder="passthrough")
    return make_pipeline(encode, HistGradientBoostingRegressor(max_iter=200, random_state=seed))


@dataclass
class Projection:
    """τ̂ of each member projected on the effect modifiers ``columns`` (none: a constant)."""

    columns: list[str]
    constants: np.ndarray | None = None  # (M, K − 1) with no columns
    models: list[list] = field(default_factory=list)  # [member][arm − 1] fitted regressors

    def member_effects(self, frame: pd.DataFrame | None) -> np.ndarray:
        """(M, n, K − 1): each member's effect of every arm against arm 0 given X; n = 1 with
        no effect modifiers (``frame`` is then ignored)."""
        if self.constants is not None:
            return self.constants[:, None, :]
        if frame is None:
            raise ValueError(f"effect(X): X is required, the model's effect modifiers are {', '.join(self.columns)}")
        x = frame[self.columns]
        return np.stack([np.stack([m.predict(x) for m in arms], axis=1) for arms in self.models])


def fit_projection(member_tau: np.ndarray, frame: pd.DataFrame | None, seed: int = 0) -> Projection:
    """Args:
        member_tau: (M, n, K − 1) each member's effects on the rows given to ``fit``.
        frame: (n, p_x) the effect modifiers of those rows, or None for a constant effect.
    """
    if frame is None or frame.shape[1] == 0:
        return Projection([], constants=member_tau.mean(axis=1))
    models = [[_regressor(frame, seed).fit(frame, tau[:, k]) for k in range(tau.shape[1])] for tau in member_tau]
    return Projection(list(frame.columns), models=models)
