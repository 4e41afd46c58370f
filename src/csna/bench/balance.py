"""Integral probability metrics between the treated and control representations (CFR).

Shalit, Johansson & Sontag (2017) penalise the distance between the two groups' learned
representations; these are the two distances they use, as pure functions of tensors.

Shape alphabet: n rows of one group, m rows of the other, r representation width.
"""

from __future__ import annotations

import math

import torch


def _sq_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(n, m) squared Euclidean distances, never negative (the expansion can round below 0)."""
    d = (a * a).sum(1, keepdim=True) + (b * b).sum(1)[None, :] - 2.0 * a @ b.T  # (n, m)
    return d.clamp_min(0.0)


def mmd2_rbf(a: torch.Tensor, b: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """Squared maximum mean discrepancy with a Gaussian kernel (biased V-statistic).

    Exactly 0 when ``a`` and ``b`` hold the same rows, and never negative.

    Args:
        a: (n, r) representations of one group.
        b: (m, r) representations of the other.
        sigma: kernel bandwidth, k(u, v) = exp(-|u - v|² / (2 σ²)).

    Returns:
        () tensor.
    """
    gamma = 1.0 / (2.0 * sigma * sigma)
    k_aa = torch.exp(-gamma * _sq_distances(a, a)).mean()
    k_bb = torch.exp(-gamma * _sq_distances(b, b)).mean()
    k_ab = torch.exp(-gamma * _sq_distances(a, b)).mean()
    return (k_aa + k_bb - 2.0 * k_ab).clamp_min(0.0)


def _entropic_ot(a: torch.Tensor, b: torch.Tensor, eps: torch.Tensor, iters: int) -> torch.Tensor:
    """Entropic optimal-transport cost between uniform weights on ``a`` (n, r) and ``b`` (m, r),
    Euclidean ground cost, by log-domain Sinkhorn; returns the dual value <α, f> + <β, g>.

    The iterations run without autograd; one last half-step of each potential carries the
    gradient, which at convergence is the transport plan (the envelope theorem), at a fraction
    of the cost of differentiating through every iteration.
    """
    cost = _sq_distances(a, b).clamp_min(1e-12).sqrt()  # (n, m); the floor keeps sqrt's gradient finite
    log_wa = a.new_full((a.shape[0],), -math.log(a.shape[0]))  # (n,) uniform weights
    log_wb = a.new_full((b.shape[0],), -math.log(b.shape[0]))  # (m,)

    def f_of(g: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return -eps * torch.logsumexp((g[None, :] - c) / eps + log_wb[None, :], dim=1)  # (n,)

    def g_of(f: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return -eps * torch.logsumexp((f[:, None] - c) / eps + log_wa[:, None], dim=0)  # (m,)

    with torch.no_grad():
        c0 = cost.detach()
        f, g = a.new_zeros(a.shape[0]), a.new_zeros(b.shape[0])  # (n,), (m,)
        for _ in range(iters):
            f = f_of(g, c0)
            g = g_of(f, c0)
    # ½(<α, f(g)> + <β, g(f)>) with f, g fixed on the right: its gradient in the cost is the plan.
    return 0.5 * (f_of(g, cost).mean() + g_of(f, cost).mean()) + 0.5 * (f.mean() + g.mean())


def wasserstein_sinkhorn(a: torch.Tensor, b: torch.Tensor, blur: float = 0.1, iters: int = 10) -> torch.Tensor:
    """Debiased Sinkhorn divergence, a smooth estimate of the Wasserstein-1 distance.

    S(a, b) = OT_ε(a, b) − ½ OT_ε(a, a) − ½ OT_ε(b, b), so identical groups give exactly 0
    (plain entropic OT would not). ε is ``blur`` times the mean cross distance, as Shalit et
    al. scale their Sinkhorn penalty by the mean distance.

    Args:
        a: (n, r) representations of one group.
        b: (m, r) representations of the other.
        blur: ε relative to the mean distance between the groups.
        iters: Sinkhorn iterations.

    Returns:
        () tensor.
    """
    mean_cost = _sq_distances(a, b).clamp_min(1e-12).sqrt().mean().detach()
    eps = blur * mean_cost.clamp_min(1e-6)
    s = _entropic_ot(a, b, eps, iters) - 0.5 * _entropic_ot(a, a, eps, iters) - 0.5 * _entropic_ot(b, b, eps, iters)
    return s.clamp_min(0.0)


IPMS = {"mmd": mmd2_rbf, "wass": wasserstein_sinkhorn}
