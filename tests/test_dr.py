"""csna.dr: AIPW ATE / ATT against explicit loops, on a confounded linear SCM (truth known),
double robustness, the ensemble's out-of-fold μ̂, and the coverage of the 95% interval."""

import math

import numpy as np
import pytest

from csna.dr import aipw_att, aipw_ate, out_of_fold_mu

BETA = np.array([1.5, -1.0, 0.5])


def scm(n, rng):
    """x ~ N(0, I₃); ê = σ(0.8 x0 − 0.4 x1); τ(x) = 2 + x0; y = xβ + τ(x)·t + N(0, 1).

    Returns y, t, x and the true nuisances mu0, mu1, e1.
    """
    x = rng.standard_normal((n, 3))
    e1 = 1.0 / (1.0 + np.exp(-(0.8 * x[:, 0] - 0.4 * x[:, 1])))
    t = (rng.random(n) < e1).astype(np.int64)
    mu0 = x @ BETA
    mu1 = mu0 + 2.0 + x[:, 0]
    y = np.where(t == 1, mu1, mu0) + rng.standard_normal(n)
    return y, t, x, mu0, mu1, e1


TRUE_ATE = 2.0  # E[2 + x0]


def true_att():
    """E[τ(x) | T = 1] = 2 + E[x0 ê(x)] / E[ê(x)], by a large Monte Carlo draw."""
    x = np.random.default_rng(123).standard_normal((2_000_000, 2))
    e = 1.0 / (1.0 + np.exp(-(0.8 * x[:, 0] - 0.4 * x[:, 1])))
    return 2.0 + float((x[:, 0] * e).mean() / e.mean())


TRUE_ATT = true_att()


def loop_ate(y, t, mu0, mu1, e1):
    psi = []
    for i in range(len(y)):
        p = mu1[i] - mu0[i]
        if t[i] == 1:
            p += (y[i] - mu1[i]) / e1[i]
        else:
            p -= (y[i] - mu0[i]) / (1.0 - e1[i])
        psi.append(p)
    m = sum(psi) / len(psi)
    sd = math.sqrt(sum((p - m) ** 2 for p in psi) / (len(psi) - 1))
    return m, sd / math.sqrt(len(psi))


def loop_att(y, t, mu0, e1):
    num, n1 = 0.0, 0
    for i in range(len(y)):
        if t[i] == 1:
            num += y[i] - mu0[i]
            n1 += 1
        else:
            num -= e1[i] / (1.0 - e1[i]) * (y[i] - mu0[i])
    theta = num / n1
    p = n1 / len(y)
    psi = []
    for i in range(len(y)):
        r = (y[i] - mu0[i]) if t[i] == 1 else -e1[i] / (1.0 - e1[i]) * (y[i] - mu0[i])
        psi.append((r - t[i] * theta) / p)
    m = sum(psi) / len(psi)
    sd = math.sqrt(sum((q - m) ** 2 for q in psi) / (len(psi) - 1))
    return theta, sd / math.sqrt(len(psi))


@pytest.fixture(scope="module")
def sample():
    return scm(4000, np.random.default_rng(0))


def test_aipw_matches_explicit_loops():
    rng = np.random.default_rng(1)
    y, t, _, mu0, mu1, e1 = scm(200, rng)
    mu0_bad, mu1_bad = mu0 + rng.standard_normal(200), mu1 - 0.3  # any nuisances: the formula is the test
    assert aipw_ate(y, t, mu0_bad, mu1_bad, e1) == pytest.approx(loop_ate(y, t, mu0_bad, mu1_bad, e1), rel=1e-12)
    assert aipw_att(y, t, mu0_bad, e1) == pytest.approx(loop_att(y, t, mu0_bad, e1), rel=1e-12)


def test_given_control_propensity_equals_the_binary_default():
    y, t, _, mu0, mu1, e1 = scm(300, np.random.default_rng(2))
    assert aipw_ate(y, t, mu0, mu1, e1, 1.0 - e1) == pytest.approx(aipw_ate(y, t, mu0, mu1, e1))
    assert aipw_att(y, t, mu0, e1, 1.0 - e1) == pytest.approx(aipw_att(y, t, mu0, e1))


