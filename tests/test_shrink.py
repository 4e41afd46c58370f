"""Effect shrinkage (csna.shrink): the R-loss scale and level against a numerical minimiser, their
behaviour on effects that are pure noise, right, or confounded, the level test's false-alarm
rate, the shrunk predictions' invariants, and a trained run that writes, reloads and applies
them."""

import importlib.util
import json

import numpy as np
import pytest
from scipy.optimize import minimize, minimize_scalar

from csna.boosting import crossfit_outcome
from csna.shrink import (EFFECT_SCALE_FILE, TEST_Z, _residuals, apply_effect_scale, blend_level, outcome_arms,
                         reliability_factor, rloss_level, rloss_scale, scale_given_level, scale_stderr, shrink_rule)
from test_dr import TINY_FIT  # two members, a few epochs


def rloss(lam, y, t, mu0, mu1, e1, c, level=None):
    """The R-loss written out, as the module's docstring defines it (slow, obvious); the level
    a is c unless given."""
    e1 = np.clip(e1, 0.01, 0.99)
    m = e1 * mu1 + (1 - e1) * mu0
    a = c if level is None else level
    return float(np.sum(((y - m) - (t - e1) * (a + lam * ((mu1 - mu0) - c))) ** 2))


def confounded(n, rng, tau_fn):
    x = rng.normal(size=(n, 3))
    e = 1 / (1 + np.exp(-(0.8 * x[:, 0] - 0.5 * x[:, 1])))
    t = (rng.random(n) < e).astype(float)
    mu0 = x[:, 0] + 0.5 * x[:, 2] ** 2
    tau = tau_fn(x)
    y = mu0 + t * tau + rng.normal(size=n)
    return x, t, y, e, mu0, tau


