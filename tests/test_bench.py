"""csna bench: balance terms, the neural and tree peers, ablation configs, and the CLI's outputs."""

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from csna.bench import balance, neural, peers
from csna.bench import results as R
from csna.bench.cli import main
from csna.bench.run import ABLATIONS, BenchSpec, Task, ablation_path, csna_config, draw_splits, run_task, split_id
from csna.config import load_config
from csna.data import ihdp
from csna.prepare import split_data

HAS_LGBM = importlib.util.find_spec("lightgbm") is not None
HAS_ECONML = HAS_LGBM and importlib.util.find_spec("econml") is not None
EFFECT = 2.0


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def linear_problem(n=300, p=5, seed=0):
    """y = x·b + 2 t + noise with confounded t: every peer should find τ = 2 everywhere."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, p))
    t = (rng.random(n) < 1 / (1 + np.exp(-x[:, 0]))).astype(np.int64)
    y = x @ rng.uniform(0.5, 1.5, p) + EFFECT * t + 0.3 * rng.standard_normal(n)
    perm = rng.permutation(n)
    return x, t, y, np.sort(perm[:200]), np.sort(perm[200:260])


# --- balance terms -----------------------------------------------------------------------------


@pytest.mark.parametrize("ipm", ["mmd", "wass"])
def test_balance_is_zero_for_identical_groups_and_grows_with_shift(ipm):
    torch.manual_seed(0)
    a = torch.randn(40, 6, dtype=torch.float64)
    b = torch.randn(60, 6, dtype=torch.float64)
    f = balance.IPMS[ipm]
    assert f(a, a.clone()).item() == pytest.approx(0.0, abs=1e-10)
    values = [f(a, b + s).item() for s in (0.0, 0.5, 1.0, 2.0)]
    assert all(v >= 0 for v in values)
    assert all(lo < hi for lo, hi in zip(values, values[1:])), values


def test_mmd_matches_a_loop_over_pairs():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((7, 3)), rng.standard_normal((5, 3)) + 0.3
    k = lambda u, v: np.exp(-np.sum((u - v) ** 2) / 2.0)  # noqa: E731
    naive = (np.mean([k(u, v) for u in a for v in a]) + np.mean([k(u, v) for u in b for v in b])
             - 2 * np.mean([k(u, v) for u in a for v in b]))
    assert balance.mmd2_rbf(torch.tensor(a), torch.tensor(b)).item() == pytest.approx(naive, rel=1e-10)


# --- peers -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tarnet", "cfr-mmd", "cfr-wass", "dragonnet"])
def test_neural_peer_recovers_a_constant_effect(name):
    x, t, y, tr, va = linear_problem()
    pred = peers.fit_peer(name, x, t, y, {"train": tr, "val": va}, binary=False, seed=0,
                          options={"max_epochs": 40, "n_configs": 1})
    assert pred.mu.shape == (len(x), 2) and np.isfinite(pred.tau).all()
    pehe = np.sqrt(np.mean((pred.tau - EFFECT) ** 2))
    assert pehe < 0.5 * EFFECT  # the zero-effect baseline's √PEHE is EFFECT
    assert abs(pred.tau.mean() - EFFECT) < 0.3 * EFFECT


def test_neural_peer_binary_outcome_gives_probabilities():
    x, t, y, tr, va = linear_problem()
    yb = (y > np.median(y)).astype(np.float64)
    res = neural.fit_predict("dragonnet", x, t, yb, tr, va, binary=True, max_epochs=5, n_configs=1)
    assert ((res.mu >= 0) & (res.mu <= 1)).all() and res.flops > 0


@pytest.mark.skipif(not HAS_LGBM, reason="needs lightgbm (pip install 'csna[bench]')")
@pytest.mark.parametrize("name", ["t-learner-lgbm", "s-learner-lgbm", "x-learner-lgbm"])
def test_tree_peer_recovers_a_constant_effect(name):
    x, t, y, tr, va = linear_problem()
    pred = peers.fit_peer(name, x, t, y, {"train": tr, "val": va}, binary=False, seed=0)
    assert np.sqrt(np.mean((pred.tau - EFFECT) ** 2)) < 0.5 * EFFECT


@pytest.mark.skipif(not HAS_ECONML, reason="needs econml and lightgbm (pip install 'csna[bench]')")
def test_dr_learner_recovers_a_constant_effect():
    x, t, y, tr, va = linear_problem()
    pred = peers.fit_peer("dr-learner", x, t, y, {"train": tr, "val": va}, binary=False, seed=0)
    assert pred.mu is None and np.sqrt(np.mean((pred.tau - EFFECT) ** 2)) < 0.5 * EFFECT


def test_score_uses_in_and_out_rows():
    mu = np.array([[0.0, 1.0], [0.0, 2.0], [0.0, 3.0], [0.0, 4.0]])
    m = peers.score(np.array([1.0, 2.0, 0.0, 0.0]), None, mu, np.zeros(4, int), np.zeros(4), np.array([0, 1]),
                    np.array([2, 3]), binary=False)
    assert m["sqrt_pehe_in"] == 0.0 and m["eps_ate_out"] == pytest.approx(3.5)
    assert m["sqrt_pehe_out"] == pytest.approx(np.sqrt((9 + 16) / 2))


def test_unknown_peer_and_missing_dependency_are_one_line_errors(tmp_path, capsys, monkeypatch):
    assert main(["bench", "ihdp", "--reps", "1", "--peers", "tarnett", "--out", str(tmp_path)]) == 2
    assert "unknown peer(s) tarnett" in capsys.readouterr().err
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "lightgbm" else real(n, *a))
    assert main(["bench", "ihdp", "--reps", "1", "--peers", "t-learner-lgbm", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lightgbm" in err[0] and "pip install 'csna[bench]'" in err[0]


# --- ablations ---------------------------------------------------------------------------------


def test_ablation_configs_load_and_switch_off_their_part():
    base = load_config(None)
    cfgs = {a: load_config(ablation_path(a)) for a in ABLATIONS}
    assert [cfgs["phase1-only"].phase(n).epochs for n in (2, 3, 4)] == [0, 0, 0]
    assert cfgs["no-lattice"].model.use_lattice is False
    assert cfgs["sequence-rope"].model.positional == "sequence" and cfgs["no-rope"].model.positional == "none"
    assert all(cfgs["lambda1-0.5"].phase(n).lambda_causal == 0.5 for n in (1, 2, 3, 4))
    assert all(base.phase(n).lambda_causal == 0 for n in (1, 2, 3, 4))
    assert all(getattr(cfgs["no-reg"].phase(n), k) == 0 for n in (3, 4)
               for k in ("lambda_dc", "lambda_dis", "lambda_stable"))
    assert cfgs["gates-off"].phase4.epochs == 0 and cfgs["gates-off"].phase3.epochs == base.phase3.epochs
    assert cfgs["z-norm"].model.z_norm is True and base.model.z_norm is False
    # one model each: the components are compared within a single model, against "single"
    assert base.train.ensemble == 4 and all(c.train.ensemble == 1 for c in cfgs.values())
    single = cfgs["single"].to_dict()
    single["train"]["ensemble"] = base.train.ensemble
    assert single == base.to_dict()  # "single" changes nothing else
    # an ablation keeps its switch whatever budget --set gives
    spec = BenchSpec("ihdp", (0,), overrides=("phase4.epochs=1",))
    assert csna_config(spec, 0, ablation_path("gates-off")).phase4.epochs == 0


def test_every_ablation_resolves_through_the_packaged_resources():
    """The ablation configs ship inside the package (read with importlib.resources), so
    `csna bench --ablations` works after a plain `pip install .`, and there is one copy."""
    from importlib import resources

    shipped = resources.files("csna").joinpath("configs", "ablations")
    shipped_names = sorted(f.name for f in shipped.iterdir() if f.name.endswith(".yaml"))
    assert shipped_names == sorted(f"{a}.yaml" for a in ABLATIONS)
    for a in ABLATIONS:
        path = ablation_path(a)
        assert path.is_file() and path.read_text() == shipped.joinpath(f"{a}.yaml").read_text(), a
        assert Path(str(shipped)) in path.resolve().parents, a
    root = Path(__file__).resolve().parents[1]
    assert not (root / "configs").exists()  # no second copy to drift


def test_ablations_run(tiny_overrides):
    spec = BenchSpec("ihdp", (0,), overrides=tuple(tiny_overrides))
    splits = draw_splits(spec, 0)
    for a in ("phase1-only", "no-lattice", "no-rope", "gates-off"):
        row = run_task(Task(spec, 0, f"csna-{a}", splits))
        assert "error" not in row, row.get("traceback")
        assert np.isfinite(row["sqrt_pehe_out"])


# --- the command -------------------------------------------------------------------------------


def test_bench_ihdp_writes_results_on_one_shared_split(tmp_path, tiny_overrides, capsys):
    cheap = "t-learner-lgbm,tarnet" if HAS_LGBM else "tarnet"
    args = ["bench", "ihdp", "--reps", "1", "--peers", cheap, "--neural-epochs", "3", "--neural-configs", "1",
            "--out", str(tmp_path), "--quiet"] + [a for o in tiny_overrides for a in ("--set", o)]
    assert main(args) == 0
    df = pd.read_csv(tmp_path / "results.csv", dtype={"split_id": str})
    assert list(df.columns) == ["estimator", "replication", "sqrt_pehe_in", "sqrt_pehe_out", "eps_ate_in",
                                "eps_ate_out", "fit_seconds", "flops_fit", "split_id"] + R.INTERVAL_COLUMNS
    csna = df.set_index("estimator").loc["csna"]
    assert csna["ate_dr_covered"] == float(csna["eps_ate_dr"] <= 1.959964 * csna["ate_dr_se"])
    assert df.set_index("estimator").drop(index="csna")["ate_dr"].isna().all()  # peers have none
    assert sorted(df["estimator"]) == sorted(["csna"] + cheap.split(","))
    assert (df["replication"] == 0).all() and np.isfinite(df.iloc[:, 2:7].to_numpy(float)).all()
    # every estimator was scored on csna's own default test rows
    own = split_data(load_config(None, ["data.replication=0"]), ihdp(0))["test"]
    assert set(df["split_id"]) == {split_id(own)}
    md = (tmp_path / "results.md").read_text()
    assert "| csna |" in md and "| tarnet |" in md and "csna's own PyTorch implementation" in md
    # a second run refuses to mix results unless asked; --resume finds nothing left to do
    assert main(args) == 2
    assert main(args + ["--resume"]) == 0
    assert f"0 fits ({len(df)} already done)" in capsys.readouterr().err
    assert len(pd.read_csv(tmp_path / "results.csv")) == len(df)


def test_bench_synthetic_reports_auc(tmp_path):
    args = ["bench", "synthetic", "--reps", "1", "--n", "400", "--p", "5", "--no-csna", "--peers", "tarnet",
            "--neural-epochs", "3", "--neural-configs", "1", "--out", str(tmp_path), "--quiet"]
    assert main(args) == 0
    df = pd.read_csv(tmp_path / "results.csv")
    assert "auc_out" in df.columns and 0.0 <= df["auc_out"].iloc[0] <= 1.0
    assert df["sqrt_pehe_out"].iloc[0] < 1.0  # effects on the probability scale
