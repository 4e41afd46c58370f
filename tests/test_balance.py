"""Tests of csna.balance (MMD, Sinkhorn) against naive references (loops, exact optimal transport)."""

import itertools
import math

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist
import torch

from csna import balance as L


pytestmark = pytest.mark.usefixtures("float64_and_seed")


def _mmd2_ref(a, b, hs):
    a, b = a.numpy(), b.numpy()

    def k(x, y):
        return sum(math.exp(-((x - y) ** 2).sum() / (2 * h * h)) for h in hs)

    kaa = sum(k(x, y) for x in a for y in a) / len(a) ** 2
    kbb = sum(k(x, y) for x in b for y in b) / len(b) ** 2
    kab = sum(k(x, y) for x in a for y in b) / (len(a) * len(b))
    return kaa + kbb - 2 * kab


def test_mmd2_matches_double_loop():
    a, b = torch.randn(7, 3), torch.randn(5, 3) + 0.5
    hs = [0.5, 1.0, 3.0]
    assert L.mmd2_rbf(a, b, hs).item() == pytest.approx(_mmd2_ref(a, b, hs), rel=1e-10)
    z = torch.cat([a, b]).numpy()
    dists = [np.linalg.norm(z[i] - z[j]) for i, j in itertools.combinations(range(12), 2)]
    # torch's median of an even count is the lower middle value
    med = np.sort(dists)[(len(dists) - 1) // 2]
    ref = _mmd2_ref(a, b, [med * s for s in (0.5, 1, 2, 4)])
    assert L.mmd2_rbf(a, b).item() == pytest.approx(ref, rel=1e-10)


def test_mmd2_zero_for_identical_and_monotone_in_shift():
    a = torch.randn(20, 4)
    assert L.mmd2_rbf(a, a.clone()).item() == 0.0
    hs = [0.5, 1.0, 2.0, 4.0]
    vals = [L.mmd2_rbf(a, a + s, hs).item() for s in (0.0, 0.1, 0.3, 0.6, 1.0, 2.0)]
    assert vals[0] == 0.0
    assert all(x < y for x, y in zip(vals, vals[1:]))


def test_mmd2_gradient_finite_with_duplicate_points():
    a = torch.zeros(4, 2, requires_grad=True)
    b = torch.ones(3, 2)
    L.mmd2_rbf(a, b).backward()
    assert torch.isfinite(a.grad).all()


def test_mmd2_bandwidth_from_strided_subset_close_to_full_median():
    # Past MEDIAN_ROWS rows the bandwidth comes from a strided subset of the pooled sample;
    # the resulting MMD² must stay close to the one with the full-sample median.
    g = torch.Generator().manual_seed(0)
    a = torch.randn(700, 6, generator=g, dtype=torch.float64)
    b = torch.randn(500, 6, generator=g, dtype=torch.float64) + 0.3
    z = torch.cat([a, b])
    d = torch.cdist(z, z)
    iu = torch.triu_indices(len(z), len(z), 1)
    med = float(d[iu[0], iu[1]].median())
    full = L.mmd2_rbf(a, b, [med * s for s in (0.5, 1.0, 2.0, 4.0)]).item()
    assert L.mmd2_rbf(a, b).item() == pytest.approx(full, rel=0.03)


def test_sinkhorn_approaches_the_exact_wasserstein_distance():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((30, 4)), rng.standard_normal((30, 4)) + 1.0
    cost = cdist(a, b)
    r, c = linear_sum_assignment(cost)  # equal sizes, uniform weights: W1 is an assignment
    exact = cost[r, c].mean()
    approx = L.wasserstein_sinkhorn(torch.tensor(a), torch.tensor(b), blur=0.01, iters=500).item()
    assert approx == pytest.approx(exact, rel=0.03)


def test_sinkhorn_gradient_matches_finite_differences():
    torch.manual_seed(3)
    a = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(9, 3, dtype=torch.float64) + 0.5
    eps = torch.tensor(0.3, dtype=torch.float64)
    L._entropic_ot(a, b, eps, 300).backward()
    h, a0 = 1e-6, a.detach().clone()
    for i, j in [(0, 0), (2, 1), (5, 2)]:
        up, dn = a0.clone(), a0.clone()
        up[i, j] += h
        dn[i, j] -= h
        num = (L._entropic_ot(up, b, eps, 300) - L._entropic_ot(dn, b, eps, 300)) / (2 * h)
        assert a.grad[i, j].item() == pytest.approx(num.item(), abs=1e-6)
