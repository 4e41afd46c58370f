"""CSNAEstimator in EconML's interface: shapes, controls W, inference objects against their
definitions, clone / deepcopy, and the real libraries (EconML's RScorer and
SingleTreeCateInterpreter, DoWhy's estimate and refuters) on DGPs with known effects."""

import copy
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm, spearmanr

from csna import CSNAEstimator
from csna.data import DataError

TINY = {"train__ensemble": 2, "train__ensemble_workers": 1, "phase1__epochs": 10, "phase1__min_epochs": 1,
        "phase2__epochs": 1, "phase3__epochs": 1, "phase4__epochs": 1, "train__progress": False,
        "log__tensorboard": False, "model__hidden": 32, "model__d": 16, "model__head_hidden": 32}

PHASE1_ONLY = {"phase1__epochs": 30, "phase2__epochs": 0, "phase3__epochs": 0, "phase4__epochs": 0}


def dgp(n, rng, k=2):
    """x1 confounds; the effect of arm a ≥ 1 is a · (1 + 2 tanh(2 x0))."""
    x = rng.normal(size=(n, 4))
    logits = np.stack([np.zeros(n)] + [a * 0.8 * x[:, 1] for a in range(1, k)], axis=1)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    t = np.array([rng.choice(k, p=row) for row in p])
    tau = 1 + 2 * np.tanh(2 * x[:, 0])
    y = x[:, 1] + 0.5 * x[:, 2] + t * tau + 0.5 * rng.normal(size=n)
    return y, t, x, tau


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    y, t, x, tau = dgp(1500, rng)
    return CSNAEstimator(**TINY).fit(y, t, X=x), (y, t, x, tau)


def test_econml_shapes(fitted):
    est, (y, t, x, tau) = fitted
    cme = est.const_marginal_effect(x[:50])
    assert cme.shape == (50, 1)
    np.testing.assert_allclose(cme[:, 0], est.effect(x[:50]))
    np.testing.assert_array_equal(est.marginal_effect(t[:50], x[:50]), cme)
    assert est.effect(x[:7], T0=1, T1=0).shape == (7,)
    assert np.corrcoef(est.effect(x), tau)[0, 1] > 0.8  # it learned the heterogeneity
    with pytest.raises(ValueError, match="X is required"):
        est.effect()


def test_three_arms_give_two_columns():
    rng = np.random.default_rng(1)
    y, t, x, tau = dgp(900, rng, k=3)
    est = CSNAEstimator(**TINY).fit(y, t, X=x)
    cme = est.const_marginal_effect(x[:20])
    assert cme.shape == (20, 2)
    np.testing.assert_allclose(cme[:, 1] - cme[:, 0], est.effect(x[:20], T0=1, T1=2), atol=1e-9)


def test_effect_inference_is_the_members_jackknife(fitted):
    est, (y, t, x, tau) = fitted
    inf = est.effect_inference(x[:100])
    # The slow obvious reference: each member's own τ̂, shrunk by the run's scale, spread × r/(1−r),
    # and the variance of the shared level added.
    run = est.run_
    es = run.effect_scale
    a, c, lam, level_se = es["level"][0], es["centre"][0], es["scale"][0], es["level_se"][0]
    members = []
    for m in run.all_members():
        solo = CSNAEstimator(config=run.cfg)
        solo._set_run(type(run)(**{**m.__dict__, "members": [], "effect_scale": None}))
        members.append(a + lam * (solo.effect(x[:100]) - c))
    r = np.mean([len(m.splits["train"]) / (len(m.splits["train"]) + len(m.splits["val"])) for m in run.all_members()])
    spread = np.std(members, axis=0, ddof=1) * np.sqrt(r / (1 - r))
    assert level_se > 0
    np.testing.assert_allclose(inf.stderr, np.sqrt(spread**2 + level_se**2), rtol=1e-5)
    np.testing.assert_allclose(inf.point_estimate, est.effect(x[:100]))
    lo, hi = est.effect_interval(x[:100], alpha=0.1)
    np.testing.assert_allclose(lo, inf.point_estimate - norm.ppf(0.95) * inf.stderr)
    np.testing.assert_allclose(hi, inf.point_estimate + norm.ppf(0.95) * inf.stderr)
    frame = inf.summary_frame()
    assert list(frame.columns) == ["point_estimate", "stderr", "zstat", "pvalue", "ci_lower", "ci_upper"]
    assert len(frame) == 100 and ((frame.pvalue >= 0) & (frame.pvalue <= 1)).all()


