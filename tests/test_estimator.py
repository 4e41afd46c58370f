"""CSNAEstimator: fit / effect / ate / predict / save / load, on tiny training budgets."""

import numpy as np
import pandas as pd
import pytest
import torch

from csna import ConfigError, CSNAEstimator
from csna.data import DataError
from csna.rundir import load_run

TINY = {"train__ensemble": 1, "phase1__epochs": 3, "phase1__min_epochs": 1, "phase2__epochs": 1, "phase3__epochs": 1,
        "phase4__epochs": 1, "train__progress": False, "log__tensorboard": False}
SMALL_MODEL = {"model__hidden": 32, "model__d": 16, "model__head_hidden": 32}
# L_causal pulls P(Y|do(T)) toward P(Y|T), i.e. toward the confounded difference in means
# (design §8.3), and a short phase 1 leaves the confounder x0 under-fitted: both bias the ATE
# toward the naive ≈3. With λ_causal = 0 and 20 phase-1 epochs it comes out at 1.88–2.20 over
# data/training seeds 0–7; with the default λ_causal = 0.5 at 2.03–2.37.
NO_L_CAUSAL = {f"phase{i}__lambda_causal": 0.0 for i in (1, 2, 3, 4)}
TAU = 2.0


def linear_problem(n=1500, seed=0):
    """Y = x·β + τ·T + noise, with T confounded through x0 and x1 (which also drive Y)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 5))
    beta = np.array([1.0, -0.5, 0.5, 0.0, 0.25])
    e = 1.0 / (1.0 + np.exp(-(x[:, 0] - 0.5 * x[:, 1])))
    t = (rng.random(n) < e).astype(np.int64)
    y = x @ beta + TAU * t + 0.5 * rng.standard_normal(n)
    return y, t, x


@pytest.fixture(scope="module")
def linear_fit():
    y, t, x = linear_problem()
    est = CSNAEstimator(**{**TINY, **SMALL_MODEL, **NO_L_CAUSAL, "phase1__epochs": 20, "phase1__min_epochs": 20})
    return est.fit(y, t, X=x), (y, t, x)


@pytest.fixture(scope="module")
def small():
    y, t, x = linear_problem(n=300, seed=1)
    X = pd.DataFrame(x, columns=["age", "bmi", "dose", "noise", "score"])
    return CSNAEstimator(**TINY, **SMALL_MODEL).fit(pd.Series(y), pd.Series(t), X=X), (y, t, X)


def test_recovers_the_ate_of_a_linear_problem(linear_fit):
    est, (y, t, x) = linear_fit
    naive = y[t == 1].mean() - y[t == 0].mean()
    assert abs(naive - TAU) > 0.8  # confounded: the difference in means is far off
    ate = est.ate(x)
    assert abs(ate - TAU) < 0.3, ate  # a model that ignores T (0) or confounding (≈3) fails
    # The interval of the doubly-robust ATE over the fit data (one member: its validation rows).
    lo, hi = est.ate_interval()
    assert lo < TAU < hi and hi - lo < 0.8, (lo, hi)
    lo90, hi90 = est.ate_interval(alpha=0.1)
    assert lo < lo90 < hi90 < hi
    with pytest.raises(ValueError, match="ensemble"):
        est.ate_interval(x)  # pointwise intervals need members


def test_effect_is_the_difference_of_predicted_outcomes(linear_fit):
    est, (_, _, x) = linear_fit
    mu = est.predict(x)
    assert mu.shape == (len(x), 2) and est.n_treatments_ == 2
    np.testing.assert_allclose(est.effect(x), mu[:, 1] - mu[:, 0])
    np.testing.assert_allclose(est.effect(x, T0=1, T1=0), -(mu[:, 1] - mu[:, 0]))
    assert est.ate(x) == pytest.approx(float((mu[:, 1] - mu[:, 0]).mean()))
    np.testing.assert_array_equal(est.predict(x, T=1), mu[:, 1])
    per_row = np.arange(len(x)) % 2
    np.testing.assert_array_equal(est.predict(x, T=per_row), mu[np.arange(len(x)), per_row])
    e = est.propensity(x)
    assert e.shape == (len(x), 2) and np.allclose(e.sum(1), 1.0) and (e > 0).all()
    assert est.covariates_ == ["x0", "x1", "x2", "x3", "x4"]
    assert est.predict(x, gates=False).shape == (len(x), 2)


def test_pandas_input_keeps_names_and_matches_columns_by_name(small):
    est, (_, _, X) = small
    assert est.covariates_ == ["age", "bmi", "dose", "noise", "score"]
    mu = est.predict(X)
    shuffled = X[X.columns[::-1]].assign(extra="ignored")
    np.testing.assert_array_equal(est.predict(shuffled), mu)
    np.testing.assert_array_equal(est.predict(X.to_numpy()), mu)  # arrays: columns in fit order
    with pytest.raises(DataError, match="dose"):
        est.predict(X.drop(columns="dose"))


def test_numpy_and_pandas_fits_agree(small):
    est, (y, t, X) = small
    other = CSNAEstimator(**TINY, **SMALL_MODEL).fit(y, t, X=X.to_numpy())
    assert other.covariates_ == ["x0", "x1", "x2", "x3", "x4"]
    np.testing.assert_allclose(other.predict(X.to_numpy()), est.predict(X), atol=1e-5)


def test_binary_outcome_predicts_probabilities():
    y, t, x = linear_problem(n=300, seed=2)
    yb = (y > np.median(y)).astype(np.int64)
    est = CSNAEstimator(**TINY, **SMALL_MODEL).fit(yb, t, X=x)
    assert est.outcome_type_ == "binary"
    mu = est.predict(x)
    assert mu.shape == (300, 2) and ((mu >= 0) & (mu <= 1)).all()


def test_save_then_load_gives_identical_predictions(small, tmp_path):
    est, (_, _, X) = small
    rd = est.save(tmp_path / "est")
    for f in ("config.yaml", "preprocess.json", "env.json", "meta_controller.pt"):
        assert (rd / f).is_file(), f
    obj = torch.load(rd / "meta_controller.pt", weights_only=True)
    for k in ("format", "phase", "phase_name", "trained_modules", "model_state", "config", "meta"):
        assert k in obj, k
    assert obj["phase"] == 4 and obj["meta"]["covariates"] == est.covariates_
    back = CSNAEstimator.load(rd)
    assert back.covariates_ == est.covariates_ and back.n_treatments_ == 2
    np.testing.assert_array_equal(back.predict(X), est.predict(X))
    np.testing.assert_array_equal(back.propensity(X), est.propensity(X))
    assert load_run(rd).gated
    est.save(rd)  # saving again over itself is allowed


def test_bad_inputs_raise_value_errors():
    y, t, x = linear_problem(n=200, seed=3)
    est = CSNAEstimator(**TINY)
    x_nan = x.copy()
    x_nan[5, 2] = np.nan
    y_nan = y.copy()
    y_nan[0] = np.inf
    cases = [
        ((y[:-1], t, x), "lengths differ"),
        ((y, t, x_nan), "x2"),
        ((y_nan, t, x), "NaN/Inf"),
        ((y, np.zeros_like(t), x), "one treatment group"),
        ((y, t + 1, x), "0..1"),
        ((y, t + 0.5, x), "non-integer"),
        ((y, t, x[:, 0]), "2-D"),
        ((y, np.array(["a", "b"] * 100), x), "numeric"),
    ]
    for (Y, T, X), msg in cases:
        with pytest.raises(DataError, match=msg):
            est.fit(Y, T, X=X)
    assert issubclass(DataError, ValueError)
    with pytest.raises(RuntimeError, match="not fitted"):
        est.predict(x)


def test_overrides_are_strict_and_sklearn_style():
    with pytest.raises(ConfigError, match="phase1__epoch"):
        CSNAEstimator(phase1__epoch=3)
    with pytest.raises(ConfigError, match="must be int"):
        CSNAEstimator(phase1__epochs="many")
    est = CSNAEstimator(phase1__epochs=3, train__seed=7)
    assert est.get_params() == {"config": None, "phase1__epochs": 3, "train__seed": 7}
    est.set_params(phase2__lr=1e-3)
    cfg = est._resolve()
    assert (cfg.phase1.epochs, cfg.train.seed, cfg.phase2.lr) == (3, 7, 1e-3)
    with pytest.raises(ConfigError):
        est.set_params(model__nope=1)
    assert "model__nope" not in est.get_params()
    again = CSNAEstimator(config=cfg, phase1__epochs=5)
    assert again._resolve().phase1.epochs == 5 and cfg.phase1.epochs == 3  # the given Config is not touched


def test_effect_rejects_unknown_treatments(small):
    est, (_, _, X) = small
    with pytest.raises(DataError, match="0..1"):
        est.effect(X, T1=2)


def test_impute_fills_missing_covariates():
    y, t, x = linear_problem(n=300, seed=4)
    x[::10, 1] = np.nan
    with pytest.raises(DataError, match="x1"):
        CSNAEstimator(**TINY).fit(y, t, X=x)
    est = CSNAEstimator(**TINY, **SMALL_MODEL, data__impute=True).fit(y, t, X=x)
    mu = est.predict(x)
    assert mu.shape == (300, 2) and np.isfinite(mu).all()


def test_user_arrays_get_the_config_csna_train_gives_a_user_table(tmp_path, monkeypatch):
    """One config for user data, whichever door it comes through: the estimator's resolved
    config equals the one `csna train --data table.csv` trains with (but for data.source)."""
    import csna.ensemble
    from csna.cli import main

    class Captured(Exception):
        pass

    def capture(cfg, **kwargs):
        seen["cfg"] = cfg
        raise Captured

    seen = {}
    monkeypatch.setattr(csna.ensemble, "train_run", capture)
    y, t, x = linear_problem(n=50)
    table = tmp_path / "t.csv"
    pd.DataFrame({**{f"x{i}": x[:, i] for i in range(5)}, "treatment": t, "outcome": y}).to_csv(table, index=False)
    for overrides, argv in (({}, []), ({"phase1__epochs": 7}, ["--set", "phase1.epochs=7"])):
        with pytest.raises(Captured):
            main(["train", "--data", str(table), "--out", str(tmp_path / "run"), "--overwrite", *argv])
        cli = seen.pop("cfg").to_dict()
        mine = CSNAEstimator(**overrides)._resolve().to_dict()
        assert cli["data"].pop("source") == str(table)
        mine["data"].pop("source")
        assert mine == cli
    with pytest.raises(ConfigError, match="'preset' is gone"):
        CSNAEstimator(preset="ihdp")
