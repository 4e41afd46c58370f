"""Variable nodes on a table wider than ``model.max_variable_nodes``: correlated variables share
a node (csna.node_groups), and the grouping travels with the run."""

import json

import numpy as np
import pandas as pd
import pytest

from csna.config import ConfigError, load_config
from csna.data import CausalData
from csna.ensemble import train_run
from csna.graph_export import write_graph
from csna.node_groups import group_name, group_variables, grouped_nodes, variable_values
from csna.predict import predict_frame
from csna.rundir import load_run
from csna.skeleton import node_values


def _partition(labels) -> set[frozenset[int]]:
    return {frozenset(np.flatnonzero(labels == c).tolist()) for c in np.unique(labels)}


def test_two_blocks_of_correlated_variables_become_two_nodes():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 600))
    cols = [a + 0.3 * rng.normal(size=600) for _ in range(4)] + [np.exp(b) + 0.1 * rng.normal(size=600)
                                                                for _ in range(3)]
    order = [4, 0, 5, 1, 2, 6, 3]  # the blocks interleaved
    X = np.column_stack([cols[i] for i in order])
    groups = group_variables(X, list(range(7)), 7, cap=2)
    assert sorted(map(sorted, groups)) == sorted([[i for i, o in enumerate(order) if o >= 4],
                                                  [i for i, o in enumerate(order) if o < 4]])


def test_the_groups_are_scikit_learns_complete_linkage_clusters_of_spearman_distances():
    from sklearn.cluster import AgglomerativeClustering

    rng = np.random.default_rng(1)
    X = rng.normal(size=(400, 5)) @ rng.normal(size=(5, 30)) + rng.normal(size=(400, 30))
    groups = group_variables(X, list(range(30)), 30, cap=7)
    dist = 1.0 - pd.DataFrame(X).corr(method="spearman").abs().to_numpy()  # an independent reference
    ref = AgglomerativeClustering(n_clusters=7, metric="precomputed", linkage="complete").fit_predict(dist)
    labels = np.empty(30, dtype=int)
    for g, members in enumerate(groups):
        labels[members] = g
    assert _partition(labels) == _partition(ref)
    assert sorted(j for g in groups for j in g) == list(range(30)) and len(groups) == 7


def test_no_grouping_up_to_the_cap_and_a_one_hot_variable_stays_one_node():
    X = np.random.default_rng(2).normal(size=(50, 4))
    assert group_variables(X, [0, 1, 2, 3], 4, cap=4) == [[0], [1], [2], [3]]
    names, col_node, members = grouped_nodes(["a", "b", "c", "d"], [0, 1, 1, 1, 2, 3], [[0, 2], [1, 3]])
    assert names == ["a+c", "b+d"] and members == [["a", "c"], ["b", "d"]]
    assert col_node == [0, 1, 1, 1, 0, 1]  # b's three one-hot columns share b's node
    assert group_name(["age", "bmi", "sbp", "dbp"]) == "age (+3)"


def test_a_group_node_is_read_by_pc_as_the_first_principal_component_of_its_columns():
    rng = np.random.default_rng(3)
    z = rng.normal(size=500)
    block = np.column_stack([z + 0.2 * rng.normal(size=500), 2 * z + 0.2 * rng.normal(size=500)])
    values = np.column_stack([block, rng.normal(size=500)])
    nodes = node_values(values, np.array([0, 0, 1]), 2)
    centred = block - block.mean(0)
    pc1 = centred @ np.linalg.svd(centred, full_matrices=False)[2][0]  # an independent reference
    assert abs(np.corrcoef(nodes[:, 0], pc1)[0, 1]) > 1 - 1e-9
    assert np.allclose(nodes[:, 1], values[:, 2])
    assert np.allclose(np.abs(variable_values(block, np.array([0, 0]), 1)[:, 0]), np.abs(pc1))


def _wide_table(n=500, blocks=6, per=4, seed=0):
    """``blocks`` latent factors, ``per`` noisy copies of each, a categorical; T and Y from two."""
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(n, blocks))
    X = pd.DataFrame({f"v{b}_{i}": f[:, b] + 0.3 * rng.normal(size=n) for b in range(blocks) for i in range(per)})
    X["colour"] = rng.choice(["red", "green", "blue"], n)
    t = (rng.random(n) < 1 / (1 + np.exp(-f[:, 0]))).astype(np.int64)
    y = f[:, 1] + 2 * t + 0.3 * rng.normal(size=n)
    return CausalData(X, t, y.astype(np.float32), None, "continuous", 2, "wide")


QUICK = ["model.nodes=variables", "train.ensemble=1", "phase1.epochs=1", "phase1.min_epochs=1", "phase2.epochs=2",
         "phase3.epochs=1", "phase4.epochs=0", "log.tensorboard=false", "train.effect_shrink=none"]


def test_a_wide_table_gets_at_most_the_cap_of_nodes_and_predict_rebuilds_them(tmp_path):
    data = _wide_table()
    cfg = load_config(None, QUICK + ["model.max_variable_nodes=7"])
    run = train_run(cfg, data=data, run_dir=tmp_path / "run")
    assert run.model.k == 7 + 2
    members = run.model.node_members
    assert sorted(v for mb in members for v in mb) == sorted(data.X.columns)
    # The factors' noisy copies are what the grouping should find: every group of numeric columns
    # holds copies of one factor only.
    assert all(len({v.split("_")[0] for v in mb}) == 1 for mb in members if "colour" not in mb)
    saved = json.loads((tmp_path / "run" / "preprocess.json").read_text())
    assert len(saved["node_groups"]) == 7
    again = load_run(tmp_path / "run")
    assert again.model.node_names == run.model.node_names and again.model.node_members == members
    X = data.X.iloc[:50]
    pd.testing.assert_frame_equal(predict_frame(again, X), predict_frame(run, X))
    rec = json.loads(write_graph(again.model, tmp_path)[0].read_text())
    assert rec["members"] == dict(zip(run.model.node_names, members))


def test_up_to_the_cap_and_with_no_cap_every_variable_is_its_own_node():
    data = _wide_table(n=300, blocks=3, per=2)  # 7 variables
    for cap in (7, 0):
        run = train_run(load_config(None, QUICK + [f"model.max_variable_nodes={cap}"]), data=data)
        assert run.model.node_names[:7] == list(data.X.columns) and run.model.k == 9
        assert run.prep.node_groups is None


def test_a_negative_cap_is_a_config_error():
    with pytest.raises(ConfigError, match="max_variable_nodes"):
        load_config(None, ["model.max_variable_nodes=-1"])
