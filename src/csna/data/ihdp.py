"""IHDP with Hill's (2011) response surface B, simulated from the shipped covariate table.

Shape alphabet: n = 747 children, p = 25 covariates, K = 2 treatments.
See README_IHDP.md for provenance.
"""

from __future__ import annotations

from importlib import resources

import numpy as np
import pandas as pd

from csna.data.tables import CausalData

CONTINUOUS = ["bw", "b.head", "preterm", "birth.o", "nnhealth", "momage"]
BINARY = ["sex", "twin", "b.marr", "mom.lths", "mom.hs", "mom.scoll", "cig", "first", "booze",
          "drugs", "work.dur", "prenatal", "site1", "site2", "site3", "site4", "site5", "site6", "site7"]
COVARIATES = CONTINUOUS + BINARY

_BETA_VALUES = np.array([0.0, 0.1, 0.2, 0.3, 0.4])
_BETA_PROBS = np.array([0.6, 0.1, 0.1, 0.1, 0.1])
_OFFSET = 0.5  # Hill's W: every entry of the offset matrix is 0.5
_ATT = 4.0


def load_covariates() -> tuple[pd.DataFrame, np.ndarray]:
    """The 747 IHDP children kept by Hill's filter.

    Returns:
        X: (747, 25) covariates in original units, source column names.
        T: (747,) int64 treatment, 139 treated.
    """
    with resources.files("csna.data").joinpath("ihdp_sim.csv").open("r") as f:
        raw = pd.read_csv(f)
    # Hill removes the treated children of non-white mothers so that the treated group
    # is no longer a random sample: this is what makes the design observational.
    keep = ~((raw["treat"] == 1) & (raw["momwhite"] == 0))
    raw = raw[keep].reset_index(drop=True)
    return raw[COVARIATES].copy(), raw["treat"].to_numpy(dtype=np.int64)


def response_surface_b(X: np.ndarray, T: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Hill's response surface B: exponential control surface, linear treated surface.

    Args:
        X: (n, p) float64 covariates, continuous ones already standardised.
        T: (n,) int64 treatment in {0, 1}.
        rng: source of beta; drawn before anything else.

    Returns:
        mu: (n, 2) float64 true E[Y(0) | x], E[Y(1) | x], with mean over treated of
            mu1 - mu0 equal to 4.
        params: beta (p,) and omega.
    """
    beta = rng.choice(_BETA_VALUES, size=X.shape[1], p=_BETA_PROBS)
    mu0 = np.exp((X + _OFFSET) @ beta)  # (n,)
    linear = X @ beta  # (n,)
    treated = T == 1
    omega = np.mean(linear[treated] - mu0[treated]) - _ATT
    mu1 = linear - omega
    return np.stack([mu0, mu1], axis=1), {"beta": beta, "omega": float(omega)}


def ihdp(replication: int = 0) -> CausalData:
    """One IHDP replication (response surface B), deterministic in `replication`.

    Follows the recipe of the IHDP-100 files used in papers, but is not those files.

    Args:
        replication: seed of `np.random.default_rng`; any non-negative integer.

    Returns:
        CausalData with X (747, 25) in original units, T (747,) int64, Y (747,) float32,
        mu (747, 2) float64, name "ihdp-{replication}".
    """
    X, T = load_covariates()
    Z = X.to_numpy(dtype=np.float64)  # (n, p)
    cont = [X.columns.get_loc(c) for c in CONTINUOUS]
    # Standardised for the surface only, as Hill does (R's scale: ddof=1); X stays raw.
    Z[:, cont] = (Z[:, cont] - Z[:, cont].mean(0)) / Z[:, cont].std(0, ddof=1)

    rng = np.random.default_rng(replication)
    mu, params = response_surface_b(Z, T, rng)
    noise = rng.standard_normal(len(T))
    Y = (mu[np.arange(len(T)), T] + noise).astype(np.float32)
    return CausalData(X=X, T=T, Y=Y, mu=mu, outcome_type="continuous", n_treatments=2,
                      name=f"ihdp-{replication}", extra={"replication": replication, **params})
