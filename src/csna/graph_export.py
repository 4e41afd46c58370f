"""The learned graph as files other tools read: ``graph.json`` (names, weighted edges, threshold)
and ``graph.graphml`` (networkx's GraphML writer; Gephi, Cytoscape, igraph and networkx read it).

Written into a run directory by ``csna evaluate`` (and so by ``csna train``), next to the figures.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

from .model import CSNAModel
from .nn.structure import acyclicity, adjustment_set

GRAPH_JSON = "graph.json"
GRAPH_ML = "graph.graphml"


def graph_record(model: CSNAModel) -> dict[str, Any]:
    """Plain values describing the model's graph A: node names, kind of nodes, every edge with
    its weight, whether the graph is the fixed DAG of variable nodes, and h(A)."""
    a = model.lattice.adjacency().detach().cpu().double().numpy()  # (k, k)
    names = list(model.node_names)
    edges = [{"source": names[i], "target": names[j], "weight": round(float(a[i, j]), 6)}
             for i, j in zip(*np.nonzero(a)) if i != j]
    rec = {"nodes": model.cfg.nodes, "names": names, "edges": edges,
           "fixed_dag": bool(model.lattice.adjacency.frozen), "threshold": float(model.cfg.tau),
           "acyclicity": acyclicity(a), "weights_meaning": "A[source, target]: source is a parent of target; exact "
           "zeros (below the soft threshold tau, or pruned at the end of phase 2 with variable nodes) are not edges"}
    if model.node_members is not None and any(len(mb) > 1 for mb in model.node_members):
        # A table wider than model.max_variable_nodes: each node is a group of variables.
        rec["members"] = {name: mb for name, mb in zip(names, model.node_members)}
    if model.structure is not None:
        # What the graph implies for treatment → outcome, and whether the outcome pathway reads only it.
        found = adjustment_set(a, model.k - 2, model.k - 1)
        rec["adjustment_set"] = None if found is None else [names[i] for i in found]
        rec["adjust"] = model.cfg.adjust
        rec["columns_read"] = int(model.adjust_cols.sum())
    return rec


def write_graph(model: CSNAModel, run_dir: str | Path) -> tuple[Path, Path]:
    """Write ``graph.json`` and ``graph.graphml`` into ``run_dir`` atomically."""
    rd = Path(run_dir)
    rec = graph_record(model)
    g = nx.DiGraph()
    g.add_nodes_from(rec["names"])
    for e in rec["edges"]:
        g.add_edge(e["source"], e["target"], weight=e["weight"])
    out = []
    for name, text in ((GRAPH_JSON, json.dumps(rec, indent=2)), (GRAPH_ML, "\n".join(nx.generate_graphml(g)))):
        fd, tmp = tempfile.mkstemp(dir=rd, prefix=f".{name}.")
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")
        os.replace(tmp, rd / name)
        out.append(rd / name)
    return out[0], out[1]
