"""Effect shrinkage: how much of the heterogeneity in τ̂(x), and which level, the held-out rows
support.

Two outcome heads fitted separately (TARNet's shape) each fit their own arm's noise, and the
difference τ̂(x) = μ̂1(x) − μ̂0(x) inherits both: on an earnings-like table of the stress suite
τ̂ had a standard deviation of 6,042 where the true effect's was 316. The ensemble averages some
of that away, not all. The tree learners that led the suite shrink τ̂ towards a constant by
construction; csna instead measures how much to keep.

For each arm k against arm 0 it fits λ_k ∈ [0, 1] (and, when the data reject the plug-in level,
a level a_k) and predicts

    τ'_k(x) = a_k + λ_k · (τ̂_k(x) − c_k),      c_k = mean of τ̂_k over the held-out rows,

with (a_k, λ_k) minimising the R-loss of Nie & Wager (2021) over the rows held out from the
members that predict them (``dr.held_out``), with a cross-fitted propensity:

    R(a, λ) = Σ_i ((y_i − m̂(x_i)) − (t_i − ê(x_i)) · (a + λ (τ̂(x_i) − c)))²,

least squares with a closed form. λ = 1 keeps τ̂'s spread, λ = 0 predicts a constant.

**The outcome model m̂.** The members give m̂ = ê μ̂1 + (1 − ê) μ̂0, which carries their
counterfactual arms' error under strong confounding; a cross-fitted LightGBM regression of y
on x (``csna.boosting.crossfit_outcome``) does not. ``outcome_arms`` takes the one with the
lower held-out squared error (``train.shrink_outcome: select``, chosen on 128 tuning fits:
benchmarks/RESULTS.md, "Session 15").

**The level.** The plug-in level c inherits the outcome model's confounding bias (regularised
outcome heads under strong confounding leave part of the naive difference in τ̂: on the
confounded linear SCM of issue 18 the ATT came out 2.59 for a true 2.0). The R-loss level a is
Robinson's partially linear estimate: Neyman-orthogonal, so an error in μ̂ moves it only through
its product with the error in ê. It is also noisier than c. ``train.effect_shrink: rloss`` (the
default) keeps c unless the held-out rows reject it, |a − c| > TEST_Z · se(a) (a two-sided test
at about 5%, se from the sandwich of the normal equation of a); then it takes the joint fit
(a, λ). Otherwise it fits λ alone about c (``rloss_scale``), which is what ``scale`` always does.
Chosen on 36 tuning fits (benchmarks/RESULTS.md, "Session 10"): moving the level always helped
the strongly confounded cells and cost the others their plug-in's lower noise; the test keeps
the first and not the second.
``train.shrink_level: blend`` (``blend_level``) moves c towards a by their precision instead of
by the test. It is not the default. On 50 fresh tuning fits it gained 0.4 s.e. on ε_ATT_out, not
2, and one heavy-tailed fit went 3.4× worse (Session 18). With the true propensity, a is closer to
the truth than c on 35 of 46 fits; with a fitted ê, on about half. The level is limited by ê.

**The heterogeneity.** Least squares lets a few heavy-tailed outcomes pull λ to 1 (earnings-like
tables: λ = 1.00 with se(λ) 1.1, where the constant c had half the error). So ``rloss`` keeps
the heterogeneity only where the held-out rows support it, λ > TEST_Z · se(λ), and predicts the
constant level otherwise (λ = 0). se(λ) is the sandwich error of λ's normal equation given the
level. On IHDP's tuning replications λ was 0.95–1.00 with se 0.02–0.14: untouched.

The held-out rows are the non-test rows that some member did not train on. The held-out τ̂ of
a row comes from the members that did not train on it (about one of four), so it is noisier
than the ensemble's. In theory that makes λ shrink the ensemble's τ̂ more than it needs: with
member noise of variance σ², independent across members, the regression is attenuated (errors
in variables), λ_oof ≈ cov(τ, s) / (var s + σ² E[1/m_i]) where the ensemble of M needs
cov(τ, s) / (var s + σ²/M). ``train.shrink_reliability`` multiplies the tested λ by that ratio
(``reliability_factor``; σ² from the spread of the held-out members on rows with two or more).
Measured, the default λ is about unbiased (mean 0.684 against 0.705 for the λ that was best on
the test rows, over 28 fresh tuning fits), and the correction overshot (0.805). The test of λ
selects its kept values upwards, which offsets the attenuation. So it is off by default
(benchmarks/RESULTS.md, Session 17).

Why not a library: EconML's ``RScorer`` scores a fitted CATE model by the same loss but does
not fit a scale, and refits its own nuisances; here the nuisances are the ensemble's own
held-out predictions, which cost nothing more.

Shape alphabet: n rows, K treatments, C classes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.stats import median_abs_deviation

from .boosting import crossfit_outcome

if TYPE_CHECKING:  # only an annotation: dr imports predict, which imports this module
    from .dr import HeldOut

EFFECT_SCALE_FILE = "effect_scale.json"
E_CLIP = 0.01  # propensities clipped to [E_CLIP, 1 − E_CLIP] in the R-loss residuals
TEST_Z = 2.0  # the level moves only when |a − c| > TEST_Z · se(a); λ is kept only when λ > TEST_Z · se(λ)


def _residuals(y, t, mu0, mu1, e1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(y − m̂, t − ê, τ̂) of the R-loss, ê clipped to [E_CLIP, 1 − E_CLIP]."""
    e1 = np.clip(np.asarray(e1, dtype=np.float64), E_CLIP, 1.0 - E_CLIP)
    mu0, mu1 = np.asarray(mu0, dtype=np.float64), np.asarray(mu1, dtype=np.float64)
    ry = np.asarray(y, dtype=np.float64) - (e1 * mu1 + (1.0 - e1) * mu0)  # (n,)
    return ry, np.asarray(t, dtype=np.float64) - e1, mu1 - mu0


