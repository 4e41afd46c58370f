"""Losses of csna as pure functions of tensors (design §4, reward of §3.5).

Shape alphabet:
    B  batch
    K  treatments
    C  outcome classes (binary: C = 2)
    k  latent nodes of the lattice
    d  node / representation width
    p  covariates
    nb gated blocks of the Meta Utility Layer

``pred`` is the model's outcome prediction for every treatment: ``(B, K)`` means for a
continuous outcome, ``(B, K, C)`` logits for a binary or multiclass one.

    L_total = L_task + λ1·L_causal + λ2·L_geometric + L_reg
    L_reg   = λ_DC·L_DC + λ_Dis·L_Dis + λ_Stable·L_Stable
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "OUTCOME_TYPES",
    "factual",
    "task_loss",
    "causal_kl",
    "residual_variance",
    "laplacian_smoothness",
    "dag_penalty",
    "mmd2_rbf",
    "wasserstein_sinkhorn",
    "counterfactual_drift",
    "discrepancy",
    "jacobian_penalty",
    "total_loss",
    "reward",
    "advantage",
    "actor_loss",
    "critic_loss",
]

OUTCOME_TYPES = ("continuous", "binary", "multiclass")
PART_KEYS = ("task", "causal", "geometric", "dc", "dis", "stable")
LAMBDA_KEYS = ("causal", "geometric", "dc", "dis", "stable")

# A variance floor: a group fitted perfectly would otherwise divide by zero in the KL.
_VAR_FLOOR = 1e-6
_U_CLAMP = 1e-6


def _check_outcome_type(outcome_type: str) -> None:
    if outcome_type not in OUTCOME_TYPES:
        raise ValueError(f"unknown outcome_type {outcome_type!r}; valid: {OUTCOME_TYPES}")


def _zero(like: Tensor) -> Tensor:
    # A zero that stays in the graph, so `.backward()` on a sum of losses never fails.
    return like.sum() * 0.0


def factual(pred: Tensor, t: Tensor) -> Tensor:
    """Prediction for the treatment each unit actually received.

    Args:
        pred: ``(B, K)`` or ``(B, K, C)``.
        t: ``(B,)`` int64 treatment indices.

    Returns:
        ``(B,)`` or ``(B, C)``: ``pred[b, t_b]``.
    """
    return pred[torch.arange(pred.shape[0], device=pred.device), t]


def counterfactual_drift(pred: Tensor, ref: Tensor, t: Tensor, outcome_type: str) -> Tensor:
    """Per sample, how far the predictions for the treatments a unit did *not* receive moved
    from a reference model's (the same model with every block run): the mean over those arms of
    the squared difference of standardised means, or of class probabilities summed over classes.

    The factual task loss cannot see these arms, so a gate that leaves the factual prediction
    alone but moves a counterfactual one would cost nothing, while individual effects
    τ̂ = μ̂₁ − μ̂₀ depend on both. No counterfactual outcome is used: the reference is the model.

    Args:
        pred, ref: ``(B, K)`` means or ``(B, K, C)`` logits.
        t: ``(B,)`` received treatments.
        outcome_type: "continuous", "binary" or "multiclass".

    Returns:
        ``(B,)``.
    """
    _check_outcome_type(outcome_type)
    if outcome_type == "continuous":
        sq = (pred - ref).pow(2)  # (B, K)
    else:
        sq = (torch.softmax(pred, -1) - torch.softmax(ref, -1)).pow(2).sum(-1)  # (B, K)
    K = sq.shape[1]
    other = torch.ones_like(sq).scatter_(1, t[:, None], 0.0)  # (B, K) 1 on the arms not received
    return (sq * other).sum(1) / max(K - 1, 1)


def task_loss(
    pred: Tensor, y: Tensor, t: Tensor, outcome_type: str, reduction: str = "mean"
) -> Tensor:
    """Factual loss: MSE (continuous) or cross-entropy (binary, multiclass).

    Args:
        pred: ``(B, K)`` means or ``(B, K, C)`` logits.
        y: ``(B,)`` float outcome or int64 class index.
        t: ``(B,)`` int64.
        outcome_type: "continuous", "binary" or "multiclass".
        reduction: "mean" (scalar) or "none" (``(B,)``, the per-sample loss of the reward).
    """
    _check_outcome_type(outcome_type)
    if reduction not in ("mean", "none"):
        raise ValueError(f"unknown reduction {reduction!r}; valid: ('mean', 'none')")
    f = factual(pred, t)
    if outcome_type == "continuous":
        return F.mse_loss(f, y.to(f.dtype), reduction=reduction)
    return F.cross_entropy(f, y.long(), reduction=reduction)


def _gaussian_kl(m1: Tensor, v1: Tensor, m2: Tensor, v2: Tensor) -> Tensor:
    # KL(N(m1, v1) || N(m2, v2)) in nats.
    return 0.5 * (torch.log(v2 / v1) + (v1 + (m1 - m2) ** 2) / v2 - 1.0)


def causal_kl(
    pred: Tensor,
    t: Tensor,
    outcome_type: str,
    sigma2: Tensor | None = None,
    min_group: int = 4,
    y: Tensor | None = None,
) -> Tensor:
    """L_causal: mean over treatments of KL(P(Y|do(T=t)) || P(Y|T=t)) in nats.

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
    _check_outcome_type(outcome_type)
    K = pred.shape[1]
    counts = torch.bincount(t, minlength=K)
    present = [g for g in range(K) if int(counts[g]) >= min_group]
    if not present:
        return _zero(pred)

    if outcome_type == "continuous":
        if sigma2 is None:
            if y is None:
                raise ValueError("causal_kl: continuous outcome needs sigma2 or y")
            sigma2 = residual_variance(pred, y, t, K)
        var_t = sigma2.detach().to(pred.dtype).clamp_min(_VAR_FLOOR)
        kls = []
        for g in present:
            mu_all = pred[:, g]  # (B,)
            mu_grp = mu_all[t == g]
            v_do = var_t[g] + mu_all.var(unbiased=False)
            v_obs = var_t[g] + mu_grp.var(unbiased=False)
            kls.append(_gaussian_kl(mu_all.mean(), v_do, mu_grp.mean(), v_obs))
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


