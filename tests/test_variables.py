"""Variable nodes (model.nodes = variables): the tokeniser, the structure score, the DAG
projection, and a whole run that leaves a named, acyclic graph behind."""

import json

import networkx as nx
import numpy as np
import pandas as pd
import pytest
import torch

from csna.config import ModelConfig, load_config
from csna.data import CausalData
from csna.ensemble import train_run
from csna.graph_export import write_graph
from csna.model import CSNAModel
from csna.nn.structure import StructureScore, acyclicity, dag_weight, project_to_dag
from csna.nn.variables import VariableTokenizer, column_nodes
from csna.skeleton import node_values, pc_allowed


def test_column_nodes_groups_one_hot_columns():
    specs = [{"name": "age", "kind": "standard"}, {"name": "site", "kind": "onehot", "categories": ["a", "b", "c"]},
             {"name": "sex", "kind": "binary"}]
    assert column_nodes(specs) == (["age", "site", "sex"], [0, 1, 1, 1, 2])


def test_tokenizer_node_reads_only_its_own_columns():
    torch.manual_seed(0)
    tok = VariableTokenizer([0, 1, 1, 2], m=3, d=8)
    x = torch.randn(5, 4, requires_grad=True)
    z = tok(x)  # (5, 5, 8)
    assert z.shape == (5, 5, 8)
    # The Jacobian of node j with respect to the columns: non-zero exactly on j's own columns.
    for j, cols in ((0, {0}), (1, {1, 2}), (2, {3})):
        (g,) = torch.autograd.grad(z[:, j].sum(), x, retain_graph=True)
        nonzero = {c for c in range(4) if g[:, c].abs().sum() > 0}
        assert nonzero == cols
    # The treatment and outcome slots never read x.
    (g,) = torch.autograd.grad(z[:, 3:].sum(), x, allow_unused=True)
    assert g is None or float(g.abs().sum()) == 0.0


def test_structure_score_reads_parents_only():
    """Column predictions change with a source column exactly when the graph has its edge."""
    torch.manual_seed(0)
    k = 4
    score = StructureScore([0, 1, 2, 2, 3], k)  # node 2 owns two columns
    a = torch.zeros(k, k)
    a[0, 2] = 0.7
    a[1, 3] = 0.4
    a[2, 3] = 0.9
    v = torch.randn(6, 5, requires_grad=True)
    pred = score.predict(v, a)  # (6, 5)
    parents = {0: set(), 1: set(), 2: {0}, 3: {0}, 4: {1, 2, 3}}  # column → the columns it may read
    for c, allowed in parents.items():
        (g,) = torch.autograd.grad(pred[:, c].sum(), v, retain_graph=True)
        reads = {s for s in range(5) if g[:, s].abs().sum() > 1e-12}
        assert reads == allowed, (c, reads)


def test_structure_score_matches_a_loop_over_nodes():
    torch.manual_seed(1)
    col_node = [0, 1, 1, 2]
    score = StructureScore(col_node, 3, hidden=5)
    a = torch.rand(3, 3) * (1 - torch.eye(3))
    v = torch.randn(4, 4)
    ref = torch.empty(4, 4)
    for c, j in enumerate(col_node):
        gate = torch.tensor([float(a[col_node[s], j]) for s in range(4)])  # per source column
        hid = torch.nn.functional.gelu((v * gate) @ score.w1[j] + score.b1[j])  # (B, h)
        ref[:, c] = hid @ score.readout[c] + score.readout_bias[c]
    assert torch.allclose(score.predict(v, a), ref, atol=1e-6)


def test_project_to_dag_thresholds_and_breaks_the_weakest_edge_of_each_cycle():
    a = np.array([[0.0, 0.9, 0.05, 0.0],
                  [0.0, 0.0, 0.8, 0.0],
                  [0.4, 0.0, 0.0, 0.6],
                  [0.0, 0.0, 0.0, 0.0]])
    dag = project_to_dag(a, 0.1)
    assert dag[0, 2] == 0.0  # below the threshold
    assert dag[2, 0] == 0.0  # the weakest edge of the cycle 0 → 1 → 2 → 0
    assert dag[0, 1] == 0.9 and dag[1, 2] == 0.8 and dag[2, 3] == 0.6
    assert nx.is_directed_acyclic_graph(nx.DiGraph(dag))
    assert acyclicity(dag) == pytest.approx(0.0, abs=1e-12)
    # A random dense matrix always comes out acyclic.
    rng = np.random.default_rng(0)
    dense = rng.random((12, 12))
    assert acyclicity(project_to_dag(dense, 0.2)) < 1e-6


def test_acyclicity_against_a_closed_form():
    # A 2-cycle with weights a, b: tr(exp(W)) − 2 with W = [[0, a²], [b², 0]] is 2 cosh(ab) − 2.
    a, b = 0.7, 0.5
    w = np.array([[0.0, a], [b, 0.0]])
    assert acyclicity(w) == pytest.approx(2 * np.cosh(a * b) - 2, rel=1e-10)