def test_average_inference_is_the_doubly_robust_summary(fitted):
    est, _ = fitted
    s = est.dr_summary()
    ate, att = est.ate_inference(), est.att_inference()
    assert (ate.point_estimate, ate.stderr, att.point_estimate, att.stderr) == (s["ate"], s["ate_se"], s["att"],
                                                                                 s["att_se"])
    assert ate.mean_point == ate.point_estimate and ate.stderr_mean == ate.stderr
    lo, hi = est.ate_interval()
    assert lo == pytest.approx(s["ate"] - 1.959964 * s["ate_se"])
    assert hi == pytest.approx(s["ate"] + 1.959964 * s["ate_se"])
    assert est.att_interval() == att.conf_int()
    assert ate.summary_frame().shape == (1, 6)


def test_controls_join_the_adjustment_set_and_the_effect_is_projected_on_x():
    rng = np.random.default_rng(2)
    y, t, x, tau = dgp(1500, rng)
    X = pd.DataFrame({"x0": x[:, 0]})
    W = pd.DataFrame({"w1": x[:, 1], "w2": x[:, 2], "w3": x[:, 3], "x0": x[:, 0]})  # x0 in both: read once
    est = CSNAEstimator(**TINY).fit(y, t, X=X, W=W)
    assert est.covariates_ == ["x0", "w1", "w2", "w3"]
    assert est.effect_modifiers_ == ["x0"] and est.controls_ == ["w1", "w2", "w3"]
    eff = est.effect(X)
    assert eff.shape == (1500,) and np.corrcoef(eff, tau)[0, 1] > 0.8
    assert est.effect_inference(X.iloc[:5]).stderr.shape == (5,)
    with pytest.raises(ValueError, match="pickle"):
        est.save("unused")


def test_without_x_the_effect_is_constant():
    rng = np.random.default_rng(3)
    y, t, x, tau = dgp(1200, rng)
    est = CSNAEstimator(**TINY).fit(y, t, W=x)
    eff = est.effect()
    assert eff.shape == (1,)
    assert est.ate() == pytest.approx(float(eff[0]))
    assert abs(eff[0] - tau.mean()) < 0.5
    with pytest.raises(DataError, match="covariates"):
        CSNAEstimator(**TINY).fit(y, t)


def test_sample_weight_and_boolean_treatment():
    rng = np.random.default_rng(4)
    y, t, x, _ = dgp(400, rng)
    small = {**TINY, "train__ensemble": 1, "phase1__epochs": 2}
    a = CSNAEstimator(**small).fit(y, t.astype(bool), X=x, sample_weight=np.full(400, 2.0))
    b = CSNAEstimator(**small).fit(y, t, X=x)
    np.testing.assert_array_equal(a.effect(x[:10], T0=False, T1=True), b.effect(x[:10]))
    with pytest.raises(ValueError, match="does not weight rows"):
        CSNAEstimator(**small).fit(y, t, X=x, sample_weight=rng.uniform(size=400))


def test_clone_and_deepcopy(fitted):
    from sklearn.base import clone

    est, (y, t, x, tau) = fitted
    fresh = clone(est)
    assert fresh.get_params() == est.get_params() and not hasattr(fresh, "run_")
    again = copy.deepcopy(est)
    np.testing.assert_array_equal(again.effect(x[:20]), est.effect(x[:20]))
    assert again.run_ is not est.run_ and again.run_.trainer is None


# --- the real libraries -------------------------------------------------------------------------


