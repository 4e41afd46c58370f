"""Causal rotary position scores (design §3.3).

Shape alphabet:
    B  batch
    h  heads
    n  tokens (latent nodes)
    dh head width (even); F = dh / 2 rotary pairs

Ordinary RoPE rotates the query at position i and the key at position j separately, so the
score sees only i - j. Causal RoPE rotates pair (i, j) by an angle theta_ij that is not a
difference of per-token positions, so the rotation cannot be split between q and k. It only
takes a few distinct values, though, so the score is one batched matmul per distinct value,
with only the queries rotated; that keeps it a matmul (fast, and visible to FLOP counters).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["rope_frequencies", "rotate_pairs", "causal_rope_scores"]


def rope_frequencies(d_h: int, base: float = 10000.0, device=None) -> Tensor:
    """Rotary frequencies ``omega_f = base ** (-2 f / d_h)``.

    Args:
        d_h: head width, must be even.
        base: RoPE base.
        device: where to create the tensor.

    Returns:
        ``(d_h / 2,)`` float32 frequencies.
    """
    if d_h <= 0 or d_h % 2:
        raise ValueError(f"d_h must be a positive even number, got {d_h}")
    exponent = torch.arange(0, d_h, 2, dtype=torch.float32, device=device) / d_h  # (F,)
    return base**-exponent  # (F,)


def rotate_pairs(x: Tensor, angle: Tensor) -> Tensor:
    """Rotate each pair ``(x[2f], x[2f+1])``, read as a complex number, by ``e^{i angle}``.

    The maths runs in at least fp32 (bf16 angles lose whole radians at large offsets); the
    result is cast back to ``x``'s dtype.

    Args:
        x: ``(..., d_h)``.
        angle: broadcastable to ``(..., d_h / 2)``, in radians.

    Returns:
        ``(..., d_h)`` rotated copy of ``x``, same dtype.
    """
    angle = torch.as_tensor(angle, device=x.device)
    work = torch.promote_types(torch.promote_types(x.dtype, angle.dtype), torch.float32)
    pairs = x.to(work).unflatten(-1, (-1, 2))  # (..., F, 2)
    re, im = pairs[..., 0], pairs[..., 1]  # (..., F) each
    cos, sin = torch.cos(angle.to(work)), torch.sin(angle.to(work))  # broadcast to (..., F)
    out = torch.stack((re * cos - im * sin, re * sin + im * cos), dim=-1)  # (..., F, 2)
    return out.flatten(-2).to(x.dtype)  # (..., d_h)


def _per_head_angle(theta0: Tensor, w: Tensor, delta: Tensor, omega: Tensor) -> Tensor:
    """Angles ``(theta0 + w * delta) * omega``, shaped to broadcast over ``(B, h, n, F)``."""
    theta = theta0 + w * delta  # () or (h,)
    if theta.dim() == 1:
        theta = theta[:, None, None]  # (h, 1, 1)
    return theta * omega  # (F,) or (h, 1, F)


def causal_rope_scores(
    q: Tensor,
    k: Tensor,
    dist: Tensor,
    theta0: float | Tensor = 0.0,
    w: float | Tensor = 1.0,
    base: float = 10000.0,
    d_max: float | None = None,
) -> Tensor:
    """Attention scores with causal RoPE.

    ``s_ij = (1/sqrt(d_h)) sum_f Re(q_{i,f} conj(k_{j,f}) e^{+i theta_ij omega_f})`` with
    ``theta_ij = theta0 + w * clamp(dist_ij, -d_max, d_max)``. With ``dist[i, j] = i - j``,
    ``theta0 = 0`` and ``w = 1`` this is ordinary RoPE (query at i, key at j).

    Computed as one batched matmul per distinct clipped distance: rotating only the queries by
    ``(theta0 + w * delta) omega`` gives every pair's score at offset ``delta``, and each pair
    keeps the one that matches its own distance.

    Args:
        q: ``(B, h, n, d_h)`` queries.
        k: ``(B, h, n, d_h)`` keys.
        dist: ``(n, n)`` signed distances (float or int), no gradient needed.
        theta0: angle offset, a float or a per-head ``(h,)`` tensor (may require grad).
        w: distance scale, a float or a per-head ``(h,)`` tensor (may require grad).
        base: RoPE base.
        d_max: clip distances to ``[-d_max, d_max]``; ``None`` for no clipping.

    Returns:
        ``(B, h, n, n)`` scores, already scaled by ``1/sqrt(d_h)``.
    """
    d_h = q.shape[-1]
    n_q, n_k = q.shape[-2], k.shape[-2]
    if dist.shape != (n_q, n_k):
        raise ValueError(f"dist must have shape {(n_q, n_k)}, got {tuple(dist.shape)}")
    omega = rope_frequencies(d_h, base, device=q.device)  # (F,)
    theta0 = torch.as_tensor(theta0, device=q.device)
    w = torch.as_tensor(w, device=q.device)

    f_dist = dist.detach().to(device=q.device, dtype=torch.float32)  # (n, n)
    if d_max is not None:
        f_dist = f_dist.clamp(-d_max, d_max)  # (n, n)
    if n_q == 0 or n_k == 0:  # no pairs, hence no distances
        return (q @ k.transpose(-2, -1)) / math.sqrt(d_h)  # (B, h, n_q, n_k)
    deltas, which = torch.unique(f_dist, return_inverse=True)  # (D,), (n, n) index into deltas
    D = deltas.shape[0]
    theta = theta0 + w * deltas[:, None] if theta0.dim() or w.dim() else theta0 + w * deltas  # (D, h) or (D,)
    angle = theta[..., None] * omega  # (D, h, F) or (D, F)
    angle = angle.transpose(0, 1)[:, :, None, :] if angle.dim() == 3 else angle[:, None, :]  # (h, D, 1, F) or (D, 1, F)
    # Queries rotated by every distinct angle at once, stacked along the query axis, so all
    # offsets cost one batched matmul: (B, h, D·n, dh) @ (B, h, dh, n).
    B, h = q.shape[0], q.shape[1]
    # The rotation as one complex multiply (pairs read as complex numbers) instead of
    # rotate_pairs' cos/sin arithmetic: one kernel instead of seven over the D-fold tensor,
    # which made prediction 2× faster. Runs in fp32 at least, like rotate_pairs.
    work = torch.promote_types(q.dtype, torch.float32)
    # Contiguous q first (1/D of the rotated size): a strided q made the product strided too,
    # and the reshape below then copied the D-fold tensor.
    qc = torch.view_as_complex(q.to(work).contiguous().unflatten(-1, (d_h // 2, 2)))  # (B, h, n, F)
    rot = torch.polar(torch.ones_like(angle, dtype=work), angle.to(work))  # (h, D, 1, F) or (D, 1, F)
    q_rot = torch.view_as_real(qc[:, :, None] * rot).reshape(B, h, D * n_q, d_h).to(k.dtype)  # (B, h, D·n, dh)
    # kᵀ made contiguous first: CPU bmm over a transposed (strided) operand ran 2.5× slower.
    s_all = (q_rot @ k.transpose(-2, -1).contiguous()).view(B, h, D, n_q, n_k)
    # Each pair keeps the score computed at its own distance.
    scores = s_all.gather(2, which.view(1, 1, 1, n_q, n_k).expand(B, h, 1, n_q, n_k)).squeeze(2)
    return scores / math.sqrt(d_h)  # (B, h, n, n)
