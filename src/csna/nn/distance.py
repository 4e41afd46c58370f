"""Causal distance between latent nodes, read off the learned graph (design §3.3).

Shape alphabet:
    k  number of latent causal nodes

The distance plays the role of the offset i - j of ordinary RoPE: it is antisymmetric, it is
zero on the diagonal, and on the chain 0 -> 1 -> ... -> k-1 it is exactly i - j. Pairs with no
directed path either way are flagged *unrelated* instead of being given a fake distance.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["shortest_path_hops", "causal_distance"]


@torch.no_grad()
def shortest_path_hops(A: Tensor, eps: float = 0.0) -> Tensor:
    """Directed shortest-path hop counts (Floyd–Warshall, vectorised over k).

    Args:
        A: ``(k, k)`` weighted adjacency; ``A[a, b] > eps`` is an edge ``a -> b``.
        eps: edges with weight ``<= eps`` are treated as absent.

    Returns:
        ``(k, k)`` float32 tensor ``P`` with ``P[a, b]`` the number of hops on the shortest
        directed path ``a -> b``, ``P[a, a] = 0`` and ``+inf`` where ``b`` is unreachable.
    """
    if A.dim() != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"A must be a square (k, k) matrix, got shape {tuple(A.shape)}")
    k = A.shape[0]
    edge = A.detach() > eps  # (k, k)
    inf = torch.full((), float("inf"), device=A.device)
    P = torch.where(edge, torch.ones((), device=A.device), inf)  # (k, k)
    # A self-loop is not a path of length one back to oneself: distance to self is 0.
    P.fill_diagonal_(0.0)
    for m in range(k):
        # Relax every pair through intermediate node m at once.
        P = torch.minimum(P, P[:, m : m + 1] + P[m : m + 1, :])  # (k, k)
    return P


@torch.no_grad()
def causal_distance(A: Tensor, eps: float = 0.0) -> tuple[Tensor, Tensor]:
    """Signed causal distance ``d(i, j)`` and the mask of unrelated pairs.

    ``d(i, j) = +P[j->i]`` if j is an ancestor of i only, ``-P[i->j]`` if i is an ancestor of j
    only, ``P[j->i] - P[i->j]`` if both (a cycle) and ``0`` if neither, in which case the pair
    is marked unrelated. No gradient flows through it: it only indexes rotation angles.

    Args:
        A: ``(k, k)`` weighted adjacency; ``A[a, b] > eps`` is an edge ``a -> b``.
        eps: edges with weight ``<= eps`` are treated as absent.

    Returns:
        ``dist``: ``(k, k)`` float32, antisymmetric, ``dist[i, i] = 0``.
        ``unrelated``: ``(k, k)`` bool, True where neither node reaches the other (never on
        the diagonal).
    """
    P = shortest_path_hops(A, eps)  # (k, k), P[a, b] = hops a -> b
    P_in = P.T  # (k, k), P_in[i, j] = hops j -> i
    j_reaches_i = torch.isfinite(P_in)  # (k, k)
    i_reaches_j = torch.isfinite(P)  # (k, k)
    zero = torch.zeros((), device=A.device)
    # Summing both signed parts covers the one-way cases and the cycle case in one expression.
    dist = torch.where(j_reaches_i, P_in, zero) - torch.where(i_reaches_j, P, zero)  # (k, k)
    unrelated = ~(j_reaches_i | i_reaches_j)  # (k, k)
    return dist.to(torch.float32), unrelated
