"""Resumable training: a run killed at any point and resumed with ``csna train --resume``
ends exactly where the uninterrupted run ends (same metrics.json apart from timings, same
weights), and two runs with one seed give byte-identical metrics.json.

The killed runs are real subprocesses; the test-only hook ``CSNA_TEST_KILL_AT=PHASE:STEP[:SIG]``
makes the trainer signal itself at an exact point (``end``: just after the phase checkpoint).
"""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from csna import checkpoint as ckpt
from csna.cli import main
from csna.phases import CHECKPOINTS

# 8 steps an epoch on IHDP's 470 training rows; phase 4 gets two epochs so a kill in its
# second epoch resumes from an epoch-end state, one thread so every process computes alike.
TINY = ["train.ensemble=1", "phase1.epochs=2", "phase1.min_epochs=1", "phase2.epochs=1", "phase3.epochs=1",
        "phase4.epochs=2", "train.checkpoint_every=3", "train.threads=1", "log.tensorboard=false"]
FLAGS = ["--quiet", "--no-figures"] + [a for s in TINY for a in ("--set", s)]


def _timeless(path):
    """metrics.json lines without the timing keys (`time_…`, `wall_…`), as text."""
    lines = path.read_text().splitlines()
    return [ln for ln in lines if not ln.strip().startswith(('"time_', '"wall_'))]


def _weights(rd):
    return {f: ckpt.load(rd / f)["model_state"] for f in CHECKPOINTS}


def _same_weights(a, b):
    return all(a[f].keys() == b[f].keys() and all(torch.equal(a[f][k], b[f][k]) for k in a[f]) for f in a)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    rd = tmp_path_factory.mktemp("base") / "run"
    assert main(["train", "--out", str(rd)] + FLAGS) == 0
    return rd


def _killed(tmp_path, at):
    rd = tmp_path / "run"
    env = dict(os.environ, CSNA_TEST_KILL_AT=at)
    res = subprocess.run([sys.executable, "-m", "csna", "train", "--out", str(rd)] + FLAGS,
                         env=env, capture_output=True, text=True, timeout=300)
    return rd, res


@pytest.mark.parametrize("at, saved", [
    ("1:5", (1, False, 3)),     # mid phase 1: latest.pt from step 3, steps 4-5 are redone
    ("2:end", (2, False, 6)),   # phase boundary: lattice_encoder.pt written, latest.pt not yet
    ("4:11", (4, False, 9)),    # mid phase 4, second epoch (gate sampler state restored)
])
def test_sigkill_then_resume_gives_the_uninterrupted_result(tmp_path, baseline, at, saved):
    rd, res = _killed(tmp_path, at)
    assert res.returncode == -signal.SIGKILL, res.stderr[-2000:]
    assert not (rd / "metrics.json").exists()
    latest = torch.load(rd / ckpt.LATEST, weights_only=True)  # safe files only
    assert (latest["phase"], latest["done"], latest["progress"]["step"]) == saved
    for key in ("optimizer", "rng", "model_state", "results", "global_step"):
        assert latest[key] is not None, key
    if at.startswith("4"):
        assert latest["generator_state"].dtype == torch.uint8
    assert main(["train", "--resume", str(rd), "--quiet", "--no-figures"]) == 0
    assert _timeless(rd / "metrics.json") == _timeless(baseline / "metrics.json")
    assert _same_weights(_weights(rd), _weights(baseline))
    hist = json.loads((rd / "history.json").read_text())["phases"]
    assert hist == json.loads((baseline / "history.json").read_text())["phases"]


def test_sigterm_saves_and_exits_cleanly_then_resumes(tmp_path, baseline):
    rd, res = _killed(tmp_path, "3:4:TERM")
    assert res.returncode == 128 + signal.SIGTERM
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and "SIGTERM" in err[0] and "--resume" in err[0] and "Traceback" not in res.stderr
    latest = ckpt.load(rd / ckpt.LATEST)
    assert (latest["phase"], latest["progress"]["step"]) == (3, 4)  # saved at the signal, not at step 3
    assert main(["train", "--resume", str(rd), "--quiet", "--no-figures"]) == 0
    assert _timeless(rd / "metrics.json") == _timeless(baseline / "metrics.json")
    assert _same_weights(_weights(rd), _weights(baseline))


def test_two_runs_with_one_seed_give_byte_identical_metrics(tmp_path, baseline):
    rd = tmp_path / "again"
    assert main(["train", "--out", str(rd)] + FLAGS) == 0
    a, b = _timeless(rd / "metrics.json"), _timeless(baseline / "metrics.json")
    assert a == b and len(a) > 20
    assert any('"time_' in ln for ln in (rd / "metrics.json").read_text().splitlines())  # stripped, not absent


def test_deterministic_option_switches_on_deterministic_algorithms(tmp_path):
    from csna.config import load_config
    from csna.ensemble import train_run

    before = torch.are_deterministic_algorithms_enabled()
    try:
        cfg = load_config(None, TINY + ["train.deterministic=true", "train.max_steps=2"])
        train_run(cfg)
        assert torch.are_deterministic_algorithms_enabled()
        assert os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    finally:
        torch.use_deterministic_algorithms(before)


def test_resume_of_a_finished_run_trains_nothing_more(tmp_path, baseline, capsys):
    import shutil

    rd = tmp_path / "done"
    shutil.copytree(baseline, rd)
    weights = _weights(rd)
    assert main(["train", "--resume", str(rd), "--quiet", "--no-figures"]) == 0
    assert _same_weights(_weights(rd), weights)
    assert _timeless(rd / "metrics.json") == _timeless(baseline / "metrics.json")


def test_variable_nodes_killed_mid_phase_2_resume_to_the_same_graph_and_result(tmp_path):
    """The PC skeleton and the growing h(A) weight live in the saved state: a run killed while
    phase 2 learns the graph ends with the uninterrupted run's graph, weights and metrics."""
    pytest.importorskip("causallearn")
    flags = FLAGS + ["--set", "model.nodes=variables"]
    base = tmp_path / "base"
    assert main(["train", "--out", str(base)] + flags) == 0
    rd = tmp_path / "run"
    env = dict(os.environ, CSNA_TEST_KILL_AT="2:5")
    res = subprocess.run([sys.executable, "-m", "csna", "train", "--out", str(rd)] + flags,
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == -signal.SIGKILL, res.stderr[-2000:]
    assert main(["train", "--resume", str(rd), "--quiet", "--no-figures"]) == 0
    assert _timeless(rd / "metrics.json") == _timeless(base / "metrics.json")
    assert _same_weights(_weights(rd), _weights(base))
    state = ckpt.load(rd / "lattice_encoder.pt")["model_state"]
    assert bool(state["lattice.adjacency.frozen"])
