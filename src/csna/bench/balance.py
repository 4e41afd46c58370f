"""Integral probability metrics between the treated and control representations (CFR).

Shalit, Johansson & Sontag (2017) penalise the distance between the two groups' learned
representations; these are the two distances they use, as pure functions of tensors. The
Wasserstein one is ``csna.losses.wasserstein_sinkhorn``, shared with csna's L_Dis.

Shape alphabet: n rows of one group, m rows of the other, r representation width.
"""

from __future__ import annotations

import torch

# The Sinkhorn estimate lives with csna's own losses (L_Dis can use it too); one copy.
from ..losses import _sq_dists as _sq_distances
from ..losses import wasserstein_sinkhorn


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


IPMS = {"mmd": mmd2_rbf, "wass": wasserstein_sinkhorn}
