"""The structure score: how well each variable is predicted from its parents in the learned
graph, and the projection of the graph onto a DAG (``model.nodes: variables``; design §8.9).

Shape alphabet: B batch, k nodes, h hidden width, c columns (the p feature columns, then t, y).

With variable nodes the graph is learned the way score-based structure learners learn it
(NOTEARS, DAGMA): a least-squares score of every column given its parents, an L1 penalty on the
edges and an acyclicity penalty h(A) whose weight grows through phase 2, then thresholding,
among the pairs the PC algorithm leaves adjacent (``csna.skeleton``). It is
written here rather than taken from the ``dagma`` package because the graph must be the
network's own parameter ``A``, trained with the rest and read by the lattice and by causal RoPE;
``dagma`` itself is the reference it is benchmarked against (``csna bench structure``).

The score reads the observed values of every variable, the treatment and the outcome included,
never the outcome pathway's tokens (where T and Y are constant slots).
"""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import torch
from torch import nn

# The score's own MLPs must fit within phase 2 before the graph can be read from them: they learn
# at this multiple of the phase's learning rate (on tuning graphs, F1 rose with the rate up to
# about 5e-3).
STRUCTURE_LR_SCALE = 10.0


class StructureScore(nn.Module):
    """Predict every column from its node's parents: a gated NOTEARS-MLP.

    Column c of node j is predicted by a one-hidden-layer MLP of its own (one per node) whose
    inputs are all columns, each multiplied by the edge weight A[node(source), j]; the zero
    diagonal of A keeps a node's own columns out. An L1 on A then decides which inputs a node
    may read, as DAGMA's L1 on its first-layer weights does. Only the optimizer's weight decay
    stops the weights from growing to make up for a shrinking A, so the score separates edges
    from non-edges weakly on its own; the PC skeleton (``csna.skeleton``) decides adjacency and
    the score orients and weighs the edges it allows.

    Args:
        col_node: (c,) node index of every column (features, then t, then y).
        k: nodes.
        hidden: hidden width per node.
    """

    def __init__(self, col_node: list[int], k: int, hidden: int = 16):
        super().__init__()
        self.k, self.c, self.hidden = k, len(col_node), hidden
        self.register_buffer("col_node", torch.as_tensor(col_node, dtype=torch.long))
        self.w1 = nn.Parameter(torch.empty(k, self.c, hidden))
        self.b1 = nn.Parameter(torch.zeros(k, hidden))
        self.readout = nn.Parameter(torch.empty(self.c, hidden))
        self.readout_bias = nn.Parameter(torch.zeros(self.c))
        nn.init.normal_(self.w1, 0.0, 1.0 / math.sqrt(self.c))
        nn.init.normal_(self.readout, 0.0, 1.0 / math.sqrt(hidden))

    def predict(self, values: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Args: values (B, c) every column; a (k, k), ``a[i, j]`` the weight of i → j.
        Returns: (B, c) every column predicted from its node's parents."""
        gate = a[self.col_node]  # (c, k): weight of the edge from column c's node into node j
        # Gate the first layer's weights, then one matmul: (B, c) @ (c, k·h). Never materialises
        # a (B, c, k, h) tensor, so p = 300 columns stay cheap.
        w = (gate.t().unsqueeze(-1) * self.w1).permute(1, 0, 2).reshape(self.c, self.k * self.hidden)
        hid = (values @ w).view(-1, self.k, self.hidden) + self.b1  # (B, k, h)
        hid = nn.functional.gelu(hid)
        return (hid[:, self.col_node, :] * self.readout).sum(-1) + self.readout_bias  # (B, c)

    def forward(self, values: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Mean squared error over rows and columns (the columns are standardised or 0/1, so
        each variable weighs about the same, as in DAGMA's least-squares score)."""
        return (self.predict(values, a) - values).pow(2).mean()


def dag_weight(progress: float, start: float, end: float) -> float:
    """Weight of h(A) at ``progress`` ∈ [0, 1] of phase 2: geometric from ``start`` to ``end``.

    A penalty method with a growing weight, like the central path of DAGMA (whose μ shrinks the
    score instead): early on the score shapes the graph, at the end cycles cost more than any fit.
    """
    progress = min(max(progress, 0.0), 1.0)
    if start <= 0:
        return end * progress
    return start * (end / start) ** progress


def project_to_dag(a: np.ndarray, threshold: float) -> np.ndarray:
    """Keep the edges of ``a`` (k, k) above ``threshold``, then remove the weakest edge of any
    remaining cycle until none is left. Returns the (k, k) weighted DAG."""
    out = np.where(a > threshold, a, 0.0)
    np.fill_diagonal(out, 0.0)
    g = nx.DiGraph()
    g.add_nodes_from(range(len(out)))
    g.add_edges_from((int(i), int(j)) for i, j in zip(*np.nonzero(out)))
    while True:
        try:
            cycle = nx.find_cycle(g)
        except nx.NetworkXNoCycle:
            return out
        i, j = min(((u, v) for u, v in cycle), key=lambda e: out[e[0], e[1]])
        out[i, j] = 0.0
        g.remove_edge(i, j)


def acyclicity(a: np.ndarray) -> float:
    """h(A) = tr(exp(A ∘ A)) − k (NOTEARS): 0 exactly for a DAG."""
    from scipy.linalg import expm

    return float(np.trace(expm(a * a)) - len(a))


def adjustment_set(dag: np.ndarray, t: int, y: int) -> list[int] | None:
    """The optimal adjustment set O(t, y) of a DAG (Henckel, Perković & Maathuis 2022): the
    parents of the causal nodes (the nodes on a directed path t → … → y, t excluded), minus t
    and every descendant of a causal node. It holds the confounders that act on y and the
    precision variables, never an instrument (a cause of t alone) nor a post-treatment variable.

    Returns None when the graph has no directed path from t to y (then it implies no effect,
    and nothing can be adjusted for on its word).
    """
    g = nx.DiGraph(np.asarray(dag) != 0)
    if y not in nx.descendants(g, t):
        return None
    causal = (nx.descendants(g, t) & (nx.ancestors(g, y) | {y}))
    forbidden = {t} | set().union(*(nx.descendants(g, c) | {c} for c in causal))
    parents = set().union(*(set(g.predecessors(c)) for c in causal))
    return sorted(parents - forbidden)