def rloss_scale(y: np.ndarray, t: np.ndarray, mu0: np.ndarray, mu1: np.ndarray, e1: np.ndarray,
                centre: float, winsor: float = np.inf) -> float:
    """The λ ∈ [0, 1] that minimises the R-loss of τ_λ = centre + λ (μ̂1 − μ̂0 − centre), in
    closed form (least squares).

    ``winsor`` < inf first clips the outcome residuals at their median ± ``winsor`` robust
    standard deviations (1.4826 × the median absolute deviation, scipy's "normal" scale). It is
    not the default, and the tuning runs say why (``benchmarks/effect_shrink.py``,
    benchmarks/RESULTS.md "Session 9"). On an earnings-like suite cell it helped: one row with
    y = 157,738 set the least-squares λ to 1 where the truth was a near-constant effect. But on
    IHDP's hard tuning replications the long tails *are* the effect (an exponential response
    surface). Clipping them set λ to 0.66–0.72 where the right value was about 1, and √PEHE_out
    went from 2.55 to 5.05. Least squares errs towards keeping τ̂, which costs little (its
    worst case was +5%). Winsorising errs towards flattening a real effect, which costs a lot.

    Args:
        y, t: (n,) outcome and 0/1 treatment.
        mu0, mu1: (n,) held-out predictions under each arm.
        e1: (n,) held-out P(T = 1 | x).
        centre: the constant the effects shrink towards.
        winsor: robust standard deviations kept (inf: plain least squares, the default).

    Returns:
        λ clipped to [0, 1]; 1.0 when the effects do not vary over the rows (nothing to scale).
    """
    ry, rt, tau = _residuals(y, t, mu0, mu1, e1)
    z = rt * (tau - centre)  # (n,) the regressor of λ
    target = ry - rt * centre  # (n,)
    if np.isfinite(winsor):
        spread = float(median_abs_deviation(target, scale="normal"))
        if np.isfinite(spread) and spread > 0:
            mid = float(np.median(target))
            target = np.clip(target, mid - winsor * spread, mid + winsor * spread)
    zz = float(z @ z)
    if not np.isfinite(zz) or zz <= 1e-12 * max(float(target @ target), 1e-300):
        return 1.0
    return float(np.clip(z @ target / zz, 0.0, 1.0))


def rloss_level(y: np.ndarray, t: np.ndarray, mu0: np.ndarray, mu1: np.ndarray, e1: np.ndarray,
                centre: float) -> tuple[float, float, float]:
    """The joint R-loss fit (a, λ) of τ = a + λ (μ̂1 − μ̂0 − centre), least squares with λ
    clipped to [0, 1] (a refitted given the clipped λ), and the standard error of a.

    se(a) is the heteroskedasticity-robust (sandwich) error of a's normal equation with λ held
    fixed: √Σ (r_t,i · u_i)² / Σ r_t,i², u the residuals of the fit, r_t = t − ê.

    Args: as ``rloss_scale``.

    Returns:
        (a, λ, se(a)).
    """
    ry, rt, tau = _residuals(y, t, mu0, mu1, e1)
    z = rt * (tau - centre)  # (n,)
    tt = float(rt @ rt)
    if float(z @ z) <= 1e-12 * max(tt, 1e-300):  # τ̂ constant: only the level to fit
        lam = 1.0
    else:
        lam = float(np.linalg.lstsq(np.stack([rt, z], axis=1), ry, rcond=None)[0][1])
        lam = float(np.clip(lam, 0.0, 1.0)) if np.isfinite(lam) else 1.0
    a = float(rt @ (ry - lam * z) / tt)
    u = ry - rt * a - lam * z  # (n,)
    return a, lam, float(np.sqrt(np.sum((rt * u) ** 2)) / tt)


