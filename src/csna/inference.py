"""How sure csna is of its effects: pointwise standard errors from the ensemble's members, and
EconML-style inference results (``effect_inference``, ``ate_inference``).

**Pointwise (CATE) standard errors.** The M members of a run each train on a random share r of
the non-test rows (``ensemble_resplit``: r = train / (train + validation), 0.7 by default) with
their own seed. Read as a delete-d jackknife over random subsets (Shao & Wu, 1989), the
variance of a full-data estimate is r / (1 − r) times the members' variance:

    se(x) = sqrt(r / (1 − r) · s²(x)),   s²(x) = Σ_j (τ'_j(x) − τ̄'(x))² / (M − 1),

with τ'_j member j's effect after the run's shrinkage (``csna.shrink``), plus the variance
se(a)² of the level that the shrinkage's R-loss fit reports: the members share the level, so
their spread does not see its uncertainty, and where λ = 0 (a constant effect) it is all there
is. It covers the
variance of the fit (rows and seeds), not its bias: a model that is wrong the same way in
every member gets narrow intervals. Their coverage is measured, not assumed
(``benchmarks/RESULTS.md``, "Interval coverage"). One member gives no spread: NaN.

**Average effects.** The doubly-robust (AIPW) estimates of ``csna.dr`` carry an influence-
function standard error over the rows given to ``fit``; ``ate_inference()`` and
``att_inference()`` report those.

Why not EconML's own result classes: they are built from an EconML estimator's internals
(``NormalInferenceResults`` needs its ``pred_dist`` and ``d_t``/``d_y`` bookkeeping); these
two small classes give the same methods on plain arrays.

Shape alphabet: n rows, K treatments, M members.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import norm

from .predict import member_predictions
from .rundir import Run
from .shrink import effect_map


def train_share(run: Run) -> float:
    """r: the mean share of the non-test rows each member trained on (0.7 by default)."""
    shares = []
    for m in run.all_members():
        if m.splits is not None and len(m.splits["train"]) + len(m.splits["val"]) > 0:
            shares.append(len(m.splits["train"]) / (len(m.splits["train"]) + len(m.splits["val"])))
    if shares:
        return float(np.mean(shares))
    tr, va = run.cfg.data.split[0], run.cfg.data.split[1]
    return tr / (tr + va)


def member_effects(run: Run, x: np.ndarray, gates: bool = True) -> np.ndarray:
    """(M, n, K) each member's τ'_j(x) of every arm against arm 0 (column 0 is 0), after the
    run's shrinkage."""
    out = []
    es = run.effect_scale
    for p in member_predictions(run, x, gates):
        tau = p["mu"] - p["mu"][:, :1]  # (n, K)
        if es is not None:
            a, lam, c = (np.concatenate([[v], arr]) for v, arr in zip((0.0, 1.0, 0.0), effect_map(es)))  # (K,)
            tau = a + lam * (tau - c)
        out.append(tau)
    return np.stack(out)


def jackknife_stderr(effects: np.ndarray, share: float) -> np.ndarray:
    """se of the module docstring from ``effects`` (M, …) of the M members, each trained on a
    share ``share`` of the rows; NaN with one member."""
    if len(effects) < 2:
        return np.full(effects.shape[1:], np.nan)
    return np.sqrt(share / (1.0 - share) * effects.var(axis=0, ddof=1))


def level_variance(run: Run) -> np.ndarray:
    """(K,) se(a_k)² of each arm's level from the shrinkage's R-loss fit (``csna.shrink``); 0 for
    arm 0, without a shrinkage, and for a scale written before the level existed."""
    es = run.effect_scale
    out = np.zeros(run.prep.n_treatments)
    if es is not None and "level_se" in es:
        se = np.array([np.nan if v is None else v for v in es["level_se"]], dtype=np.float64)
        out[1:] = np.nan_to_num(np.square(se), nan=0.0)
    return out


def effect_stderr(run: Run, x: np.ndarray, t0: int = 0, t1: int = 1, gates: bool = True) -> np.ndarray:
    """(n,) se(x) of arm t1 against t0 (the module docstring)."""
    eff = member_effects(run, x, gates)  # (M, n, K)
    se = jackknife_stderr(eff[:, :, t1] - eff[:, :, t0], train_share(run))
    lv = level_variance(run)
    return np.sqrt(se**2 + lv[t1] + lv[t0])


def _two_sided(alpha: float) -> float:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    return float(norm.ppf(1.0 - alpha / 2.0))


@dataclass
class EffectInference:
    """Normal-approximation inference on effects (EconML's ``NormalInferenceResults``
    methods): ``point_estimate`` and ``stderr`` are (n,) arrays."""

    point_estimate: np.ndarray
    stderr: np.ndarray

    @property
    def var(self) -> np.ndarray:
        return self.stderr ** 2

    @property
    def zstat(self) -> np.ndarray:
        return self.point_estimate / self.stderr

    def pvalue(self, value: float = 0.0) -> np.ndarray:
        """Two-sided p-values of H0: effect = ``value``."""
        return 2.0 * norm.sf(np.abs((self.point_estimate - value) / self.stderr))

    def conf_int(self, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) of the (1 − alpha) interval, each (n,)."""
        z = _two_sided(alpha)
        return self.point_estimate - z * self.stderr, self.point_estimate + z * self.stderr

    def summary_frame(self, alpha: float = 0.05, value: float = 0.0, decimals: int = 3) -> pd.DataFrame:
        """One row per unit: point_estimate, stderr, zstat, pvalue, ci_lower, ci_upper."""
        lo, hi = self.conf_int(alpha)
        frame = pd.DataFrame({"point_estimate": self.point_estimate, "stderr": self.stderr,
                              "zstat": (self.point_estimate - value) / self.stderr, "pvalue": self.pvalue(value),
                              "ci_lower": lo, "ci_upper": hi})
        return frame.round(decimals)

    def population_summary(self) -> AverageInference:
        """The mean effect over these units, with the standard error EconML's population
        summary uses when the units' errors may be fully correlated: the root mean of the
        variances (conservative)."""
        return AverageInference(float(np.mean(self.point_estimate)), float(np.sqrt(np.mean(self.var))))


@dataclass
class AverageInference:
    """Normal-approximation inference on one average effect (ATE or ATT), with EconML's
    population-summary names as aliases (``mean_point``, ``stderr_mean``, ``conf_int_mean``)."""

    point_estimate: float
    stderr: float
    rows: int | None = None

    mean_point = property(lambda self: self.point_estimate)
    stderr_mean = property(lambda self: self.stderr)

    @property
    def zstat(self) -> float:
        return self.point_estimate / self.stderr

    def pvalue(self, value: float = 0.0) -> float:
        return float(2.0 * norm.sf(abs((self.point_estimate - value) / self.stderr)))

    def conf_int(self, alpha: float = 0.05) -> tuple[float, float]:
        z = _two_sided(alpha)
        return self.point_estimate - z * self.stderr, self.point_estimate + z * self.stderr

    conf_int_mean = conf_int

    def summary_frame(self, alpha: float = 0.05, value: float = 0.0, decimals: int = 3) -> pd.DataFrame:
        lo, hi = self.conf_int(alpha)
        return pd.DataFrame({"point_estimate": [self.point_estimate], "stderr": [self.stderr],
                             "zstat": [(self.point_estimate - value) / self.stderr],
                             "pvalue": [self.pvalue(value)], "ci_lower": [lo], "ci_upper": [hi]}).round(decimals)