@pytest.mark.parametrize("seed", range(6))
def test_on_gaussian_outcomes_it_is_the_bounded_minimiser_of_the_r_loss(seed):
    rng = np.random.default_rng(seed)
    x, t, y, e, mu0, tau = confounded(400, rng, lambda x: 1 + x[:, 1])
    noisy_tau = tau + rng.normal(scale=rng.uniform(0.1, 3), size=len(t))
    c = float(noisy_tau.mean())
    args = (y, t, mu0, mu0 + noisy_tau, e, c)
    ref = minimize_scalar(rloss, bounds=(0, 1), args=args, method="bounded", options={"xatol": 1e-10}).x
    assert rloss_scale(*args[:5], c) == pytest.approx(ref, abs=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_the_joint_level_and_scale_are_the_bounded_minimiser_of_the_r_loss(seed):
    rng = np.random.default_rng(10 + seed)
    x, t, y, e, mu0, tau = confounded(400, rng, lambda x: 1 + x[:, 1])
    biased = tau + 0.7 * x[:, 0] + rng.normal(scale=rng.uniform(0.1, 2), size=len(t))
    c = float(biased.mean())
    args = (y, t, mu0, mu0 + biased, e, c)
    ref = minimize(lambda v: rloss(v[1], *args, level=v[0]), x0=[c, 0.5], bounds=[(None, None), (0, 1)],
                   method="L-BFGS-B", options={"ftol": 1e-14, "gtol": 1e-10}).x
    a, lam, se = rloss_level(*args)
    assert (a, lam) == pytest.approx(tuple(ref), abs=1e-4)
    assert 0 < se < 1


def test_the_level_corrects_a_confounded_plug_in_and_its_test_rarely_moves_a_right_one():
    # A constant effect of 2 and an outcome model that left part of the confounder x0 in τ̂ (as
    # a regularised model does under strong confounding): its plug-in level is off, the R-loss
    # level is not, because it is orthogonal to errors in μ̂ when ê is right.
    rng = np.random.default_rng(7)
    x, t, y, e, mu0, tau = confounded(4000, rng, lambda x: np.full(len(x), 2.0))
    leak = 0.8 * (x[:, 0] + 1.0)  # confounding left in both the effect and the control outcome
    args = (y, t, mu0 - 0.5 * leak, mu0 + tau + 0.5 * leak, e)
    c = float((tau + leak).mean())
    a, lam, se = rloss_level(*args, c)
    assert abs(c - 2.0) > 0.5 and abs(a - 2.0) < 3 * se and abs(a - c) > TEST_Z * se
    # Right μ̂ and ê, a noisy τ̂: the test should move the level about 5% of the time.
    moved = 0
    for r in range(200):
        x, t, y, e, mu0, tau = confounded(300, np.random.default_rng(100 + r), lambda x: 1 + x[:, 1])
        a, lam, se = rloss_level(y, t, mu0, mu0 + tau, e, float(tau.mean()))
        moved += abs(a - float(tau.mean())) > TEST_Z * se
    assert 2 <= moved <= 24  # 1%–12% of 200


def test_heavy_tailed_noise_cannot_keep_a_spurious_heterogeneity():
    # A constant effect, τ̂ with spurious spread, and earnings-like outliers that happen to line
    # up with it: least squares keeps λ near 1, the test of λ sets it to 0 (the constant level).
    rng = np.random.default_rng(9)
    x, t, y, e, mu0, tau = confounded(400, rng, lambda x: np.full(len(x), 2.0))
    noisy = tau + rng.normal(scale=2.0, size=len(t))
    y = y.copy()
    for i in np.argsort(-(t * (noisy - 2.0)))[:2]:
        y[i] += 200.0
    args = (y, t, mu0, mu0 + noisy, e, 2.0)
    assert rloss_scale(*args) > 0.5
    rule = shrink_rule(*args)
    assert rule["scale"] == 0.0 and rule["scale_se"] > rloss_scale(*args) / TEST_Z
    assert shrink_rule(*args, tests=False)["scale"] == rloss_scale(*args)
    # A real heterogeneity with Gaussian noise is kept whole.
    x, t, y, e, mu0, tau = confounded(2000, rng, lambda x: 1 + 2 * np.sin(2 * x[:, 1]))
    rule = shrink_rule(y, t, mu0, mu0 + tau, e, float(tau.mean()))
    assert rule["scale"] > 0.9 and rule["level"] == float(tau.mean())


@pytest.mark.parametrize("seed", range(3))
def test_the_scale_stderr_is_the_sandwich_written_out(seed):
    # The HC0 (sandwich) error of a one-regressor least squares, written out row by row.
    rng = np.random.default_rng(20 + seed)
    x, t, y, e, mu0, tau = confounded(300, rng, lambda x: 1 + x[:, 1])
    noisy = tau + rng.normal(size=len(t))
    c = float(noisy.mean())
    lam = rloss_scale(y, t, mu0, mu0 + noisy, e, c)
    ec = np.clip(e, 0.01, 0.99)
    rows = [((t[i] - ec[i]) * (noisy[i] - c), y[i] - mu0[i] - ec[i] * noisy[i] - (t[i] - ec[i]) * c)
            for i in range(len(t))]
    zz = sum(z * z for z, _ in rows)
    meat = sum((z * (r - lam * z)) ** 2 for z, r in rows)
    assert scale_stderr(y, t, mu0, mu0 + noisy, e, c, c, lam) == pytest.approx(np.sqrt(meat) / zz, rel=1e-9)


def test_winsorising_resists_one_extreme_outcome_but_flattens_a_long_tailed_effect():
    # Why least squares is the default: winsorising the residuals protects λ from one
    # earnings-like outlier, but where the effect itself has long tails (IHDP's exponential
    # surface) it clips the signal and flattens a right τ̂.
    rng = np.random.default_rng(9)
    x, t, y, e, mu0, tau = confounded(400, rng, lambda x: np.full(len(x), 2.0))
    noisy = tau + rng.normal(scale=2.0, size=len(t))
    i = int(np.argmax(t * (noisy - 2.0)))  # the treated row with the largest spurious effect
    y = y.copy()
    y[i] += 200.0  # an earnings-like outlier in the direction of that spurious effect
    args = (y, t, mu0, mu0 + noisy, e, 2.0)
    assert rloss_scale(*args) > 0.5  # the square lets the one row pull λ up
    assert rloss_scale(*args, winsor=5.0) < 0.2
    x, t, y, e, mu0, tau = confounded(2000, rng, lambda x: np.exp(1.5 * x[:, 1]))  # long-tailed, and right
    c = float(tau.mean())
    assert rloss_scale(y, t, mu0, mu0 + tau, e, c) > 0.9
    assert rloss_scale(y, t, mu0, mu0 + tau, e, c, winsor=5.0) < 0.8


def test_noise_is_shrunk_away_and_a_right_effect_is_kept():
    rng = np.random.default_rng(0)
    x, t, y, e, mu0, tau = confounded(20_000, rng, lambda x: np.full(len(x), 2.0))  # constant effect
    noisy = tau + rng.normal(scale=2.0, size=len(t))  # heterogeneity that is only noise
    assert rloss_scale(y, t, mu0, mu0 + noisy, e, 2.0) < 0.05
    x, t, y, e, mu0, tau = confounded(20_000, rng, lambda x: 1 + 2 * np.sin(2 * x[:, 1]))
    assert rloss_scale(y, t, mu0, mu0 + tau, e, float(tau.mean())) > 0.95
    # Half signal, half noise of the same variance: the least-squares scale is about 1/2.
    half = tau + rng.normal(scale=float(tau.std()), size=len(t))
    assert rloss_scale(y, t, mu0, mu0 + half, e, float(tau.mean())) == pytest.approx(0.5, abs=0.05)


def test_constant_predicted_effect_is_left_alone():
    rng = np.random.default_rng(1)
    x, t, y, e, mu0, tau = confounded(300, rng, lambda x: np.full(len(x), 1.0))
    assert rloss_scale(y, t, mu0, mu0 + 1.0, e, 1.0) == 1.0


def test_applied_scale_moves_only_the_effects():
    rng = np.random.default_rng(2)
    mu = rng.normal(size=(50, 3))
    p = rng.dirichlet(np.ones(3), size=50)
    es = {"method": "rloss", "centre": [0.3, -0.2], "scale": [0.25, 0.6], "rows": [40, 40]}
    out = apply_effect_scale(es, mu, p, "continuous")["mu"]
    for k, (c, lam) in enumerate(zip(es["centre"], es["scale"]), start=1):
        np.testing.assert_allclose(out[:, k] - out[:, 0], c + lam * (mu[:, k] - mu[:, 0] - c), atol=1e-12)
    np.testing.assert_allclose((p * out).sum(1), (p * mu).sum(1), atol=1e-12)  # observed-outcome fit kept
    assert apply_effect_scale({**es, "scale": [1.0, 1.0]}, mu, p, "continuous") == {}
    moved = {**es, "level": [0.8, -0.2]}  # arm 1's level moved, arm 2's kept
    out = apply_effect_scale(moved, mu, p, "continuous")["mu"]
    np.testing.assert_allclose(out[:, 1] - out[:, 0], 0.8 + 0.25 * (mu[:, 1] - mu[:, 0] - 0.3), atol=1e-12)
    np.testing.assert_allclose(out[:, 2] - out[:, 0], -0.2 + 0.6 * (mu[:, 2] - mu[:, 0] + 0.2), atol=1e-12)
    np.testing.assert_allclose((p * out).sum(1), (p * mu).sum(1), atol=1e-12)
    assert apply_effect_scale({**moved, "scale": [1.0, 1.0]}, mu, p, "continuous") != {}


def test_binary_shrunk_probabilities_stay_probabilities():
    rng = np.random.default_rng(3)
    mu = rng.uniform(size=(200, 2))
    p = np.stack([1 - (q := rng.uniform(0.01, 0.99, 200)), q], 1)
    out = apply_effect_scale({"centre": [0.9], "scale": [0.0], "rows": [10]}, mu, p, "binary")
    assert out["mu"].min() >= 0 and out["mu"].max() <= 1
    np.testing.assert_allclose(out["probs"].sum(-1), 1.0)
    np.testing.assert_allclose(out["probs"][..., 1], out["mu"])


# --- a trained run ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pair():
    from csna import CSNAEstimator

    rng = np.random.default_rng(5)
    x, t, y, *_ = confounded(600, rng, lambda x: np.full(len(x), 1.5))
    shrunk = CSNAEstimator(**TINY_FIT).fit(y, t, X=x)
    raw = CSNAEstimator(**TINY_FIT, train__effect_shrink="none").fit(y, t, X=x)
    return shrunk, raw, x


def test_trained_run_applies_its_scale_to_the_same_members(pair):
    shrunk, raw, x = pair
    es = shrunk.run_.effect_scale
    assert raw.run_.effect_scale is None and es["method"] == "rloss" and 0 <= es["scale"][0] <= 1
    # Same seeds, same members: the shrunk effect is the raw one scaled about the centre.
    a, c, lam = es["level"][0], es["centre"][0], es["scale"][0]
    np.testing.assert_allclose(shrunk.effect(x), a + lam * (raw.effect(x) - c), rtol=1e-6, atol=1e-6)


def test_scale_is_saved_and_loaded(pair, tmp_path):
    from csna import CSNAEstimator

    shrunk, raw, x = pair
    rd = shrunk.save(tmp_path / "run")
    assert json.loads((rd / EFFECT_SCALE_FILE).read_text()) == shrunk.run_.effect_scale
    np.testing.assert_allclose(CSNAEstimator.load(rd).effect(x), shrunk.effect(x), rtol=1e-6)
    assert not (raw.save(tmp_path / "raw") / EFFECT_SCALE_FILE).exists()


def test_a_trained_model_on_a_strongly_confounded_scm_gets_the_att_from_the_level():
    # Issue 18's SCM, smaller: Y = x·b + 2·T + N(0, 1), P(T = 1 | x) = σ(x·a), b along a, so the
    # naive difference is about 7. A briefly trained ensemble leaves confounding in its plug-in
    # level (``scale``, Session 9's rule, averages it); the default's level test replaces it by
    # the R-loss level, and the plug-in ATT (the mean of τ̂ over the treated) lands within 15%.
    from csna import CSNAEstimator

    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 6))
    a = np.array([1.2, 1.0, -0.8, 0.0, 0.0, 0.0])
    b = np.array([3.0, 2.5, -2.0, 1.0, 0.0, 0.0])
    t = (rng.random(len(x)) < 1 / (1 + np.exp(-x @ a))).astype(np.int64)
    y = x @ b + 2.0 * t + rng.normal(size=len(x))
    naive = y[t == 1].mean() - y[t == 0].mean()
    default = CSNAEstimator(**TINY_FIT).fit(y, t, X=x)
    att = float(default.effect(x[t == 1]).mean())
    es = default.run_.effect_scale
    assert naive > 5 and abs(att - 2.0) < 0.3, (naive, att, es)
    assert es["level"][0] != es["centre"][0]  # the level moved
    scale_only = CSNAEstimator(**TINY_FIT, train__effect_shrink="scale").fit(y, t, X=x)
    assert abs(float(scale_only.effect(x[t == 1]).mean()) - 2.0) > abs(att - 2.0)


