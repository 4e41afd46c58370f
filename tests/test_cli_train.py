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
    # L_Dis is off by default; a term is logged when it is on.
    assert main(["train", "--out", str(rd), "--quiet", "--no-figures", "--set", "phase3.lambda_dis=0.5"]
                + _tiny(tiny_overrides)) == 0
    ea = EventAccumulator(str(rd / "tb"), size_guidance={"scalars": 0, "histograms": 0})
    ea.Reload()
    tags = set(ea.Tags()["scalars"])
    for t in ("loss/total", "loss/task", "loss/causal", "loss/geometric", "loss/reg", "loss/dc", "loss/dis",
              "loss/stable", "grad_norm", "lr", "lambda/causal", "lambda/geometric", "lambda/dc", "lambda/dis",
              "lambda/stable"):
        assert t in tags, t
    assert any(h.startswith("utility/") for h in ea.Tags()["histograms"])


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
