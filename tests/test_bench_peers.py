"""Like-for-like comparisons (issue 16): the neural peers as ensembles built with csna's member
recipe, their FLOPs, and the paired tables that set csna against them."""

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split

from csna.bench import neural_ens, peers
from csna.bench import results as R
from csna.bench.cli import main
from csna.bench.run import BenchSpec, csna_config, draw_splits, execute, pair_singles, run_task, tasks_for
from csna.data import ihdp
from csna.ensemble import train_run
from test_bench import linear_problem  # a sibling test module: tests/ is on sys.path under pytest

TINY = {"max_epochs": 3, "n_configs": 1}
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def small_problem(n=160, p=4, seed=0):
    """test_bench's confounded linear problem (τ = 2), split 100 / 30 / 30."""
    x, t, y, _, _ = linear_problem(n, p, seed)
    perm = np.random.default_rng(seed + 1).permutation(n)
    return x, t, y, {"train": np.sort(perm[:100]), "val": np.sort(perm[100:130]), "test": np.sort(perm[130:])}


def reference_member_splits(splits, t, j):
    """The member recipe written out: member 0 keeps the split; member j redraws train / val from
    the non-test rows, stratified by treatment, with sklearn's random_state j."""
    if j == 0:
        return splits
    rest = np.sort(np.concatenate([splits["train"], splits["val"]]))
    tr, va = train_test_split(rest, test_size=len(splits["val"]), random_state=j, stratify=t[rest])
    return {"train": np.sort(tr), "val": np.sort(va), "test": splits["test"]}


# --- the ensembled peers -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tarnet", "cfr-wass", "dragonnet"])
def test_an_ensembled_peer_is_the_mean_of_four_peers_trained_alone(name):
    x, t, y, splits = small_problem()
    seed = 7
    alone = []
    for j in range(4):
        sp = reference_member_splits(splits, t, j)
        alone.append(peers.fit_peer(name, x, t, y, sp, binary=False, seed=seed + j, options=TINY))
    assert not np.array_equal(reference_member_splits(splits, t, 1)["val"], splits["val"])
    assert np.abs(alone[0].mu - alone[1].mu).max() > 1e-3  # the members differ: the mean is not any one
    ens = peers.fit_peer(f"{name}-ens4", x, t, y, splits, binary=False, seed=seed, options=TINY)
    np.testing.assert_array_equal(ens.mu, np.mean([a.mu for a in alone], axis=0))
    first, secs = ens.first_member  # member 0 is the single peer itself (what pair_singles relies on)
    np.testing.assert_array_equal(first.mu, alone[0].mu)
    assert first.flops == alone[0].flops and secs > 0
    np.testing.assert_array_equal(ens.tau, ens.mu[:, 1] - ens.mu[:, 0])
    assert ens.flops == pytest.approx(sum(a.flops for a in alone), rel=1e-12) and ens.flops > 0


def test_without_resplit_the_members_differ_by_seed_only():
    x, t, y, splits = small_problem()
    alone = [peers.fit_peer("tarnet", x, t, y, splits, binary=False, seed=3 + j, options=TINY) for j in range(4)]
    ens = peers.fit_peer("tarnet-ens4", x, t, y, splits, binary=False, seed=3, options={**TINY, "resplit": False})
    np.testing.assert_array_equal(ens.mu, np.mean([a.mu for a in alone], axis=0))


