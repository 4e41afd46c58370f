"""Evaluation metrics as pure functions (design §6).

Shape alphabet:
    n  units
    K  treatments
    C  outcome classes
    k  latent nodes, d node width, m flattened z width, p covariates
    nb gated blocks

Arrays in, Python floats out unless a docstring says otherwise. KL values are in nats,
entropies of the Meta Utility Layer in bits.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy import special, stats
from sklearn import metrics as skm
from torch import Tensor

from . import losses as L

__all__ = [
    "causal_kl_obs",
    "mse",
    "rmse",
    "accuracy",
    "auc_roc",
    "sqrt_pehe",
    "eps_ate",
    "eps_att",
    "policy_risk",
    "pearson",
    "kl_gaussian",
    "kl_categorical",
    "kl_do_true_vs_hat",
    "graph_connectivity",
    "flops_reduction",
    "laplacian_smoothness_np",
    "utility_entropy",
    "z_stability",
    "jacobian_spectral_norm",
    "bootstrap_ci",
    "ate_with_ci",
    "overlap_report",
]


def _f(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


# --- task ------------------------------------------------------------------------------------


def mse(y_true, y_pred) -> float:
    """Mean squared error. ``(n,)``, ``(n,)``."""
    return float(skm.mean_squared_error(_f(y_true), _f(y_pred)))


def rmse(y_true, y_pred) -> float:
    """Root mean squared error. ``(n,)``, ``(n,)``."""
    return float(np.sqrt(mse(y_true, y_pred)))


def accuracy(y_true, y_pred) -> float:
    """Accuracy. ``y_pred``: ``(n,)`` labels, or ``(n, C)`` scores reduced by argmax."""
    y_pred = np.asarray(y_pred)
    if y_pred.ndim == 2:
        y_pred = y_pred.argmax(axis=1)
    return float(skm.accuracy_score(np.asarray(y_true), y_pred))


def auc_roc(y_true, score) -> float:
    """Binary AUC-ROC; NaN when only one class is present (sklearn would raise).

    Args:
        y_true: ``(n,)`` 0/1 labels.
        score: ``(n,)`` score of class 1, or ``(n, 2)`` whose column 1 is used.
    """
    score = _f(score)
    if score.ndim == 2:
        score = score[:, 1]
    y_true = np.asarray(y_true)
    if np.unique(y_true).size < 2:
        return float("nan")
    return float(skm.roc_auc_score(y_true, score))


# --- treatment effects -----------------------------------------------------------------------


def sqrt_pehe(tau_true, tau_hat) -> float:
    """√PEHE = sqrt(mean (τ(x) - τ̂(x))²). ``(n,)``, ``(n,)``."""
    return float(np.sqrt(np.mean((_f(tau_true) - _f(tau_hat)) ** 2)))


def eps_ate(tau_true, tau_hat) -> float:
    """ε_ATE = |mean τ - mean τ̂|. ``(n,)``, ``(n,)``."""
    return float(abs(np.mean(_f(tau_true)) - np.mean(_f(tau_hat))))


def eps_att(tau_true, tau_hat, t) -> float:
    """ε_ATT: ε_ATE over the treated units (t == 1); NaN if there are none."""
    treated = np.asarray(t) == 1
    if not treated.any():
        return float("nan")
    return eps_ate(_f(tau_true)[treated], _f(tau_hat)[treated])


def policy_risk(tau_hat, y, t, randomized_mask=None) -> float:
    """Policy risk of π(x) = 1[τ̂(x) > 0] (Shalit et al. 2017, as in their CFRNet code).

    R_pol = 1 - (E[Y1 | π=1, t=1] · P(π=1) + E[Y0 | π=0, t=0] · P(π=0)), estimated on the
    randomised units, where following the policy where it agrees with the assignment is
    unbiased. An empty conditional mean counts as 0, as in the reference code.

    Args:
        tau_hat: ``(n,)`` predicted effects.
        y: ``(n,)`` factual outcomes.
        t: ``(n,)`` 0/1 treatments.
        randomized_mask: ``(n,)`` bool, the randomised subset (e.g. Jobs' RCT part);
            None: all units.
    """
    tau_hat, y, t = _f(tau_hat), _f(y), np.asarray(t)
    if randomized_mask is not None:
        keep = np.asarray(randomized_mask, dtype=bool)
        tau_hat, y, t = tau_hat[keep], y[keep], t[keep]
    policy = tau_hat > 0
    treat = policy & (t == 1)
    control = ~policy & (t == 0)
    v_treat = y[treat].mean() if treat.any() else 0.0
    v_control = y[control].mean() if control.any() else 0.0
    p_treat = policy.mean()
    return float(1.0 - (v_treat * p_treat + v_control * (1.0 - p_treat)))


def pearson(a, b) -> float:
    """Pearson r; 0 when either input is constant (where scipy returns NaN and warns)."""
    a, b = _f(a).ravel(), _f(b).ravel()
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(stats.pearsonr(a, b)[0])


def kl_gaussian(m1, v1, m2, v2):
    """KL(N(m1, v1) || N(m2, v2)) in nats; variances, not standard deviations.

    Broadcasts; returns a float for scalar inputs, else an array.
    """
    m1, v1, m2, v2 = map(_f, (m1, v1, m2, v2))
    kl = 0.5 * (np.log(v2 / v1) + (v1 + (m1 - m2) ** 2) / v2 - 1.0)
    return float(kl) if kl.ndim == 0 else kl


def kl_categorical(p, q):
    """KL(p || q) in nats over the last axis; p, q are probability vectors (not renormalised).

    Returns a float for 1-D inputs, else an array.
    """
    kl = special.rel_entr(_f(p), _f(q)).sum(axis=-1)
    return float(kl) if np.ndim(kl) == 0 else kl


def kl_do_true_vs_hat(
    mu_true, mu_hat, outcome_type: str, sigma2_true=1.0, sigma2_hat=None
) -> float:
    """Mean over t of KL(P_true(Y|do(t)) || P̂(Y|do(t))), back-door mixtures over the units.

    P(Y|do(t)) = mean_x p(y|x, t). Continuous: mixtures of N(μ_t(x), σ²), each moment-matched
    to a Gaussian (mean of μ_t, variance σ² + Var_x μ_t). Binary: a mixture of Bernoullis is
    the Bernoulli of the mean probability, so the KL is exact; likewise multiclass.

    Args:
        mu_true: continuous ``(n, K)`` true means; binary ``(n, K)`` true P(Y=1|x, do(t));
            multiclass ``(n, K, C)`` true class probabilities.
        mu_hat: same shape, the model's.
        outcome_type: "continuous", "binary" or "multiclass".
        sigma2_true: true noise variance, scalar or ``(K,)`` (continuous only).
        sigma2_hat: the model's predictive variance, scalar or ``(K,)``; None: sigma2_true.
    """
    mu_true, mu_hat = _f(mu_true), _f(mu_hat)
    K = mu_true.shape[1]
    if outcome_type == "continuous":
        s_true = np.broadcast_to(_f(sigma2_true), (K,))
        s_hat = s_true if sigma2_hat is None else np.broadcast_to(_f(sigma2_hat), (K,))
        kls = kl_gaussian(
            mu_true.mean(0), s_true + mu_true.var(0), mu_hat.mean(0), s_hat + mu_hat.var(0)
        )
        return float(np.mean(kls))
    eps = 1e-12  # a predicted probability of exactly 0 would make the KL infinite
    if outcome_type == "binary":
        p1, q1 = mu_true.mean(0), np.clip(mu_hat.mean(0), eps, 1 - eps)  # (K,)
        p, q = np.stack([1 - p1, p1], -1), np.stack([1 - q1, q1], -1)  # (K, 2)
    elif outcome_type == "multiclass":
        p, q = mu_true.mean(0), np.clip(mu_hat.mean(0), eps, None)  # (K, C)
    else:
        raise ValueError(f"unknown outcome_type {outcome_type!r}")
    return float(np.mean(kl_categorical(p, q)))


# --- structure and stability -----------------------------------------------------------------


def graph_connectivity(A, eps: float = 0.0) -> float:
    """Edges / k(k-1): the share of off-diagonal entries with A_ij > eps. ``A``: ``(k, k)``."""
    A = _f(A)
    k = A.shape[0]
    if k < 2:
        return 0.0
    off = ~np.eye(k, dtype=bool)
    return float((A[off] > eps).sum() / (k * (k - 1)))


def flops_reduction(flops_full: float, flops_gated: float) -> float:
    """1 − gated / full, signed: negative when the gated pass, controller included, costs more
    than running every block. NaN when ``flops_full`` is not a positive number."""
    if not flops_full > 0:
        return float("nan")
    return float(1.0 - flops_gated / flops_full)


def laplacian_smoothness_np(H, A) -> float:
    """Mean over units of Tr(HᵀLH)/Tr(HᵀH), L = D - (A+Aᵀ)/2 (numpy twin of the loss).

    Args:
        H: ``(n, k, d)`` node embeddings.
        A: ``(k, k)`` adjacency.
    """
    H, A = _f(H), _f(A)
    A_sym = 0.5 * (A + A.T)
    L = np.diag(A_sym.sum(1)) - A_sym  # (k, k)
    num = np.einsum("nid,ij,njd->n", H, L, H)  # (n,)
    den = (H**2).sum(axis=(1, 2))  # (n,)
    ratio = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return float(ratio.mean())


def utility_entropy(gates) -> float:
    """Mean over blocks of the binary entropy (bits) of each block's execution rate.

    0 when a block always or never runs, 1 when it runs for half the samples.

    Args:
        gates: ``(n, nb)`` 0/1 gates.
    """
    rate = _f(gates).mean(axis=0)  # (nb,)
    # scipy's entropy handles the 0·log 0 = 0 limit at the rates 0 and 1.
    h = stats.entropy(np.stack([rate, 1.0 - rate]), base=2, axis=0)  # (nb,)
    return float(np.mean(h))


def z_stability(z_clean, z_noisy) -> float:
    """Pearson r between z(x) and z(x + noise), flattened. ``(n, m)``, ``(n, m)``."""
    return pearson(_f(z_clean).ravel(), _f(z_noisy).ravel())


def jacobian_spectral_norm(
    f: Callable[[Tensor], Tensor], x: Tensor, iters: int = 20, seed: int = 0
) -> tuple[float, float]:
    """Largest singular value of each unit's Jacobian ∂f(x_b)/∂x_b; (mean, max) over units.

    Power iteration on JᵀJ with forward- and reverse-mode products (torch.func.jvp/vjp).
    Because f is row-wise, the batch Jacobian is block-diagonal, so one jvp and one vjp on the
    whole batch advance every unit's iteration at once, with no vmap (which some modules,
    e.g. gated gather/scatter, do not support).

    Args:
        f: maps ``(n, p)`` to ``(n, ...)`` row by row; put modules in eval mode first.
        x: ``(n, p)`` inputs.
        iters: power iterations; the error falls like (σ2/σ1)^(2·iters).
        seed: seed of the starting vectors, so the metric is reproducible.
    """
    x = x.detach()
    n = x.shape[0]
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(x.shape, generator=gen, dtype=x.dtype).to(x.device)  # (n, p)
    v = v / v.reshape(n, -1).norm(dim=1).clamp_min(1e-30).reshape(n, *([1] * (x.dim() - 1)))
    _, vjp_fn = torch.func.vjp(f, x)
    sigma = torch.zeros(n, dtype=x.dtype, device=x.device)
    for _ in range(iters):
        _, jv = torch.func.jvp(f, (x,), (v,))  # (n, ...): J_b v_b
        sigma = jv.reshape(n, -1).norm(dim=1)  # (n,) ‖J_b v_b‖ with ‖v_b‖ = 1
        (w,) = vjp_fn(jv)  # (n, p): J_bᵀ J_b v_b
        w_norm = w.reshape(n, -1).norm(dim=1)
        # A zero Jacobian leaves v as it is (σ stays 0) instead of dividing by zero.
        scale = torch.where(w_norm > 0, 1.0 / w_norm.clamp_min(1e-30), torch.ones_like(w_norm))
        v = torch.where((w_norm > 0)[:, None], w * scale[:, None], v)
    sigma = sigma.detach().cpu().numpy()
    return float(sigma.mean()), float(sigma.max())


# --- effects on real data --------------------------------------------------------------------


def bootstrap_ci(
    values,
    statistic: Callable = np.mean,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(values)`` over resampled units.

    Args:
        values: ``(n,)`` per-unit values (e.g. predicted ITEs).
        statistic: vectorised reducer called as ``statistic(sample, axis=-1)``.
        n_boot: resamples.
        alpha: 1 - confidence level.
        seed: resampling seed.

    Returns:
        (lo, hi); both equal the statistic when n < 2, NaN when n = 0.
    """
    values = _f(values).ravel()
    if values.size == 0:
        return float("nan"), float("nan")
    if values.size < 2 or np.ptp(values) == 0:
        est = float(statistic(values, axis=-1))
        return est, est
    res = stats.bootstrap(
        (values,),
        statistic,
        n_resamples=n_boot,
        confidence_level=1.0 - alpha,
        method="percentile",
        random_state=np.random.default_rng(seed),
        # resamples in batches of ~2M values: all at once is n_boot × n (1.6 GB at n = 100k)
        batch=max(1, min(n_boot, 2_000_000 // values.size)),
    )
    ci = res.confidence_interval
    return float(ci.low), float(ci.high)


def ate_with_ci(ite_hat, t=None, n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """ATE and ATT from predicted ITEs, with percentile bootstrap intervals.

    The interval reflects resampling of the units only, not the model's own uncertainty.

    Args:
        ite_hat: ``(n,)`` predicted τ̂(x).
        t: ``(n,)`` 0/1 treatments, for the ATT; None: the ATT entries are NaN.
        n_boot: resamples.
        seed: resampling seed.

    Returns:
        dict with ate, ate_lo, ate_hi, att, att_lo, att_hi.
    """
    ite = _f(ite_hat).ravel()
    lo, hi = bootstrap_ci(ite, n_boot=n_boot, seed=seed)
    out = {"ate": float(ite.mean()), "ate_lo": lo, "ate_hi": hi}
    treated = ite[np.asarray(t) == 1] if t is not None else ite[:0]
    if treated.size:
        t_lo, t_hi = bootstrap_ci(treated, n_boot=n_boot, seed=seed)
        out.update(att=float(treated.mean()), att_lo=t_lo, att_hi=t_hi)
    else:
        out.update(att=float("nan"), att_lo=float("nan"), att_hi=float("nan"))
    return out


def overlap_report(propensity, low: float = 0.05, high: float = 0.95) -> dict:
    """Overlap diagnostics from ê(x).

    A unit is extreme when some treatment is almost never (< low) or almost always (> high)
    assigned to units like it; for K = 2 this is ê₁ ∉ [low, high].

    Args:
        propensity: ``(n,)`` P(T=1|x) or ``(n, K)`` P(T=t|x).
        low, high: bounds.

    Returns:
        dict with frac_extreme, min, max (over all entries) and warn (frac_extreme > 0.1).
    """
    e = _f(propensity)
    if e.ndim == 1:
        extreme = (e < low) | (e > high)  # (n,)
    else:
        extreme = (e.min(axis=1) < low) | (e.max(axis=1) > high)  # (n,)
    lo_all, hi_all = float(e.min()), float(e.max())
    frac = float(extreme.mean())
    return {"frac_extreme": frac, "min": lo_all, "max": hi_all, "warn": bool(frac > 0.1)}


def causal_kl_obs(
    pred: Tensor,
    t: Tensor,
    outcome_type: str,
    sigma2: Tensor | None = None,
    min_group: int = 4,
    y: Tensor | None = None,
) -> Tensor:
    """The seed's literal KL(P(Y|do(T=t)) || P(Y|T=t)), both sides from the model, in nats:
    a diagnostic of how confounded the data look to the model (``kl_do_obs``), never a loss.

    It is zero exactly when the model's outcome under t averages the same over all units as
    over the units that received t, i.e. when the model ignores confounding: as a loss it
    pulled effects towards the naive difference (design §8.3), which is why L_causal is now
    ``causal_kl`` with an identified reference.

    P(Y|do(t)) is the model's predictive p(y|x_b, t) averaged over every x_b of the batch
    (back-door adjustment over the batch's covariates); P(Y|T=t) is the same average over the
    units with T_b = t. Treatments with fewer than ``min_group`` units are skipped.

    Classification: both are categorical mixtures, so the KL is exact. Continuous: the
    predictive is N(μ_t(x_b), σ_t²); each mixture is moment-matched to a Gaussian
    (mean of μ, variance σ_t² + Var_b μ) and the KL is closed-form. σ_t² is detached: a
    learnable variance would grow without bound, since the KL falls as σ grows (design §8.6).

    Args:
        pred: ``(B, K)`` means or ``(B, K, C)`` logits.
        t: ``(B,)`` int64.
        outcome_type: "continuous", "binary" or "multiclass".
        sigma2: ``(K,)`` predictive variances (the trainer's running residual variance);
            continuous only. If None, the batch's factual residual variance of each group is
            used, which needs ``y``.
        min_group: fewest units of a treatment in the batch for it to count.
        y: ``(B,)`` outcome; only needed for a continuous outcome with ``sigma2=None``.

    Returns:
        Scalar; a zero still attached to the graph when no treatment qualifies.
    """
    L.check_outcome_type(outcome_type)
    K = pred.shape[1]
    counts = torch.bincount(t, minlength=K)
    present = [g for g in range(K) if int(counts[g]) >= min_group]
    if not present:
        return L.zero_like(pred)

    if outcome_type == "continuous":
        if sigma2 is None:
            if y is None:
                raise ValueError("causal_kl: continuous outcome needs sigma2 or y")
            sigma2 = L.residual_variance(pred, y, t, K)
        var_t = sigma2.detach().to(pred.dtype).clamp_min(L.VAR_FLOOR)
        kls = []
        for g in present:
            mu_all = pred[:, g]  # (B,)
            mu_grp = mu_all[t == g]
            v_do = var_t[g] + mu_all.var(unbiased=False)
            v_obs = var_t[g] + mu_grp.var(unbiased=False)
            kls.append(L.gaussian_kl(mu_all.mean(), v_do, mu_grp.mean(), v_obs))
        return torch.stack(kls).mean()

    B = pred.shape[0]
    kls = []
    for g in present:
        logp = F.log_softmax(pred[:, g], dim=-1)  # (B, C)
        # log of a mean of probabilities, in log space so tiny probabilities do not underflow.
        log_do = torch.logsumexp(logp, dim=0) - math.log(B)  # (C,)
        grp = logp[t == g]
        log_obs = torch.logsumexp(grp, dim=0) - math.log(grp.shape[0])  # (C,)
        kls.append((log_do.exp() * (log_do - log_obs)).sum())
    return torch.stack(kls).mean()
