"""Bad input: the CLI exits with code 2 and one line on stderr that says what and where,
no traceback, nothing saved is touched; the Python API raises a ValueError subclass with the
same message (DataError, ConfigError, CheckpointError, RunDirError)."""

import hashlib
import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from csna.checkpoint import CheckpointError
from csna.cli import main
from csna.config import ConfigError, load_config
from csna.data import DataError, load_table
from csna.ensemble import train_run
from csna.rundir import RunDirError

TINY = ["train.ensemble=1", "phase1.epochs=2", "phase1.min_epochs=1", "phase2.epochs=1", "phase3.epochs=1",
        "phase4.epochs=1", "train.threads=1", "log.tensorboard=false"]
FLAGS = ["--quiet", "--no-figures"] + [a for s in TINY for a in ("--set", s)]


def _frame(n=200, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    t = (rng.random(n) < 0.4).astype(int)
    y = x[:, 0] + 2.0 * t + rng.normal(size=n)
    return pd.DataFrame({"age": x[:, 0], "bw": x[:, 1], "score": x[:, 2], "treatment": t, "outcome": y})


def _csv(tmp_path, df, name="data.csv"):
    path = tmp_path / name
    df.to_csv(path, index=False)
    return path


def _error(capsys, argv):
    """Run the CLI in-process; return its one stderr line, after checking the contract."""
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("csna: error: ") and "Traceback" not in err
    return err


def _digest(folder):
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small trained run on a user table (train_run only: no evaluation needed here)."""
    base = tmp_path_factory.mktemp("trained")
    table = _csv(base, _frame(160))
    cfg = load_config(None, TINY + ["phase1.epochs=1", "phase4.epochs=0"], data_source=str(table))
    rd = base / "run"
    train_run(cfg, run_dir=rd)
    return rd


# ------------------------------------------------------------------ data files


def _bad_tables(tmp_path):
    df = _frame()
    cases = {}
    cases["missing file"] = (tmp_path / "nope.csv", [], ["not found", "nope.csv"])
    (tmp_path / "empty.csv").write_text("")
    cases["empty file"] = (tmp_path / "empty.csv", [], ["empty", "empty.csv"])
    (tmp_path / "header.csv").write_text("age,treatment,outcome\n")
    cases["header only"] = (tmp_path / "header.csv", [], ["no rows", "header.csv"])
    (tmp_path / "folder.csv").mkdir()
    cases["directory"] = (tmp_path / "folder.csv", [], ["directory", "folder.csv"])
    cases["no treatment column"] = (_csv(tmp_path, df.drop(columns="treatment"), "a.csv"), [],
                                    ["treatment column 'treatment'", "a.csv"])
    cases["no outcome column"] = (_csv(tmp_path, df, "b.csv"), ["--outcome", "y"], ["outcome column 'y'", "b.csv"])
    cases["no covariate column"] = (_csv(tmp_path, df, "c.csv"), ["--set", "data.covariates=[age,weight]"],
                                    ["weight", "c.csv"])
    nan_x = df.copy()
    nan_x.loc[[4, 9], "bw"] = np.nan
    cases["NaN covariate"] = (_csv(tmp_path, nan_x, "d.csv"), [], ["'bw'", "2 NaN/Inf", "row 5", "--impute"])
    inf_x = df.copy()
    inf_x.loc[3, "score"] = np.inf
    cases["Inf covariate"] = (_csv(tmp_path, inf_x, "e.csv"), [], ["'score'", "1 NaN/Inf", "e.csv"])
    nan_y = df.copy()
    nan_y.loc[7, "outcome"] = np.nan
    cases["NaN outcome"] = (_csv(tmp_path, nan_y, "f.csv"), [], ["outcome 'outcome'", "NaN", "row 8"])
    t_range = df.copy()
    t_range["treatment"] = t_range["treatment"] * 2  # values 0 and 2
    cases["treatment out of range"] = (_csv(tmp_path, t_range, "g.csv"), [],
                                       ["treatment 'treatment'", "0..1", "[0, 2]"])
    t_frac = df.copy().astype({"treatment": float})
    t_frac.loc[0, "treatment"] = 0.5
    cases["treatment not integer"] = (_csv(tmp_path, t_frac, "h.csv"), [], ["treatment 'treatment'", "non-integer"])
    one = df.copy()
    one["treatment"] = 1
    cases["one treatment group"] = (_csv(tmp_path, one, "i.csv"), [], ["only one treatment group", "i.csv"])
    cases["too few rows"] = (_csv(tmp_path, _frame(8), "j.csv"), [], ["too few rows", "8 rows", "data.split"])
    one_class = df.copy()
    one_class["outcome"] = 0
    cases["one class"] = (_csv(tmp_path, one_class, "k.csv"), ["--set", "data.outcome_type=binary"],
                          ["one class only", "'outcome'", "k.csv"])
    return cases


CASES = ["missing file", "empty file", "header only", "directory", "no treatment column", "no outcome column",
         "no covariate column", "NaN covariate", "Inf covariate", "NaN outcome", "treatment out of range",
         "treatment not integer", "one treatment group", "too few rows", "one class"]


@pytest.mark.parametrize("case", CASES)
def test_bad_data_is_one_line_exit_2_and_the_same_error_in_python(tmp_path, capsys, case):
    path, extra, needles = _bad_tables(tmp_path)[case]
    out = tmp_path / "out"
    err = _error(capsys, ["train", "--data", str(path), "--out", str(out)] + extra + FLAGS)
    for needle in needles:
        assert needle in err, (needle, err)
    assert not out.exists()  # nothing written for bad input
    # The Python API: the same message, from a ValueError subclass.
    overrides = TINY + [s for i, s in enumerate(extra) if i and extra[i - 1] == "--set"]
    if "--outcome" in extra:
        overrides.append("data.outcome=y")
    with pytest.raises(ValueError) as info:
        train_run(load_config(None, overrides, data_source=str(path)))
    assert isinstance(info.value, DataError)
    assert err == f"csna: error: {info.value}"


def test_impute_fills_and_reports_missing_covariates(tmp_path, capsys):
    df = _frame()
    df.loc[[4, 9], "bw"] = np.nan
    df.loc[3, "score"] = np.inf
    out = tmp_path / "out"
    assert main(["train", "--data", str(_csv(tmp_path, df)), "--out", str(out), "--impute"] + FLAGS) == 0
    stdout = capsys.readouterr().out
    assert "imputed 3 missing value(s)" in stdout and "bw: 2" in stdout and "score: 1" in stdout
    hist = json.loads((out / "history.json").read_text())
    assert hist["imputed"] == {"bw": 2, "score": 1}
    prep = json.loads((out / "preprocess.json").read_text())
    assert set(prep["impute"]) == {"age", "bw", "score"}  # every numeric column: new rows may miss any
    assert json.loads((out / "metrics.json").read_text())["n_train"] > 0


def test_impute_with_a_column_never_observed_names_it(tmp_path, capsys):
    df = _frame()
    df["lab"] = np.nan
    err = _error(capsys, ["train", "--data", str(_csv(tmp_path, df)), "--impute"] + FLAGS)
    assert "'lab'" in err and "no observed value" in err


# ------------------------------------------------------------------ config


@pytest.mark.parametrize("override, needles", [
    ("phase1.epoch=3", ["phase1.epoch", "did you mean 'epochs'"]),
    ("phse1.epochs=3", ["phse1", "did you mean 'phase1'"]),
    ("phase3.lambda_dis=-0.5", ["phase3.lambda_dis", ">= 0"]),
    ("phase2.lr=0", ["phase2.lr", "positive"]),
    ("train.discrepancy=kl", ["train.discrepancy", "'wasserstein'"]),
    ("train.checkpoint_every=-1", ["train.checkpoint_every", ">= 0"]),
])
def test_bad_config_is_one_line_exit_2(tmp_path, capsys, override, needles):
    err = _error(capsys, ["train", "--out", str(tmp_path / "o"), "--set", override, "--quiet"])
    for needle in needles:
        assert needle in err, (needle, err)
    if override.startswith("train.checkpoint_every"):
        return  # checked when training starts (train_run raises it)
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert err == f"csna: error: {info.value}"


# ------------------------------------------------------------------ run directories


def test_out_holding_a_run_is_refused_and_untouched(tmp_path, capsys, trained):
    rd = tmp_path / "run"
    shutil.copytree(trained, rd)
    before = _digest(rd)
    err = _error(capsys, ["train", "--out", str(rd)] + FLAGS)
    assert str(rd) in err and "--overwrite" in err and "--resume" in err
    assert _digest(rd) == before
    with pytest.raises(RunDirError):
        train_run(load_config(None, TINY), run_dir=rd)
    assert _digest(rd) == before


def test_overwrite_never_deletes_a_folder_that_is_not_a_run(tmp_path, capsys):
    rd = tmp_path / "mine"
    rd.mkdir()
    (rd / "thesis.tex").write_text("years of work")
    err = _error(capsys, ["train", "--out", str(rd), "--overwrite"] + FLAGS)
    assert "holds no csna run" in err
    assert (rd / "thesis.tex").read_text() == "years of work"


def test_overwrite_keeps_the_old_run_when_the_new_input_is_bad(tmp_path, capsys, trained):
    rd = tmp_path / "run"
    shutil.copytree(trained, rd)
    before = _digest(rd)
    _error(capsys, ["train", "--out", str(rd), "--overwrite", "--data", str(tmp_path / "missing.csv")] + FLAGS)
    assert _digest(rd) == before


def test_resume_needs_a_run(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    err = _error(capsys, ["train", "--resume", str(tmp_path / "empty")])
    assert "not a csna run directory" in err and "empty" in err


def test_resume_with_another_architecture_is_refused_and_untouched(tmp_path, capsys, trained):
    rd = tmp_path / "run"
    shutil.copytree(trained, rd)
    before = _digest(rd)
    err = _error(capsys, ["train", "--resume", str(rd), "--set", "model.k=4", "--quiet"])
    assert "model.k=8" in err and "4" in err and "does not match" in err
    assert _digest(rd) == before


def test_resume_with_other_data_is_refused_and_untouched(tmp_path, capsys, trained):
    rd = tmp_path / "run"
    shutil.copytree(trained, rd)
    before = _digest(rd)
    other = _frame(160, seed=5)
    err = _error(capsys, ["train", "--resume", str(rd), "--data", str(_csv(tmp_path, other, "other.csv")),
                          "--quiet"])
    assert "does not match the data" in err
    assert _digest(rd) == before
    with pytest.raises(CheckpointError):
        train_run(load_config(rd / "config.yaml", data_source=str(tmp_path / "other.csv")), run_dir=rd, resume=True)


def test_checkpoint_that_does_not_match_its_run_is_refused(tmp_path, capsys, trained):
    rd = tmp_path / "run"
    shutil.copytree(trained, rd)
    prep = json.loads((rd / "preprocess.json").read_text())
    prep["preprocessor"]["columns"] = prep["preprocessor"]["columns"][:2]  # one covariate fewer
    (rd / "preprocess.json").write_text(json.dumps(prep))
    err = _error(capsys, ["evaluate", str(rd), "--no-figures"])
    assert "attention_model.pt" in err and "does not match" in err


# ------------------------------------------------------------------ predict / evaluate


def test_predict_input_without_a_training_column_names_it(tmp_path, capsys, trained):
    table = _csv(tmp_path, _frame(20).drop(columns=["bw"]), "new.csv")
    err = _error(capsys, ["predict", str(trained), "--data", str(table), "--out", str(tmp_path / "p.csv")])
    assert "'bw'" in err or "bw" in err
    assert "new.csv" in err and not (tmp_path / "p.csv").exists()


def test_predict_input_with_a_text_column_names_it(tmp_path, capsys, trained):
    df = _frame(20)
    df["age"] = "old"
    err = _error(capsys, ["predict", str(trained), "--data", str(_csv(tmp_path, df, "new.csv")),
                          "--out", str(tmp_path / "p.csv")])
    assert "'age'" in err and "numeric" in err


def test_predict_good_input_works(tmp_path, capsys, trained):
    table = _csv(tmp_path, _frame(20).drop(columns=["treatment", "outcome"]), "new.csv")
    assert main(["predict", str(trained), "--data", str(table), "--out", str(tmp_path / "p.csv")]) == 0
    assert len(pd.read_csv(tmp_path / "p.csv")) == 20


def test_evaluate_on_data_that_does_not_match_the_run(tmp_path, capsys, trained):
    err = _error(capsys, ["evaluate", str(trained), "--data", "ihdp", "--no-figures"])
    assert "missing covariate column" in err and "age" in err
    df = _frame(60)
    df.loc[df.index[:20], "treatment"] = 2  # three groups
    err = _error(capsys, ["evaluate", str(trained), "--data", str(_csv(tmp_path, df, "k3.csv")), "--no-figures"])
    assert "3 treatment groups" in err and "2" in err


def test_evaluate_missing_run_dir(tmp_path, capsys):
    err = _error(capsys, ["evaluate", str(tmp_path / "nothing")])
    assert "nothing" in err and "not found" in err


# ------------------------------------------------------------------ a real process


def test_a_real_process_prints_one_line_and_exits_2(tmp_path):
    res = subprocess.run([sys.executable, "-m", "csna", "train", "--data", str(tmp_path / "gone.csv"), "--quiet"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "gone.csv" in lines[0] and "Traceback" not in res.stderr
    assert not (tmp_path / "runs").exists()


def test_load_table_api_raises_data_error_with_the_message(tmp_path):
    df = _frame()
    df.loc[2, "age"] = np.nan
    with pytest.raises(DataError, match=r"covariate 'age' has 1 NaN/Inf values .*row 3"):
        load_table(_csv(tmp_path, df), treatment="treatment", outcome="outcome")
    d = load_table(_csv(tmp_path, df), treatment="treatment", outcome="outcome", impute=True)
    assert np.isnan(d.X["age"].iloc[2])