def test_rows_of_a_third_arm_only_enter_through_the_outcome_model():
    """K > 2: a row of neither arm (t = −1) adds μ̂1 − μ̂0 to the ATE and nothing to the ATT."""
    y, t, _, mu0, mu1, e1 = scm(300, np.random.default_rng(3))
    e0 = 1.0 - e1
    t3 = t.copy()
    t3[:50] = -1
    ate, _ = aipw_ate(y, t3, mu0, mu1, e1 * 0.8, e0 * 0.8)
    psi = mu1 - mu0 + (t3 == 1) * (y - mu1) / (e1 * 0.8) - (t3 == 0) * (y - mu0) / (e0 * 0.8)
    assert ate == pytest.approx(psi.mean())
    att, _ = aipw_att(y, t3, mu0, e1 * 0.8, e0 * 0.8)
    r = (t3 == 1) * (y - mu0) - (t3 == 0) * (e1 / e0) * (y - mu0)
    assert att == pytest.approx(r.sum() / (t3 == 1).sum())


def test_true_nuisances_recover_the_truth_and_the_naive_difference_does_not(sample):
    y, t, _, mu0, mu1, e1 = sample
    naive = y[t == 1].mean() - y[t == 0].mean()
    ate, se = aipw_ate(y, t, mu0, mu1, e1)
    att, att_se = aipw_att(y, t, mu0, e1)
    assert 0 < se < 0.2 and 0 < att_se < 0.2
    assert abs(ate - TRUE_ATE) < 3 * se, (ate, se)
    assert abs(att - TRUE_ATT) < 3 * att_se, (att, att_se)
    assert abs(naive - TRUE_ATE) > 10 * se and abs(naive - TRUE_ATT) > 10 * att_se, naive


@pytest.mark.parametrize("wrong", ["outcome model", "propensity"])
def test_doubly_robust_when_one_nuisance_is_wrong(sample, wrong):
    y, t, _, mu0, mu1, e1 = sample
    if wrong == "outcome model":
        mu0, mu1 = np.zeros_like(mu0), np.zeros_like(mu1)
    else:
        e1 = np.full_like(e1, 0.5)
    ate, se = aipw_ate(y, t, mu0, mu1, e1)
    att, att_se = aipw_att(y, t, mu0, e1)
    assert abs(ate - TRUE_ATE) < 3 * se, (ate, se)
    assert abs(att - TRUE_ATT) < 3 * att_se, (att, att_se)


def test_both_nuisances_wrong_is_biased(sample):
    """The counterpart of double robustness: with neither right, nothing corrects the bias."""
    y, t, _, mu0, mu1, _ = sample
    ate, se = aipw_ate(y, t, np.zeros_like(mu0), np.zeros_like(mu1), np.full(len(y), 0.5))
    assert abs(ate - TRUE_ATE) > 5 * se


def loop_oof(members_mu, members_train, n):
    K = members_mu[0].shape[1]
    mu, mask = np.full((n, K), np.nan), np.zeros(n, dtype=bool)
    for i in range(n):
        held = [m for m, rows in zip(members_mu, members_train) if i not in set(rows.tolist())]
        if held:
            mu[i] = sum(m[i] for m in held) / len(held)
            mask[i] = True
    return mu, mask


def test_out_of_fold_mu_matches_a_loop():
    rng = np.random.default_rng(4)
    n, M, K = 60, 4, 3
    members_mu = [rng.standard_normal((n, K)) for _ in range(M)]
    members_train = [np.sort(rng.choice(n, 45, replace=False)) for _ in range(M)]
    mu, mask = out_of_fold_mu(members_mu, members_train, n)
    ref_mu, ref_mask = loop_oof(members_mu, members_train, n)
    np.testing.assert_array_equal(mask, ref_mask)
    assert 0 < mask.sum() < n  # some rows held out by some members, some by none
    np.testing.assert_allclose(mu[mask], ref_mu[mask])
    assert np.isnan(mu[~mask]).all()


def test_out_of_fold_mu_of_rows_no_member_trained_on_is_the_ensemble_mean():
    rng = np.random.default_rng(5)
    members_mu = [rng.standard_normal((10, 2)) for _ in range(3)]
    mu, mask = out_of_fold_mu(members_mu, [np.zeros(0, dtype=np.int64)] * 3, 10)
    assert mask.all()
    np.testing.assert_allclose(mu, np.mean(members_mu, axis=0))


