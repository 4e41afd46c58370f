"""csna.nn.rope against naive per-pair references written with Python loops."""

import cmath
import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from csna.nn.rope import causal_rope_scores, rope_frequencies, rotate_pairs


def naive_omega(d_h: int, base: float) -> list[float]:
    return [math.pow(base, -2.0 * f / d_h) for f in range(d_h // 2)]


def naive_rotate_token(x: list[float], pos: float, omega: list[float]) -> list[float]:
    """Ordinary RoPE on one token at position ``pos``, one dimension pair at a time."""
    out = []
    for f, om in enumerate(omega):
        a, b = x[2 * f], x[2 * f + 1]
        c, s = math.cos(pos * om), math.sin(pos * om)
        out += [a * c - b * s, a * s + b * c]
    return out


def naive_ordinary_rope(q: torch.Tensor, k: torch.Tensor, base: float) -> torch.Tensor:
    """Rotate every query at its own index i and every key at its own index j, then dot."""
    B, h, n, d_h = q.shape
    omega = naive_omega(d_h, base)
    out = torch.zeros(B, h, n, n, dtype=torch.float64)
    for b in range(B):
        for hh in range(h):
            qr = [naive_rotate_token(q[b, hh, i].tolist(), i, omega) for i in range(n)]
            kr = [naive_rotate_token(k[b, hh, j].tolist(), j, omega) for j in range(n)]
            for i in range(n):
                for j in range(n):
                    out[b, hh, i, j] = sum(x * y for x, y in zip(qr[i], kr[j])) / math.sqrt(d_h)
    return out


def naive_pair_scores(q, k, dist, theta0, w, base, d_max=None) -> torch.Tensor:
    """``Re(q conj(k) e^{i theta omega})`` pair by pair, with per-head theta0 and w lists."""
    B, h, n, d_h = q.shape
    omega = naive_omega(d_h, base)
    out = torch.zeros(B, h, n, n, dtype=torch.float64)
    for b in range(B):
        for hh in range(h):
            for i in range(n):
                for j in range(n):
                    d = float(dist[i][j])
                    if d_max is not None:
                        d = max(-d_max, min(d_max, d))
                    theta = theta0[hh] + w[hh] * d
                    total = 0.0
                    for f, om in enumerate(omega):
                        qc = complex(q[b, hh, i, 2 * f], q[b, hh, i, 2 * f + 1])
                        kc = complex(k[b, hh, j, 2 * f], k[b, hh, j, 2 * f + 1])
                        total += (qc * kc.conjugate() * cmath.exp(1j * theta * om)).real
                    out[b, hh, i, j] = total / math.sqrt(d_h)
    return out


def offsets(n: int) -> torch.Tensor:
    idx = torch.arange(n, dtype=torch.float32)
    return idx[:, None] - idx[None, :]


def random_dist(n: int, gen: torch.Generator, span: int = 5) -> torch.Tensor:
    """Antisymmetric integer distances with zero diagonal, like causal_distance returns."""
    upper = torch.triu(torch.randint(-span, span + 1, (n, n), generator=gen), diagonal=1)
    return (upper - upper.T).float()


def test_frequencies():
    om = rope_frequencies(8, base=100.0)
    assert om.shape == (4,)
    assert torch.allclose(om.double(), torch.tensor(naive_omega(8, 100.0), dtype=torch.float64))
    with pytest.raises(ValueError):
        rope_frequencies(7)


def test_rotate_pairs_is_complex_multiplication():
    x = torch.randn(3, 5, 8)
    angle = torch.randn(5, 4)
    x_c = torch.view_as_complex(x.unflatten(-1, (4, 2)))  # (3, 5, 4) complex
    ref = torch.view_as_real(x_c * torch.polar(torch.ones_like(angle), angle)).flatten(-2)
    assert torch.allclose(rotate_pairs(x, angle), ref, atol=1e-6)
    xb = x.bfloat16()
    assert rotate_pairs(xb, angle).dtype == torch.bfloat16


@pytest.mark.parametrize(
    "shape,base", [((1, 1, 4, 2), 10000.0), ((2, 3, 6, 8), 10000.0), ((2, 2, 7, 16), 100.0),
                   ((3, 1, 5, 4), 10.0)]
)
def test_chain_equals_ordinary_rope(shape, base):
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)
    n = shape[2]
    got = causal_rope_scores(q, k, offsets(n), base=base)
    ref = naive_ordinary_rope(q, k, base)
    assert got.shape == (shape[0], shape[1], n, n)
    assert torch.allclose(got.double(), ref, atol=1e-5)
    # Integer distances are accepted too.
    got_int = causal_rope_scores(q, k, offsets(n).long(), base=base)
    assert torch.allclose(got_int, got)


def test_per_head_theta_and_w_match_pair_loop():
    gen = torch.Generator().manual_seed(1)
    B, h, n, d_h = 2, 3, 5, 8
    q, k = torch.randn(B, h, n, d_h, generator=gen), torch.randn(B, h, n, d_h, generator=gen)
    dist = random_dist(n, gen)
    theta0, w = torch.tensor([0.0, 0.5, -1.3]), torch.tensor([1.0, 0.7, 2.1])
    got = causal_rope_scores(q, k, dist, theta0, w, base=50.0)
    ref = naive_pair_scores(q, k, dist.tolist(), theta0.tolist(), w.tolist(), 50.0)
    assert torch.allclose(got.double(), ref, atol=1e-5)


@pytest.mark.parametrize("d_max", [0, 1, 2, 3])
def test_clipping_matches_clipped_reference(d_max):
    gen = torch.Generator().manual_seed(2)
    B, h, n, d_h = 1, 2, 6, 4
    q, k = torch.randn(B, h, n, d_h, generator=gen), torch.randn(B, h, n, d_h, generator=gen)
    dist = random_dist(n, gen)
    got = causal_rope_scores(q, k, dist, 0.2, 0.9, base=10.0, d_max=d_max)
    ref = naive_pair_scores(q, k, dist.tolist(), [0.2] * h, [0.9] * h, 10.0, d_max=d_max)
    assert torch.allclose(got.double(), ref, atol=1e-5)


def test_permutation_equivariance():
    gen = torch.Generator().manual_seed(3)
    B, h, n, d_h = 2, 2, 7, 8
    q, k = torch.randn(B, h, n, d_h, generator=gen), torch.randn(B, h, n, d_h, generator=gen)
    dist = random_dist(n, gen)
    theta0, w = torch.tensor([0.1, -0.4]), torch.tensor([1.0, 0.6])
    perm = torch.randperm(n, generator=gen)
    s = causal_rope_scores(q, k, dist, theta0, w, d_max=3)
    s_perm = causal_rope_scores(q[:, :, perm], k[:, :, perm], dist[perm][:, perm], theta0, w,
                                d_max=3)
    assert torch.allclose(s_perm, s[:, :, perm][:, :, :, perm], atol=1e-6)


def test_gradient_reaches_theta0_w_q_k():
    gen = torch.Generator().manual_seed(4)
    B, h, n, d_h = 2, 3, 5, 8
    q = torch.randn(B, h, n, d_h, generator=gen, requires_grad=True)
    k = torch.randn(B, h, n, d_h, generator=gen, requires_grad=True)
    theta0 = torch.zeros(h, requires_grad=True)
    w = torch.ones(h, requires_grad=True)
    s = causal_rope_scores(q, k, random_dist(n, gen), theta0, w, d_max=3)
    (s * torch.randn(s.shape, generator=gen)).sum().backward()
    for t in (q, k, theta0, w):
        assert t.grad is not None and (t.grad != 0).all()


def test_gradcheck_double():
    gen = torch.Generator().manual_seed(5)
    B, h, n, d_h = 1, 2, 3, 4
    q = torch.randn(B, h, n, d_h, generator=gen, dtype=torch.float64, requires_grad=True)
    k = torch.randn(B, h, n, d_h, generator=gen, dtype=torch.float64, requires_grad=True)
    theta0 = torch.tensor([0.3, -0.2], dtype=torch.float64, requires_grad=True)
    w = torch.tensor([0.8, 1.2], dtype=torch.float64, requires_grad=True)
    dist = random_dist(n, gen, span=2)

    def fn(q, k, theta0, w):
        return causal_rope_scores(q, k, dist, theta0, w, base=10.0)

    assert torch.autograd.gradcheck(fn, (q, k, theta0, w))


@pytest.mark.parametrize("d_max", [None, 1, 2])
def test_one_matmul_per_distinct_distance(d_max):
    gen = torch.Generator().manual_seed(6)
    B, h, n, d_h = 3, 2, 6, 8
    q, k = torch.randn(B, h, n, d_h, generator=gen), torch.randn(B, h, n, d_h, generator=gen)
    dist = random_dist(n, gen, span=4)
    clipped = dist if d_max is None else dist.clamp(-d_max, d_max)
    distinct = len(set(clipped.flatten().tolist()))
    counter = FlopCounterMode(display=False)
    with counter:
        causal_rope_scores(q, k, dist, d_max=d_max)
    assert counter.get_total_flops() == distinct * 2 * B * h * n * n * d_h
