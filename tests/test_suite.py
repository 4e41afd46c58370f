"""The stress suite (issue 17): each knob of the generator does what it says, asserted on drawn
data; the cell list covers every regime; the ratio-to-best summary against a hand example; a
tiny end-to-end ``csna bench suite`` run."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from csna.bench import dgp
from csna.bench import suite_report as SR
from csna.bench.cli import main
from csna.bench.dgp import Knobs, draw, generate, potential_means, propensity
from csna.bench.suite import BASE, CELLS, QUICK_N, cell_seed, quick_cells, select_cells


# --- the generator ------------------------------------------------------------------------------


@pytest.mark.parametrize("covariates", ["mixed", "ihdp"])
@pytest.mark.parametrize("share", [0.5, 0.1, 0.02])
def test_treated_share_is_the_mean_propensity(covariates, share):
    n = 5000
    d = generate(Knobs(covariates=covariates, n=n, treated_share=share, confounding="strong"), seed=3)
    assert d.extra["propensity"].mean() == pytest.approx(share, abs=1e-6)
    assert abs(d.T.mean() - share) < 4 * np.sqrt(share * (1 - share) / n)


def _outside(e):
    return float(np.mean((e < 0.02) | (e > 0.98)))


def test_overlap_strong_is_visibly_poor_randomised_is_perfect_moderate_is_fine():
    for seed in range(3):
        strong = generate(Knobs(n=4000, confounding="strong"), seed).extra["propensity"]
        assert _outside(strong) > 0.05
        rand = generate(Knobs(n=4000, confounding="randomised"), seed).extra["propensity"]
        assert _outside(rand) == 0.0 and np.ptp(rand) < 1e-12  # no instruments: e(x) is the share
        assert _outside(generate(Knobs(n=4000, confounding="moderate"), seed).extra["propensity"]) < 0.01


def test_confounding_biases_the_naive_contrast_and_randomisation_does_not():
    def bias(confounding):
        out = []
        for seed in range(8):
            d = generate(Knobs(n=5000, confounding=confounding, heterogeneity="constant"), seed)
            out.append(d.Y[d.T == 1].mean() - d.Y[d.T == 0].mean() - dgp.GAUSSIAN["effect"])
        return np.abs(np.mean(out)), np.mean(np.abs(out))

    assert bias("randomised")[0] < 0.1
    assert bias("strong")[1] > 1.0


@pytest.mark.parametrize("outcome", dgp.OUTCOMES)
def test_constant_effect_cells_have_a_constant_effect(outcome):
    d = generate(Knobs(n=800, heterogeneity="constant", outcome=outcome, confounding="strong"), seed=1)
    tau = d.mu[:, 1] - d.mu[:, 0]
    assert np.ptp(tau) <= 1e-9 * max(1.0, np.abs(d.mu).max())
    for het in ("moderate", "strong"):
        tau = np.diff(generate(Knobs(n=800, heterogeneity=het, outcome=outcome), seed=1).mu, axis=1)
        assert np.std(tau) > 0.02 * abs(np.mean(tau))


def test_strong_heterogeneity_is_nonlinear():
    from sklearn.linear_model import LinearRegression

    r2 = {}
    for het in ("moderate", "strong"):
        scores = []
        for seed in range(6):
            d = draw(Knobs(n=3000, heterogeneity=het), seed)
            tau = d.data.mu[:, 1] - d.data.mu[:, 0]
            Z = d.Z["conf"]
            scores.append(LinearRegression().fit(Z, tau).score(Z, tau))
        r2[het] = np.mean(scores)
    assert r2["moderate"] > 0.999 and r2["strong"] < 0.8


def test_earnings_have_a_point_mass_at_zero_a_long_right_tail_and_thousands():
    y = generate(Knobs(n=20000, outcome="earnings"), seed=0).Y.astype(np.float64)
    assert 0.2 < np.mean(y == 0) < 0.6 and y.min() == 0.0
    pos = y[y > 0]
    skew = np.mean((pos - pos.mean()) ** 3) / pos.std() ** 3
    assert 1000 < np.median(pos) < 50000 and skew > 2 and np.quantile(pos, 0.99) > 5 * np.median(pos)


@pytest.mark.parametrize("outcome", dgp.OUTCOMES)
def test_mu_is_the_monte_carlo_mean_of_y_under_do_t(outcome):
    knobs = Knobs(n=400, outcome=outcome, heterogeneity="strong", confounding="strong")
    d = draw(knobs, seed=5)
    rows = np.array([0, 7, 99, 123, 321])
    reps = 200_000
    Z = {k: np.repeat(v[rows], reps, axis=0) for k, v in d.Z.items()}  # (5 · reps, ·)
    rng = np.random.default_rng(0)
    for t in (0, 1):
        y = dgp.draw_outcome(knobs, d.structure, Z, np.full(len(rows) * reps, t), rng).reshape(len(rows), reps)
        mu = d.data.mu[rows, t]
        se = y.std(axis=1) / np.sqrt(reps)
        assert np.all(np.abs(y.mean(axis=1) - mu) < 5 * se + 1e-12), (t, y.mean(axis=1), mu)


def _perturbed(Z, block, rng):
    return {**Z, block: Z[block] + rng.standard_normal(Z[block].shape)}


def test_instruments_cause_t_only_precision_variables_y_only_irrelevant_neither():
    knobs = Knobs(n=600, instruments=3, precision=3, irrelevant=4, confounding="strong", heterogeneity="strong")
    rng = np.random.default_rng(0)
    for outcome in dgp.OUTCOMES:
        kn = dataclasses.replace(knobs, outcome=outcome)
        d = draw(kn, seed=2)
        mu, e = potential_means(kn, d.structure, d.Z), propensity(d.structure, d.Z)
        np.testing.assert_allclose(mu, d.data.mu)
        inst, prec, irr = (_perturbed(d.Z, b, rng) for b in ("inst", "prec", "irr"))
        np.testing.assert_array_equal(potential_means(kn, d.structure, inst), mu)
        assert np.abs(propensity(d.structure, inst) - e).max() > 0.05
        np.testing.assert_array_equal(propensity(d.structure, prec), e)
        assert np.abs(potential_means(kn, d.structure, prec) - mu).max() > 1e-3 * np.abs(mu).max()
        np.testing.assert_array_equal(potential_means(kn, d.structure, irr), mu)
        np.testing.assert_array_equal(propensity(d.structure, irr), e)
    cols = generate(knobs, 0).X.columns
    assert sum(c.startswith("inst") for c in cols) == 3 and sum(c.startswith("irr") for c in cols) == 4


def test_binary_mu_are_probabilities():
    for seed in range(10):
        for het in dgp.HETEROGENEITY:
            d = generate(Knobs(n=2000, outcome="binary", heterogeneity=het, confounding="strong"), seed)
            assert d.mu.min() >= 0.0 and d.mu.max() <= 1.0
            assert set(np.unique(d.Y)) == {0, 1} and d.outcome_type == "binary"


def test_covariates_mixed_types_missing_values_and_ihdp_resampling():
    X = generate(Knobs(n=3000, missing=0.1), 0).X
    cats = [c for c in X.columns if not pd.api.types.is_numeric_dtype(X[c])]
    assert sorted(X[c].nunique() for c in cats) == [3, 8, 20]
    assert sum(set(X[c].dropna().unique()) <= {0, 1} for c in X.columns if c not in cats) == 5
    assert X["num0"].skew() > 2  # skewed, with outliers
    missing = X.isna().mean()
    assert set(missing[missing > 0].index) == set(dgp.MISSING_COLUMNS["mixed"])
    assert all(0.07 < v < 0.13 for v in missing[missing > 0])
    from csna.data.ihdp import load_covariates

    real = load_covariates()[0]
    Xi = generate(Knobs(covariates="ihdp", n=2000), 0).X
    assert list(Xi.columns) == list(real.columns) and len(Xi) == 2000
    assert Xi.merge(real.drop_duplicates(), how="left", indicator=True)["_merge"].eq("both").all()


def test_generate_is_deterministic_in_knobs_and_seed():
    a, b = generate(BASE, 7), generate(BASE, 7)
    pd.testing.assert_frame_equal(a.X, b.X)
    np.testing.assert_array_equal(a.Y, b.Y)
    assert not np.array_equal(generate(BASE, 8).Y, a.Y)


# --- the cells ----------------------------------------------------------------------------------


def test_the_cell_list_covers_every_regime_one_or_two_knobs_at_a_time():
    names = [c.name for c in CELLS]
    assert len(names) >= 24 and len(set(names)) == len(names)
    k = [c.knobs for c in CELLS]
    assert {x.covariates for x in k} == set(dgp.COVARIATES)
    assert {x.confounding for x in k} == set(dgp.CONFOUNDING)
    assert {x.heterogeneity for x in k} == set(dgp.HETEROGENEITY)
    assert {x.outcome for x in k} == set(dgp.OUTCOMES)
    ns = {x.n for x in k}
    assert any(400 <= n <= 600 for n in ns) and 5000 in ns and 50_000 in ns
    assert sum(x.n >= 50_000 for x in k) <= 2
    shares = {x.treated_share for x in k}
    assert 0.5 in shares and 0.1 in shares and any(0.01 <= s <= 0.02 for s in shares)
    for field in ("missing", "instruments", "precision", "irrelevant"):
        assert any(getattr(x, field) > 0 for x in k), field
    for c in CELLS:
        changed = [f.name for f in dataclasses.fields(Knobs) if getattr(c.knobs, f.name) != getattr(BASE, f.name)]
        assert len(changed) <= 2, (c.name, changed)
    q = quick_cells()
    assert 6 <= len(q) <= 10 and all(c.knobs.n <= QUICK_N for c in q)
    assert [c.name for c in select_cells(False, "base,binary")] == ["base", "binary"]


def test_cells_draw_independent_seeds_and_their_data_are_valid():
    assert cell_seed("base", 0) != cell_seed("binary", 0) and cell_seed("base", 0) != cell_seed("base", 1)
    assert cell_seed("base", 0) == cell_seed("base", 0)
    from csna.data import validate

    for c in quick_cells():
        d = c.data(1000)
        validate(d, allow_missing=c.knobs.missing > 0)
        assert d.mu.shape == (QUICK_N, 2) and d.T.min() == 0 and d.T.max() == 1


# --- the ratios ---------------------------------------------------------------------------------


def _hand_example():
    """Per-cell means (cells × estimators): c1 A 1 B 2 C 4; c2 A 3 B 1 C not run; c3 A 2 B 2 C 1,
    each the mean of two replications."""
    means = {("c1", "A"): 1, ("c1", "B"): 2, ("c1", "C"): 4, ("c2", "A"): 3, ("c2", "B"): 1,
             ("c3", "A"): 2, ("c3", "B"): 2, ("c3", "C"): 1}
    rows = [{"cell": c, "estimator": e, "replication": r, "sqrt_pehe_out": m + (0.5 if r else -0.5),
             "eps_ate_out": m, "eps_att_out": m, "fit_seconds": 1.0}
            for (c, e), m in means.items() for r in (0, 1)]
    return pd.DataFrame(rows)


def test_ratio_to_the_best_other_estimator_last_count_and_worst_against_a_hand_example():
    df = _hand_example()
    means = SR.cell_means(df, "sqrt_pehe_out", ["c1", "c2", "c3"])
    r = SR.ratio_to_best(means)
    expected = pd.DataFrame({"A": [0.5, 3.0, 2.0], "B": [2.0, 1 / 3, 2.0], "C": [4.0, np.nan, 0.5]},
                            index=["c1", "c2", "c3"])
    np.testing.assert_allclose(r[["A", "B", "C"]].to_numpy(), expected.to_numpy())
    s = SR.ratio_summary(means)
    assert s.loc["A"].to_dict() == pytest.approx({"cells": 3, "mean_ratio": (0.5 + 3 + 2) / 3, "worst_ratio": 3.0,
                                                  "last": 2})
    assert s.loc["B"].to_dict() == pytest.approx({"cells": 3, "mean_ratio": (2 + 1 / 3 + 2) / 3, "worst_ratio": 2.0,
                                                  "last": 1})
    assert s.loc["C"].to_dict() == pytest.approx({"cells": 2, "mean_ratio": 2.25, "worst_ratio": 4.0, "last": 1})
    table = SR.summary_table(df, ["c1", "c2", "c3"])
    assert list(table.index) == ["B", "A", "C"]  # by mean √PEHE_out ratio


def test_a_lone_estimator_has_no_ratio():
    df = _hand_example()
    r = SR.ratio_to_best(SR.cell_means(df[df["estimator"] == "A"], "sqrt_pehe_out"))
    assert r.isna().all().all()


# --- end to end ---------------------------------------------------------------------------------


def test_suite_cli_runs_one_small_cell_and_writes_the_required_columns(tmp_path, tiny_overrides):
    out = tmp_path / "s"
    args = ["bench", "suite", "--quick", "--cells", "missing", "--reps", "1", "--start", "1000", "--peers", "ridge-t",
            "--out", str(out), "--quiet"] + [a for o in tiny_overrides for a in ("--set", o)]
    assert main(args) == 0
    df = pd.read_csv(out / "results.csv")
    required = ["cell", "estimator", "replication", "sqrt_pehe_out", "eps_ate_out", "eps_att_out", "fit_seconds",
                "split_id"]
    assert set(required) <= set(df.columns)
    assert sorted(df["estimator"]) == ["csna", "ridge-t"] and set(df["cell"]) == {"missing"}
    assert df[required[3:7]].notna().all().all() and df["split_id"].nunique() == 1
    assert (out / SR.HEATMAP).is_file() and "## Per estimator" in (out / "results.md").read_text()
    # csna's row also has its doubly-robust estimates and whether their intervals hold the truth
    # (one member here: no pointwise interval); the peer's row leaves them empty.
    csna, ridge = df.set_index("estimator").loc["csna"], df.set_index("estimator").loc["ridge-t"]
    assert csna["ate_dr_se"] > 0 and csna["ate_dr_covered"] in (0, 1) and np.isnan(csna["cate_covered_out"])
    assert csna["ate_dr_covered"] == float(csna["eps_ate_dr"] <= 1.959964 * csna["ate_dr_se"])
    assert np.isnan(ridge["ate_dr"])
    assert main(args) == 2  # results exist: --resume or --overwrite
    assert main(args + ["--resume"]) == 0  # nothing left to run
    assert len(pd.read_csv(out / "results.csv")) == 2


def test_a_failed_fit_is_reported_not_fatal(tmp_path, monkeypatch):
    from csna.bench import peers

    def boom(*a, **k):
        raise RuntimeError("no luck")

    monkeypatch.setitem(peers.PEERS, "ridge-t", dataclasses.replace(peers.PEERS["ridge-t"], fit=boom))
    out = tmp_path / "f"
    args = ["bench", "suite", "--quick", "--cells", "base", "--reps", "1", "--start", "1000", "--no-csna",
            "--peers", "ridge-t,t-learner-lgbm", "--out", str(out), "--quiet"]
    pytest.importorskip("lightgbm")
    assert main(args) == 1
    assert list(pd.read_csv(out / "results.csv")["estimator"]) == ["t-learner-lgbm"]
    md = (out / "results.md").read_text()
    assert "## Failed fits (1)" in md and "| base | ridge-t | 1000 | RuntimeError: no luck |" in md
    assert "no luck" in (out / "failures.log").read_text()
