"""Which pairs of variable nodes may be joined at all: the skeleton found by the PC algorithm
(causal-learn) on the training rows, the prior of phase 2's structure score
(``phase2.skeleton: pc``; design §8.9).

Shape alphabet: n rows, c columns (features, then t, then y), k nodes.

A hybrid of the two families of structure learners, as max-min hill climbing is: conditional
independence tests decide which pairs are adjacent, a score orients and weighs the edges. On
the structure bench's tuning graphs the score alone found about half of PC's F1; the tests are
causal-learn's (not rewritten here), the score is the network's own (``csna.nn.structure``).
"""

from __future__ import annotations

import contextlib
import io

import numpy as np

from .config import ConfigError

PC_ALPHA = 0.05  # causal-learn's default level of the Fisher-z tests
PC_MAX_K = 3  # largest conditioning set: bounds the cost on wide tables
PC_ROWS = 5000  # training rows the tests read


def node_values(values: np.ndarray, col_node: np.ndarray, k: int) -> np.ndarray:
    """(n, k) one value per node (Fisher-z tests need one number per variable): its column; for
    a one-hot variable the index of its category (an ordinal code); for a group of variables
    (``csna.node_groups``) the first principal component of their columns."""
    from .node_groups import variable_values

    out = np.zeros((values.shape[0], k))
    for j in range(k):
        cols = np.flatnonzero(col_node == j)
        block = values[:, cols]
        if len(cols) > 1 and np.isin(block, (0.0, 1.0)).all() and (block.sum(1) <= 1).all():
            out[:, j] = block.argmax(1)
        elif len(cols):
            out[:, j] = variable_values(block, np.zeros(len(cols), dtype=np.int64), 1)[:, 0]
    return out


def pc_allowed(nodes: np.ndarray, treatment: int, outcome: int) -> np.ndarray:
    """(k, k) bool: ``allowed[i, j]`` where PC leaves i → j possible (a directed edge i → j, or an
    undirected i — j). Constant columns are isolated; the outcome never points at the treatment.

    Raises:
        ConfigError: when causal-learn is not installed.
    """
    try:
        from causallearn.search.ConstraintBased.PC import pc
    except ImportError:
        raise ConfigError("phase2.skeleton = pc needs causal-learn: pip install 'csna[graph]' "
                          "(or --set phase2.skeleton=none)") from None
    k = nodes.shape[1]
    allowed = np.zeros((k, k), dtype=bool)
    live = np.flatnonzero(nodes.std(0) > 1e-9)
    if len(live) < 2:
        return allowed
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        g = pc(nodes[:, live], alpha=PC_ALPHA, indep_test="fisherz", show_progress=False, max_k=PC_MAX_K).G.graph
    # causal-learn: g[b, a] = 1 and g[a, b] = -1 is a → b; -1 both ways is a — b.
    sub = ((g.T == 1) & (g == -1)) | ((g == -1) & (g.T == -1))
    allowed[np.ix_(live, live)] = sub
    if allowed[outcome, treatment] or allowed[treatment, outcome]:
        allowed[treatment, outcome] = True
    allowed[outcome, treatment] = False
    np.fill_diagonal(allowed, False)
    return allowed


def apply_skeleton_prior(model, rows) -> None:
    """Forbid in ``model``'s graph the edges between variables that PC finds unconnected on
    ``rows`` (a ``Split`` of up to ``PC_ROWS`` training rows)."""
    import torch

    with torch.no_grad():
        values = torch.cat([rows.x, rows.t.unsqueeze(1).to(rows.x.dtype), rows.y.unsqueeze(1).to(rows.x.dtype)], 1)
        nodes = node_values(values.cpu().double().numpy(), model.structure.col_node.cpu().numpy(), model.k)
        allowed = torch.as_tensor(pc_allowed(nodes, model.k - 2, model.k - 1), device=values.device)
        mask = model.lattice.adjacency.mask
        mask.mul_(allowed.to(mask.dtype))
