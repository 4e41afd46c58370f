"""csna.nn.attention: positional modes, unrelated bias, theta freezing and row independence."""

import math

import pytest
import torch

from csna.nn.attention import CausalAttention, CausalTransformerBlock
from csna.nn.distance import causal_distance

B, K, D, H = 4, 6, 16, 2


def chain_graph(k: int) -> torch.Tensor:
    A = torch.zeros(k, k)
    A[torch.arange(k - 1), torch.arange(1, k)] = 1.0
    return A


def sparse_graph(k: int) -> torch.Tensor:
    # 0 -> 1 -> 2 and 3 -> 4; node 5 and the two components are mutually unrelated.
    A = torch.zeros(k, k)
    A[0, 1] = A[1, 2] = A[3, 4] = 1.0
    return A


def test_unknown_positional_lists_valid_modes():
    with pytest.raises(ValueError, match="causal.*sequence.*none"):
        CausalAttention(D, H, positional="rotary")


def test_sequence_equals_causal_on_chain():
    torch.manual_seed(0)
    causal = CausalAttention(D, H, d_max=3, positional="causal")
    sequence = CausalAttention(D, H, d_max=3, positional="sequence")
    sequence.load_state_dict(causal.state_dict())
    x = torch.randn(B, K, D)
    dist, unrel = causal_distance(chain_graph(K))
    out_c, attn_c = causal(x, dist, unrel)
    # The sequence ablation ignores whatever graph it is handed.
    out_s, attn_s = sequence(x, *causal_distance(sparse_graph(K)))
    assert torch.allclose(out_c, out_s, atol=1e-6)
    assert torch.allclose(attn_c, attn_s, atol=1e-6)


def test_none_is_plain_dot_product_attention():
    torch.manual_seed(1)
    attn_mod = CausalAttention(D, H, positional="none")
    x = torch.randn(B, K, D)
    with torch.no_grad():
        attn_mod.b_unrel.fill_(5.0)
    _, attn = attn_mod(x, *causal_distance(sparse_graph(K)))
    q, k, _ = attn_mod.qkv(x).view(B, K, 3, H, D // H).permute(2, 0, 3, 1, 4)
    ref = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(D // H), dim=-1)
    assert torch.allclose(attn, ref, atol=1e-6)


def test_unrelated_bias_only_touches_unrelated_pairs():
    torch.manual_seed(2)
    attn_mod = CausalAttention(D, H)
    x = torch.randn(B, K, D)
    dist, unrel = causal_distance(sparse_graph(K))
    assert unrel.any() and (~unrel).any()
    q, k, _ = attn_mod.qkv(x).view(B, K, 3, H, D // H).permute(2, 0, 3, 1, 4)
    s0 = attn_mod.scores(q, k, dist, unrel)
    bias = torch.tensor([0.7, -1.9])
    with torch.no_grad():
        attn_mod.b_unrel.copy_(bias)
    s1 = attn_mod.scores(q, k, dist, unrel)
    expected = bias[:, None, None] * unrel.float()  # (h, k, k)
    assert torch.allclose(s1 - s0, expected.expand_as(s0), atol=1e-6)


def test_attention_rows_sum_to_one_and_shapes():
    torch.manual_seed(3)
    attn_mod = CausalAttention(D, H)
    out, attn = attn_mod(torch.randn(B, K, D), *causal_distance(sparse_graph(K)))
    assert out.shape == (B, K, D) and attn.shape == (B, H, K, K)
    assert torch.allclose(attn.sum(-1), torch.ones(B, H, K), atol=1e-6)


def test_theta_frozen_by_default_then_learnable():
    attn_mod = CausalAttention(D, H)
    assert not attn_mod.theta0.requires_grad and not attn_mod.w.requires_grad
    assert attn_mod.b_unrel.requires_grad
    assert torch.equal(attn_mod.theta0, torch.zeros(H)) and torch.equal(attn_mod.w, torch.ones(H))
    x = torch.randn(B, K, D)
    dist, unrel = causal_distance(chain_graph(K))
    attn_mod(x, dist, unrel)[0].sum().backward()
    assert attn_mod.theta0.grad is None and attn_mod.w.grad is None

    attn_mod.set_theta_learnable(True)
    assert attn_mod.theta0.requires_grad and attn_mod.w.requires_grad
    out, _ = attn_mod(x, dist, unrel)
    (out * torch.randn_like(out)).sum().backward()
    assert attn_mod.theta0.grad.abs().sum() > 0 and attn_mod.w.grad.abs().sum() > 0
    assert "theta_learnable=True" in repr(attn_mod)

    attn_mod.set_theta_learnable(False)
    assert not attn_mod.theta0.requires_grad and not attn_mod.w.requires_grad


def test_block_rows_are_independent():
    torch.manual_seed(4)
    block = CausalTransformerBlock(D, H, mlp_ratio=2).eval()
    x = torch.randn(B, K, D)
    dist, unrel = causal_distance(sparse_graph(K))
    full = block(x, dist, unrel)
    assert full.shape == (B, K, D)
    assert block.last_attn.shape == (B, H, K, K) and not block.last_attn.requires_grad
    rows = torch.tensor([0, 2, 3])
    part = block(x[rows], dist, unrel)
    assert torch.allclose(part, full[rows], atol=1e-6)
    assert block.last_attn.shape == (len(rows), H, K, K)
    empty = block(x[:0], dist, unrel)
    assert empty.shape == (0, K, D)


def test_block_double_precision_and_reset():
    block = CausalTransformerBlock(D, H).double()
    x = torch.randn(2, K, D, dtype=torch.float64)
    y = block(x, *causal_distance(chain_graph(K)))
    assert y.dtype == torch.float64 and block.last_attn.dtype == torch.float64
    block.attn.set_theta_learnable(True)
    block.reset_parameters()
    assert block.attn.theta0.requires_grad
    assert torch.equal(block.attn.w, torch.ones(H, dtype=torch.float64))
