"""The registry of peer estimators and how each is fitted and scored.

A peer sees the same preprocessed features as csna, fits on the training rows (tuning and
early stopping on the validation rows, refitting on both where that is its habit), and
predicts for every row. Scoring is csna's: "in" = train + validation rows, "out" = test rows.

Each neural peer also exists as an ensemble of four built with csna's member recipe
(``<name>-ens4``, ``neural_ens.py``); ``LIKE_FOR_LIKE`` pairs single csna with single peers
and csna's ensemble with the ensembled peers.

Shape alphabet: n rows, p features.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .. import metrics as M
from ..config import ConfigError
from . import neural, neural_ens, trees

INSTALL_HINT = "pip install 'csna[bench]'"


@dataclass
class Prediction:
    """What a peer returns: τ̂ for every row, and both potential outcomes when it has them."""

    tau: np.ndarray  # (n,)
    mu: np.ndarray | None = None  # (n, 2), probabilities for a binary outcome
    flops: float | None = None  # FLOPs of the whole fit, where the peer counts them (the neural ones)
    first_member: tuple[Prediction, float] | None = None  # an ensembled peer's member 0 and its seconds


@dataclass(frozen=True)
class Peer:
    name: str
    label: str  # what results.md says it is
    fit: Callable[..., Prediction]
    needs: tuple[str, ...] = ()
    neural: bool = False


def _from_mu(fn):
    def fit(x, t, y, train, val, binary, seed, **_):
        mu = fn(x, t, y, train, val, binary, seed)
        return Prediction(mu[:, 1] - mu[:, 0], mu)
    return fit


def _x(x, t, y, train, val, binary, seed, **_):
    tau, mu = trees.x_learner(x, t, y, train, val, binary, seed)
    return Prediction(tau, mu)


def _ridge_t(x, t, y, train, val, binary, seed, **_):
    """The floor: a T-learner of ridge regressions (scikit-learn ``RidgeCV``, its leave-one-out choice
    of the penalty) fitted per arm on the training and validation rows; a linear probability
    model clipped to [0, 1] for a binary outcome."""
    from sklearn.linear_model import RidgeCV

    rows = np.concatenate([train, val])
    mu = np.zeros((len(x), 2))  # (n, 2)
    for a in (0, 1):
        arm = rows[t[rows] == a]
        mu[:, a] = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(x[arm], y[arm]).predict(x)
    if binary:
        mu = np.clip(mu, 0.0, 1.0)
    return Prediction(mu[:, 1] - mu[:, 0], mu)


def _tau_only(fn):
    def fit(x, t, y, train, val, binary, seed, **_):
        return Prediction(fn(x, t, y, train, val, binary, seed))
    return fit


def _net(kind: str, ipm: str = "wass"):
    def fit(x, t, y, train, val, binary, seed, max_epochs=None, n_configs=None, **_):
        res = neural.fit_predict(kind, x, t, y, train, val, binary, seed, ipm=ipm, max_epochs=max_epochs,
                                 n_configs=n_configs)
        return Prediction(res.mu[:, 1] - res.mu[:, 0], res.mu, res.flops)
    return fit


def _net_ensemble(kind: str, ipm: str = "wass"):
    def fit(x, t, y, train, val, binary, seed, test=None, resplit=True, max_epochs=None, n_configs=None, **_):
        splits = {"train": train, "val": val, "test": np.zeros(0, np.int64) if test is None else test}
        res = neural_ens.fit_predict_ensemble(kind, x, t, y, splits, binary, seed, resplit=resplit, ipm=ipm,
                                              max_epochs=max_epochs, n_configs=n_configs)
        m0, secs = res.members[0]
        return Prediction(res.mu[:, 1] - res.mu[:, 0], res.mu, res.flops,
                          (Prediction(m0.mu[:, 1] - m0.mu[:, 0], m0.mu, m0.flops), secs))
    return fit


_OURS = "csna's own PyTorch implementation"
_ENS = (f"ensemble of {neural_ens.MEMBERS} with csna's member recipe (seeds s + j, train/validation redrawn "
        "from the non-test rows, mean of μ̂)")
# name, kind, ipm, label of the neural peers; each is also registered as "<name>-ens4".
_NEURAL = [("tarnet", "tarnet", "wass", "TARNet (Shalit et al. 2017)"),
           ("cfr-mmd", "cfr", "mmd", "CFR-MMD (Shalit et al. 2017)"),
           ("cfr-wass", "cfr", "wass", "CFR-Wasserstein (Shalit et al. 2017)"),
           ("dragonnet", "dragonnet", "wass", "DragonNet + targeted reg. (Shi et al. 2019)")]
ENSEMBLED = {name: f"{name}-ens{neural_ens.MEMBERS}" for name, *_ in _NEURAL}
SINGLE_OF = {ens: name for name, ens in ENSEMBLED.items()}  # the single peer that is an ensemble's member 0
# (csna row, peer row) pairs compared replication by replication in results.md.
LIKE_FOR_LIKE = tuple(("csna-single", n) for n in ENSEMBLED) + tuple(("csna", e) for e in ENSEMBLED.values())
_TREES = [
    Peer("causal-forest-dml", "EconML CausalForestDML, LightGBM nuisances", _tau_only(trees.causal_forest),
         ("econml", "lightgbm")),
    Peer("dr-learner", "EconML DRLearner, LightGBM nuisances", _tau_only(trees.dr_learner), ("econml", "lightgbm")),
    Peer("t-learner-lgbm", "T-learner, LightGBM", _from_mu(trees.t_learner), ("lightgbm",)),
    Peer("s-learner-lgbm", "S-learner, LightGBM", _from_mu(trees.s_learner), ("lightgbm",)),
    Peer("x-learner-lgbm", "X-learner, LightGBM", _x, ("lightgbm",)),
    Peer("ridge-t", "T-learner, ridge regression per arm (scikit-learn RidgeCV): the floor", _ridge_t),
]
_SINGLE = [Peer(name, f"{label}, {_OURS}", _net(kind, ipm), neural=True) for name, kind, ipm, label in _NEURAL]
_ENSEMBLES = [Peer(ENSEMBLED[name], f"{label}, {_ENS}, {_OURS}", _net_ensemble(kind, ipm), neural=True)
              for name, kind, ipm, label in _NEURAL]
PEERS: dict[str, Peer] = {p.name: p for p in _TREES + _SINGLE + _ENSEMBLES}


def resolve(names: str | None) -> list[str]:
    """``"a,b"`` → peer names in registry order; ``None``/``"all"`` → every peer; ``"none"`` → []."""
    if names is None or names.strip() == "all":
        return list(PEERS)
    if names.strip() in ("", "none"):
        return []
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in PEERS]
    if unknown:
        raise ConfigError(f"unknown peer(s) {', '.join(unknown)} (valid: {', '.join(PEERS)})")
    return [n for n in PEERS if n in wanted]


def check_installed(names: list[str]) -> None:
    """Raise a one-line ConfigError when a chosen peer's optional dependency is missing."""
    for name in names:
        for mod in PEERS[name].needs:
            if importlib.util.find_spec(mod) is None:
                raise ConfigError(f"peer '{name}' needs {mod}, which is not installed: {INSTALL_HINT}")


