"""LatticeEncoder: a learned causal graph among the k nodes and message passing along it
(design §3.2).

Shape alphabet: B batch, k nodes, d width.
"""

from __future__ import annotations

import torch
from torch import nn


def soft_threshold_st(a: torch.Tensor, tau: float) -> torch.Tensor:
    """S_τ(a) = max(a − τ, 0) forward, identity gradient backward (straight-through).

    An entry below τ would otherwise receive zero gradient for ever and the graph could
    only lose edges (design §3.2, "keeping edges alive").
    """
    hard = torch.clamp(a - tau, min=0.0)
    return a + (hard - a).detach()


class LearnedAdjacency(nn.Module):
    """``A = S_τ(sigmoid(W_A)) ⊙ M``; ``A[i, j] > 0`` is an edge i → j (i is a parent of j).

    Args:
        k: number of nodes.
        tau: soft threshold.
        forbidden: optional (k, k) bool prior of edges that may never exist.
    """

    def __init__(self, k: int, tau: float = 0.1, forbidden: torch.Tensor | None = None, scale: float = 1.0):
        super().__init__()
        # A = sigmoid(scale · W): Adam moves W by about the learning rate per step whatever the
        # gradient, so ``scale`` multiplies the graph's own learning rate. Variable nodes learn
        # their graph from a neutral start (W = 0, every edge 0.5) in one phase, and need it fast.
        self.k, self.tau, self.scale = k, tau, scale
        self.W = nn.Parameter(torch.empty(k, k))
        mask = 1.0 - torch.eye(k)
        if forbidden is not None:
            mask = mask * (~forbidden.bool()).float()
        self.register_buffer("mask", mask)
        # Variable nodes: the DAG projected at the end of phase 2 (csna.nn.structure), read from
        # then on instead of W, so later phases can neither add an edge nor close a cycle.
        self.register_buffer("fixed", torch.zeros(k, k))
        self.register_buffer("frozen", torch.tensor(False))
        self.reset_parameters()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints written before variable nodes existed have a free graph.
        state_dict.setdefault(prefix + "fixed", torch.zeros_like(self.fixed))
        state_dict.setdefault(prefix + "frozen", torch.tensor(False))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def freeze(self, a: torch.Tensor) -> None:
        """From now on A is ``a`` (k, k), a constant."""
        self.fixed.copy_(a * self.mask)
        self.frozen.fill_(True)

    def reset_parameters(self) -> None:
        # sigmoid(N(0, 1)) spreads edge weights over about (0.1, 0.9): with the straight-through
        # threshold every edge gets gradient whether it starts above τ or not, and the spread
        # gives the graph a random sparse orientation (causal distances beyond ±1) to start from.
        with torch.no_grad():
            if self.scale == 1.0:
                self.W.normal_(0.0, 1.0)
            else:
                self.W.zero_()

    def forward(self) -> torch.Tensor:
        """Returns A (k, k), exact zeros below the threshold and on masked entries."""
        if bool(self.frozen):
            return self.fixed
        w = self.W * self.scale if self.scale != 1.0 else self.W
        return soft_threshold_st(torch.sigmoid(w), self.tau) * self.mask

    def extra_repr(self) -> str:
        return f"k={self.k}, tau={self.tau}, scale={self.scale}"


class LatticeLayer(nn.Module):
    """One residual message-passing step: ``H ← LN(H + act(norm(Aᵀ) H W_msg + H W_self))``.

    Each node aggregates its parents' messages, normalised by its (weighted) in-degree.
    """

    def __init__(self, d: int, dropout: float = 0.0):
        super().__init__()
        self.msg = nn.Linear(d, d, bias=False)
        self.self_ = nn.Linear(d, d)
        self.norm = nn.LayerNorm(d)
        self.act = nn.GELU()
        self.drop = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, a_in: torch.Tensor) -> torch.Tensor:
        """Args: h (B, k, d); a_in (k, k) in-degree-normalised Aᵀ (row j: weights of j's parents).

        Returns: (B, k, d).
        """
        agg = torch.matmul(a_in, self.msg(h))  # (k, k) @ (B, k, d) -> (B, k, d)
        return self.norm(h + self.drop(self.act(agg + self.self_(h))))


def in_degree_normalised(a: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """norm(Aᵀ): row j holds A[:, j] / Σ_i A[i, j], the mean over j's parents. (k, k)."""
    at = a.t()  # (k, k), at[j, i] = A[i, j]
    return at / (at.sum(dim=1, keepdim=True) + eps)


class LatticeEncoder(nn.Module):
    """The learned graph plus L_g lattice layers. Layers are exposed as ``self.layers`` so the
    Meta Utility Layer can gate each one as a block."""

    def __init__(self, k: int, d: int, layers: int = 2, tau: float = 0.1, dropout: float = 0.0,
                 forbidden: torch.Tensor | None = None, graph_scale: float = 1.0):
        super().__init__()
        self.adjacency = LearnedAdjacency(k, tau, forbidden, graph_scale)
        self.layers = nn.ModuleList(LatticeLayer(d, dropout) for _ in range(layers))

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: z (B, k, d). Returns: H (B, k, d), A (k, k)."""
        a = self.adjacency()
        a_in = in_degree_normalised(a)
        h = z
        for layer in self.layers:
            h = layer(h, a_in)
        return h, a
