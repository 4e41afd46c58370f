"""Variable nodes: one node per input variable, plus a treatment node and an outcome node
(design §8.9; ``model.nodes: variables``).

Shape alphabet: B batch, p feature columns, m input variables, k = m + 2 nodes, d width.

A variable may own several feature columns (a categorical's one-hot columns are one node), so
each column is embedded by its own vector and the columns of a variable are summed into its
node, as FT-Transformer's feature tokeniser does with one column per token; a small MLP shared
by all nodes then bends each node's line into a curve, so a node carries a nonlinear function of
its own variable and of nothing else.

The last two nodes are the treatment and the outcome. The outcome pathway never sees their
values: they are learned constants, slots that gather what their parents send. Only the
structure score (``csna.nn.structure``) reads the observed t and y, so that the graph can hold
edges into and out of T and Y.
"""

from __future__ import annotations

import torch
from torch import nn


class VariableTokenizer(nn.Module):
    """Feature columns to variable nodes.

    Args:
        col_node: (p,) node index in [0, m) of every feature column.
        m: number of input variables.
        d: node width.
        hidden: width of the shared per-node MLP.
    """

    def __init__(self, col_node: list[int], m: int, d: int, hidden: int = 64):
        super().__init__()
        idx = torch.as_tensor(col_node, dtype=torch.long)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= m):
            raise ValueError(f"col_node must lie in [0, {m}), got {col_node}")
        self.p, self.m, self.k, self.d = idx.numel(), m, m + 2, d
        self.register_buffer("col_node", idx)
        self.weight = nn.Parameter(torch.empty(self.p, d))  # one embedding vector per column
        self.bias = nn.Parameter(torch.empty(m, d))
        self.slots = nn.Parameter(torch.empty(2, d))  # the T and Y nodes in the outcome pathway
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Unit-variance columns give unit-scale tokens (the FT-Transformer initialisation scale).
        for p in (self.weight, self.bias, self.slots):
            nn.init.normal_(p, 0.0, 1.0 / self.d ** 0.5)

    def _bend(self, e: torch.Tensor) -> torch.Tensor:
        return e + self.mlp(e)  # (B, n, d), node by node

    def variables(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, p). Returns: (B, m, d), node j reading only variable j's columns."""
        cols = x.unsqueeze(-1) * self.weight  # (B, p, d)
        e = x.new_zeros(x.shape[0], self.m, self.d).index_add_(1, self.col_node, cols)  # (B, m, d)
        return self._bend(e + self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The outcome pathway's nodes. Args: x (B, p). Returns: z (B, k, d); the T and Y
        nodes are learned constants."""
        z = self.variables(x)  # (B, m, d)
        slots = self.slots.unsqueeze(0).expand(x.shape[0], 2, self.d)  # (B, 2, d)
        return torch.cat([z, slots], dim=1)  # (B, k, d)

    def extra_repr(self) -> str:
        return f"p={self.p}, m={self.m}, k={self.k}, d={self.d}"


def column_nodes(specs: list[dict]) -> tuple[list[str], list[int]]:
    """(variable names, node index of every feature column) from a fitted preprocessor's column
    specs: a one-hot variable's columns share one node."""
    names, col_node = [], []
    for j, s in enumerate(specs):
        names.append(s["name"])
        width = len(s["categories"]) if s["kind"] == "onehot" else 1
        col_node += [j] * width
    return names, col_node