def scale_stderr(y: np.ndarray, t: np.ndarray, mu0: np.ndarray, mu1: np.ndarray, e1: np.ndarray,
                 centre: float, level: float, lam: float) -> float:
    """se(λ) of τ = level + λ (μ̂1 − μ̂0 − centre): the sandwich error of λ's normal equation
    with the level held fixed, √Σ (z_i u_i)² / Σ z_i², z = (t − ê)(τ̂ − centre), u the
    residuals; inf when τ̂ does not vary."""
    ry, rt, tau = _residuals(y, t, mu0, mu1, e1)
    z = rt * (tau - centre)  # (n,)
    zz = float(z @ z)
    if zz <= 1e-12 * max(float(rt @ rt), 1e-300):
        return float("inf")
    u = ry - rt * level - lam * z  # (n,)
    return float(np.sqrt(np.sum((z * u) ** 2)) / zz)


def reliability_factor(tau_members: np.ndarray, held: np.ndarray) -> tuple[float, dict[str, float]]:
    """ρ = V / (V − σ² E[1/m] + σ²/M): how much more of its spread the M-member ensemble's τ̂
    supports than the held-out τ̂ that λ was fitted on (module docstring, errors in variables).

    V is the variance over rows of the held-out τ̂ (the mean of the m_i members that did not
    train on row i); σ² the mean, over rows with m_i ≥ 2, of the sample variance (ddof 1) of those
    members' τ̂, an unbiased estimate of one member's independent noise; the signal's variance
    V − σ² E[1/m] is floored at 0. Written by hand: a reliability ratio of two variances, which no
    library computes from an ensemble's held-out predictions.

    Args:
        tau_members: (M, n) every member's τ̂ on the rows.
        held: (M, n) True where the member did not train on the row; every row has one.

    Returns:
        (ρ ≥ 1 when σ² > 0; 1.0 without two held-out members on any row), {"V", "sigma2", "inv_m"}.
    """
    tau = np.asarray(tau_members, dtype=np.float64)
    count = held.sum(0)  # (n,)
    oof = (held * tau).sum(0) / np.maximum(count, 1)  # (n,)
    V = float(oof.var())
    two = count >= 2
    parts = {"V": V, "sigma2": 0.0, "inv_m": float((1.0 / np.maximum(count, 1)).mean())}
    if not two.any() or V <= 0:
        return 1.0, parts
    dev = np.where(held[:, two], tau[:, two] - oof[two], 0.0)  # (M, n_2)
    parts["sigma2"] = sigma2 = float(((dev ** 2).sum(0) / (count[two] - 1)).mean())
    signal = max(V - sigma2 * parts["inv_m"], 0.0)
    return V / max(signal + sigma2 / len(tau), 1e-300), parts


def blend_level(centre: float, a: float, se: float) -> float:
    """The precision-weighted level c + max(0, 1 − se² / (a − c)²) (a − c): the convex combination
    of the biased, less noisy plug-in c and the about unbiased R-loss level a (standard error se)
    that minimises the squared error when c's bias² is estimated by (a − c)² − se², floored at 0
    (positive-part James–Stein in one dimension). c while |a − c| ≤ se; 3/4 of the way to a at
    2 se. Written by hand: one line of arithmetic that no library offers."""
    d = a - centre
    if not (np.isfinite(se) and np.isfinite(d)) or d * d <= se * se:
        return centre
    return centre + (1.0 - se * se / (d * d)) * d


def scale_given_level(y: np.ndarray, t: np.ndarray, mu0: np.ndarray, mu1: np.ndarray, e1: np.ndarray,
                      centre: float, level: float) -> float:
    """λ ∈ [0, 1] minimising the R-loss of τ = level + λ (μ̂1 − μ̂0 − centre), least squares;
    ``rloss_scale`` is the case level = centre."""
    ry, rt, tau = _residuals(y, t, mu0, mu1, e1)
    z = rt * (tau - centre)  # (n,)
    zz = float(z @ z)
    if zz <= 1e-12 * max(float(rt @ rt), 1e-300):
        return 1.0
    return float(np.clip(z @ (ry - rt * level) / zz, 0.0, 1.0))


