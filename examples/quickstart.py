"""Quickstart: fit CSNAEstimator on IHDP, print the ATE (plug-in, and doubly robust with its 95%
interval) and √PEHE.

    python examples/quickstart.py

IHDP is semi-synthetic, so the true outcomes μ_t(x) are known and the error of the
individual effects (√PEHE) can be measured: "in" on the rows the model was fitted on,
"out" on held-out rows.
"""

import time

import numpy as np

import csna
from csna import metrics
from csna.data import ihdp, split_indices


def main() -> None:
    data = ihdp(0)  # replication 0: 747 children, 25 covariates, true μ known
    fit_rows, _, test_rows = split_indices(data.n, (0.9, 0.0, 0.1), seed=0, stratify=data.T)

    # The defaults, with a third of their phase lengths (steps at 500 rows; csna.schedule) and
    # one model instead of an ensemble of four, so that this runs in seconds; drop the
    # overrides for the full budget.
    est = csna.CSNAEstimator(phase1__steps=160, phase2__steps=100, phase3__steps=100, phase4__steps=60,
                             train__ensemble=1, train__progress=False)
    t0 = time.perf_counter()
    est.fit(data.Y[fit_rows], data.T[fit_rows], X=data.X.iloc[fit_rows])
    print(f"fitted in {time.perf_counter() - t0:.1f} s on {len(fit_rows)} rows "
          f"({len(est.covariates_)} covariates, {est.n_treatments_} treatments)")

    tau = data.mu[:, 1] - data.mu[:, 0]
    print(f"ATE      {est.ate(data.X):6.3f}  plug-in, all rows (true {tau.mean():.3f})")
    # The doubly-robust ATE over the fit rows, with a 95% interval from its standard error.
    dr = est.ate_inference()
    lo, hi = dr.conf_int(alpha=0.05)
    print(f"ATE (DR) {dr.point_estimate:6.3f}  95% interval [{lo:.3f}, {hi:.3f}]  "
          f"(true {tau[fit_rows].mean():.3f} on the fit rows)")
    for name, rows in (("in", fit_rows), ("out", test_rows)):
        pehe = metrics.sqrt_pehe(tau[rows], est.effect(data.X.iloc[rows]))
        print(f"√PEHE {name:<4} {pehe:6.3f}")
    e = est.propensity(data.X)[:, 1]
    print(f"propensity ê(x) in [{e.min():.3f}, {e.max():.3f}], mean {np.mean(e):.3f}")


if __name__ == "__main__":
    main()