def test_with_the_direct_outcome_model_the_arms_errors_no_longer_move_the_level():
    # Session 14: the counterfactual arms of a confounded fit are off by a common error (μ̂0 on
    # the treated too low, μ̂1 on the controls too high), which m̂ = ê μ̂1 + (1 − ê) μ̂0 carries
    # into the R-loss level. With m̂ from y directly, the arms enter only through τ̂ = μ̂1 − μ̂0,
    # so an error common to both arms leaves the level and λ exactly where they were.
    rng = np.random.default_rng(3)
    x, t, y, e, mu0, tau = confounded(2000, rng, lambda x: 1 + 0.5 * x[:, 1])
    m_direct = mu0 + e * tau + rng.normal(scale=0.2, size=len(t))  # a good regression of y on x
    shift = -1.5 * (x[:, 0] > 0.3)  # (n,) common to both arms, where the treated are many
    c = float(tau.mean())
    e = 0.5 + 0.6 * (e - 0.5)  # an under-confident ê, as a regularised one is: orthogonality no longer saves m̂
    rules = {}
    for name, s in (("right", 0.0), ("shifted", shift)):
        for choice in ("direct", "ensemble"):
            a0, a1, used, _ = outcome_arms(y, mu0 + s, mu0 + tau + s, e, m_direct, choice)
            assert used == choice
            np.testing.assert_allclose(a1 - a0, tau, atol=1e-12)  # τ̂ is untouched
            rules[name, choice] = shrink_rule(y, t, a0, a1, e, c)
    assert rules["shifted", "direct"]["level"] == pytest.approx(rules["right", "direct"]["level"], abs=1e-9)
    assert rules["shifted", "direct"]["scale"] == pytest.approx(rules["right", "direct"]["scale"], abs=1e-9)
    a_r, _, se = rloss_level(y, t, mu0, mu0 + tau, e, c)
    a_s, _, _ = rloss_level(y, t, mu0 + shift, mu0 + tau + shift, e, c)
    assert abs(a_s - a_r) > 2 * se  # the ensemble's m̂ lets the arms' error move it