def score(tau_hat: np.ndarray, mu_hat: np.ndarray | None, mu_true: np.ndarray, T: np.ndarray, Y: np.ndarray,
          idx_in: np.ndarray, idx_out: np.ndarray, binary: bool) -> dict[str, float]:
    """√PEHE, ε_ATE and ε_ATT "in" and "out" (and the factual AUC for a binary outcome).

    Args:
        tau_hat: (n,) estimated effects; mu_hat: (n, 2) estimated outcomes or None.
        mu_true: (n, 2) true potential outcome means (probabilities when binary).
    """
    tau = mu_true[:, 1] - mu_true[:, 0]
    out: dict[str, float] = {}
    for part, idx in (("in", idx_in), ("out", idx_out)):
        out[f"sqrt_pehe_{part}"] = M.sqrt_pehe(tau[idx], tau_hat[idx])
        out[f"eps_ate_{part}"] = M.eps_ate(tau[idx], tau_hat[idx])
        if (T[idx] == 1).any():
            out[f"eps_att_{part}"] = M.eps_att(tau[idx], tau_hat[idx], T[idx])
        if binary:
            f = mu_hat[idx, T[idx]] if mu_hat is not None else None
            out[f"auc_{part}"] = M.auc_roc(Y[idx], f) if f is not None else float("nan")
    return out


def fit_peer(name: str, x: np.ndarray, t: np.ndarray, y: np.ndarray, splits: dict[str, np.ndarray],
             binary: bool, seed: int, options: dict[str, Any] | None = None) -> Prediction:
    """Fit one peer on the split and predict every row (an ensembled peer's members keep
    ``splits["test"]`` as their test rows; ``options["resplit"]`` is csna's ``train.ensemble_resplit``)."""
    return PEERS[name].fit(x, t.astype(np.int64), np.asarray(y, dtype=np.float64), splits["train"], splits["val"],
                           binary, seed, test=splits.get("test"), **(options or {}))
