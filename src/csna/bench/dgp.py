"""The stress suite's one generator of data with known potential-outcome means μ_0(x), μ_1(x).

Every regime is a knob of ``Knobs``; ``generate(knobs, seed)`` draws a ``CausalData`` with ``mu``
filled, so √PEHE, ε_ATE and ε_ATT are exact. The equations are in ``docs/stress_suite.md``; in
short, on the numeric design Z the generator builds (blocks below):

    b(x)   prognostic score, sd 1: confounders (linear + nonlinear) and precision variables
    f(x)   confounder part of the propensity, sd 1, correlation ρ with b's confounder part
    h(x)   effect modifier, sd 1 (linear: moderate; mostly nonlinear: strong)
    logit e(x) = α + s·f(x) + 1·g(instruments),  α solved so that mean e = treated share
    μ_0, μ_1 from b and h by the outcome's link (gaussian, earnings hurdle, binary)

Constants that standardise a score (its mean and sd) and α are computed once on the drawn rows
and are then parameters of the replication: ``propensity`` and ``potential_means`` are pure
functions of (structure, Z), so the truth of any modified Z can be evaluated (the tests perturb
instruments and precision variables this way).

Shape alphabet: n rows; Z blocks conf (n, q) confounders, inst (n, a) instruments, prec (n, b)
precision variables, irr (n, c) irrelevant covariates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import brentq
from scipy.special import expit

from ..data import CausalData

COVARIATES = ("ihdp", "mixed")
CONFOUNDING = ("randomised", "moderate", "strong")
HETEROGENEITY = ("constant", "moderate", "strong")
OUTCOMES = ("gaussian", "earnings", "binary")

# confounding → (s: sd of the confounders' part of logit e, ρ: its correlation with the prognosis)
STRENGTH = {"randomised": (0.0, 0.0), "moderate": (1.0, 0.5), "strong": (3.0, 0.8)}
INSTRUMENT_STRENGTH = 1.0  # sd of the instruments' part of logit e
# heterogeneity → amplitude of h in τ(x), per outcome (see potential_means)
AMPLITUDE = {"gaussian": {"constant": 0.0, "moderate": 1.0, "strong": 2.0},
             "binary": {"constant": 0.0, "moderate": 0.08, "strong": 0.15},
             "earnings": {"constant": 0.0, "moderate": 0.5, "strong": 0.9}}
GAUSSIAN = dict(scale=2.0, effect=2.0, noise=1.0)  # μ_0 = 2b, τ = 2 + A·h, Y = μ_T + N(0, 1)
BINARY = dict(low=0.15, span=0.6, slope=1.5, effect=0.10)  # μ_0 = .15 + .6·σ(1.5b), τ = .1 + A·tanh h
# earnings hurdle: P(Y > 0) = σ(p0 + pb·b + pt·t), log amount ~ N(m_t(x), sigma²)
EARNINGS = dict(p0=0.5, pb=0.8, pt=0.3, log_amount=np.log(4000.0), mb=0.5, sigma=0.9, effect=1000.0)
OUTLIER_SHARE = 0.01  # rows whose skewed columns are multiplied by 5–20
MISSING_COLUMNS = {"mixed": ("num0", "num1", "num3"), "ihdp": ("bw", "b.head", "momage")}


@dataclass(frozen=True)
class Knobs:
    """One data-generating process; every field is one regime of the stress suite."""

    covariates: str = "mixed"  # ihdp: IHDP's 25 real covariates resampled; mixed: synthetic mixed types
    n: int = 1000
    treated_share: float = 0.5  # mean true propensity (set by the intercept α)
    confounding: str = "moderate"  # randomised | moderate | strong (poor overlap)
    heterogeneity: str = "moderate"  # constant | moderate (linear) | strong (nonlinear)
    outcome: str = "gaussian"  # gaussian | earnings (hurdle, thousands) | binary
    missing: float = 0.0  # share of values missing completely at random in 3 continuous columns
    instruments: int = 0  # columns that cause T only
    precision: int = 0  # columns that cause Y only
    irrelevant: int = 0  # columns that cause neither

    def __post_init__(self) -> None:
        for name, valid in (("covariates", COVARIATES), ("confounding", CONFOUNDING),
                            ("heterogeneity", HETEROGENEITY), ("outcome", OUTCOMES)):
            if getattr(self, name) not in valid:
                raise ValueError(f"knob {name} must be one of {valid}, got {getattr(self, name)!r}")
        if self.n < 50 or not 0.0 < self.treated_share < 1.0 or not 0.0 <= self.missing < 0.5:
            raise ValueError(f"need n >= 50, 0 < treated_share < 1 and 0 <= missing < 0.5: {self}")
        if min(self.instruments, self.precision, self.irrelevant) < 0:
            raise ValueError(f"column counts must be >= 0: {self}")


# --- scores: sums of linear and nonlinear terms of Z, standardised on the drawn rows -------------


@dataclass(frozen=True)
class Term:
    """c · φ(Z[block][:, i], Z[block][:, j]) with φ one of ``_PHI``."""

    kind: str
    block: str
    i: int
    c: float
    j: int = 0


_PHI = {"lin": lambda a, b: a, "sin": lambda a, b: np.sin(1.5 * a), "prod": lambda a, b: a * b,
        "step": lambda a, b: (a > 0.5).astype(np.float64), "sq": lambda a, b: a * a - 1.0,
        "tanh": lambda a, b: np.tanh(2.0 * a) * (b > 0)}
NONLINEAR = ("sin", "prod", "step", "sq", "tanh")


@dataclass(frozen=True)
class Score:
    """s(Z) = (Σ terms − shift) / scale; ``standardised`` sets shift and scale from some rows."""

    terms: tuple[Term, ...] = ()
    shift: float = 0.0
    scale: float = 1.0

    def raw(self, Z: dict[str, np.ndarray]) -> np.ndarray:
        n = len(next(iter(Z.values())))
        out = np.zeros(n)
        for t in self.terms:
            X = Z[t.block]  # (n, width)
            out += t.c * _PHI[t.kind](X[:, t.i], X[:, t.j])
        return out

    def __call__(self, Z: dict[str, np.ndarray]) -> np.ndarray:
        """(n,) the score of every row."""
        return (self.raw(Z) - self.shift) / self.scale


def standardised(terms: list[Term], Z: dict[str, np.ndarray]) -> Score:
    """The score of ``terms`` with mean 0 and sd 1 on the rows of Z (sd 0: left unscaled)."""
    r = Score(tuple(terms)).raw(Z)
    sd = float(r.std())
    return Score(tuple(terms), float(r.mean()), sd if sd > 1e-12 else 1.0)


def mix(parts: list[tuple[float, Score]], Z: dict[str, np.ndarray]) -> Score:
    """Standardised Σ w · score: the terms rescaled by w / scale (shifts vanish in the refit)."""
    terms = [Term(t.kind, t.block, t.i, t.c * w / s.scale, t.j) for w, s in parts for t in s.terms]
    return standardised(terms, Z)


def _linear(block: str, width: int, rng: np.random.Generator, density: float = 0.6) -> list[Term]:
    w = rng.standard_normal(width) * (rng.random(width) < density)
    if width and not w.any():
        w[rng.integers(width)] = 1.0
    return [Term("lin", block, i, float(w[i])) for i in range(width) if w[i] != 0.0]


def _nonlinear(block: str, width: int, count: int, rng: np.random.Generator, size: float = 1.0) -> list[Term]:
    kinds = rng.choice(NONLINEAR, size=count)
    return [Term(str(k), block, int(rng.integers(width)), float(rng.choice([-1.0, 1.0]) * size * rng.uniform(1.0, 2.0)),
                 int(rng.integers(width))) for k in kinds]


# --- covariates --------------------------------------------------------------------------------


def _mixed(n: int, rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray]:
    """Synthetic mixed-type confounders: 6 continuous (3 skewed with outliers), 5 binary and 3
    string categoricals (3, 8 and 20 levels, unequal frequencies), correlated through a latent u.

    Returns:
        X: (n, 14) as a user's table holds them; Z: (n, 14) the standardised values the
        structural functions read (log scale for the skewed columns, ±1 for binaries, a drawn
        level effect for categoricals).
    """
    u = rng.standard_normal(n)
    cols: dict[str, Any] = {}
    zs: list[np.ndarray] = []
    outlier = rng.random(n) < OUTLIER_SHARE
    for k, (m, s) in enumerate([(3.0, 0.8), (1.0, 1.0), (8.0, 0.5)]):  # skewed: lognormal, with outliers
        z = 0.6 * u + 0.8 * rng.standard_normal(n)
        x = np.exp(m + s * z) * np.where(outlier & (rng.random(n) < 0.7), rng.uniform(5, 20, n), 1.0)
        cols[f"num{k}"] = x
        zs.append((np.log(x) - m) / s)
    z3 = 0.5 * u + np.sqrt(0.75) * rng.standard_normal(n)
    cols["num3"] = np.round(40.0 + 12.0 * z3, 1)  # age-like
    zs.append(z3)
    z4 = rng.standard_normal(n)
    cols["num4"] = z4
    zs.append(z4)
    x5 = rng.uniform(0, 100, n)
    cols["num5"] = x5
    zs.append((x5 - 50.0) / 28.87)
    for k, prev in enumerate([0.1, 0.2, 0.3, 0.4, 0.5]):
        b = (rng.logistic(size=n) + 0.8 * u > np.log(1 / prev - 1)).astype(np.int64)
        cols[f"bin{k}"] = b
        zs.append(2.0 * b - 1.0)
    for k, levels in enumerate([3, 8, 20]):
        p = 1.0 / np.arange(1, levels + 1)
        lvl = rng.choice(levels, size=n, p=p / p.sum())
        if k == 0:  # one categorical follows u
            lvl = np.where(rng.random(n) < 0.5, np.digitize(u, [-0.5, 0.5]), lvl)
        effect = rng.standard_normal(levels)
        cols[f"cat{k}"] = np.array([f"c{k}_{chr(65 + v)}" for v in range(levels)], dtype=object)[lvl]
        zs.append(effect[lvl])
    return pd.DataFrame(cols), np.column_stack(zs)


def _ihdp(n: int, rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray]:
    """IHDP's 25 real covariates, n rows resampled with replacement from the 747 children;
    Z: continuous ones standardised on the 747 (as Hill does, ddof 1), binaries as ±1."""
    from ..data.ihdp import CONTINUOUS, load_covariates

    X0, _ = load_covariates()
    Z0 = X0.to_numpy(dtype=np.float64)  # (747, 25)
    cont = [X0.columns.get_loc(c) for c in CONTINUOUS]
    bins = [j for j in range(Z0.shape[1]) if j not in cont]
    Z0[:, cont] = (Z0[:, cont] - Z0[:, cont].mean(0)) / Z0[:, cont].std(0, ddof=1)
    Z0[:, bins] = 2.0 * Z0[:, bins] - 1.0
    rows = rng.integers(0, len(X0), n)
    return X0.iloc[rows].reset_index(drop=True), Z0[rows]


def covariates(knobs: Knobs, rng: np.random.Generator) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """The covariate table (missing values included) and the complete numeric design Z by block."""
    X, conf = (_ihdp if knobs.covariates == "ihdp" else _mixed)(knobs.n, rng)
    Z = {"conf": conf}
    for block, count in (("inst", knobs.instruments), ("prec", knobs.precision), ("irr", knobs.irrelevant)):
        V = rng.standard_normal((knobs.n, count))  # (n, count)
        if block == "irr":  # half the irrelevant columns binary
            V[:, 1::2] = (V[:, 1::2] > 0) * 2.0 - 1.0
        Z[block] = V
        for j in range(count):
            X[f"{block}{j}"] = (V[:, j] > 0).astype(np.int64) if block == "irr" and j % 2 else V[:, j]
    if knobs.missing > 0:
        for c in MISSING_COLUMNS[knobs.covariates]:
            X[c] = X[c].astype(np.float64).where(rng.random(knobs.n) >= knobs.missing)
    return X, Z


# --- structure ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Structure:
    """The drawn functions of one replication (standardising constants included)."""

    prognostic: Score  # b(x)
    propensity: Score  # s·f(x) + instruments' part: logit e(x) − α
    intercept: float  # α
    effect: Score | None  # h(x); None for a constant effect


def draw_structure(knobs: Knobs, Z: dict[str, np.ndarray], rng: np.random.Generator) -> Structure:
    """The replication's scores b, f (with the instruments' part and α) and h, drawn from ``rng``
    and standardised on the rows of Z (equations in docs/stress_suite.md)."""
    q = Z["conf"].shape[1]
    b_conf = standardised(_linear("conf", q, rng, 0.4) + _nonlinear("conf", q, 4, rng), Z)
    b = b_conf if not knobs.precision else mix([(1.0, b_conf), (1.0, standardised(
        _linear("prec", knobs.precision, rng, density=1.0), Z))], Z)
    s, rho = STRENGTH[knobs.confounding]
    g_terms = _linear("conf", q, rng) + (_nonlinear("conf", q, 3, rng) if knobs.confounding == "strong" else [])
    f = mix([(rho, b_conf), (np.sqrt(1 - rho**2), standardised(g_terms, Z))], Z)
    parts = [(s, f)] if s > 0 else []
    if knobs.instruments:
        parts.append((INSTRUMENT_STRENGTH, standardised(_linear("inst", knobs.instruments, rng, 1.0), Z)))
    # mix() would rescale to sd 1: keep the strengths by adding the standardised parts as they are
    terms = [Term(t.kind, t.block, t.i, t.c * w / sc.scale, t.j) for w, sc in parts for t in sc.terms]
    prop = Score(tuple(terms), sum(w * sc.shift / sc.scale for w, sc in parts), 1.0)
    part = prop(Z)
    alpha = brentq(lambda a: float(expit(a + part).mean()) - knobs.treated_share, -40.0, 40.0, xtol=1e-10)
    effect = None
    if knobs.heterogeneity == "moderate":
        g_lin = standardised([t for t in g_terms if t.kind == "lin"], Z)  # linear, like the treatment choice
        effect = mix([(1.0, standardised(_linear("conf", q, rng, 0.3), Z)), (0.5, g_lin)], Z)
    elif knobs.heterogeneity == "strong":
        effect = mix([(1.0, standardised(_nonlinear("conf", q, 5, rng), Z)), (0.4, f)], Z)
    return Structure(b, prop, float(alpha), effect)


def propensity(structure: Structure, Z: dict[str, np.ndarray]) -> np.ndarray:
    """(n,) the true e(x) = P(T = 1 | x)."""
    return expit(structure.intercept + structure.propensity(Z))


def _effect_score(structure: Structure, Z: dict[str, np.ndarray]) -> np.ndarray:
    return np.zeros(len(Z["conf"])) if structure.effect is None else structure.effect(Z)


def _earnings_parts(knobs: Knobs, structure: Structure, Z: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    """Per arm the hurdle's P(Y > 0) and log-amount location: (p (n, 2), m (n, 2), μ (n, 2))."""
    e = EARNINGS
    b, h = structure.prognostic(Z), _effect_score(structure, Z)
    a = AMPLITUDE["earnings"][knobs.heterogeneity]
    p = np.stack([expit(e["p0"] + e["pb"] * b), expit(e["p0"] + e["pb"] * b + e["pt"])], 1)  # (n, 2)
    m0 = e["log_amount"] + e["mb"] * b
    mu0 = p[:, 0] * np.exp(m0 + e["sigma"] ** 2 / 2)
    mu1 = mu0 + e["effect"] * (1.0 + a * np.tanh(h))  # τ ∈ effect·(1 ± a), always > 0
    m1 = np.log(mu1 / p[:, 1]) - e["sigma"] ** 2 / 2  # the amount that makes E[Y | x, do(1)] = mu1
    return p, np.stack([m0, m1], 1), np.stack([mu0, mu1], 1)


