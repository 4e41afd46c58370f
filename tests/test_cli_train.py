"""`csna train` end to end through the command line, on a tiny budget."""

import json
import subprocess
import sys

import torch

from csna.cli import main

FILES = ["config.yaml", "env.json", "causal_encoder.pt", "lattice_encoder.pt", "attention_model.pt",
         "meta_controller.pt", "metrics.json", "preprocess.json"]


def _tiny(tiny_overrides):
    out = []
    for o in tiny_overrides:
        out += ["--set", o]
    return out


def test_train_leaves_the_run_directory(tmp_path, tiny_overrides):
    rd = tmp_path / "run"
    cmd = [sys.executable, "-m", "csna", "train", "--out", str(rd), "--quiet", "--no-figures"] + _tiny(tiny_overrides)
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    for f in FILES:
        assert (rd / f).is_file(), f
    m = json.loads((rd / "metrics.json").read_text())
    for k in ("sqrt_pehe_in", "sqrt_pehe_out", "eps_ate_in", "eps_ate_out", "ate_hat"):
        assert isinstance(m[k], float) and m[k] == m[k]
    env = json.loads((rd / "env.json").read_text())
    assert env["seed"] == 42 and env["torch"] == torch.__version__
    for f in FILES:
        if f.endswith(".pt"):
            obj = torch.load(rd / f, weights_only=True)  # safe files: no pickled objects
            assert obj["config"]["train"]["seed"] == 42 and "model_state" in obj
    assert list((rd / "tb").glob("events.out.tfevents.*"))
    assert "sqrt_pehe_out" in res.stdout  # the closing table


def test_tensorboard_has_the_seed_scalars(tmp_path, tiny_overrides):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rd = tmp_path / "run"
    # L_Dis is off by default; a term is logged when it is on. Every step is written here, so a
    # phase of a few steps cannot fall between two written ones.
    assert main(["train", "--out", str(rd), "--quiet", "--no-figures", "--set", "phase3.lambda_dis=0.5",
                 "--set", "log.every_steps=1"] + _tiny(tiny_overrides)) == 0
    ea = EventAccumulator(str(rd / "tb"), size_guidance={"scalars": 0, "histograms": 0})
    ea.Reload()
    tags = set(ea.Tags()["scalars"])
    for t in ("loss/total", "loss/task", "loss/causal", "loss/geometric", "loss/reg", "loss/dc", "loss/dis",
              "loss/stable", "grad_norm", "lr", "lambda/causal", "lambda/geometric", "lambda/dc", "lambda/dis",
              "lambda/stable"):
        assert t in tags, t
    assert any(h.startswith("utility/") for h in ea.Tags()["histograms"])


def _scalar_series(rd, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(rd / "tb"), size_guidance={"scalars": 0})
    ea.Reload()
    return [(e.step, e.value) for e in ea.Scalars(tag)]


def test_per_step_scalars_are_every_kth_step_of_the_full_series(tmp_path, tiny_overrides):
    """log.every_steps = 3 writes exactly the steps 0, 3, 6, … of what every_steps = 1 writes
    (the same training, so the same values); the epoch-level scalars stay at every epoch."""
    runs = {}
    for k in (1, 3):
        rd = tmp_path / f"every{k}"
        assert main(["train", "--out", str(rd), "--quiet", "--no-figures", "--set", f"log.every_steps={k}"]
                    + _tiny(tiny_overrides)) == 0
        runs[k] = rd
    full = _scalar_series(runs[1], "grad_norm")
    thin = _scalar_series(runs[3], "grad_norm")
    assert len(full) >= 30 and [s for s, _ in full] == list(range(len(full)))  # every step of phases 1-4
    assert thin == [(s, v) for s, v in full if s % 3 == 0]
    assert _scalar_series(runs[3], "val/task") == _scalar_series(runs[1], "val/task")


def test_existing_run_is_refused_without_overwrite(tmp_path, capsys, tiny_overrides):
    rd = tmp_path / "run"
    rd.mkdir()
    (rd / "keep.txt").write_text("precious")
    assert main(["train", "--out", str(rd), "--quiet"] + _tiny(tiny_overrides)) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert (rd / "keep.txt").read_text() == "precious"


def test_unknown_key_is_one_line_exit_2(capsys):
    assert main(["train", "--set", "phase9.lr=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "phase9" in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_python_dash_m_and_console_script_help():
    res = subprocess.run([sys.executable, "-m", "csna", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "train" in res.stdout
