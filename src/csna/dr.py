"""Doubly-robust (AIPW) average effects with influence-function standard errors.

The plug-in ATE / ATT average τ̂(x) = μ̂1(x) − μ̂0(x): biased wherever the outcome model is.
The augmented inverse-propensity-weighted estimates add the propensity-weighted residuals of
the observed outcomes, so they stay consistent when either μ̂ or ê is right, and their influence
functions give a standard error. Both nuisances must be cross-fitted (row i predicted by
models that never saw it): the seed ensemble already gives that for μ̂ (``out_of_fold_mu``:
member j ≥ 1 redraws its training rows), and ``propensity.crossfit_propensity`` for ê.

With K > 2 treatments, arm ``t1`` is compared with arm ``t0``: ``t`` is then 1 for the rows
of t1, 0 for those of t0 and anything else (e.g. −1) for the rest, and ``e0`` is ê_{t0}.

Shape alphabet: n rows, K treatments, M ensemble members.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .data import CausalData
from .predict import member_predictions
from .propensity import crossfit_propensity
from .rundir import Run


def _arms(t: np.ndarray, e1: np.ndarray, e0: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(treated, control) 0/1 indicators and ê of the control arm (1 − ê1 unless given)."""
    t = np.asarray(t)
    e0 = 1.0 - e1 if e0 is None else np.asarray(e0, dtype=np.float64)
    return (t == 1).astype(np.float64), (t == 0).astype(np.float64), e0