def test_dag_weight_schedule_is_geometric():
    assert dag_weight(0.0, 0.01, 10.0) == pytest.approx(0.01)
    assert dag_weight(1.0, 0.01, 10.0) == pytest.approx(10.0)
    assert dag_weight(0.5, 0.01, 10.0) == pytest.approx(np.sqrt(0.01 * 10.0))
    assert dag_weight(2.0, 0.01, 10.0) == pytest.approx(10.0)


def test_variable_model_needs_the_column_nodes():
    with pytest.raises(ValueError, match="node of each"):
        CSNAModel(3, 2, 0, ModelConfig(nodes="variables", d=16, heads=2))


def _chain_table(n=800, seed=0):
    """x0 → x1 → treatment → outcome, x2 irrelevant; a strong nonlinear chain."""
    rng = np.random.default_rng(seed)
    x0 = rng.normal(size=n)
    x1 = np.tanh(2 * x0) * 2 + 0.3 * rng.normal(size=n)
    t = (rng.random(n) < 1 / (1 + np.exp(-2 * x1))).astype(np.int64)
    y = 3 * t + 0.3 * rng.normal(size=n)
    X = pd.DataFrame({"x0": x0, "x1": x1, "x2": rng.normal(size=n)})
    return CausalData(X, t, y.astype(np.float32), None, "continuous", 2, "chain")


def test_a_run_with_variable_nodes_leaves_a_named_acyclic_graph(tmp_path):
    cfg = load_config(None, ["model.nodes=variables", "train.ensemble=1", "phase1.epochs=3", "phase1.min_epochs=1",
                             "phase2.epochs=30", "phase3.epochs=1", "phase4.epochs=0", "log.tensorboard=false",
                             "train.effect_shrink=none"])
    run = train_run(cfg, data=_chain_table())
    model = run.model
    a = model.lattice.adjacency().detach().numpy()
    assert model.node_names == ["x0", "x1", "x2", "treatment", "outcome"]
    assert bool(model.lattice.adjacency.frozen)
    assert acyclicity(a) < 1e-6
    # The links of the chain are found, in one direction or the other, and the outcome's strongest
    # parent is the treatment, its only cause. (Weaker spurious edges may remain.)
    skeleton = (a + a.T) > 0
    assert skeleton[0, 1] and skeleton[1, 3] and skeleton[3, 4]
    assert a[:, 4].argmax() == 3
    j_path, ml_path = write_graph(model, tmp_path)
    rec = json.loads(j_path.read_text())
    assert rec["names"] == model.node_names and rec["fixed_dag"] and rec["acyclicity"] < 1e-6
    edges = {(e["source"], e["target"]) for e in rec["edges"]}
    assert edges == {(model.node_names[i], model.node_names[j]) for i, j in zip(*np.nonzero(a))}
    g = nx.read_graphml(ml_path)
    assert set(g.edges()) == edges


def test_node_values_codes_a_one_hot_variable_by_its_category():
    values = np.array([[0.5, 0, 1, 0, 1.0], [-1.0, 1, 0, 0, 0.0], [2.0, 0, 0, 1, 1.0]])
    nodes = node_values(values, np.array([0, 1, 1, 1, 2]), 3)
    assert nodes.tolist() == [[0.5, 1, 1.0], [-1.0, 0, 0.0], [2.0, 2, 1.0]]


def test_pc_skeleton_allows_only_adjacent_pairs_and_never_outcome_to_treatment():
    pytest.importorskip("causallearn")
    rng = np.random.default_rng(0)
    n = 4000
    a = rng.normal(size=n)                       # node 0
    b = a + 0.5 * rng.normal(size=n)             # node 1: a → b
    c = rng.normal(size=n)                       # node 2: independent of everything
    t = b + 0.5 * rng.normal(size=n)             # node 3 (treatment): b → t
    y = t + 0.5 * rng.normal(size=n)             # node 4 (outcome): t → y
    allowed = pc_allowed(np.column_stack([a, b, c, t, y]), 3, 4)
    skeleton = allowed | allowed.T
    assert {(i, j) for i, j in zip(*np.nonzero(np.triu(skeleton)))} == {(0, 1), (1, 3), (3, 4)}
    assert allowed[3, 4] and not allowed[4, 3]


def test_variable_nodes_without_causal_learn_fail_at_load_with_one_line(monkeypatch):
    import importlib.util

    from csna.config import ConfigError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "causallearn" else real(name, *a))
    with pytest.raises(ConfigError, match=r"csna\[graph\]"):
        load_config(None, ["model.nodes=variables"])
    load_config(None, ["model.nodes=variables", "phase2.skeleton=none"])  # no PC, no need