def shrink_rule(y: np.ndarray, t: np.ndarray, mu0: np.ndarray, mu1: np.ndarray, e1: np.ndarray,
                centre: float, tests: bool = True, level: str = "test") -> dict[str, float]:
    """(a, λ) of one arm by the module docstring's rule, with their standard errors.

    ``tests`` False: Session 9's rule, λ of ``rloss_scale`` about a = centre. True (``rloss``):
    the level a of ``rloss_level`` where it rejects the centre at TEST_Z standard errors (with
    the joint fit's λ), else the centre with ``rloss_scale``'s λ; then λ = 0 unless
    λ > TEST_Z · se(λ). ``level`` "blend" (``train.shrink_level``, with ``tests``) replaces the
    test of the level by ``blend_level`` and refits λ given it (``scale_given_level``).

    Args: as ``rloss_scale``.

    Returns:
        {"level": a, "scale": λ, "level_se": se(a) of the joint fit, "scale_se": se(λ) before
        the heterogeneity test, "level_rloss": the joint fit's level, used or not}.
    """
    args = (y, t, mu0, mu1, e1, centre)
    lam = rloss_scale(*args)
    a_joint, lam_joint, level_se = rloss_level(*args)
    a = centre
    if tests and level == "blend":
        a = blend_level(centre, a_joint, level_se)
        if a != centre:
            lam = scale_given_level(*args, a)
    elif tests and np.isfinite(level_se) and abs(a_joint - centre) > TEST_Z * level_se:
        a, lam = a_joint, lam_joint
    scale_se = scale_stderr(*args, a, lam)
    if tests and not lam > TEST_Z * scale_se:
        lam = 0.0
    return {"level": a, "scale": lam, "level_se": level_se, "scale_se": scale_se, "level_rloss": a_joint}


def outcome_arms(y: np.ndarray, mu0: np.ndarray, mu1: np.ndarray, e1: np.ndarray, m_direct: np.ndarray | None,
                 choice: str) -> tuple[np.ndarray, np.ndarray, str, dict[str, float]]:
    """The arms the R-loss reads, given the outcome nuisance ``choice`` (``train.shrink_outcome``).

    The R-loss reads the arms only through m̂ = ê μ̂1 + (1 − ê) μ̂0 and τ̂ = μ̂1 − μ̂0. With the
    direct m̂ (``m_direct``, a cross-fitted regression of y on x) the arms become
    (m̂ − ê τ̂, m̂ + (1 − ê) τ̂): the same τ̂, the direct m̂. "select" takes the m̂ of lower mean
    squared error against y over these (held-out) rows; "ensemble" the arms' own.

    Returns:
        (μ̂0', μ̂1', the m̂ used: "ensemble" | "direct", {"mse_ensemble", "mse_direct"}).
    """
    e1c = np.clip(np.asarray(e1, dtype=np.float64), E_CLIP, 1.0 - E_CLIP)
    m_ens = e1c * mu1 + (1.0 - e1c) * mu0
    mse = {"mse_ensemble": float(np.mean((y - m_ens) ** 2))}
    if m_direct is None or choice == "ensemble":
        return mu0, mu1, "ensemble", mse
    mse["mse_direct"] = float(np.mean((y - m_direct) ** 2))
    if choice == "select" and not mse["mse_direct"] < mse["mse_ensemble"]:
        return mu0, mu1, "ensemble", mse
    tau = mu1 - mu0
    base = m_direct - e1c * tau
    return base, base + tau, "direct", mse