def test_select_takes_the_outcome_model_with_the_lower_held_out_error():
    rng = np.random.default_rng(4)
    x, t, y, e, mu0, tau = confounded(500, rng, lambda x: np.full(len(x), 2.0))
    m = mu0 + e * tau
    good, bad = m + rng.normal(scale=0.1, size=len(t)), m + rng.normal(scale=2.0, size=len(t))
    args = (y, mu0 - 1.0, mu0 + tau - 1.0, e)  # arms off by 1: squared error 1 + the noise's 1
    _, _, used, mse = outcome_arms(*args, good, "select")
    assert used == "direct" and mse["mse_direct"] < mse["mse_ensemble"]
    _, _, used, mse = outcome_arms(*args, bad, "select")
    assert used == "ensemble" and mse["mse_direct"] > mse["mse_ensemble"]
    a0, a1, used, mse = outcome_arms(*args, good, "ensemble")
    assert used == "ensemble" and a0 is args[1] and "mse_direct" not in mse


def test_the_direct_arms_give_the_r_loss_the_direct_outcome_model_where_the_propensity_is_clipped():
    # The R-loss clips ê to [E_CLIP, 1 − E_CLIP] before it forms m̂ = ê μ̂1 + (1 − ê) μ̂0; the
    # direct arms must be built with the same clipped ê, or on rows with extreme ê its m̂ is not
    # the direct one (a slow reference: y − m_direct, row by row).
    rng = np.random.default_rng(5)
    n = 400
    y, mu0, tau, m_direct = (rng.normal(size=n) for _ in range(4))
    e = rng.uniform(0.2, 0.8, size=n)
    e[:100] = rng.choice([1e-4, 0.002, 0.995, 0.9999], size=100)  # outside the clip
    t = (rng.uniform(size=n) < e).astype(float)
    a0, a1, used, _ = outcome_arms(y, mu0, mu0 + tau, e, m_direct, "direct")
    assert used == "direct"
    ry, _, _ = _residuals(y, t, a0, a1, e)
    np.testing.assert_allclose(ry, [y[i] - m_direct[i] for i in range(n)], atol=1e-12)