def potential_means(knobs: Knobs, structure: Structure, Z: dict[str, np.ndarray]) -> np.ndarray:
    """(n, 2) μ_t(x) = E[Y | x, do(t)] in closed form (probabilities for a binary outcome)."""
    if knobs.outcome == "earnings":
        return _earnings_parts(knobs, structure, Z)[2]
    b, h = structure.prognostic(Z), _effect_score(structure, Z)
    a = AMPLITUDE[knobs.outcome][knobs.heterogeneity]
    if knobs.outcome == "gaussian":
        mu0 = GAUSSIAN["scale"] * b
        return np.stack([mu0, mu0 + GAUSSIAN["effect"] + a * h], 1)
    c = BINARY
    mu0 = c["low"] + c["span"] * expit(c["slope"] * b)  # (0.15, 0.75)
    return np.stack([mu0, mu0 + c["effect"] + a * np.tanh(h)], 1)  # μ_1 ∈ (0.10, 1.0)


def draw_outcome(knobs: Knobs, structure: Structure, Z: dict[str, np.ndarray], t: np.ndarray,
                 rng: np.random.Generator) -> np.ndarray:
    """(n,) one draw of Y under do(T = t), t (n,) in {0, 1}: float64, or int64 when binary."""
    rows = np.arange(len(t))
    if knobs.outcome == "earnings":
        p, m, _ = _earnings_parts(knobs, structure, Z)
        positive = rng.random(len(t)) < p[rows, t]
        return positive * np.exp(m[rows, t] + EARNINGS["sigma"] * rng.standard_normal(len(t)))
    mu = potential_means(knobs, structure, Z)[rows, t]
    if knobs.outcome == "binary":
        return (rng.random(len(t)) < mu).astype(np.int64)
    return mu + GAUSSIAN["noise"] * rng.standard_normal(len(t))