def fit_effect_scale(ho: HeldOut, n_treatments: int, outcome_type: str, seed: int,
                     tests: bool = True, outcome: str = "select", reliability: bool = False,
                     level: str = "test") -> dict[str, Any] | None:
    """a_k, λ_k and c_k for every arm k ≥ 1 against arm 0 on the held-out rows (the module
    docstring, ``shrink_rule``): c_k is the mean of the whole ensemble's τ̂_k over those rows.
    With K > 2, arm k uses the rows of arms 0 and k and the propensity ê_k / (ê_0 + ê_k).
    ``outcome``: the R-loss's m̂ (``outcome_arms``; "select", "ensemble" or "direct").
    ``reliability``: λ_k times ``reliability_factor`` of the members' τ̂_k, clipped to [0, 1]
    (needs ``ho.members_mu``; the factor is recorded either way when the members are known).
    ``level``: ``shrink_rule``'s ("test" or "blend"; ``train.shrink_level``).

    Returns:
        {"method": "rloss" | "scale", "centre": [c_1 …], "level": [a_1 …], "level_se":
        [se(a_1) …] (the joint fit's, moved or not), "level_rloss": [the joint fit's a_1 …],
        "scale": [λ_1 …], "scale_se": [se(λ_1) …],
        "rows": [n_1 …], "outcome": ["ensemble" | "direct" …], "outcome_mse": [{…} …],
        "reliability": [ρ_1 …] (when the members are known)}, or None
        for a multiclass outcome (its μ̂ is a class index, not a mean
        to shrink) or when an arm has fewer than 10 held-out rows on either side.
    """
    if outcome_type == "multiclass" or len(ho.rows) == 0:
        return None
    e = ho.propensity(n_treatments, seed)  # (n_r, K)
    out: dict[str, Any] = {"method": "rloss" if tests else "scale", "centre": [], "level": [], "level_se": [],
                           "scale": [], "scale_se": [], "level_rloss": [], "rows": [], "outcome": [],
                           "outcome_mse": []}
    for k in range(1, n_treatments):
        pair = (ho.t == 0) | (ho.t == k)
        if min(int((ho.t == 0).sum()), int((ho.t == k).sum())) < 10:
            return None
        c = float((ho.mu_all[:, k] - ho.mu_all[:, 0]).mean())
        e1 = e[pair, k] / np.maximum(e[pair, 0] + e[pair, k], 1e-12)
        y = ho.y[pair]
        m_direct = None if outcome == "ensemble" else crossfit_outcome(ho.x[pair], y, seed)
        mu0, mu1, used, mse = outcome_arms(y, ho.mu[pair, 0], ho.mu[pair, k], e1, m_direct, outcome)
        rule = shrink_rule(y, (ho.t[pair] == k).astype(np.float64), mu0, mu1, e1, c, tests, level)
        if ho.members_mu is not None and ho.held is not None:
            rho = reliability_factor(ho.members_mu[:, pair, k] - ho.members_mu[:, pair, 0], ho.held[:, pair])[0]
            out.setdefault("reliability", []).append(rho)
            if reliability:
                rule["scale"] = float(np.clip(rule["scale"] * rho, 0.0, 1.0))
        out["outcome"].append(used)
        out["outcome_mse"].append(mse)
        out["centre"].append(c)
        for key in ("level", "level_se", "scale", "scale_se", "level_rloss"):  # JSON has no inf: None
            out[key].append(float(rule[key]) if np.isfinite(rule[key]) else None)
        out["rows"].append(int(pair.sum()))
    return out


def effect_map(es: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, λ, c), each (K − 1,), of τ' = a + λ (τ̂ − c); a = c for a scale written before the
    level existed (an effect_scale.json without "level")."""
    centre = np.asarray(es["centre"], dtype=np.float64)
    return np.asarray(es.get("level", centre), dtype=np.float64), np.asarray(es["scale"], dtype=np.float64), centre


def apply_effect_scale(es: dict[str, Any], mu: np.ndarray, propensity: np.ndarray,
                       outcome_type: str) -> dict[str, np.ndarray]:
    """Shrunk predictions: τ'_k = a_k + λ_k (μ̂_k − μ̂_0 − c_k), with μ̂'_0 chosen so that the
    propensity-weighted mean Σ_t ê_t μ̂_t (the model's prediction of the observed outcome)
    does not change, and μ̂'_k = μ̂'_0 + τ'_k.

    Args:
        es: ``fit_effect_scale``'s result.
        mu: (n, K) the ensemble's μ̂ (P(Y = 1) for a binary outcome).
        propensity: (n, K) the ensemble's ê.

    Returns:
        {"mu": (n, K)} and, for a binary outcome, {"probs": (n, K, 2)} with μ̂' clipped to [0, 1].
    """
    level, scale, centre = effect_map(es)  # (K − 1,) each
    if np.all(scale == 1.0) and np.array_equal(level, centre):
        return {}
    mu = np.asarray(mu, dtype=np.float64)
    p = np.asarray(propensity, dtype=np.float64)
    p = p / np.maximum(p.sum(1, keepdims=True), 1e-12)  # (n, K)
    tau = level + scale * ((mu[:, 1:] - mu[:, :1]) - centre)  # (n, K − 1)
    m = (p * mu).sum(1)  # (n,)
    mu0 = m - (p[:, 1:] * tau).sum(1)  # (n,)
    out = np.concatenate([mu0[:, None], mu0[:, None] + tau], axis=1)  # (n, K)
    if outcome_type != "binary":
        return {"mu": out}
    out = np.clip(out, 0.0, 1.0)
    return {"mu": out, "probs": np.stack([1.0 - out, out], axis=-1)}
