"""Seed ensembles (train.ensemble): each member is an ordinary run, and the ensemble predicts
their mean; it saves, loads, resumes and counts its compute as the sum of its members'."""

import json
import shutil

import numpy as np
import pytest
import torch

from csna import CSNAEstimator
from csna.checkpoint import CheckpointError
from csna.cli import main
from csna.config import ConfigError, load_config
from csna.ensemble import member_splits, train_member, train_run
from csna.evaluate import flops_per_sample
from csna.predict import predict_features
from csna.rundir import load_run

def same(a, b):
    """Bit for bit on a CPU; on a GPU, kernels may sum in another order from run to run."""
    if torch.cuda.is_available():
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    else:
        np.testing.assert_array_equal(a, b)


TINY = ["phase1.epochs=2", "phase1.min_epochs=1", "phase2.epochs=1", "phase3.epochs=1", "phase4.epochs=1",
        "train.progress=false", "log.tensorboard=false"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A two-member ensemble trained into a run directory, and its features."""
    rd = tmp_path_factory.mktemp("ens") / "run"
    run = train_run(load_config(None, TINY + ["train.ensemble=2", "train.ensemble_workers=1"]), run_dir=rd)
    return run, rd, run.prep.features(run.data.X)


def test_the_ensemble_is_the_mean_of_its_members_trained_alone(pair):
    run, _, x = pair
    # The reference: two ordinary single-model runs, seeds 42 and 43, the second on the split
    # redrawn for member 1 (train.ensemble_resplit, the default).
    assert run.cfg.train.ensemble_resplit
    splits = [run.splits, member_splits(run.splits, run.data.T, 1, resplit=True)]
    assert not np.array_equal(splits[0]["val"], splits[1]["val"])
    # (with the first member's preprocessing, which members share: one feature matrix feeds all)
    alone = [predict_features(train_member(load_config(None, TINY + [f"train.seed={s}", "train.ensemble=1"]),
                                           splits=sp, prep=run.prep), x)["mu"] for s, sp in zip((42, 43), splits)]
    assert np.abs(alone[0] - alone[1]).max() > 1e-3  # the seeds differ, so the mean is not either one
    got = predict_features(run, x, shrink=False)  # the shrinkage: tests/test_shrink.py
    np.testing.assert_allclose(got["mu"], (alone[0] + alone[1]) / 2, rtol=1e-5, atol=1e-5)
    assert got["gates"].shape == (len(x), 2 * run.model.n_blocks)  # each member's own gates, side by side


def test_a_saved_ensemble_loads_and_scores_the_same(pair, tmp_path):
    run, rd, x = pair
    back = load_run(rd)
    assert len(back.members) == 1 and (rd / "members" / "1" / "meta_controller.pt").is_file()
    saved = json.loads((rd / "members" / "1" / "splits.json").read_text())
    np.testing.assert_array_equal(saved["val"], run.members[0].splits["val"])  # the member's own split
    np.testing.assert_array_equal(predict_features(back, x)["mu"], predict_features(run, x)["mu"])
    # history.json keeps each member's steps and epochs per phase (csna.fit_flops reads them)
    assert [m.phase_counts for m in back.all_members()] == [m.phase_counts for m in run.all_members()]
    # the estimator API writes and reads the same layout
    est = CSNAEstimator.load(rd)
    again = CSNAEstimator.load(est.save(tmp_path / "copy"))
    np.testing.assert_array_equal(again.effect(back.data.X if back.data is not None else run.data.X),
                                  est.effect(run.data.X))


@pytest.mark.parametrize("with_dir", [True, False])
def test_members_trained_in_worker_processes_match_one_after_another(pair, tmp_path, with_dir):
    run, rd, x = pair
    rd2 = tmp_path / "par" if with_dir else None
    par = train_run(load_config(None, TINY + ["train.ensemble=2", "train.ensemble_workers=2"]), run_dir=rd2)
    same(predict_features(par, x)["mu"], predict_features(run, x)["mu"])
    assert par.members[0].run_dir == (rd2 / "members" / "1" if with_dir else None)
    # a worker's member reports the steps it took, as one trained here does (csna.fit_flops)
    assert [m.phase_counts for m in par.all_members()] == [m.phase_counts for m in run.all_members()]
    assert par.members[0].phase_counts[1][0] > 0
    # a member trained without a directory still saves (from the checkpoint kept in memory)
    est = CSNAEstimator(config=par.cfg)
    est._set_run(par)
    back = CSNAEstimator.load(est.save(tmp_path / "saved"))
    np.testing.assert_array_equal(back.effect(run.data.X), est.effect(run.data.X))


def test_the_calling_process_takes_its_share_of_the_members(tmp_path):
    # Three members on two processes: member 1 in the worker, members 0 and 2 here, one after
    # the other; the same numbers, member order and directories as three trained in a row.
    over = TINY + ["train.ensemble=3", "data.synthetic_n=600"]
    seq = train_run(load_config(None, over + ["train.ensemble_workers=1"]))
    rd = tmp_path / "par"
    par = train_run(load_config(None, over + ["train.ensemble_workers=2"]), run_dir=rd)
    x = seq.prep.features(seq.data.X)
    for a, b in zip(seq.all_members(), par.all_members(), strict=True):
        same(predict_features(a, x)["mu"], predict_features(b, x)["mu"])
    assert [m.run_dir for m in par.members] == [rd / "members" / "1", rd / "members" / "2"]
    assert [m.cfg.train.seed for m in par.all_members()] == [42, 43, 44]
    assert par.members[0].trainer is None and par.members[1].trainer is not None  # worker, here


def test_compute_counts_every_member(pair):
    run, rd, x = pair
    assert main(["evaluate", str(rd), "--no-figures"]) == 0
    m = json.loads((rd / "metrics.json").read_text())
    te = x[run.splits["test"]]
    each = [flops_per_sample(r.model, te, "off") for r in run.all_members()]
    assert m["ensemble_members"] == 2
    assert m["flops_full"] == pytest.approx(sum(each)) and each[0] == pytest.approx(each[1])


def test_resume_trains_the_missing_member_as_an_uninterrupted_run_does(pair, tmp_path, capsys):
    run, rd, x = pair
    cut = tmp_path / "cut"
    shutil.copytree(rd, cut)
    shutil.rmtree(cut / "members")
    assert main(["evaluate", str(cut), "--no-figures"]) == 0
    assert "holds 1 of its 2 ensemble members" in capsys.readouterr().err
    assert main(["train", "--resume", str(cut), "--quiet", "--no-figures"]) == 0
    same(predict_features(load_run(cut), x)["mu"], predict_features(run, x)["mu"])


def test_a_member_of_another_run_is_refused(pair, tmp_path):
    _, rd, _ = pair
    other = tmp_path / "other"
    train_run(load_config(None, TINY + ["train.ensemble=2", "data.replication=1"]), run_dir=other)
    mixed = tmp_path / "mixed"
    shutil.copytree(rd, mixed)
    shutil.rmtree(mixed / "members" / "1")
    shutil.copytree(other / "members" / "1", mixed / "members" / "1")
    with pytest.raises(CheckpointError, match="does not belong"):
        load_run(mixed)


def test_resplit_keeps_the_test_rows_and_redraws_the_rest():
    rng = np.random.default_rng(0)
    t = (rng.random(200) < 0.3).astype(np.int64)
    perm = rng.permutation(200)
    base = {"train": np.sort(perm[:120]), "val": np.sort(perm[120:180]), "test": np.sort(perm[180:])}
    assert member_splits(base, t, 1, resplit=False) is base
    assert member_splits(base, t, 0, resplit=True) is base
    new = member_splits(base, t, 1, resplit=True)
    np.testing.assert_array_equal(new["test"], base["test"])
    assert len(new["train"]) == 120 and len(new["val"]) == 60
    assert not np.array_equal(new["val"], base["val"])
    every = np.sort(np.concatenate([new["train"], new["val"], new["test"]]))
    np.testing.assert_array_equal(every, np.arange(200))  # disjoint and complete
    assert abs(t[new["val"]].mean() - t[np.concatenate([base["train"], base["val"]])].mean()) < 0.02  # stratified


def test_ensemble_size_must_be_positive(capsys):
    with pytest.raises(ConfigError, match="train.ensemble"):
        load_config(None, ["train.ensemble=0"])
    assert main(["train", "--set", "train.ensemble=0"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