@pytest.mark.skipif(importlib.util.find_spec("lightgbm") is None, reason="needs lightgbm")
def test_the_direct_outcome_model_is_out_of_fold():
    # Row i is predicted by a model that never saw it: changing y_i alone leaves its prediction.
    rng = np.random.default_rng(5)
    x = rng.normal(size=(300, 3))
    y = x[:, 0] + np.sin(2 * x[:, 1]) + rng.normal(scale=0.3, size=300)
    before = crossfit_outcome(x, y, seed=1)
    y2 = y.copy()
    y2[17] += 50.0
    after = crossfit_outcome(x, y2, seed=1)
    assert after[17] == pytest.approx(before[17], abs=1e-12)
    assert np.abs(after - before).max() > 1e-3  # the other folds' models did see it
    assert np.corrcoef(before, x[:, 0] + np.sin(2 * x[:, 1]))[0, 1] > 0.8  # and it is a fit of y on x


def members_with_noise(n, M, sigma, rng):
    """(signal (n,), members' τ̂ (M, n) = signal + independent N(0, σ²), held (M, n)): each member
    trains on a random 70% of the rows; rows that every member trained on are dropped."""
    s = rng.normal(size=n)
    tau = s + sigma * rng.normal(size=(M, n))
    held = rng.random((M, n)) < 0.3
    keep = held.any(0)
    return s[keep], tau[:, keep], held[:, keep]


