"""The propensities csna reports and weighs by are honest (issue 18, item 2).

- ``csna.propensity``: the saved logistic model and the cross-fitted one against scikit-learn.
- The model's propensity head reads the covariates, not the representation L_Dis balances: on a
  confounded table, after a run whose phase 3 balances hard, its ê agrees with a logistic
  regression on the same rows and is calibrated, instead of being pulled to the marginal.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from csna.config import load_config
from csna.ensemble import train_run
from csna.predict import predict_features
from csna.propensity import crossfit_propensity, fit_propensity, stabilised_weights


def _confounded(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5))
    e = 1 / (1 + np.exp(-(1.5 * x[:, 0] - 1.0 * x[:, 1])))
    t = (rng.random(n) < e).astype(np.int64)
    y = 2 * x[:, 0] + x[:, 1] + t + rng.normal(size=n)
    return x, t, y, e


def test_saved_model_predicts_what_scikit_learn_predicts():
    x, t, _, _ = _confounded(600)
    mine = fit_propensity(x, t, 2).predict_proba(x)
    ref = LogisticRegression(max_iter=2000).fit(x, t).predict_proba(x)
    np.testing.assert_allclose(mine, np.clip(ref, 1e-3, 1 - 1e-3), atol=1e-6)


def test_crossfit_predicts_every_row_from_a_model_that_did_not_see_it():
    x, t, _, _ = _confounded(300)
    oof = crossfit_propensity(x, t, 2, seed=0)
    assert oof.shape == (300, 2) and np.allclose(oof.sum(1), 1)
    ref = np.zeros(300)  # the folds written out with scikit-learn: each row from a fit without it
    for fit_idx, held in StratifiedKFold(5, shuffle=True, random_state=0).split(x, t):
        assert not set(fit_idx) & set(held)
        ref[held] = LogisticRegression(max_iter=2000).fit(x[fit_idx], t[fit_idx]).predict_proba(x[held])[:, 1]
    np.testing.assert_allclose(oof[:, 1], np.clip(ref, 1e-3, 1 - 1e-3), atol=1e-6)
    assert np.abs(oof[:, 1] - fit_propensity(x, t, 2).predict_proba(x)[:, 1]).max() > 1e-3  # not in-sample
    w = stabilised_weights(oof, t, np.bincount(t) / len(t))
    assert w.min() >= 0.1 and w.max() <= 10.0
    for arm in (0, 1):  # stabilised weights average about 1 within each arm
        assert abs(w[t == arm].mean() - 1.0) < 0.15


def test_the_propensity_head_is_calibrated_and_agrees_with_logistic_regression(tmp_path):
    x, t, y, e_true = _confounded(2000, seed=1)
    path = tmp_path / "conf.csv"
    pd.DataFrame({**{f"x{i}": x[:, i] for i in range(5)}, "treatment": t, "outcome": y}).to_csv(path, index=False)
    # Phase 3 balances hard (λ_Dis 2): a head reading the balanced representation would flatten.
    cfg = load_config(None, [f"data.source={path}", "train.ensemble=1", "phase1.epochs=15", "phase1.min_epochs=15",
                             "phase1.lr=1e-3", "phase2.epochs=3", "phase3.epochs=8", "phase3.lr=1e-3",
                             "phase3.lambda_dis=2.0", "phase4.epochs=0", "train.progress=false"])
    run = train_run(cfg)
    head = predict_features(run, run.prep.features(run.data.X), gates=False)["propensity"][:, 1]  # (n,)
    lr = LogisticRegression(max_iter=2000).fit(x, t).predict_proba(x)[:, 1]
    assert np.corrcoef(head, lr)[0, 1] > 0.95
    assert np.abs(head - lr).mean() < 0.05
    assert head.std() > 0.8 * e_true.std()  # not pulled towards the marginal
    bins = np.quantile(head, np.linspace(0, 1, 6))
    which = np.clip(np.searchsorted(bins, head, side="right") - 1, 0, 4)
    for b in range(5):  # calibrated: in each fifth, mean ê is close to the treated share
        assert abs(head[which == b].mean() - t[which == b].mean()) < 0.08, b


@pytest.mark.parametrize("K", [2, 3])
def test_a_propensity_survives_a_json_round_trip(K):
    rng = np.random.default_rng(K)
    x = rng.normal(size=(200, 4))
    t = rng.integers(0, K, 200)
    p = fit_propensity(x, t, K)
    q = type(p).from_dict(p.to_dict())
    np.testing.assert_array_equal(p.predict_proba(x), q.predict_proba(x))
    assert p.predict_proba(x).shape == (200, K)


def test_a_non_finite_covariate_cannot_make_a_weight_nan():
    x, t, _, _ = _confounded(200, seed=3)
    x[5, 2], x[9, 0] = np.nan, np.inf
    from csna.propensity import crossfit_weights

    w = crossfit_weights(x, t, 2, seed=0)
    assert np.isfinite(w).all() and w.min() >= 0.1


def test_past_the_row_cap_a_file_sorted_by_treatment_still_gets_two_arm_weights(monkeypatch):
    """Cross-fitting takes a random subset past CROSSFIT_ROWS, never the first rows (which, in
    a file sorted by treatment, would hold one arm)."""
    import csna.propensity as P

    monkeypatch.setattr(P, "CROSSFIT_ROWS", 100)
    x, t, _, _ = _confounded(400, seed=4)
    order = np.argsort(t, kind="stable")  # every control row first
    w = P.crossfit_weights(x[order], t[order], 2, seed=0)
    ref = P.crossfit_weights(x, t, 2, seed=0)  # the same rows unsorted: weights of the same spread
    assert np.isfinite(w).all() and w.std() > 0.3 * ref.std()
    for arm in (0, 1):
        assert abs(w[t[order] == arm].mean() - 1.0) < 0.3