@torch.no_grad()
def residual_variance(pred: Tensor, y: Tensor, t: Tensor, K: int) -> Tensor:
    """Per-treatment factual residual variance of the batch, mean of (y - μ_t(x))².

    It is the maximum-likelihood σ_t² of the Gaussian predictive N(μ_t(x), σ_t²), so it
    includes any bias of μ_t, not only the spread of the residuals.

    Args:
        pred: ``(B, K)`` continuous predictions.
        y: ``(B,)`` float outcome.
        t: ``(B,)`` int64.
        K: number of treatments.

    Returns:
        ``(K,)`` without grad; NaN for a treatment absent from the batch (the trainer's
        running average should update only the finite entries).
    """
    r2 = (y.to(pred.dtype) - factual(pred, t)) ** 2  # (B,)
    sums = torch.zeros(K, dtype=pred.dtype, device=pred.device).index_add_(0, t, r2)
    counts = torch.bincount(t, minlength=K).to(pred.dtype)
    return sums / counts  # 0/0 = NaN for an absent treatment


def laplacian_smoothness(H: Tensor, A: Tensor, detach_graph: bool = True) -> Tensor:
    """L_geometric: batch mean of Tr(Hᵀ L H) / Tr(Hᵀ H).

    L = D - A_sym, A_sym = (A + Aᵀ)/2, D = diag(row sums of A_sym), so
    Tr(Hᵀ L H) = ½ Σ_ij A_sym,ij ‖h_i - h_j‖².

    Args:
        H: ``(B, k, d)`` node embeddings.
        A: ``(k, k)`` non-negative adjacency.
        detach_graph: detach A (design §4): the gradient of this term in A is never negative,
            so it would only push every edge to zero.

    Returns:
        Scalar; a sample with Tr(HᵀH) = 0 contributes 0.
    """
    if detach_graph:
        A = A.detach()
    A_sym = 0.5 * (A + A.transpose(0, 1))  # (k, k)
    L = torch.diag(A_sym.sum(dim=1)) - A_sym  # (k, k)
    num = torch.einsum("bid,ij,bjd->b", H, L.to(H.dtype), H)  # (B,)
    den = H.pow(2).sum(dim=(1, 2))  # (B,)
    nonzero = den > 0
    ratio = torch.where(nonzero, num / torch.where(nonzero, den, torch.ones_like(den)), 0.0)
    return ratio.mean()


def dag_penalty(A: Tensor) -> Tensor:
    """L_DC: h(A) = tr(exp(A ⊙ A)) - k, zero iff the graph of A is acyclic (NOTEARS).

    Args:
        A: ``(k, k)`` adjacency.
    """
    return torch.linalg.matrix_exp(A * A).diagonal().sum() - A.shape[0]