def test_reliability_factor_is_the_closed_form_ratio_of_the_variances():
    # var s = 1, σ² = 2.25: ρ = (1 + σ² E[1/m]) / (1 + σ²/M), E[1/m] over the rows kept.
    rng = np.random.default_rng(0)
    s, tau, held = members_with_noise(60_000, 4, 1.5, rng)
    rho, parts = reliability_factor(tau, held)
    inv_m = float((1.0 / held.sum(0)).mean())
    assert parts["sigma2"] == pytest.approx(2.25, rel=0.03)
    assert rho == pytest.approx((1 + 2.25 * inv_m) / (1 + 2.25 / 4), rel=0.03)
    same = np.repeat(s[None], 4, axis=0)  # identical members: no extra noise, nothing to correct
    assert reliability_factor(same, held)[0] == pytest.approx(1.0)
    assert reliability_factor(tau, held & (held.sum(0) == 1))[0] == 1.0  # no row with two: unknown σ²


def test_the_corrected_slope_is_the_whole_ensembles_slope():
    # Independent reference: with the truth known, the least-squares slope of τ on the
    # ensemble's τ̂ (mean of all M members). The slope on the held-out τ̂ is attenuated by the
    # members' noise; times ρ it is the ensemble's.
    rng = np.random.default_rng(1)
    s, tau, held = members_with_noise(60_000, 4, 1.0, rng)
    oof = (held * tau).sum(0) / held.sum(0)
    ens = tau.mean(0)

    def slope(v):
        v = v - v.mean()
        return float(v @ (s - s.mean()) / (v @ v))

    rho = reliability_factor(tau, held)[0]
    assert slope(oof) < 0.75 * slope(ens)  # the attenuation is real
    assert slope(oof) * rho == pytest.approx(slope(ens), rel=0.03)


@pytest.fixture(scope="module")
def heterogeneous():
    from csna import CSNAEstimator

    rng = np.random.default_rng(6)
    x, t, y, *_ = confounded(800, rng, lambda x: 1.0 + 2.0 * x[:, 0])
    fit = {**TINY_FIT, "phase1__epochs": 12}  # long enough to learn part of the effect's spread
    plain = CSNAEstimator(**fit).fit(y, t, X=x)
    corrected = CSNAEstimator(**fit, train__shrink_reliability=True).fit(y, t, X=x)
    return plain, corrected, x


def test_shrink_reliability_multiplies_the_tested_scale_by_the_factor(heterogeneous):
    plain, corrected, x = heterogeneous
    es, er = plain.run_.effect_scale, corrected.run_.effect_scale
    rho = es["reliability"][0]
    assert er["reliability"] == es["reliability"] and rho > 1.0
    assert 0 < es["scale"][0] < 1  # the test kept part of the spread, so the factor shows
    assert er["scale"][0] == pytest.approx(min(1.0, es["scale"][0] * rho))
    assert er["level"] == es["level"] and er["centre"] == es["centre"]


# --- the blended level (train.shrink_level: blend) ---------------------------------------------


def test_the_blended_level_is_the_positive_part_combination_written_out():
    c, se = 1.0, 0.2
    for d in (0.0, 0.1, -0.2, 0.4, -0.6, 5.0):  # within one se: c; beyond: c + (1 − se²/d²) d
        expect = c if abs(d) <= se else c + (1 - se ** 2 / d ** 2) * d
        assert blend_level(c, c + d, se) == pytest.approx(expect, abs=1e-15)
    assert blend_level(c, c + 0.4, se) == pytest.approx(c + 0.75 * 0.4)  # 3/4 of the way at 2 se
    assert blend_level(c, 3.0, float("inf")) == c and blend_level(c, 3.0, float("nan")) == c


