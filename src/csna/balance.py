"""Distances between the representations of treatment groups: the balance terms of
counterfactual regression (Shalit, Johansson & Sontag 2017), as pure functions of tensors.

csna's L_Dis (``losses.discrepancy``) and the bench's CFR peers (``bench.neural``) both use
these; there is one copy.

Shape alphabet: n rows of one group, m rows of the other, d representation width.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["sq_dists", "mmd2_rbf", "wasserstein_sinkhorn", "DISCREPANCIES"]


MEDIAN_ROWS = 512  # rows of the pooled sample the MMD bandwidth heuristic reads at most


def sq_dists(x: Tensor, y: Tensor) -> Tensor:
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
    d_aa, d_bb, d_ab = sq_dists(a, a), sq_dists(b, b), sq_dists(a, b)
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
    cost = sq_dists(a, b).clamp_min(1e-12).sqrt()  # (n, m); the floor keeps sqrt's gradient finite
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
    mean_cost = sq_dists(a, b).clamp_min(1e-12).sqrt().mean().detach()
    eps = blur * mean_cost.clamp_min(1e-6)
    s = _entropic_ot(a, b, eps, iters) - 0.5 * _entropic_ot(a, a, eps, iters) - 0.5 * _entropic_ot(b, b, eps, iters)
    return s.clamp_min(0.0)


DISCREPANCIES = {"mmd": mmd2_rbf, "wasserstein": wasserstein_sinkhorn}
