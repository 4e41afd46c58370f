"""The integral probability metrics the bench's CFR peers penalise (Shalit, Johansson & Sontag
2017), by the names the peers use. The distances themselves are ``csna.balance``'s, shared
with csna's own L_Dis: one copy.

Shape alphabet: n rows of one group, m rows of the other, r representation width.
"""

from __future__ import annotations

import torch

from ..balance import mmd2_rbf as _mmd2_rbf
from ..balance import wasserstein_sinkhorn


def mmd2_rbf(a: torch.Tensor, b: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """CFR-MMD's squared maximum mean discrepancy: one Gaussian kernel of bandwidth ``sigma``,
    k(u, v) = exp(-|u - v|² / (2 σ²)), biased V-statistic, clamped at 0 against rounding.

    Args:
        a: (n, r) representations of one group.
        b: (m, r) representations of the other.

    Returns:
        () tensor.
    """
    return _mmd2_rbf(a, b, bandwidths=[sigma]).clamp_min(0.0)


IPMS = {"mmd": mmd2_rbf, "wass": wasserstein_sinkhorn}