@dataclass(frozen=True)
class Draw:
    """One replication: the data, and what produced them (for tests and diagnostics)."""

    data: CausalData
    Z: dict[str, np.ndarray]
    structure: Structure


def draw(knobs: Knobs, seed: int) -> Draw:
    """The replication ``seed`` of ``knobs``: covariates, structure, T ~ Bernoulli(e(x)), Y."""
    rng = np.random.default_rng(seed)
    X, Z = covariates(knobs, rng)
    structure = draw_structure(knobs, Z, rng)
    e = propensity(structure, Z)
    T = (rng.random(knobs.n) < e).astype(np.int64)
    if T.min() == T.max():  # a group of one kind only: not a data set; force one unit across
        T[int(np.argmax(e)) if T.max() == 0 else int(np.argmin(e))] = 1 - T[0]
    mu = potential_means(knobs, structure, Z)
    Y = draw_outcome(knobs, structure, Z, T, rng)
    Y = Y.astype(np.int64) if knobs.outcome == "binary" else Y.astype(np.float32)
    data = CausalData(X=X, T=T, Y=Y, mu=mu, outcome_type="binary" if knobs.outcome == "binary" else "continuous",
                      n_treatments=2, name=f"dgp-{seed}", extra={"propensity": e, "seed": seed})
    return Draw(data, Z, structure)


def generate(knobs: Knobs, seed: int) -> CausalData:
    """The data of replication ``seed`` of ``knobs`` (deterministic in both), ``mu`` filled.

    Returns:
        CausalData: X (n, p) covariates (NaN where missing), T (n,) int64, Y (n,) float32 or
        int64 (binary), mu (n, 2) float64 true μ_0(x), μ_1(x); ``extra["propensity"]`` (n,)
        the true e(x).
    """
    return draw(knobs, seed).data
