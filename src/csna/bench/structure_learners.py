"""The structure learners of ``csna bench structure``: csna's own graph (variable nodes), DAGMA
and PC, each given the same standardised table and returning directed (and, for PC, undirected)
edges.

Shape alphabet: n rows, q variables (the covariates, then T, then Y).
"""

from __future__ import annotations

import contextlib
import io
import time

import numpy as np
import pandas as pd

LEARNERS = ("csna", "dagma", "pc")
DAGMA_THRESHOLD = 0.3  # the package's default w_threshold
DAGMA_MLP_ITERS = (5000, 10000)  # warm-up and final iterations of DagmaNonlinear (package: 50,000 and 80,000)


def learn_dagma(data: np.ndarray, mechanism: str, seed: int) -> tuple[np.ndarray, None]:
    """DAGMA (Bello et al. 2022): the linear least-squares model on linear SCMs, its MLP model on
    nonlinear ones, with the package's defaults except the MLP's iteration budget.

    The MLP model's default budget (3 × 50,000 + 80,000 Adam steps) takes about 13 minutes per
    10-variable graph on one CPU core; here it gets ``DAGMA_MLP_ITERS`` (warm-up, final), about
    a ninth of that, which ``results.md`` states beside its fit time.
    """
    import torch
    from dagma.linear import DagmaLinear
    from dagma.nonlinear import DagmaMLP, DagmaNonlinear

    if mechanism == "linear":
        with contextlib.redirect_stderr(io.StringIO()):
            w = DagmaLinear(loss_type="l2").fit(data, lambda1=0.02, w_threshold=DAGMA_THRESHOLD)
        return (np.abs(w) > 0).astype(int), None
    torch.manual_seed(seed)
    q = data.shape[1]
    eq = DagmaMLP(dims=[q, 10, 1], bias=True, dtype=torch.double)
    warm, final = DAGMA_MLP_ITERS
    with contextlib.redirect_stderr(io.StringIO()):  # its progress bar
        w = DagmaNonlinear(eq, dtype=torch.double).fit(data, lambda1=0.02, lambda2=0.005,
                                                       w_threshold=DAGMA_THRESHOLD, warm_iter=warm, max_iter=final)
    return (np.abs(w) > 0).astype(int), None


def learn_pc(data: np.ndarray, mechanism: str, seed: int, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """PC (causal-learn) with Fisher-z tests at ``alpha``: a CPDAG, split into its directed and
    its undirected edges."""
    from causallearn.search.ConstraintBased.PC import pc

    g = pc(data, alpha=alpha, indep_test="fisherz", show_progress=False).G.graph  # (q, q)
    # causal-learn: g[j, i] = 1 and g[i, j] = -1 is i → j; -1 both ways is i — j.
    directed = ((g.T == 1) & (g == -1)).astype(int)
    undirected = ((g == -1) & (g.T == -1)).astype(int)
    return directed, undirected


def learn_csna(data: np.ndarray, mechanism: str, seed: int, overrides: tuple[str, ...] = ()
               ) -> tuple[np.ndarray, None]:
    """csna with ``model.nodes: variables``, one model, phases 1 and 2 (the graph is fixed at
    the end of phase 2): its DAG among the covariates, T and Y."""
    from ..config import load_config
    from ..data import CausalData
    from ..ensemble import train_run

    q = data.shape[1]
    X = pd.DataFrame(data[:, :q - 2], columns=[f"x{i}" for i in range(q - 2)])
    t = (data[:, q - 2] > data[:, q - 2].mean()).astype(np.int64)
    cd = CausalData(X, t, data[:, q - 1].astype(np.float32), None, "continuous", 2, "structure-scm")
    # One node per variable whatever the width: the graph is scored against the SCM's variables.
    sets = ["model.nodes=variables", "model.max_variable_nodes=0", "train.ensemble=1", "phase3.epochs=0",
            "phase4.epochs=0", "train.effect_shrink=none", "log.tensorboard=false", f"train.seed={seed}", *overrides]
    cfg = load_config(None, sets)
    run = train_run(cfg, data=cd)
    a = run.model.lattice.adjacency().detach().cpu().numpy()  # (q, q), nodes in the table's order
    return (a > 0).astype(int), None


def learn(name: str, data: np.ndarray, mechanism: str, seed: int, overrides: tuple[str, ...] = ()
          ) -> tuple[np.ndarray, np.ndarray | None, float]:
    """(directed, undirected or None, fit seconds) of learner ``name``."""
    start = time.perf_counter()
    if name == "csna":
        d, u = learn_csna(data, mechanism, seed, overrides)
    elif name == "dagma":
        d, u = learn_dagma(data, mechanism, seed)
    elif name == "pc":
        d, u = learn_pc(data, mechanism, seed)
    else:
        raise ValueError(f"unknown structure learner {name!r}; valid: {', '.join(LEARNERS)}")
    return d, u, time.perf_counter() - start
