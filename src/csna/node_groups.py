"""At most ``model.max_variable_nodes`` variable nodes: on a wide table, correlated variables
share a node (``model.nodes: variables``; issue 19, item 4).

Shape alphabet: n rows, p feature columns, m input variables, g groups (g ≤ cap).

One node per variable makes attention, causal RoPE and the structure score grow with m², and
the PC skeleton faster still: at m = 100 a training step cost 12× a step at m = 25 and the
skeleton took minutes. So a table with more variables than the cap is coarsened before the
model is built: variables are clustered by the absolute Spearman correlation of their values
on the training rows (complete linkage, scipy's hierarchical clustering) and each cluster
becomes one node, which embeds all its variables' columns (``nn.variables``) and is scored as
one block of columns (``nn.structure``). The graph is then among groups of variables: an edge
says that some variable of one group acts on some variable of the other. Variables that move
together share a node, so the graph loses least where it could tell them apart least.

Grouping is chosen on the training rows only and travels with the run (``Prepared``), so
``csna predict`` builds the same nodes.
"""

from __future__ import annotations

import numpy as np

MAX_GROUP_ROWS = 5000  # training rows the correlations read: ample for a rank correlation
NAME_MEMBERS = 2  # a group of at most this many variables is named by all of them


def variable_values(features: np.ndarray, col_node: np.ndarray, m: int) -> np.ndarray:
    """(n, m) one number per variable: its column, or for a variable of several columns
    (a categorical's one-hot columns) the first principal component of them."""
    from sklearn.decomposition import PCA

    out = np.zeros((features.shape[0], m))
    for j in range(m):
        cols = np.flatnonzero(col_node == j)
        block = features[:, cols]
        if len(cols) == 1 or block.std(0).max() < 1e-12:
            out[:, j] = block[:, 0]
        else:
            out[:, j] = PCA(1, svd_solver="full").fit_transform(block)[:, 0]
    return out


def group_variables(features: np.ndarray, col_node: list[int], m: int, cap: int, seed: int = 0) -> list[list[int]]:
    """Clusters of the m variables, at most ``cap`` of them, by the absolute Spearman correlation
    of the variables' values on the rows of ``features`` (n, p).

    Returns: the variable indices of each group, every variable in exactly one group, groups
    ordered by their first variable and each sorted; one group per variable when m ≤ cap.
    """
    if cap < 1:
        raise ValueError(f"cap must be at least 1, got {cap}")
    if m <= cap:
        return [[j] for j in range(m)]
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform
    from scipy.stats import spearmanr

    rows = np.arange(features.shape[0])
    if len(rows) > MAX_GROUP_ROWS:
        rows = np.sort(np.random.default_rng(seed).choice(len(rows), MAX_GROUP_ROWS, replace=False))
    vals = variable_values(features[rows], np.asarray(col_node), m)  # (n, m)
    live = vals.std(0) > 1e-12
    rho = np.zeros((m, m))
    if live.sum() >= 2:
        r = spearmanr(vals[:, live]).statistic
        rho[np.ix_(live, live)] = np.abs(np.nan_to_num(np.atleast_2d(r)))
    dist = 1.0 - np.clip(rho, 0.0, 1.0)
    np.fill_diagonal(dist, 0.0)
    labels = fcluster(linkage(squareform(dist, checks=False), method="complete"), t=cap, criterion="maxclust")
    groups = [sorted(np.flatnonzero(labels == c).tolist()) for c in np.unique(labels)]
    return sorted(groups, key=lambda g: g[0])


def group_name(names: list[str]) -> str:
    """A node's name, short enough for the figures: its variable's name, two names joined by '+',
    or the first name and how many more ('age (+6)'); ``graph.json`` lists every member."""
    if len(names) <= NAME_MEMBERS:
        return "+".join(names)
    return f"{names[0]} (+{len(names) - 1})"


def grouped_nodes(names: list[str], col_node: list[int], groups: list[list[int]]
                  ) -> tuple[list[str], list[int], list[list[str]]]:
    """(node names, node of every feature column, member names of every node) once the m
    variables are merged into ``groups``."""
    node_of = np.empty(len(names), dtype=np.int64)
    for g, members in enumerate(groups):
        node_of[members] = g
    members = [[names[j] for j in g] for g in groups]
    return [group_name(mb) for mb in members], [int(node_of[c]) for c in col_node], members
