"""csna bench structure: the SCMs, the edge metrics, PC's edge conversion and the command."""

import networkx as nx
import numpy as np
import pandas as pd
import pytest

from csna.bench.cli import main as bench_main
from csna.bench.structure_scm import SETTINGS, edge_scores, random_dag, sample_scm


def test_edge_scores_by_hand():
    dag = np.zeros((4, 4), int)
    dag[0, 1] = dag[1, 2] = dag[2, 3] = 1  # 0 → 1 → 2 → 3
    learned = np.zeros((4, 4), int)
    learned[0, 1] = 1  # right
    learned[2, 1] = 1  # reversed
    learned[0, 3] = 1  # extra
    s = edge_scores(dag, learned)
    assert s["precision"] == pytest.approx(1 / 3) and s["recall"] == pytest.approx(1 / 3)
    assert s["f1"] == pytest.approx(1 / 3)
    assert s["shd"] == 3  # one reversed, one extra, one missing (2 → 3)
    assert s["reversed"] == 1
    # An undirected edge over a true pair counts as right and costs no SHD.
    und = np.zeros((4, 4), int)
    und[2, 3] = und[3, 2] = 1
    s2 = edge_scores(dag, learned, und)
    assert s2["recall"] == pytest.approx(2 / 3) and s2["shd"] == 2
    assert edge_scores(dag, dag)["f1"] == 1.0 and edge_scores(dag, dag)["shd"] == 0


@pytest.mark.parametrize("setting", ["er-10-nonlinear", "sf-10-nonlinear", "er-20-linear"])
def test_scm_places_treatment_and_outcome_in_a_dag(setting):
    scm = sample_scm(setting, 3)
    q = SETTINGS[setting][1]
    assert scm.data.shape == (SETTINGS[setting][3], q) and scm.dag.shape == (q, q)
    assert nx.is_directed_acyclic_graph(nx.DiGraph(scm.dag))
    assert scm.dag[q - 2, q - 1] == 1  # T → Y
    assert scm.dag[:, q - 2].any()  # T is confounded or caused: it has a parent
    assert set(np.unique(scm.treatment)) == {0.0, 1.0}
    assert np.allclose(scm.data.mean(0), 0, atol=1e-9) and np.allclose(scm.data.std(0), 1)
    assert scm.names[-2:] == ["treatment", "outcome"]


def test_random_dag_sizes():
    rng = np.random.default_rng(0)
    er = [random_dag("er", 20, rng).sum() for _ in range(50)]
    assert 17 < np.mean(er) < 23  # expected degree 2: q edges on average
    sf = random_dag("sf", 20, rng)
    assert sf.sum() == 19 and np.allclose(sf, np.triu(sf, 1))  # Barabási–Albert with m = 1: a tree


def test_pc_orients_a_collider():
    pytest.importorskip("causallearn")
    from csna.bench.structure_learners import learn_pc

    rng = np.random.default_rng(0)
    n = 3000
    a, b = rng.normal(size=n), rng.normal(size=n)
    c = a + b + 0.5 * rng.normal(size=n)  # a → c ← b
    directed, undirected = learn_pc(np.column_stack([a, b, c]), "linear", 0)
    assert directed[0, 2] == 1 and directed[1, 2] == 1 and directed.sum() == 2 and undirected.sum() == 0


def test_bench_structure_command_writes_results(tmp_path):
    pytest.importorskip("causallearn")
    out = tmp_path / "s"
    rc = bench_main(["bench", "structure", "--settings", "er-10-linear", "--graphs", "2", "--estimators", "pc",
                     "--quiet", "--out", str(out)])
    assert rc == 0
    df = pd.read_csv(out / "results.csv")
    assert list(df.columns[:7]) == ["setting", "graph", "estimator", "precision", "recall", "f1", "shd"]
    assert len(df) == 2 and set(df.estimator) == {"pc"}
    assert "er-10-linear" in (out / "results.md").read_text()
    assert bench_main(["bench", "structure", "--settings", "nope", "--out", str(out)]) == 2


def test_cpdag_shd_by_hand():
    pytest.importorskip("causallearn")
    from csna.bench.structure_scm import cpdag_shd

    chain = np.zeros((3, 3), int)
    chain[0, 1] = chain[1, 2] = 1  # 0 → 1 → 2: its CPDAG is 0 — 1 — 2
    reverse = chain.T.copy()  # 2 → 1 → 0: the same Markov equivalence class
    collider = np.zeros((3, 3), int)
    collider[0, 2] = collider[1, 2] = 1  # 0 → 2 ← 1: compelled
    skeleton = np.zeros((3, 3), int)
    skeleton[0, 2] = skeleton[2, 0] = skeleton[1, 2] = skeleton[2, 1] = 1
    assert cpdag_shd(chain, reverse) == 0 and edge_scores(chain, reverse)["shd"] == 2
    # A CPDAG learner's output (an undirected array, here empty) is taken as it is, not completed:
    # orienting a reversible edge is then an error.
    assert cpdag_shd(chain, chain, np.zeros((3, 3), int)) == 2
    assert cpdag_shd(chain, collider) == 3  # 0–1 missing, 1–2 directed not undirected, 0–2 extra
    # An undirected edge where the truth's CPDAG is directed is an error here, not in edge_scores.
    assert cpdag_shd(collider, np.zeros((3, 3), int), skeleton) == 2
    assert edge_scores(collider, np.zeros((3, 3), int), skeleton)["shd"] == 0
    assert cpdag_shd(collider, collider) == 0 and cpdag_shd(collider, np.zeros((3, 3), int)) == 2
    cycle = np.zeros((3, 3), int)
    cycle[0, 1] = cycle[1, 2] = cycle[2, 0] = 1  # compared as it is: 0–1 and 1–2 directed, 0–2 extra
    assert cpdag_shd(chain, cycle) == 3
