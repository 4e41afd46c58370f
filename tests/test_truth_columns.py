"""Truth columns (mu0, mu1, ...) of a table are never covariates: in memory, streamed, and
through `csna train --data`."""

import json

import numpy as np
import pandas as pd
import pytest

from csna.cli import main
from csna.data import DataError, load_table
from csna.data.stream import scan_table
from csna.data.synthetic_parquet import write_synthetic

COVARIATES = ["x0", "x1", "x2", "x3"]
NOTE = "dropped truth columns mu0, mu1 (never covariates)"


@pytest.fixture(scope="module")
def parquet(tmp_path_factory):
    """A table exactly as `csna data synthetic` writes it: covariates, treatment, outcome, truth."""
    return write_synthetic(tmp_path_factory.mktemp("truth") / "t.parquet", rows=600, cols=4, seed=0)


@pytest.fixture(scope="module")
def csv(parquet):
    path = parquet.with_suffix(".csv")
    pd.read_parquet(parquet).to_csv(path, index=False)
    return path


def _one_note(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("csna: note: ") and NOTE in lines[0], err
    return lines[0]


@pytest.mark.parametrize("fixture", ["parquet", "csv"])
def test_load_table_drops_the_truth_with_a_note_and_keeps_it_for_evaluation(fixture, request, capsys):
    path = request.getfixturevalue(fixture)
    data = load_table(path, treatment="treatment", outcome="outcome")
    _one_note(capsys)
    assert list(data.X.columns) == COVARIATES
    raw = pd.read_parquet(request.getfixturevalue("parquet"))
    np.testing.assert_allclose(data.mu, raw[["mu0", "mu1"]].to_numpy(), rtol=1e-12)


def test_scan_table_drops_the_same_columns_with_the_same_note(parquet, capsys):
    sc = scan_table(parquet, treatment="treatment", outcome="outcome", fit_rows=200, eval_rows=100)
    _one_note(capsys)
    assert sc.covariates == COVARIATES and list(sc.fit_frame.columns) == COVARIATES
    assert sc.truth == ["mu0", "mu1"] and sc.test.mu is not None


def test_naming_a_truth_column_as_a_covariate_is_an_error_in_both_paths(parquet):
    with pytest.raises(DataError, match="mu1") as mem:
        load_table(parquet, treatment="treatment", outcome="outcome", covariates=["x0", "mu1"])
    with pytest.raises(DataError, match="mu1") as streamed:
        scan_table(parquet, treatment="treatment", outcome="outcome", covariates=["x0", "mu1"])
    assert str(mem.value) == str(streamed.value)  # one rule, one message
    assert "\n" not in str(mem.value)


def test_a_table_without_truth_says_nothing(parquet, tmp_path, capsys):
    path = tmp_path / "plain.csv"
    pd.read_parquet(parquet).drop(columns=["mu0", "mu1"]).to_csv(path, index=False)
    data = load_table(path, treatment="treatment", outcome="outcome")
    assert list(data.X.columns) == COVARIATES and data.mu is None
    assert capsys.readouterr().err == ""


TINY = ["--set", "train.ensemble=1", "--set", "phase1.epochs=1", "--set", "phase1.min_epochs=1",
        "--set", "phase2.epochs=1", "--set", "phase3.epochs=1", "--set", "phase4.epochs=0",
        "--set", "train.max_steps=2", "--quiet", "--no-figures"]


def test_csna_train_on_a_synthetic_table_never_trains_on_the_truth(csv, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(csv), *TINY, "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert NOTE in err
    prep = json.loads((out / "preprocess.json").read_text())["preprocessor"]
    assert [c["name"] for c in prep["columns"]] == COVARIATES


def test_csna_train_with_a_truth_covariate_is_a_one_line_error(csv, tmp_path, capsys):
    argv = ["train", "--data", str(csv), *TINY, "--set", "data.covariates=[x0,mu0]", "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("csna: error: ") and "mu0" in err and len(err.splitlines()) == 1
