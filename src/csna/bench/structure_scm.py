"""SCMs with a known DAG over observed variables, for ``csna bench structure``, and the edge
metrics that score a learned graph against it.

Shape alphabet: n rows, q variables (the covariates, then T, then Y).

A graph is Erdős–Rényi or scale-free (Barabási–Albert, as in the NOTEARS and DAGMA benchmarks),
expected degree 2 (about as many edges as nodes), its nodes in a random causal order. One node with a parent becomes the
treatment T (binary, logistic in its parents), one later node the outcome Y with an edge T → Y;
every other node is a covariate. Mechanisms are linear (edge weights ±[0.5, 2]) or nonlinear
(a random one-hidden-layer sigmoid MLP of the parents, DAGMA's "mlp"), with N(0, 1) noise. Every
estimator is given the same standardised table.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np

SETTINGS = {
    # name: (graph kind, variables, mechanism, rows)
    "er-10-linear": ("er", 10, "linear", 1000),
    "er-10-nonlinear": ("er", 10, "nonlinear", 1000),
    "sf-10-nonlinear": ("sf", 10, "nonlinear", 1000),
    "er-20-linear": ("er", 20, "linear", 2000),
    "er-20-nonlinear": ("er", 20, "nonlinear", 2000),
    "sf-20-nonlinear": ("sf", 20, "nonlinear", 2000),
    "er-50-nonlinear": ("er", 50, "nonlinear", 2000),
}
QUICK = ("er-10-linear", "er-10-nonlinear", "sf-10-nonlinear")


@dataclass
class StructureSCM:
    """One sampled SCM: its standardised data and the true DAG."""

    data: np.ndarray  # (n, q) standardised; T is column q - 2 (0/1 before standardising), Y column q - 1
    treatment: np.ndarray  # (n,) 0/1
    dag: np.ndarray  # (q, q) 0/1, dag[i, j] = 1 for i → j
    names: list[str]
    y0: np.ndarray  # (n,) Y under do(T = 0), same noise, on the standardised outcome's scale
    y1: np.ndarray  # (n,) Y under do(T = 1)


def random_dag(kind: str, q: int, rng: np.random.Generator, degree: float = 2.0) -> np.ndarray:
    """(q, q) 0/1 upper-triangular DAG in causal order 0..q-1 (the caller permutes it)."""
    if kind == "er":
        p = min(1.0, degree / (q - 1))
        dag = np.triu((rng.random((q, q)) < p).astype(float), k=1)
    elif kind == "sf":
        g = nx.barabasi_albert_graph(q, max(1, int(round(degree / 2))), seed=int(rng.integers(2**31)))
        dag = np.zeros((q, q))
        for i, j in g.edges():  # the older node (a hub) causes the newer one
            dag[min(i, j), max(i, j)] = 1.0
    else:
        raise ValueError(f"graph kind must be 'er' or 'sf', got {kind!r}")
    return dag


class _Mechanism:
    """The noiseless value of a node from its parents' values (n, k): drawn once, so it can be
    evaluated again under an intervention."""

    def __init__(self, k: int, kind: str, rng: np.random.Generator, hidden: int = 100):
        self.k, self.kind = k, kind
        if kind == "linear":
            self.w = rng.uniform(0.5, 2.0, k) * rng.choice([-1.0, 1.0], k)
        elif k:
            self.w1 = rng.uniform(0.5, 2.0, (k, hidden)) * rng.choice([-1.0, 1.0], (k, hidden))
            self.w2 = rng.uniform(0.5, 2.0, hidden) * rng.choice([-1.0, 1.0], hidden)

    def __call__(self, parents: np.ndarray) -> np.ndarray:
        if self.k == 0:
            return np.zeros(parents.shape[0])
        if self.kind == "linear":
            return parents @ self.w
        return (1.0 / (1.0 + np.exp(-parents @ self.w1))) @ self.w2


def sample_scm(setting: str, seed: int) -> StructureSCM:
    """Draw the graph, place T and Y in it, and sample ``rows`` units (standardised)."""
    kind, q, mech, n = SETTINGS[setting]
    rng = np.random.default_rng(seed)
    dag = random_dag(kind, q, rng)
    # T: a node with a parent early in the order; Y: a later node, with T → Y added.
    with_parent = [j for j in range(1, q - 1) if dag[:, j].any()] or [1]
    t = int(rng.choice([j for j in with_parent if j <= q // 2] or with_parent))
    y = int(rng.integers(max(t + 1, (2 * q) // 3), q))
    dag[t, y] = 1.0
    values = np.zeros((n, q))
    noise = rng.normal(size=(n, q))
    mechanisms = {}
    for j in range(q):
        pa = np.flatnonzero(dag[:, j])
        mechanisms[j] = _Mechanism(len(pa), mech, rng)
        f = mechanisms[j](values[:, pa])
        if j == t:
            s = (f - f.mean()) / (f.std() + 1e-9)  # a standardised score, so overlap stays usable
            values[:, j] = (rng.random(n) < 1.0 / (1.0 + np.exp(-1.5 * s))).astype(float)
        else:
            values[:, j] = f + noise[:, j]
    # The potential outcomes: T set to 0 and to 1, its descendants recomputed with the same noise.
    potential = []
    for arm in (0.0, 1.0):
        v = values.copy()
        v[:, t] = arm
        for j in range(t + 1, q):
            pa = np.flatnonzero(dag[:, j])
            if pa.size:
                v[:, j] = mechanisms[j](v[:, pa]) + noise[:, j]
        potential.append(v[:, y])
    covariates = [j for j in range(q) if j not in (t, y)]
    # Columns: the covariates in a random order, then T, then Y; the DAG relabelled to match.
    order = list(rng.permutation(covariates)) + [t, y]
    dag = dag[np.ix_(order, order)]
    data = values[:, order]
    treatment = data[:, q - 2].copy()
    mean, std = data.mean(0), data.std(0)
    data = (data - mean) / std
    names = [f"x{i}" for i in range(q - 2)] + ["treatment", "outcome"]
    # On the standardised outcome's scale, as the learners see it.
    y0, y1 = ((po - mean[q - 1]) / std[q - 1] for po in potential)
    return StructureSCM(data, treatment, dag, names, y0, y1)


def edge_scores(dag: np.ndarray, directed: np.ndarray, undirected: np.ndarray | None = None) -> dict[str, float]:
    """Precision, recall, F1 and SHD of a learned graph against the true DAG.

    Args:
        dag: (q, q) 0/1 truth, dag[i, j] = 1 for i → j.
        directed: (q, q) 0/1 learned directed edges.
        undirected: (q, q) symmetric 0/1 edges left undirected (a CPDAG's, from PC), or None.

    An undirected edge counts as right when the truth has it in either direction (the
    convention of NOTEARS' ``count_accuracy`` for CPDAGs). SHD counts missing, extra and
    reversed edges, a reversed edge once.
    """
    dag = (np.asarray(dag) != 0).astype(int)
    d = (np.asarray(directed) != 0).astype(int)
    np.fill_diagonal(d, 0)
    u = np.zeros_like(d) if undirected is None else np.triu((np.asarray(undirected) != 0).astype(int), 1)
    skel_true = np.triu(dag + dag.T, 1) > 0  # (q, q) upper: pairs with an edge
    right_dir = (d * dag).sum()
    reversed_ = (d * dag.T).sum()
    undirected_right = (u * skel_true).sum()
    predicted = d.sum() + u.sum()
    tp = right_dir + undirected_right
    true_edges = dag.sum()
    precision = tp / predicted if predicted else 0.0
    recall = tp / true_edges if true_edges else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    skel_pred = np.triu(d + d.T + u + u.T, 1) > 0
    extra = int((skel_pred & ~skel_true).sum())
    missing = int((skel_true & ~skel_pred).sum())
    # A pair present in both skeletons is wrong when its only learned direction is the reverse.
    both = skel_pred & skel_true
    wrong = 0
    for i, j in zip(*np.nonzero(both)):
        if u[i, j]:
            continue
        right = (d[i, j] and dag[i, j]) or (d[j, i] and dag[j, i])
        wrong += 0 if right else 1
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1),
            "shd": int(extra + missing + wrong), "edges_true": int(true_edges), "edges_found": int(predicted),
            "reversed": int(reversed_)}


def _cl_graph(directed: np.ndarray, undirected: np.ndarray | None, as_cpdag: bool):
    """A causal-learn graph of (directed, undirected) 0/1 edges. With ``as_cpdag`` and no
    undirected array (a learner that outputs a DAG), the CPDAG of that DAG (causal-learn's
    ``dag2cpdag``) when it is acyclic; a CPDAG learner's output (PC's) is taken as it is."""
    from causallearn.graph.Dag import Dag
    from causallearn.graph.Edge import Edge
    from causallearn.graph.Endpoint import Endpoint
    from causallearn.graph.GeneralGraph import GeneralGraph
    from causallearn.graph.GraphNode import GraphNode
    from causallearn.utils.DAG2CPDAG import dag2cpdag

    d = (np.asarray(directed) != 0).astype(int)
    np.fill_diagonal(d, 0)
    nodes = [GraphNode(f"X{i}") for i in range(len(d))]
    acyclic = nx.is_directed_acyclic_graph(nx.from_numpy_array(d, create_using=nx.DiGraph))
    if as_cpdag and undirected is None and acyclic:
        dag = Dag(nodes)
        for i, j in zip(*np.nonzero(d)):
            dag.add_directed_edge(nodes[i], nodes[j])
        return dag2cpdag(dag)
    g = GeneralGraph(nodes)
    for i, j in zip(*np.nonzero(d)):
        g.add_directed_edge(nodes[i], nodes[j])
    if undirected is not None:
        for i, j in zip(*np.nonzero(np.triu(np.asarray(undirected) != 0, 1))):
            g.add_edge(Edge(nodes[i], nodes[j], Endpoint.TAIL, Endpoint.TAIL))
    return g


def cpdag_shd(dag: np.ndarray, directed: np.ndarray, undirected: np.ndarray | None = None) -> int:
    """SHD between the true DAG's CPDAG and the learned graph's, counted by causal-learn's ``SHD``:
    a pair of variables counts once when its edge marks differ (missing, extra, reversed, or
    directed on one side and undirected on the other). A learned DAG is first reduced to its
    CPDAG, so a learner is judged on what observational data can identify: PC's undirected edge
    is wrong where the truth's CPDAG orients it, and a DAG learner is not charged for choosing
    one direction of a reversible edge. A learned graph with a cycle is compared as it is."""
    from causallearn.graph.SHD import SHD

    return int(SHD(_cl_graph(dag, None, True), _cl_graph(directed, undirected, True)).get_shd())
