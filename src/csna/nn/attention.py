"""Multi-head attention over latent nodes with causal RoPE, and its pre-LN block (design §3.3).

Shape alphabet:
    B  batch (or any subset of its rows)
    k  latent nodes
    d  node width
    h  heads
    dh head width, d / h
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .rope import causal_rope_scores

__all__ = ["CausalAttention", "CausalTransformerBlock", "POSITIONAL_MODES"]

POSITIONAL_MODES = ("causal", "sequence", "none")


def sequence_distance(k: int, device=None) -> Tensor:
    """Node-index offsets ``dist[i, j] = i - j``, shape ``(k, k)`` (the ordinary-RoPE ablation)."""
    idx = torch.arange(k, dtype=torch.float32, device=device)  # (k,)
    return idx[:, None] - idx[None, :]  # (k, k)


def softmax_last(s: Tensor) -> Tensor:
    """Softmax over the last axis, written out.

    Why by hand: on CPU, ``torch.softmax`` over a last axis of length k = 8 (torch 2.13) runs
    about 5× slower than these three elementwise ops (4.8 ms vs 0.9 ms forward on
    (1024, 4, 8, 8), 7.0 vs 2.2 ms forward + backward); it was the largest single op of a
    phase-3 step at batch 1024. The max is detached: softmax is shift-invariant, so its
    gradient through the max is zero anyway.
    """
    e = (s - s.amax(dim=-1, keepdim=True).detach()).exp()
    return e / e.sum(dim=-1, keepdim=True)


class CausalAttention(nn.Module):
    """Multi-head self-attention whose positions are signed causal distances.

    Args:
        d: node width.
        heads: number of heads; must divide ``d`` into an even head width.
        d_max: clip distances to ``[-d_max, d_max]``; ``None`` for no clipping.
        base: RoPE base.
        positional: ``"causal"`` (the graph's distances), ``"sequence"`` (node index offsets
            ``i - j``, ignoring the graph; same clipping and angle parameters, so the ablation
            changes only where the positions come from) or ``"none"`` (no rotation, no
            unrelated bias).
        dropout: dropout on the attention weights.
    """

    def __init__(
        self,
        d: int,
        heads: int,
        d_max: int | None = 3,
        base: float = 10000.0,
        positional: str = "causal",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if positional not in POSITIONAL_MODES:
            raise ValueError(f"unknown positional={positional!r}; valid: {list(POSITIONAL_MODES)}")
        if d % heads or (d // heads) % 2:
            raise ValueError(f"d={d} must split into {heads} heads of even width")
        self.d, self.heads, self.d_h = d, heads, d // heads
        self.d_max, self.base, self.positional = d_max, base, positional
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.dropout = nn.Dropout(dropout)
        # Frozen at theta0 = 0, w = 1 (plain causal RoPE) until training switches them on.
        self.theta0 = nn.Parameter(torch.zeros(heads), requires_grad=False)
        self.w = nn.Parameter(torch.ones(heads), requires_grad=False)
        self.b_unrel = nn.Parameter(torch.zeros(heads))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-initialise all weights; leaves the learnable flags of theta0 and w as they are."""
        self.qkv.reset_parameters()
        self.out.reset_parameters()
        with torch.no_grad():
            self.theta0.zero_()
            self.w.fill_(1.0)
            self.b_unrel.zero_()

    def set_theta_learnable(self, flag: bool) -> None:
        """Freeze (``False``) or train (``True``) the per-head angle offset and scale."""
        self.theta0.requires_grad_(flag)
        self.w.requires_grad_(flag)

    def scores(self, q: Tensor, k: Tensor, dist: Tensor | None, unrelated: Tensor | None) -> Tensor:
        """Pre-softmax scores ``(B, h, k, k)`` for queries and keys ``(B, h, k, dh)``."""
        n = q.shape[-2]
        if self.positional == "none":
            return q @ k.transpose(-2, -1) / math.sqrt(self.d_h)  # (B, h, k, k)
        if self.positional == "sequence":
            dist = sequence_distance(n, device=q.device)  # (k, k)
        elif dist is None:
            raise ValueError("positional='causal' needs dist (and unrelated)")
        s = causal_rope_scores(
            q, k, dist, self.theta0, self.w, base=self.base, d_max=self.d_max
        )  # (B, h, k, k)
        if self.positional == "causal" and unrelated is not None:
            bias = self.b_unrel[:, None, None] * unrelated.to(q.device, s.dtype)  # (h, k, k)
            s = s + bias  # (B, h, k, k)
        return s

    def forward(
        self, x: Tensor, dist: Tensor | None = None, unrelated: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Attend over nodes.

        Args:
            x: ``(B, k, d)`` node states.
            dist: ``(k, k)`` causal distances (see ``csna.nn.distance.causal_distance``);
                ignored unless ``positional="causal"``.
            unrelated: ``(k, k)`` bool, pairs that receive the per-head bias ``b_unrel``.

        Returns:
            ``out``: ``(B, k, d)``.
            ``attn``: ``(B, h, k, k)`` attention weights before dropout (rows sum to 1).
        """
        B, n, _ = x.shape
        qkv = self.qkv(x).view(B, n, 3, self.heads, self.d_h)  # (B, k, 3, h, dh)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, h, k, dh)
        s = self.scores(q, k, dist, unrelated)  # (B, h, k, k)
        # Softmax in fp32 so bf16 autocast does not flatten small score differences.
        work = torch.promote_types(s.dtype, torch.float32)
        attn = softmax_last(s.to(work))  # (B, h, k, k)
        y = self.dropout(attn).to(v.dtype) @ v.contiguous()  # (B, h, k, dh); strided v: slow CPU bmm
        y = y.transpose(1, 2).reshape(B, n, self.d)  # (B, k, d)
        return self.out(y), attn

    def extra_repr(self) -> str:
        return (
            f"d={self.d}, heads={self.heads}, d_max={self.d_max}, base={self.base}, "
            f"positional={self.positional!r}, theta_learnable={self.theta0.requires_grad}"
        )


class CausalTransformerBlock(nn.Module):
    """Pre-LN transformer block: ``x + attn(LN(x))``, then ``x + MLP(LN(x))``.

    Rows are independent (per-node layer norm, attention within a sample), so any subset of a
    batch may be sent through it. The last attention map is kept, detached, in ``last_attn``.

    Args:
        d: node width.
        heads: number of heads.
        mlp_ratio: hidden width of the MLP as a multiple of ``d``.
        d_max, base, positional, dropout: as in :class:`CausalAttention`.
    """

    def __init__(
        self,
        d: int,
        heads: int,
        mlp_ratio: int = 2,
        d_max: int | None = 3,
        base: float = 10000.0,
        positional: str = "causal",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.ln_attn = nn.LayerNorm(d)
        self.attn = CausalAttention(d, heads, d_max, base, positional, dropout)
        self.ln_mlp = nn.LayerNorm(d)
        self.mlp = nn.Sequential(
            nn.Linear(d, mlp_ratio * d),
            nn.GELU(),
            nn.Linear(mlp_ratio * d, d),
            nn.Dropout(dropout),
        )
        self.last_attn: Tensor | None = None

    def reset_parameters(self) -> None:
        """Re-initialise all weights."""
        self.ln_attn.reset_parameters()
        self.attn.reset_parameters()
        self.ln_mlp.reset_parameters()
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                layer.reset_parameters()

    def forward(
        self, x: Tensor, dist: Tensor | None = None, unrelated: Tensor | None = None
    ) -> Tensor:
        """Run the block.

        Args:
            x: ``(B, k, d)`` node states.
            dist: ``(k, k)`` causal distances.
            unrelated: ``(k, k)`` bool mask of unrelated pairs.

        Returns:
            ``(B, k, d)``.
        """
        a, attn = self.attn(self.ln_attn(x), dist, unrelated)  # (B, k, d), (B, h, k, k)
        self.last_attn = attn.detach()
        x = x + a  # (B, k, d)
        return x + self.mlp(self.ln_mlp(x))  # (B, k, d)
