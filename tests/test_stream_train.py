"""Training from a table read chunk by chunk (data.stream, issue 6)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from csna.cli import main
from csna.config import load_config
from csna.data.stream import row_split
from csna.data.synthetic_parquet import write_synthetic
from csna.prepare import prepare_stream, select_device

TINY = ["--set", "train.ensemble=1", "--set", "data.stream=true", "--set", "data.stream_fit_rows=1500",
        "--set", "data.stream_eval_rows=800",
        "--set", "phase1.epochs=2", "--set", "phase1.min_epochs=1", "--set", "phase2.epochs=1",
        "--set", "phase3.epochs=1", "--set", "phase4.epochs=1", "--set", "train.batch_size=128",
        "--set", "data.shuffle_rows=1024", "--no-figures", "--quiet"]


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    path = tmp_path_factory.mktemp("stream") / "t.parquet"
    write_synthetic(path, rows=5000, cols=12, seed=3, chunk_rows=1000)
    return path


def test_stream_source_yields_every_training_row_once_in_the_batches_it_announces(table):
    cfg = load_config(None, ["data.stream=true", "data.stream_fit_rows=500", "data.stream_eval_rows=300",
                             "train.batch_size=97", "data.shuffle_rows=700"], data_source=str(table))
    _, _, _, source, n_rows = prepare_stream(cfg, select_device("cpu"))
    expected = int((row_split(np.arange(5000), tuple(cfg.data.split), cfg.train.seed) == 0).sum())
    assert n_rows == 5000 and len(source) == expected
    batches = list(source.batches(97, seed=11))
    assert [b for b, _ in batches] == list(range(source.num_batches(97)))
    assert sum(len(s) for _, s in batches) == expected
    # resuming mid-epoch skips exactly the batches already trained on
    again = list(source.batches(97, seed=11, start=3))
    assert [b for b, _ in again] == list(range(3, len(batches)))
    np.testing.assert_array_equal(again[0][1].x.numpy(), batches[3][1].x.numpy())


def test_streamed_training_writes_a_run_and_evaluates_on_the_kept_samples(table, tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--data", str(table), *TINY, "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert np.isfinite(m["sqrt_pehe_out"]) and m["n_test"] > 0
    # the kept validation rows trained no member: they are out-of-fold for the doubly-robust estimate
    assert m["dr_rows"] > 0 and np.isfinite(m["ate_dr"]) and np.isfinite(m["ate_dr_se"])
    assert all((out / f).is_file() for f in ("causal_encoder.pt", "meta_controller.pt", "preprocess.json"))
    assert main(["evaluate", str(out), "--no-figures"]) == 0
    assert json.loads((out / "metrics.json").read_text())["sqrt_pehe_out"] == pytest.approx(m["sqrt_pehe_out"])


def test_stream_of_a_built_in_source_is_a_one_line_error(tmp_path, capsys):
    assert main(["train", "--set", "data.stream=true", "--out", str(tmp_path / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.stream" in err[0]



def test_a_streamed_ensemble_keeps_one_split_and_averages_its_members(table, tmp_path):
    import dataclasses

    import pandas as pd

    from csna.predict import predict_features
    from csna.rundir import load_run

    out = tmp_path / "ens"
    assert TINY[:2] == ["--set", "train.ensemble=1"]
    assert main(["train", "--data", str(table), *TINY[2:], "--set", "train.ensemble=2", "--out", str(out)]) == 0
    run = load_run(out)
    assert len(run.members) == 1
    member = run.members[0]
    assert member.cfg.train.seed == run.cfg.train.seed + 1
    assert member.cfg.data.split_seed == run.cfg.train.seed  # the same stream split, so the same test rows
    x = run.prep.features(pd.read_parquet(table).head(300)[list(run.prep.pre.input_columns_)])
    both = predict_features(run, x)["mu"]
    alone = [predict_features(dataclasses.replace(r, members=[]), x)["mu"] for r in (run, member)]
    assert np.abs(alone[0] - alone[1]).max() > 1e-4
    np.testing.assert_allclose(both, (alone[0] + alone[1]) / 2, rtol=1e-6, atol=1e-6)