MEDIAN_ROWS = 512  # rows of the pooled sample the MMD bandwidth heuristic reads at most


def _sq_dists(x: Tensor, y: Tensor) -> Tensor:
    """Squared Euclidean distances ``(n, m)`` as ‖x‖² + ‖y‖² − 2 x·yᵀ: one matmul, O(n·m)
    memory. (The difference form x[:, None] − y[None] is exact but O(n·m·d) memory and time,
    and was 40% of a phase-3 step at batch 1024.) Clamped at 0 against rounding."""
    xx = x.pow(2).sum(1, keepdim=True)  # (n, 1)
    yy = y.pow(2).sum(1, keepdim=True).t()  # (1, m)
    return (xx + yy - 2.0 * (x @ y.t())).clamp_min(0.0)


def mmd2_rbf(a: Tensor, b: Tensor, bandwidths: Sequence[float] | None = None) -> Tensor:
    """Biased (V-statistic) MMD² with a sum of RBF kernels exp(-‖x-y‖² / (2h²)).

    Args:
        a: ``(n, d)`` sample of one group.
        b: ``(m, d)`` sample of the other.
        bandwidths: kernel widths h; default the median pairwise distance of the pooled
            sample (computed without grad) times (0.5, 1, 2, 4), so no single scale has to fit.

    Returns:
        Scalar, ≥ 0 up to rounding; exactly 0 when a and b hold the same values (the three
        kernel blocks are then the same computation on the same numbers).
    """
    d_aa, d_bb, d_ab = _sq_dists(a, a), _sq_dists(b, b), _sq_dists(a, b)
    if bandwidths is None:
        with torch.no_grad():
            # Pairwise distances of the pooled sample, each unordered pair once. Past
            # MEDIAN_ROWS rows, of an evenly strided subset: the median of ~10⁵ pairs is as good
            # a bandwidth as that of 10⁶ and the full one cost 5 ms a step at batch 1024.
            sa = max(1, -(-a.shape[0] * 2 // MEDIAN_ROWS)) if a.shape[0] + b.shape[0] > MEDIAN_ROWS else 1
            sb = max(1, -(-b.shape[0] * 2 // MEDIAN_ROWS)) if a.shape[0] + b.shape[0] > MEDIAN_ROWS else 1
            daa, dbb, dab = d_aa.detach()[::sa, ::sa], d_bb.detach()[::sb, ::sb], d_ab.detach()[::sa, ::sb]
            n, m = daa.shape[0], dbb.shape[0]
            ia, ib = torch.triu_indices(n, n, 1, device=a.device), torch.triu_indices(m, m, 1, device=a.device)
            off = torch.cat([daa[ia[0], ia[1]], dbb[ib[0], ib[1]], dab.flatten()]).sqrt()
            med = off.median() if off.numel() else torch.zeros((), dtype=a.dtype)
            med = float(med) if float(med) > 0 else 1.0  # all points equal: any width works
        bandwidths = [med * s for s in (0.5, 1.0, 2.0, 4.0)]
    gammas = [1.0 / (2.0 * float(h) ** 2) for h in bandwidths]

    def kmean(d2: Tensor) -> Tensor:
        return sum(torch.exp(-g * d2) for g in gammas).mean()

    return kmean(d_aa) + kmean(d_bb) - 2.0 * kmean(d_ab)


def _entropic_ot(a: Tensor, b: Tensor, eps: Tensor, iters: int) -> Tensor:
    """Entropic optimal-transport cost between uniform weights on ``a`` (n, d) and ``b`` (m, d),
    Euclidean ground cost, by log-domain Sinkhorn; returns the dual value <α, f> + <β, g>.

    The iterations run without autograd; one last half-step of each potential carries the
    gradient, which at convergence is the transport plan (the envelope theorem), at a fraction
    of the cost of differentiating through every iteration. (Written here rather than taken
    from POT or GeomLoss: ten lines of logsumexp, and neither package is a dependency.)
    """
    cost = _sq_dists(a, b).clamp_min(1e-12).sqrt()  # (n, m); the floor keeps sqrt's gradient finite
    log_wa = a.new_full((a.shape[0],), -math.log(a.shape[0]))  # (n,) uniform weights
    log_wb = a.new_full((b.shape[0],), -math.log(b.shape[0]))  # (m,)

    def f_of(g: Tensor, c: Tensor) -> Tensor:
        return -eps * torch.logsumexp((g[None, :] - c) / eps + log_wb[None, :], dim=1)  # (n,)

    def g_of(f: Tensor, c: Tensor) -> Tensor:
        return -eps * torch.logsumexp((f[:, None] - c) / eps + log_wa[:, None], dim=0)  # (m,)

    with torch.no_grad():
        c0 = cost.detach()
        f, g = a.new_zeros(a.shape[0]), a.new_zeros(b.shape[0])  # (n,), (m,)
        for _ in range(iters):
            f = f_of(g, c0)
            g = g_of(f, c0)
    # ½(<α, f(g)> + <β, g(f)>) with f, g fixed on the right: its gradient in the cost is the plan.
    return 0.5 * (f_of(g, cost).mean() + g_of(f, cost).mean()) + 0.5 * (f.mean() + g.mean())


def wasserstein_sinkhorn(a: Tensor, b: Tensor, blur: float = 0.1, iters: int = 10) -> Tensor:
    """Debiased Sinkhorn divergence, a smooth estimate of the Wasserstein-1 distance.

    S(a, b) = OT_ε(a, b) − ½ OT_ε(a, a) − ½ OT_ε(b, b), so identical groups give exactly 0
    (plain entropic OT would not). ε is ``blur`` times the mean cross distance, as Shalit et
    al. (2017) scale their Sinkhorn penalty by the mean distance.

    Args:
        a: ``(n, d)`` sample of one group.
        b: ``(m, d)`` sample of the other.
        blur: ε relative to the mean distance between the groups.
        iters: Sinkhorn iterations.

    Returns:
        Scalar ≥ 0.
    """
    mean_cost = _sq_dists(a, b).clamp_min(1e-12).sqrt().mean().detach()
    eps = blur * mean_cost.clamp_min(1e-6)
    s = _entropic_ot(a, b, eps, iters) - 0.5 * _entropic_ot(a, a, eps, iters) - 0.5 * _entropic_ot(b, b, eps, iters)
    return s.clamp_min(0.0)


DISCREPANCIES = {"mmd": mmd2_rbf, "wasserstein": wasserstein_sinkhorn}


def discrepancy(r: Tensor, t: Tensor, K: int, metric: str = "mmd") -> Tensor:
    """L_Dis: mean over treatments g with ≥ 2 units of D(r[t == g], r[t != g]), where D is
    multi-bandwidth MMD² (``metric="mmd"``) or the Sinkhorn estimate of the Wasserstein
    distance (``"wasserstein"``, the balance of CFR-Wass).

    For K = 2 this is D(group 1, group 0) whenever both are present (the two one-vs-rest
    terms are the same quantity).

    Args:
        r: ``(B, d)`` pooled representation.
        t: ``(B,)`` int64.
        K: number of treatments.
        metric: a key of ``DISCREPANCIES``.

    Returns:
        Scalar; a zero attached to the graph if fewer than two treatments are present.
    """
    if metric not in DISCREPANCIES:
        raise ValueError(f"unknown discrepancy {metric!r}; valid: {tuple(DISCREPANCIES)}")
    dist = DISCREPANCIES[metric]
    counts = torch.bincount(t, minlength=K)
    if int((counts > 0).sum()) < 2:
        return _zero(r)
    if K == 2:
        # Both one-vs-rest terms are the same quantity; compute it once.
        return dist(r[t == 1], r[t == 0])
    groups = [g for g in range(K) if int(counts[g]) >= 2]
    if not groups:
        return _zero(r)
    return torch.stack([dist(r[t == g], r[t != g]) for g in groups]).mean()


def jacobian_penalty(
    f: Callable[[Tensor], Tensor],
    x: Tensor,
    n_proj: int = 1,
    generator: torch.Generator | None = None,
    projections: Tensor | None = None,
) -> Tensor:
    """L_Stable: unbiased estimate of mean_b ‖∂f(x_b)/∂x_b‖_F² by random projection.

    For v ~ N(0, I), E‖vᵀJ‖² = ‖J‖_F², and vᵀJ is one vector-Jacobian product, so the cost
    is one extra backward pass per projection instead of one per output.

    Args:
        f: maps ``(B, p)`` to ``(B, ...)`` row by row (no batch statistics, e.g. BatchNorm in
            training mode, or the estimate mixes samples).
        x: ``(B, p)`` inputs; detached here, the penalty trains the parameters of f.
        n_proj: projections averaged.
        generator: RNG for the projections.
        projections: ``(n_proj, B, m)`` projection vectors to use instead of drawing them (a
            data-parallel run draws them for the global batch and passes each rank its rows).

    Returns:
        Scalar with a graph (``create_graph=True``) so it can be minimised.
    """
    x = x.detach().requires_grad_(True)
    out = f(x).reshape(x.shape[0], -1)  # (B, m)
    total = _zero(out)
    if projections is not None:
        n_proj = projections.shape[0]
    for i in range(n_proj):
        v = (projections[i].to(out) if projections is not None else
             torch.randn(out.shape, generator=generator, dtype=out.dtype, device=out.device))
        # (B, p): row b is v_bᵀ J_b because f is row-wise; create_graph keeps it trainable
        (vj,) = torch.autograd.grad(out, x, grad_outputs=v, create_graph=True)
        total = total + vj.pow(2).sum(dim=1).mean()
    return total / n_proj


def total_loss(
    parts: Mapping[str, Tensor], lambdas: Mapping[str, float]
) -> tuple[Tensor, Tensor]:
    """Combine the losses: returns (L_total, L_reg).

    Args:
        parts: any of "task", "causal", "geometric", "dc", "dis", "stable" (scalars); a missing
            part counts as 0.
        lambdas: any of "causal", "geometric", "dc", "dis", "stable"; a missing weight is 0.
            A term whose weight is 0 is left out, so a NaN in an unused part cannot leak in.

    Raises:
        ValueError: on an unknown key, naming the valid ones.
    """
    for name, given, valid in (("parts", parts, PART_KEYS), ("lambdas", lambdas, LAMBDA_KEYS)):
        unknown = set(given) - set(valid)
        if unknown:
            raise ValueError(f"unknown {name} keys {sorted(unknown)}; valid: {valid}")
    any_part = next(iter(parts.values()), None)
    zero = _zero(any_part) if any_part is not None else torch.zeros(())

    def term(key: str) -> Tensor:
        lam = float(lambdas.get(key, 0.0))
        if key not in parts or lam == 0.0:
            return zero
        return lam * parts[key]

    l_reg = term("dc") + term("dis") + term("stable")
    task = parts.get("task", zero)
    l_total = task + term("causal") + term("geometric") + l_reg
    return l_total, l_reg


def reward(per_sample_loss: Tensor, gates: Tensor, costs: Tensor, eta: float) -> Tensor:
    """Per-sample reward R_b = -ℓ_b - η Σ_i C_i g_bi (design §3.5, §8.1).

    Args:
        per_sample_loss: ``(B,)`` task loss of each sample (``task_loss(..., "none")``).
        gates: ``(B, nb)`` 0/1 gates actually used.
        costs: ``(nb,)`` normalised block costs.
        eta: price of compute.

    Returns:
        ``(B,)``, detached: a REINFORCE reward is a number, never differentiated.
    """
    spent = gates.to(costs.dtype) @ costs  # (B,)
    return (-per_sample_loss - eta * spent).detach()


def advantage(reward: Tensor, value: Tensor) -> Tensor:
    """Â = R - V(s), detached so the actor loss does not train the critic. ``(B,)``."""
    return (reward - value).detach()


def actor_loss(u: Tensor, gates: Tensor, adv: Tensor, beta: float) -> Tensor:
    """REINFORCE loss of the gate policy with an entropy bonus.

    ``-mean_b Σ_i Â_b log π(g_bi) - β · mean H(u)``, log π(g) = g log u + (1-g) log(1-u),
    H the binary entropy in nats.

    Args:
        u: ``(B, nb)`` run probabilities in (0, 1), clamped to [1e-6, 1-1e-6].
        gates: ``(B, nb)`` sampled 0/1 gates.
        adv: ``(B,)`` advantages (detached here as well).
        beta: entropy weight; keeps u from collapsing to 0 or 1.
    """
    u = u.clamp(_U_CLAMP, 1.0 - _U_CLAMP)
    g = gates.to(u.dtype)
    log_pi = g * torch.log(u) + (1.0 - g) * torch.log1p(-u)  # (B, nb)
    pg = -(adv.detach()[:, None] * log_pi).sum(dim=1).mean()
    entropy = -(u * torch.log(u) + (1.0 - u) * torch.log1p(-u))  # (B, nb)
    return pg - beta * entropy.mean()


def critic_loss(value: Tensor, reward: Tensor) -> Tensor:
    """mean (V(s) - R)², with R detached as the regression target."""
    return (value - reward.detach()).pow(2).mean()