def test_neural_flops_count_every_step_and_validation_pass():
    x, t, y, splits = small_problem()
    res = peers.fit_peer("tarnet", x, t, y, splits, binary=False, seed=0, options={"max_epochs": 2, "n_configs": 1})
    # TARNet (200-wide representation, 3 layers; heads 100 wide, 2 layers, then 1): multiply-adds per row
    p, r, w = x.shape[1], 200, 100
    macs = p * r + 2 * r * r + 2 * (r * w + w * w + w)
    train_rows = (len(splits["train"]) // 64) * 64  # full batches only
    # 2 epochs: forward (2 FLOPs per MAC) and backward (twice the forward; the first layer's input
    # gradient is not needed, so its p·r MACs count once less) per training row; forward per val row
    backward = 2 * (2 * macs - p * r)
    expected = 2 * (train_rows * (2 * macs + backward) + len(splits["val"]) * 2 * macs)
    assert res.flops == pytest.approx(expected, rel=1e-9)


def test_the_members_use_csnas_own_member_splits_and_test_rows(tiny_overrides):
    """A real csna ensemble on IHDP: each member's rows are the ensembled peer's member's."""
    over = [o for o in tiny_overrides if not o.startswith("train.ensemble")]
    spec = BenchSpec("ihdp", (0,), overrides=tuple(over + ["train.ensemble=4", "train.ensemble_workers=1"]))
    splits = {k: np.asarray(v) for k, v in draw_splits(spec, 0).items()}
    cfg = csna_config(spec, 0)
    data = ihdp(0)
    run = train_run(cfg, data=data, splits=splits)
    ours = neural_ens.member_split_list(splits, data.T, 4, cfg.train.ensemble_resplit)
    assert len(run.all_members()) == len(ours) == 4
    for member, sp in zip(run.all_members(), ours):
        for part in ("train", "val", "test"):
            np.testing.assert_array_equal(np.sort(member.splits[part]), np.sort(sp[part]))
        np.testing.assert_array_equal(sp["test"], splits["test"])  # csna's test rows, every member
    assert len({tuple(sp["val"]) for sp in ours}) == 4  # redrawn: four different validation sets


# --- the paired tables -------------------------------------------------------------------------


def test_paired_difference_against_a_hand_computed_example():
    # differences −0.5, +1.0, +1.0 (the NaN pair is left out): mean 0.5, sample sd √0.75, se 0.5
    got = R.paired_difference([1.0, 2.0, 3.0, np.nan], [1.5, 1.0, 2.0, 0.0])
    assert got["n"] == 3 and got["wins"] == 1
    assert got["mean"] == pytest.approx(0.5) and got["se"] == pytest.approx(0.5)
    one = R.paired_difference([1.0], [2.0])
    assert one["n"] == 1 and one["mean"] == -1.0 and np.isnan(one["se"]) and one["wins"] == 1
    tie = R.paired_difference([1.0, 2.0], [1.0, 2.0])
    assert tie["wins"] == 0 and tie["mean"] == 0.0


def bench_rows(name, reps, pehe, ate, seconds, flops=np.nan):
    return [{"estimator": name, "replication": r, "sqrt_pehe_in": 0.0, "sqrt_pehe_out": p, "eps_ate_in": 0.0,
             "eps_ate_out": a, "fit_seconds": seconds, "flops_fit": flops, "split_id": "x"}
            for r, p, a in zip(reps, pehe, ate)]


def test_like_for_like_pairs_only_common_replications():
    df = pd.DataFrame(bench_rows("csna-single", [0, 1, 2], [1.0, 0.5, 2.0], [0.1, 0.2, 0.3], 10.0)
                      + bench_rows("tarnet", [1, 2, 3], [1.0, 1.0, 9.0], [0.1, 0.1, 0.1], 2.0, 1e9)
                      + bench_rows("csna", [0], [0.4], [0.1], 40.0)
                      + bench_rows("tarnet-ens4", [0], [0.5], [0.05], 8.0, 4e9))
    p = R.like_for_like(df).set_index("peer")
    assert list(p.index) == ["tarnet", "tarnet-ens4"]  # pairs without results are left out
    single = p.loc["tarnet"]
    assert single["ours"] == "csna-single" and single["n"] == 2  # replications 1 and 2
    assert single["sqrt_pehe_out_mean"] == pytest.approx(0.25)  # (−0.5 + 1.0) / 2
    assert single["sqrt_pehe_out_se"] == pytest.approx(0.75)  # sd 1.5/√2, over √2
    assert single["sqrt_pehe_out_wins"] == 1 and single["eps_ate_out_wins"] == 0
    assert single["eps_ate_out_mean"] == pytest.approx(0.15)
    assert single["fit_seconds_ours"] == 10.0 and np.isnan(single["flops_fit_ours"])
    assert single["flops_fit_peer"] == 1e9
    ens = p.loc["tarnet-ens4"]
    assert ens["ours"] == "csna" and ens["n"] == 1 and ens["sqrt_pehe_out_mean"] == pytest.approx(-0.1)
    md = R.markdown(df, "t", {})
    assert "## Like for like" in md
    assert ("| csna-single | tarnet | 2 | +0.250 ± 0.750 | 1/2 | +0.150 ± 0.050 | 0/2 | 10.0 | 2.0 | — | 1e+09 |"
            in md)
    assert "| csna | tarnet-ens4 | 1 | -0.100 | 1/1 | +0.050 | 0/1 | 40.0 | 8.0 | — | 4e+09 |" in md


def test_a_results_file_from_before_flops_reads_with_the_current_columns(tmp_path):
    old = pd.DataFrame(bench_rows("tarnet", [0], [1.0], [0.1], 2.0)).drop(columns="flops_fit")
    old.to_csv(tmp_path / "results.csv", index=False)
    df = R.read_csv(tmp_path / "results.csv")
    assert list(df.columns) == R.columns(binary=False) and df["flops_fit"].isna().all()


def test_a_paired_ensemble_task_writes_the_single_peers_row_as_its_own_task_would():
    spec = BenchSpec(dataset="ihdp", replications=(0,), csna=False, peers=("tarnet", "tarnet-ens4", "cfr-mmd"),
                     peer_options=TINY)
    tasks = tasks_for(spec, {0: draw_splits(spec, 0)})
    paired = pair_singles(tasks)
    assert [(t.estimator, t.companion) for t in paired] == [("tarnet-ens4", "tarnet"), ("cfr-mmd", None)]
    assert pair_singles([tasks[0]]) == [tasks[0]]  # the single alone (its ensemble done already) still runs
    alone = run_task(tasks[0])
    rows = []
    execute([paired[0]], on_row=rows.append, progress=False)
    assert [r["estimator"] for r in rows] == ["tarnet-ens4", "tarnet"]
    single = rows[1]
    assert set(single) == set(alone)
    for k, v in alone.items():
        if k != "fit_seconds":
            assert single[k] == v, k
    assert 0 < single["fit_seconds"] < rows[0]["fit_seconds"]


# --- the command -------------------------------------------------------------------------------


def test_bench_writes_like_for_like_rows_for_the_ensembled_peers(tmp_path, tiny_overrides):
    args = ["bench", "ihdp", "--reps", "1", "--peers", "tarnet,tarnet-ens4", "--ablations", "single",
            "--neural-epochs", "2", "--neural-configs", "1", "--out", str(tmp_path), "--quiet"]
    assert main(args + [a for o in tiny_overrides for a in ("--set", o)]) == 0
    df = R.read_csv(tmp_path / "results.csv").set_index("estimator")
    assert sorted(df.index) == ["csna", "csna-single", "tarnet", "tarnet-ens4"]
    assert len(set(df["split_id"])) == 1  # one set of test rows for all
    # two epochs each, members of the same sizes: four times one TARNet's FLOPs
    one = df.loc["tarnet", "flops_fit"]
    assert df.loc["tarnet-ens4", "flops_fit"] == pytest.approx(4 * one, rel=1e-5)  # written with %.6g
    # csna's rows are counted too (csna.fit_flops); with train.ensemble=1 among the overrides,
    # csna and csna-single are the same single fit
    assert df.loc["csna", "flops_fit"] > one
    assert df.loc["csna", "flops_fit"] == pytest.approx(df.loc["csna-single", "flops_fit"], rel=1e-5)
    md = (tmp_path / "results.md").read_text()
    assert "| csna-single | tarnet | 1 |" in md and "| csna | tarnet-ens4 | 1 |" in md
    assert "ensemble of 4 with csna's member recipe" in md
