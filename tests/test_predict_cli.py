"""`csna predict` and `CSNAEstimator.load` on a run directory made by `csna train`."""

import numpy as np
import pandas as pd
import pytest

from csna import CSNAEstimator
from csna.cli import main
from csna.data import DataError, ihdp
from csna.predict import predict_frame
from csna.rundir import load_run

TINY = ["train.ensemble=1", "phase1.epochs=2", "phase1.min_epochs=1", "phase2.epochs=1", "phase3.epochs=1",
        "phase4.epochs=1", "log.tensorboard=false"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A `csna train` run on IHDP and the training covariates written as a CSV."""
    root = tmp_path_factory.mktemp("predict")
    rd = root / "run"
    sets = [a for s in TINY for a in ("--set", s)]
    assert main(["train", "--out", str(rd), "--quiet", "--no-figures"] + sets) == 0
    X = ihdp(0).X
    csv = root / "ihdp_x.csv"
    X.to_csv(csv, index=False)
    return rd, X, csv


def test_predict_cli_reproduces_in_memory_predictions(trained, tmp_path):
    rd, X, csv = trained
    out = tmp_path / "pred" / "out.csv"
    assert main(["predict", str(rd), "--data", str(csv), "--out", str(out)]) == 0
    got = pd.read_csv(out)
    assert list(got.columns) == ["mu_0", "mu_1", "ite", "propensity_1"] and len(got) == len(X)
    want = predict_frame(load_run(rd), X)
    np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(got["ite"], got["mu_1"] - got["mu_0"], atol=1e-5)
    est = CSNAEstimator.load(rd)
    np.testing.assert_allclose(got[["mu_0", "mu_1"]].to_numpy(), est.predict(X), atol=1e-5, rtol=0)
    np.testing.assert_allclose(got["propensity_1"], est.propensity(X)[:, 1], atol=1e-5, rtol=0)


def test_load_reads_a_csna_train_run(trained, tmp_path):
    rd, X, _ = trained
    est = CSNAEstimator.load(rd)
    assert est.covariates_ == list(X.columns) and est.n_treatments_ == 2
    assert est.config_.phase1.epochs == 2 and est.run_.gated
    ite = est.effect(X)
    assert ite.shape == (len(X),) and np.isfinite(ite).all()
    assert est.ate(X) == pytest.approx(float(ite.mean()))
    copy = CSNAEstimator.load(est.save(tmp_path / "copy"))  # a loaded run saves its last checkpoint
    np.testing.assert_array_equal(copy.predict(X), est.predict(X))


def test_extra_columns_are_ignored_and_order_does_not_matter(trained, tmp_path):
    rd, X, csv = trained
    base = tmp_path / "base.csv"
    assert main(["predict", str(rd), "--data", str(csv), "--out", str(base)]) == 0
    other = tmp_path / "other.csv"
    X[X.columns[::-1]].assign(id=np.arange(len(X)), treat=0).to_csv(other, index=False)
    out = tmp_path / "out.csv"
    assert main(["predict", str(rd), "--data", str(other), "--out", str(out)]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(out), pd.read_csv(base))


def test_missing_column_is_a_clear_error(trained, tmp_path, capsys):
    rd, X, _ = trained
    bad = tmp_path / "bad.csv"
    X.drop(columns=["bw", "momage"]).to_csv(bad, index=False)
    capsys.readouterr()
    assert main(["predict", str(rd), "--data", str(bad), "--out", str(tmp_path / "o.csv")]) == 2
    err = capsys.readouterr().err
    assert "bw" in err and "momage" in err and "Traceback" not in err
    assert not (tmp_path / "o.csv").exists()
    with pytest.raises(DataError, match="bw"):
        predict_frame(load_run(rd), X.drop(columns=["bw"]))


def test_missing_values_are_a_clear_error(trained, tmp_path, capsys):
    rd, X, _ = trained
    bad = tmp_path / "nan.csv"
    X.assign(bw=X["bw"].where(X.index != 3)).to_csv(bad, index=False)
    capsys.readouterr()
    assert main(["predict", str(rd), "--data", str(bad), "--out", str(tmp_path / "o.csv")]) == 2
    err = capsys.readouterr().err
    assert "bw" in err and "Traceback" not in err


def test_predict_cli_reads_a_saved_estimator(tmp_path):
    d = ihdp(1)
    y, t, X = d.Y, d.T, d.X.iloc[:, :8]
    est = CSNAEstimator(phase1__epochs=2, phase1__min_epochs=1, phase2__epochs=1, phase3__epochs=0,
                        phase4__epochs=0, train__progress=False).fit(y, t, X=X)
    rd = est.save(tmp_path / "est")
    csv = tmp_path / "x.csv"
    X.to_csv(csv, index=False)
    out = tmp_path / "out.csv"
    assert main(["predict", str(rd), "--data", str(csv), "--out", str(out)]) == 0
    got = pd.read_csv(out)
    np.testing.assert_allclose(got[["mu_0", "mu_1"]].to_numpy(), est.predict(X), atol=1e-5, rtol=0)
    np.testing.assert_allclose(got["ite"].to_numpy(), est.effect(X), atol=1e-5, rtol=0)