def crossfit_ols(x, t, y, rng, folds=2):
    """Out-of-fold μ̂0, μ̂1 from one least-squares fit per arm (on x and 1) and fold."""
    n = len(y)
    fold = rng.permutation(n) % folds
    X1 = np.column_stack([x, np.ones(n)])
    mu = np.zeros((n, 2))
    for f in range(folds):
        fit, held = fold != f, fold == f
        for arm in (0, 1):
            rows = fit & (t == arm)
            coef, *_ = np.linalg.lstsq(X1[rows], y[rows], rcond=None)
            mu[held, arm] = X1[held] @ coef
    return mu[:, 0], mu[:, 1]


def test_the_95_interval_covers_the_true_ate_about_95_percent_of_the_time():
    rng = np.random.default_rng(6)
    reps, covered = 200, 0
    for _ in range(reps):
        y, t, x, _, _, e1 = scm(400, rng)
        mu0, mu1 = crossfit_ols(x, t, y, rng)
        ate, se = aipw_ate(y, t, mu0, mu1, e1)
        covered += abs(ate - TRUE_ATE) <= 1.96 * se
    assert 0.90 * reps <= covered <= 0.98 * reps, covered / reps


# --- CSNAEstimator: ate / att with method="dr" and dr_summary, on a tiny fit ---------------------

TINY_FIT = {"train__ensemble": 2, "train__ensemble_workers": 1, "phase1__epochs": 3, "phase1__min_epochs": 1,
            "phase2__epochs": 1, "phase3__epochs": 1, "phase4__epochs": 1, "train__progress": False,
            "log__tensorboard": False, "model__hidden": 32, "model__d": 16, "model__head_hidden": 32}


@pytest.fixture(scope="module")
def fitted():
    from csna import CSNAEstimator

    rng = np.random.default_rng(7)
    y, t, x, *_ = scm(800, rng)
    return CSNAEstimator(**TINY_FIT).fit(y, t, X=x), (y, t, x)


def test_estimator_dr_summary_is_the_aipw_of_out_of_fold_rows(fitted):
    est, (y, t, x) = fitted
    s = est.dr_summary()
    assert set(s) == {"ate", "ate_se", "att", "att_se", "rows"}
    members = est.run_.all_members()
    assert len(members) == 2
    trained_by_all = np.intersect1d(members[0].splits["train"], members[1].splits["train"])
    assert s["rows"] == len(y) - len(trained_by_all)  # the fit data has no test rows
    assert 0 < s["ate_se"] < 0.5 and 0 < s["att_se"] < 0.5
    # A short fit leaves μ̂ rough, but ê (a logistic regression, the true model here) is right.
    assert abs(s["ate"] - TRUE_ATE) < 3 * s["ate_se"] + 0.1, s
    assert est.ate(method="dr") == s["ate"] and est.att(method="dr") == s["att"]
    assert est.dr_summary(T0=1, T1=0)["ate"] == pytest.approx(-s["ate"])


def test_estimator_plugin_att_averages_the_effect_over_the_treated(fitted):
    est, (_, t, x) = fitted
    assert est.att(x, t) == pytest.approx(float(est.effect(x)[t == 1].mean()))
    assert est.att(x, t, T0=1, T1=0) == pytest.approx(float(-est.effect(x)[t == 0].mean()))  # T == T1
    assert est.ate(x) == pytest.approx(float(est.effect(x).mean()))


def test_estimator_method_errors(fitted, tmp_path):
    from csna import CSNAEstimator

    est, (_, t, x) = fitted
    with pytest.raises(ValueError, match="fit"):
        est.ate(x, method="dr")  # the DR estimate is over the fit data only
    with pytest.raises(ValueError, match="fit"):
        est.att(x, t, method="dr")
    with pytest.raises(ValueError, match="X is required"):
        est.ate()
    with pytest.raises(ValueError, match="needs T"):
        est.att(x)
    with pytest.raises(ValueError, match="'plugin' or 'dr'"):
        est.ate(x, method="aipw")
    loaded = CSNAEstimator.load(est.save(tmp_path / "run"))
    with pytest.raises(RuntimeError, match="loaded estimator"):
        loaded.dr_summary()
    assert loaded.ate(x) == pytest.approx(est.ate(x))
