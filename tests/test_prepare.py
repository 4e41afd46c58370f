"""Splits (csna.prepare.split_data): each replication of a built-in benchmark is scored on its
own test rows, the same ones every time, and a user table's split does not depend on which
replication the config names (issue 16)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from csna.bench.run import BenchSpec, draw_splits, split_id
from csna.config import load_config
from csna.splits import split_seed
from csna.data import ihdp, load_table
from csna.prepare import split_data


def _test_rows(rep: int, seed: int = 42) -> np.ndarray:
    cfg = load_config(None, [f"data.replication={rep}", f"train.seed={seed}"])
    return np.sort(split_data(cfg, ihdp(rep))["test"])


def test_ihdp_replications_have_their_own_test_rows():
    reported = [_test_rows(r) for r in range(5)]
    tuning = [_test_rows(r) for r in (1000, 1001)]
    ids = {split_id(t) for t in reported + tuning}
    assert len(ids) == 7  # no two replications share a test set (they all did before)
    for a in reported:
        for b in tuning:  # the reported test rows are not the rows defaults were tuned on
            assert len(np.intersect1d(a, b)) < len(a)
    np.testing.assert_array_equal(_test_rows(3), reported[3])  # deterministic


def test_the_split_keeps_its_shares_and_strata():
    cfg = load_config(None, ["data.replication=7"])
    data = ihdp(7)
    sp = split_data(cfg, data)
    n = data.n
    assert sorted(np.concatenate(list(sp.values())).tolist()) == list(range(n))  # a partition
    assert abs(len(sp["test"]) - 0.10 * n) <= 1
    for part in sp.values():  # stratified by treatment: each part's treated share is the whole one's
        assert abs(data.T[part].mean() - data.T.mean()) < 0.03


def test_the_split_seed_still_moves_the_split_within_a_replication():
    assert split_id(_test_rows(0, seed=42)) != split_id(_test_rows(0, seed=43))


def test_a_user_table_splits_by_the_base_seed_whatever_the_replication(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "t.csv"
    pd.DataFrame({"x": rng.normal(size=200), "treatment": rng.integers(0, 2, 200),
                  "outcome": rng.normal(size=200)}).to_csv(path, index=False)
    data = load_table(str(path), treatment="treatment", outcome="outcome")
    cfgs = [load_config(None, [f"data.source={path}", f"data.replication={r}"]) for r in (0, 5)]
    assert split_seed(cfgs[0]) == split_seed(cfgs[1]) == 42
    np.testing.assert_array_equal(split_data(cfgs[0], data)["test"], split_data(cfgs[1], data)["test"])


def test_the_bench_draws_one_split_per_replication():
    spec = BenchSpec(dataset="ihdp", replications=(0, 1, 2))
    ids = {split_id(np.asarray(draw_splits(spec, r)["test"])) for r in spec.replications}
    assert len(ids) == 3