def _mean_and_se(psi: np.ndarray) -> tuple[float, float]:
    n = len(psi)
    if n == 0:
        return float("nan"), float("nan")
    se = float(np.std(psi, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    return float(psi.mean()), se


def aipw_ate(y, t, mu0, mu1, e1, e0=None) -> tuple[float, float]:
    """Doubly-robust ATE and its standard error.

    ψ_i = μ̂1 − μ̂0 + t(y − μ̂1)/ê1 − (1 − t)(y − μ̂0)/(1 − ê1); estimate mean ψ,
    stderr sd(ψ, ddof=1)/√n.

    Args:
        y: (n,) observed outcomes.
        t: (n,) 1 treated, 0 control (K > 2: any other value for rows of neither arm).
        mu0, mu1: (n,) out-of-fold outcome predictions under control and treatment.
        e1: (n,) out-of-fold P(T = treated | x); e0: (n,) P(T = control | x), default 1 − e1.

    Returns:
        (estimate, stderr); NaN for no rows.
    """
    y, mu0, mu1, e1 = (np.asarray(a, dtype=np.float64) for a in (y, mu0, mu1, e1))
    tr, co, e0 = _arms(t, e1, e0)
    psi = mu1 - mu0 + tr * (y - mu1) / e1 - co * (y - mu0) / e0  # (n,)
    return _mean_and_se(psi)


def aipw_att(y, t, mu0, e1, e0=None) -> tuple[float, float]:
    """Doubly-robust ATT and its standard error.

    θ = Σ [t(y − μ̂0) − (1 − t) ê/(1 − ê) (y − μ̂0)] / Σ t, with influence function
    ψ_i = [t(y − μ̂0) − (1 − t) ê/(1 − ê)(y − μ̂0) − t·θ] / p̂, p̂ = mean t; stderr sd(ψ)/√n.

    Args: as ``aipw_ate`` (μ̂1 is not needed: the treated outcomes are observed).

    Returns:
        (estimate, stderr); NaN when no row is treated.
    """
    y, mu0, e1 = (np.asarray(a, dtype=np.float64) for a in (y, mu0, e1))
    tr, co, e0 = _arms(t, e1, e0)
    n, treated = len(y), tr.sum()
    if treated == 0:
        return float("nan"), float("nan")
    r = tr * (y - mu0) - co * (e1 / e0) * (y - mu0)  # (n,)
    theta = float(r.sum() / treated)
    psi = (r - tr * theta) / (treated / n)  # (n,) mean 0 by construction
    se = float(np.std(psi, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    return theta, se


def out_of_fold_mu(members_mu, members_train_rows, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the mean prediction of the members that did not train on it.

    Args:
        members_mu: M arrays (n, K), each member's predictions for every row.
        members_train_rows: M index arrays, the rows each member trained on (validation and
            test rows count as held out).
        n: rows.

    Returns:
        mu (n, K), NaN where every member trained on the row; mask (n,) bool, False there.
    """
    mus = np.stack([np.asarray(m, dtype=np.float64) for m in members_mu])  # (M, n, K)
    held = np.ones((len(mus), n), dtype=bool)  # (M, n)
    for j, rows in enumerate(members_train_rows):
        held[j, np.asarray(rows, dtype=np.int64)] = False
    count = held.sum(0)  # (n,)
    total = np.einsum("mn,mnk->nk", held.astype(np.float64), mus)  # (n, K)
    mask = count > 0
    mu = np.full(total.shape, np.nan)
    mu[mask] = total[mask] / count[mask, None]
    return mu, mask


def member_train_rows(run: Run, data: CausalData) -> list[np.ndarray] | None:
    """The rows of ``data`` each member of ``run`` trained on; None when unknown.

    New data (no split of the run fits it, so ``run.splits`` is None): no member trained on
    any row. A streamed run: every member trained on the rows its shared row-hash split gives.
    """
    empty = np.zeros(0, dtype=np.int64)
    members = run.all_members()
    if run.splits is None:
        return [empty] * len(members)
    if run.cfg.data.stream:
        train = np.asarray(run.splits["train"], dtype=np.int64)
        if np.array_equal(train, np.asarray(run.splits["val"], dtype=np.int64)):
            # streaming.eval_data's sample: its "train" rows are the validation rows (the "in"
            # metrics read them), which no member trained on.
            return [empty] * len(members)
        return [train] * len(members)  # the whole file, split by the members' shared row hash
    if any(m.splits is None for m in members):
        return None
    rows = [np.asarray(m.splits["train"], dtype=np.int64) for m in members]
    if max((int(r.max()) for r in rows if len(r)), default=-1) >= data.n:
        return None
    return rows


@dataclass
class HeldOut:
    """The non-test rows of a run that have a held-out μ̂, with the nuisances of a doubly-robust
    or R-loss estimate: ``rows`` (n_r,) indices into the data, ``x`` (n_r, p) features,
    ``mu`` (n_r, K) mean prediction of the members that did not train on the row, without the
    effect shrinkage, ``mu_all`` (n_r, K) the mean of all members, ``t`` (n_r,) received
    treatment, ``y`` (n_r,) outcome (P(Y = 1) scale for a binary one)."""

    rows: np.ndarray
    x: np.ndarray
    mu: np.ndarray
    mu_all: np.ndarray
    t: np.ndarray
    y: np.ndarray
    members_mu: np.ndarray | None = None  # (M, n_r, K) every member's μ̂ on these rows
    held: np.ndarray | None = None  # (M, n_r) True where the member did not train on the row

    def propensity(self, K: int, seed: int) -> np.ndarray:
        """(n_r, K) ê cross-fitted on these rows (``crossfit_propensity``)."""
        return crossfit_propensity(self.x, self.t, K, seed=seed)


def held_out(run: Run, data: CausalData) -> HeldOut | None:
    """``HeldOut`` of ``run`` on ``data``; None when the members' training rows are unknown.

    Rows: the non-test rows of the run whose μ̂ has a member that did not train on them (all
    rows of new data), each member with its own gates.
    """
    train_rows = member_train_rows(run, data)
    if train_rows is None:
        return None
    test = np.asarray(run.splits["test"] if run.splits is not None else [], dtype=np.int64)
    candidate = np.setdiff1d(np.arange(data.n), test) if len(test) < data.n else np.arange(data.n)
    x = run.prep.features(data.X.iloc[candidate])  # (n_c, p)
    members_mu = [p["mu"] for p in member_predictions(run, x, gates=True)]
    # Training rows as positions within ``candidate`` (the test rows are held out for everyone).
    pos = np.full(data.n, -1, dtype=np.int64)
    pos[candidate] = np.arange(len(candidate))
    local = [pos[r][pos[r] >= 0] for r in train_rows]
    mu, mask = out_of_fold_mu(members_mu, local, len(candidate))
    rows = candidate[mask]
    held = np.ones((len(local), len(candidate)), dtype=bool)  # (M, n_c)
    for j, r in enumerate(local):
        held[j, r] = False
    stack = np.stack([np.asarray(m, dtype=np.float64) for m in members_mu])[:, mask]  # (M, n_r, K)
    return HeldOut(rows, x[mask], mu[mask], np.mean(members_mu, axis=0)[mask], data.T[rows].astype(np.int64),
                   data.Y[rows].astype(np.float64), stack, held[:, mask])


def dr_effects(run: Run, data: CausalData, t1: int = 1, t0: int = 0) -> dict[str, Any]:
    """Doubly-robust ATE and ATT of arm ``t1`` against ``t0``, cross-fitted, with stderrs.

    Rows and μ̂ (outcome units; P(Y = 1) for a binary outcome): ``held_out``; ê comes from
    ``crossfit_propensity`` over the same rows (seed ``train.seed``).

    Returns:
        ate_dr, ate_dr_se, att_dr, att_dr_se, dr_rows and, with the truth (``data.mu``),
        eps_ate_dr and eps_att_dr against the true ATE / ATT over the same rows; {} when the
        members' training rows are unknown.
    """
    ho = held_out(run, data)
    if ho is None:
        return {}
    out: dict[str, Any] = {"dr_rows": int(len(ho.rows))}
    if not ((ho.t == t1).any() and (ho.t == t0).any()):
        return {**out, "ate_dr": None, "ate_dr_se": None, "att_dr": None, "att_dr_se": None}
    e = ho.propensity(data.n_treatments, run.cfg.train.seed)  # (n_r, K)
    t = np.where(ho.t == t1, 1, np.where(ho.t == t0, 0, -1))
    mu = ho.mu
    ate, ate_se = aipw_ate(ho.y, t, mu[:, t0], mu[:, t1], e[:, t1], e[:, t0])
    att, att_se = aipw_att(ho.y, t, mu[:, t0], e[:, t1], e[:, t0])
    out.update(ate_dr=ate, ate_dr_se=ate_se, att_dr=att, att_dr_se=att_se)
    if data.mu is not None:
        tau = data.mu[ho.rows, t1] - data.mu[ho.rows, t0]  # (n_r,)
        out["eps_ate_dr"] = abs(ate - float(tau.mean()))
        out["eps_att_dr"] = abs(att - float(tau[t == 1].mean()))
    return out
