"""The `csna` entry point: ensemble workers started before the heavy imports (csna.launch)."""

import gc
import json
import multiprocessing as mp
import subprocess
import sys

import numpy as np
import pytest

from csna import launch
from csna.config import load_config
from csna.ensemble import train_run
from csna.predict import predict_features

TINY = ["phase1.epochs=2", "phase1.min_epochs=1", "phase2.epochs=1", "phase3.epochs=1", "phase4.epochs=1",
        "train.progress=false", "log.tensorboard=false", "train.ensemble=2", "train.ensemble_workers=2"]


def _sets(overrides):
    return [a for o in overrides for a in ("--set", o)]


@pytest.fixture
def no_prestarted():
    yield
    pool = launch._PRESTARTED.pop("pool", None)
    launch._PRESTARTED.clear()
    if pool is not None:
        launch._shutdown(pool)


def test_a_train_command_line_starts_the_workers_its_config_plans(no_prestarted):
    launch._prestart(["--out", "x"] + _sets(["train.ensemble=3", "train.ensemble_workers=3"]))
    assert launch._PRESTARTED["size"] == 2 and len(mp.active_children()) >= 2
    assert launch.take_prestarted(1) is None  # another size: shut down, not handed out
    assert "pool" not in launch._PRESTARTED
    launch._prestart(_sets(["train.ensemble=2", "train.ensemble_workers=2"]))
    pool = launch.take_prestarted(1)
    assert pool is not None and launch.take_prestarted(1) is None  # handed out once
    launch._shutdown(pool)


@pytest.mark.parametrize("argv", [_sets(["train.ensemble=1"]), _sets(["no.such_key=1"]), ["--set"],
                                  ["--config", "/nonexistent.yaml"], _sets(["train.ensemble_workers=1"])])
def test_nothing_starts_for_one_process_or_for_input_the_real_parser_will_refuse(argv, no_prestarted):
    launch._prestart(argv)
    assert "pool" not in launch._PRESTARTED


def test_help_starts_no_workers(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["csna", "train", "--help"] + _sets(TINY))
    started = []
    monkeypatch.setattr(launch, "_prestart", started.append)
    with pytest.raises(SystemExit) as info:
        launch.run()
    assert info.value.code == 0 and "--resume" in capsys.readouterr().out and not started


def test_planned_workers_follows_the_config_and_the_cores():
    cfg = load_config(None, ["train.ensemble=4"])
    cores = len(launch.os.sched_getaffinity(0))
    assert launch.planned_workers(cfg, False, False) == max(1, min(4, cores))
    assert launch.planned_workers(cfg, True, False) == 1  # data-parallel: one member at a time
    assert launch.planned_workers(cfg, False, True) == 1  # a pool worker starts no processes
    assert launch.planned_workers(load_config(None, ["train.ensemble=4", "train.ensemble_workers=3"]),
                                  False, False) == 3


def test_an_unused_prestarted_pool_is_shut_down_when_the_command_fails(tmp_path, monkeypatch, capsys):
    rd = tmp_path / "taken"
    rd.mkdir()
    (rd / "keep.txt").write_text("mine")
    monkeypatch.setattr(sys, "argv", ["csna", "train", "--out", str(rd)] + _sets(TINY))
    try:
        code = launch.run()
    finally:
        gc.unfreeze()
    assert code == 2 and "csna: error:" in capsys.readouterr().err
    assert (rd / "keep.txt").read_text() == "mine"
    assert "pool" not in launch._PRESTARTED and not mp.active_children()
    # as a command: one line on stderr, the terminated workers add nothing to it
    res = subprocess.run([sys.executable, "-m", "csna", "train", "--out", str(rd)] + _sets(TINY),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "already exists" in res.stderr or str(rd) in res.stderr


def test_the_command_trains_the_worker_member_as_one_process_does(tmp_path):
    """`python -m csna train` (prestarted worker) gives the members train_run gives one after
    the other in this process."""
    rd = tmp_path / "run"
    cmd = [sys.executable, "-m", "csna", "train", "--out", str(rd), "--quiet", "--no-figures"] + _sets(TINY)
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    seq = train_run(load_config(None, TINY[:-1] + ["train.ensemble_workers=1"]))
    x = seq.prep.features(seq.data.X)
    from csna.rundir import load_run

    back = load_run(rd)
    np.testing.assert_allclose(predict_features(back, x)["mu"], predict_features(seq, x)["mu"], rtol=1e-5, atol=1e-6)
    assert json.loads((rd / "metrics.json").read_text())["ensemble_members"] == 2