def test_the_blend_trades_the_switchs_error_where_the_plug_in_is_biased_by_about_its_noise():
    # Monte Carlo of the two inputs as the rule sees them: c biased by b with little noise, a
    # unbiased with standard error s. The default's switch (a where |a − c| > 2 s) leaves most of a
    # bias of 0.5–3 s in place; the blend removes most of it. Unbiased c: both pay part of a's noise.
    rng = np.random.default_rng(3)
    s, n = 0.2, 20_000
    for b in (0.0, 0.1, 0.2, 0.3, 0.4, 0.6):
        c = b + rng.normal(scale=0.02, size=n)
        a = rng.normal(scale=s, size=n)
        blended = np.array([blend_level(ci, ai, s) for ci, ai in zip(c, a)])
        switch = np.where(np.abs(a - c) > TEST_Z * s, a, c)
        mse_c, mse_a, mse_blend, mse_switch = ((v ** 2).mean() for v in (c, a, blended, switch))
        if b == 0.0:
            assert mse_switch < mse_blend < 0.4 * mse_a  # c was right: the blend pays a bit more
        else:
            assert mse_blend < 0.9 * mse_switch and mse_blend < 1.5 * mse_a
        if b == s:
            assert mse_blend < min(mse_a, mse_c)


def test_the_blend_rule_is_the_default_within_one_se_and_refits_the_scale_given_its_level():
    rng = np.random.default_rng(7)
    x, t, y, e, mu0, tau = confounded(4000, rng, lambda x: np.full(len(x), 2.0) + 0.5 * x[:, 1])
    leak = 0.8 * (x[:, 0] + 1.0)  # a confounded plug-in, as in the level test above
    args = (y, t, mu0 - 0.5 * leak, mu0 + tau + 0.5 * leak, e, float((tau + leak).mean()))
    a, _, se = rloss_level(*args)
    rule = shrink_rule(*args, level="blend")
    assert rule["level"] == pytest.approx(blend_level(args[-1], a, se)) and rule["level_rloss"] == a
    ref = minimize_scalar(lambda lam: rloss(lam, *args, level=rule["level"]), bounds=(0, 1), method="bounded",
                          options={"xatol": 1e-10}).x
    assert scale_given_level(*args, rule["level"]) == pytest.approx(ref, abs=1e-6)
    assert scale_given_level(*args, args[-1]) == rloss_scale(*args)
    # Right μ̂: |a − c| within one se on most draws, and there the rule is the default's exactly.
    same = 0
    for r in range(40):
        x, t, y, e, mu0, tau = confounded(300, np.random.default_rng(300 + r), lambda x: 1 + x[:, 1])
        args = (y, t, mu0, mu0 + tau, e, float(tau.mean()))
        a, _, se = rloss_level(*args)
        if abs(a - args[-1]) <= se:
            same += 1
            assert shrink_rule(*args, level="blend") == shrink_rule(*args)
    assert same >= 20


def test_shrink_level_blend_reaches_the_trained_runs_scale(heterogeneous):
    from csna import CSNAEstimator

    plain, _, x = heterogeneous
    es = plain.run_.effect_scale
    assert es["level_rloss"][0] is not None
    rng = np.random.default_rng(6)
    xx, t, y, *_ = confounded(800, rng, lambda x: 1.0 + 2.0 * x[:, 0])
    fit = {**TINY_FIT, "phase1__epochs": 12}
    blended = CSNAEstimator(**fit, train__shrink_level="blend").fit(y, t, X=xx).run_.effect_scale
    assert blended["level_rloss"] == es["level_rloss"] and blended["centre"] == es["centre"]
    assert blended["level"][0] == pytest.approx(blend_level(es["centre"][0], es["level_rloss"][0], es["level_se"][0]))
