"""`csna evaluate RUN --data TABLE`: the run's own table keeps its saved split (train and
validation rows "in", test rows "out"); any other data is all new, and says so."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from csna.cli import main
from csna.data.synthetic_parquet import write_synthetic

TINY = ["--set", "train.ensemble=1", "--set", "phase1.epochs=1", "--set", "phase1.min_epochs=1",
        "--set", "phase2.epochs=1", "--set", "phase3.epochs=1", "--set", "phase4.epochs=1",
        "--set", "train.max_steps=2", "--quiet", "--no-figures"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaldata")
    table = root / "t.csv"
    pd.read_parquet(write_synthetic(root / "t.parquet", rows=500, cols=4, seed=1)).to_csv(table, index=False)
    run = root / "run"
    assert main(["train", "--data", str(table), *TINY, "--out", str(run)]) == 0
    return table, run


def _evaluate(run, *extra) -> dict:
    assert main(["evaluate", str(run), *extra]) == 0
    return json.loads((run / "metrics.json").read_text())


def _stable(m: dict) -> dict:
    return {k: v for k, v in m.items() if not k.startswith(("time_", "wall_"))}


def test_the_training_table_keeps_its_saved_split(trained, tmp_path):
    table, run = trained
    splits = json.loads((run / "splits.json").read_text())
    plain = _evaluate(run)
    copy = tmp_path / "same-content.csv"
    shutil.copy(table, copy)
    for given in (table, copy):  # the same file, and the same content under another name
        m = _evaluate(run, "--data", str(given))
        assert (m["n_train"], m["n_val"], m["n_test"]) == tuple(len(splits[k]) for k in ("train", "val", "test"))
        assert "sqrt_pehe_in" in m
        assert _stable(m) == _stable(plain)
    assert plain["eval_new_data"] is False


def test_other_data_is_all_out_of_sample_and_says_so(trained, tmp_path):
    table, run = trained
    other = tmp_path / "other.csv"
    df = pd.read_csv(table)
    df.iloc[::-1].to_csv(other, index=False)  # the same rows in another order: new data to the split
    assert main(["evaluate", str(run), "--data", str(other)]) == 0
    m = json.loads((run / "metrics.json").read_text())
    assert m["eval_new_data"] is True
    assert (m["n_train"], m["n_val"], m["n_test"]) == (0, 0, len(df))
    assert "sqrt_pehe_in" not in m and "sqrt_pehe_out" in m
    report = (run / "report.md").read_text()
    assert "new data: every unit is out-of-sample" in report
    np.testing.assert_equal(m["ate_hat_out"], m["ate_hat"])  # every row is a test row