def test_rscorer_ranks_csna_among_econml_estimators_as_the_truth_does(fitted):
    econml = pytest.importorskip("econml")
    from econml.dml import CausalForestDML, LinearDML
    from econml.metalearners import SLearner, TLearner
    from econml.score import RScorer
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.linear_model import LinearRegression, LogisticRegression

    del econml
    est, (y, t, x, _) = fitted
    rng = np.random.default_rng(10)
    yv, tv, xv, tauv = dgp(1000, rng)
    models = {"csna": est,
              "LinearDML": LinearDML(model_y=LinearRegression(), model_t=LogisticRegression(),
                                     discrete_treatment=True, random_state=0).fit(y, t, X=x),
              "TLearner(linear)": TLearner(models=LinearRegression()).fit(y, t, X=x),
              "SLearner(linear)": SLearner(overall_model=LinearRegression()).fit(y, t, X=x),
              "CausalForestDML": CausalForestDML(discrete_treatment=True, n_estimators=100,
                                                 random_state=0).fit(y, t, X=x)}
    scorer = RScorer(model_y=GradientBoostingRegressor(random_state=0), model_t=LogisticRegression(),
                     discrete_treatment=True, cv=3, random_state=0).fit(yv, tv, X=xv)
    scores = {k: scorer.score(m) for k, m in models.items()}
    pehe = {k: float(np.sqrt(np.mean((m.effect(xv) - tauv) ** 2))) for k, m in models.items()}
    # The R-score, which needs no truth, orders the five as their true √PEHE does (near enough),
    # and puts csna above the linear models, which cannot fit tanh-shaped effects.
    assert spearmanr([scores[k] for k in models], [-pehe[k] for k in models]).statistic >= 0.8, (scores, pehe)
    assert scores["csna"] > max(scores["LinearDML"], scores["TLearner(linear)"], scores["SLearner(linear)"])


def test_single_tree_interpreter_splits_on_the_effect_modifier(fitted):
    pytest.importorskip("econml")
    import matplotlib

    matplotlib.use("Agg")
    from econml.cate_interpreter import SingleTreeCateInterpreter

    est, (_, _, x, _) = fitted
    interp = SingleTreeCateInterpreter(max_depth=2, min_samples_leaf=50).interpret(est, x)
    assert interp.tree_model_.tree_.feature[0] == 0  # the root split is x0, the only effect modifier
    interp.plot(feature_names=["x0", "x1", "x2", "x3"])


@pytest.fixture(scope="module")
def dowhy_estimate():
    pytest.importorskip("dowhy")
    from dowhy import CausalModel
    from dowhy.causal_estimators.econml import Econml

    rng = np.random.default_rng(5)
    y, t, x, tau = dgp(800, rng)
    df = pd.DataFrame({"y": y, "t": t.astype(bool), "x0": x[:, 0], "w1": x[:, 1], "w2": x[:, 2], "w3": x[:, 3]})
    model = CausalModel(data=df, treatment="t", outcome="y", common_causes=["w1", "w2", "w3"], effect_modifiers=["x0"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimand = model.identify_effect(proceed_when_unidentifiable=True)
    estimand.set_identifier_method("backdoor")
    # Encoder and heads only (phase 1): with one epoch each of phases 2-4 the plug-in ATE of this
    # tiny budget moved between 0.75 and 1.63 over three seeds (phase 1 alone: 1.20-1.25), and the
    # refuters would be testing that instability rather than the interface.
    wrapper = Econml(estimand, econml_estimator=CSNAEstimator(**{**TINY, **PHASE1_ONLY}))
    wrapper.fit(df, effect_modifier_names=["x0"])
    estimate = wrapper.estimate_effect(df, control_value=0, treatment_value=1, target_units="ate")
    return model, estimand, estimate, float(tau.mean())


def test_dowhy_estimates_through_its_econml_wrapper(dowhy_estimate):
    _, _, estimate, truth = dowhy_estimate
    assert abs(estimate.value - truth) < 0.5 and estimate.cate_estimates.shape == (800, 1)


@pytest.mark.parametrize("method, options", [("placebo_treatment_refuter", {"placebo_type": "permute"}),
                                             ("random_common_cause", {}),
                                             ("data_subset_refuter", {"subset_fraction": 0.8})])
def test_dowhy_refuters_pass(dowhy_estimate, method, options):
    model, estimand, estimate, _ = dowhy_estimate
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = model.refute_estimate(estimand, estimate, method_name=method, num_simulations=2, random_seed=0,
                                    show_progress_bar=False, **options)
    if method == "placebo_treatment_refuter":  # a permuted treatment has no effect
        assert abs(res.new_effect) < 0.25 * abs(estimate.value), res
    else:  # an irrelevant extra cause, or 80% of the rows, leave the estimate where it was
        assert abs(res.new_effect - estimate.value) < 0.25 * abs(estimate.value), res
