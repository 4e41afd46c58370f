import json
import time

import networkx as nx
import numpy as np
import pandas as pd
import pytest

from csna.data import (CausalData, DataError, Preprocessor, ihdp, load_table, read_frame,
                       split_indices, synthetic, validate)
from csna.data.ihdp import BINARY, CONTINUOUS

# ---------------------------------------------------------------- IHDP


def test_ihdp_shape_and_columns():
    d = ihdp(0)
    assert d.X.shape == (747, 25) and d.n == 747 and d.p == 25
    assert int(d.T.sum()) == 139
    assert list(d.X.columns) == CONTINUOUS + BINARY
    assert "site8" not in d.X.columns and "momwhite" not in d.X.columns
    assert d.T.dtype == np.int64 and d.Y.dtype == np.float32 and d.mu.dtype == np.float64
    assert d.mu.shape == (747, 2) and d.name == "ihdp-0"
    validate(d)


def test_ihdp_covariates_in_original_units():
    assert ihdp(0).X["bw"].min() > 500  # birth weight in grams, not standardised


@pytest.mark.parametrize("r", [0, 1, 7, 42])
def test_ihdp_att_is_four(r):
    d = ihdp(r)
    att = np.mean(d.ite_true[d.T == 1])
    assert abs(att - 4.0) < 1e-8


def test_ihdp_deterministic_and_distinct():
    a, b, c = ihdp(3), ihdp(3), ihdp(4)
    assert np.array_equal(a.Y, b.Y) and np.array_equal(a.mu, b.mu)
    assert not np.allclose(a.mu, c.mu)
    assert not np.allclose(a.Y, c.Y)


def test_ihdp_noise_is_unit_normal():
    d = ihdp(5)
    resid = d.Y - d.mu[np.arange(d.n), d.T]
    assert abs(resid.mean()) < 0.15 and abs(resid.std() - 1.0) < 0.1


# ---------------------------------------------------------------- synthetic


def test_synthetic_shapes_and_dtypes():
    d = synthetic(500, 12, seed=1, k_latent=6)
    assert d.X.shape == (500, 12) and list(d.X.columns) == [f"x{i}" for i in range(12)]
    assert all(d.X.dtypes == np.float32)
    assert d.T.shape == (500,) and d.T.dtype == np.int64 and set(np.unique(d.T)) == {0, 1}
    assert d.Y.dtype == np.float32 and d.mu.shape == (500, 2) and d.mu.dtype == np.float64
    assert d.graph.shape == (6, 6) and d.extra["latents"].shape == (500, 6)
    validate(d)


@pytest.mark.parametrize("seed", range(5))
def test_synthetic_graph_is_acyclic_and_order_is_topological(seed):
    d = synthetic(10, 5, seed=seed, k_latent=10, edge_prob=0.5)
    A = d.graph
    assert np.all(np.diag(A) == 0)
    assert not np.linalg.matrix_power(A, A.shape[0]).any()  # nilpotent <=> no cycle
    assert nx.is_directed_acyclic_graph(nx.DiGraph(A))
    order = d.extra["order"]
    assert np.array_equal(np.triu(A[np.ix_(order, order)]), A[np.ix_(order, order)])


def test_synthetic_binary_and_multiarm():
    d = synthetic(4000, 8, seed=2, outcome="binary", n_treatments=3)
    assert d.Y.dtype == np.int64 and set(np.unique(d.Y)) <= {0, 1}
    assert d.mu.shape == (4000, 3) and (d.mu > 0).all() and (d.mu < 1).all()
    assert set(np.unique(d.T)) == {0, 1, 2} and d.n_treatments == 3
    prop = d.extra["propensity"]
    assert np.allclose(prop.sum(1), 1, atol=1e-5) and prop.min() >= 0.05 - 1e-6
    # Bernoulli draws follow mu: mean of Y matches mean of mu_T.
    assert abs(d.Y.mean() - d.mu[np.arange(d.n), d.T].mean()) < 0.03


def test_synthetic_propensity_overlap_binary():
    e1 = synthetic(5000, 5, seed=3, confounding=5.0).extra["propensity"][:, 1]
    assert e1.min() >= 0.05 - 1e-6 and e1.max() <= 0.95 + 1e-6


def test_synthetic_is_confounded():
    d = synthetic(20000, 5, seed=0, confounding=2.0)
    naive = d.Y[d.T == 1].mean() - d.Y[d.T == 0].mean()
    assert abs(naive - d.ite_true.mean()) > 0.05


def test_synthetic_same_seed_same_truth_at_any_n():
    small, large = synthetic(100, 10, seed=4), synthetic(1000, 10, seed=4)
    assert np.array_equal(small.graph, large.graph)
    for key, value in small.extra["params"].items():
        assert np.array_equal(value, large.extra["params"][key]), key
    # Row-by-row streams: the first rows of a larger sample are the smaller sample.
    assert np.array_equal(small.mu, large.mu[:100])
    assert np.array_equal(small.X.to_numpy(), large.X.to_numpy()[:100])
    assert np.array_equal(small.T, large.T[:100]) and np.array_equal(small.Y, large.Y[:100])
    other = synthetic(100, 10, seed=5)
    assert not np.allclose(small.mu, other.mu)


def test_synthetic_continuous_noise_level():
    d = synthetic(20000, 4, seed=0, noise=0.5)
    resid = d.Y - d.mu[np.arange(d.n), d.T]
    assert abs(resid.std() - 0.5) < 0.02


@pytest.mark.slow
def test_synthetic_million_rows_is_fast():
    start = time.perf_counter()
    d = synthetic(1_000_000, 100, seed=0)
    elapsed = time.perf_counter() - start
    assert d.X.shape == (1_000_000, 100) and d.X.to_numpy().dtype == np.float32
    assert elapsed < 30, f"synthetic(1e6, 100) took {elapsed:.1f}s"


# ---------------------------------------------------------------- tables


def _frame(n=60, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "age": rng.normal(40, 10, n),
        "smoker": rng.integers(0, 2, n),
        "city": rng.choice(["paris", "lyon", "nice"], n),
        "t": np.arange(n) % 2,
        "y": rng.normal(size=n),
    })


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".pq"])
def test_load_table_round_trip(tmp_path, suffix):
    df = _frame()
    path = tmp_path / f"data{suffix}"
    df.to_csv(path, index=False) if suffix == ".csv" else df.to_parquet(path, index=False)
    d = load_table(path, treatment="t", outcome="y")
    assert list(d.X.columns) == ["age", "smoker", "city"]
    assert d.X["city"].tolist() == df["city"].tolist()
    assert np.allclose(d.X["age"], df["age"])
    assert d.T.dtype == np.int64 and np.array_equal(d.T, df["t"])
    assert d.Y.dtype == np.float32 and d.outcome_type == "continuous" and d.mu is None
    assert d.n_treatments == 2 and d.name == path.name
    validate(d)
    assert read_frame(path).shape == df.shape


def test_load_table_binary_outcome_and_covariate_subset(tmp_path):
    df = _frame()
    df["y"] = (df["y"] > 0).astype(int)
    path = tmp_path / "b.csv"
    df.to_csv(path, index=False)
    d = load_table(path, treatment="t", outcome="y", covariates=["city", "age"])
    assert d.outcome_type == "binary" and d.Y.dtype == np.int64
    assert list(d.X.columns) == ["city", "age"]


def _write(tmp_path, df, name="d.csv"):
    path = tmp_path / name
    df.to_csv(path, index=False)
    return path


def test_load_table_file_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_table(tmp_path / "nope.csv", treatment="t", outcome="y")
    with pytest.raises(DataError, match="directory"):
        load_table(tmp_path, treatment="t", outcome="y")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="empty"):
        load_table(tmp_path / "empty.csv", treatment="t", outcome="y")
    (tmp_path / "header.csv").write_text("t,y,x\n")
    with pytest.raises(DataError, match="no rows"):
        load_table(tmp_path / "header.csv", treatment="t", outcome="y")


@pytest.mark.parametrize("kwargs, column", [
    ({"treatment": "treat", "outcome": "y"}, "treat"),
    ({"treatment": "t", "outcome": "outcome"}, "outcome"),
    ({"treatment": "t", "outcome": "y", "covariates": ["age", "income"]}, "income"),
])
def test_load_table_missing_columns(tmp_path, kwargs, column):
    with pytest.raises(DataError, match=column) as err:
        load_table(_write(tmp_path, _frame()), **kwargs)
    assert "available: age, smoker, city, t, y" in str(err.value)


def test_load_table_value_errors(tmp_path):
    df = _frame()
    df.loc[[3, 5], "age"] = np.nan
    df.loc[7, "age"] = np.inf
    with pytest.raises(DataError, match="'age' has 3 NaN/Inf"):
        load_table(_write(tmp_path, df), treatment="t", outcome="y")

    df = _frame()
    df.loc[1, "y"] = np.nan
    with pytest.raises(DataError, match="outcome 'y'.*1 NaN"):
        load_table(_write(tmp_path, df), treatment="t", outcome="y")

    for bad_t, msg in [(np.arange(60) % 3 * 2, "0..2"), (np.ones(60, int), "only one"),
                       (np.arange(60) % 2 + 0.5, "non-integer"),
                       (np.where(np.arange(60) % 2, "a", "b"), "integer-coded")]:
        df = _frame()
        df["t"] = bad_t
        with pytest.raises(DataError, match=msg) as err:
            load_table(_write(tmp_path, df), treatment="t", outcome="y")
        assert "'t'" in str(err.value)


def test_validate_causal_data():
    d = synthetic(50, 3, seed=0)
    validate(d)
    bad = d.subset(np.arange(50))
    bad.X.iloc[4, 1] = np.nan
    with pytest.raises(DataError, match="'x1'"):
        validate(bad)
    bad = d.subset(np.arange(50))
    bad.T = np.zeros(50, dtype=np.int64)
    with pytest.raises(DataError, match="only one"):
        validate(bad)
    bad = d.subset(np.arange(50))
    bad.Y = bad.Y.copy()
    bad.Y[0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        validate(bad)


def test_subset_keeps_metadata_and_alignment():
    d = synthetic(100, 4, seed=0)
    mask = d.T == 1
    s = d.subset(mask)
    assert s.n == mask.sum() and (s.T == 1).all() and s.graph is d.graph
    assert np.array_equal(s.X.to_numpy(), d.X.to_numpy()[mask])
    assert np.array_equal(s.mu, d.mu[mask]) and np.array_equal(s.extra["latents"], d.extra["latents"][mask])
    assert list(s.X.index) == list(range(s.n))


def test_causal_data_properties():
    d = CausalData(X=pd.DataFrame({"a": [1.0, 2.0]}), T=np.array([0, 1]), Y=np.zeros(2, np.float32),
                   mu=np.array([[1.0, 3.0], [2.0, 2.5]]), outcome_type="continuous", n_treatments=2,
                   name="toy")
    assert np.array_equal(d.ite_true, [2.0, 0.5]) and np.array_equal(d.mu0, [1.0, 2.0])
    d.mu = None
    assert d.mu0 is None and d.mu1 is None and d.ite_true is None


# ---------------------------------------------------------------- Preprocessor


def test_preprocessor_standardises_train_split():
    d = ihdp(0)
    train, _, _ = split_indices(d.n, seed=0)
    pre = Preprocessor().fit(d.X.iloc[train])
    Z = pre.transform(d.X.iloc[train])
    assert Z.dtype == np.float32 and Z.shape == (len(train), 25)
    cont = [pre.feature_names_.index(c) for c in CONTINUOUS]
    assert np.allclose(Z[:, cont].mean(0), 0, atol=1e-5)
    assert np.allclose(Z[:, cont].std(0), 1, atol=1e-4)
    binary = [pre.feature_names_.index(c) for c in BINARY]
    assert np.array_equal(Z[:, binary], d.X.iloc[train][BINARY].to_numpy(np.float32))


def test_preprocessor_one_hot_and_unknown_category():
    df = _frame()
    df["flag"] = df["smoker"] == 1
    df["const"] = 3.0
    pre = Preprocessor().fit(df[["age", "city", "flag", "const"]])
    assert pre.feature_names_ == ["age", "city=lyon", "city=nice", "city=paris",
                                  "flag=False", "flag=True", "const"]
    new = pd.DataFrame({"const": [3.0, 3.0], "flag": [True, False], "age": [40.0, 50.0],
                        "city": ["nice", "tokyo"], "ignored": [0, 0]})
    Z = pre.transform(new)
    assert np.array_equal(Z[:, 1:4], [[0, 1, 0], [0, 0, 0]])  # tokyo unseen -> all zeros
    assert np.array_equal(Z[:, 4:6], [[0, 1], [1, 0]])
    assert np.array_equal(Z[:, 6], [0, 0])  # std 0 -> scale 1, centred


def test_preprocessor_json_round_trip(tmp_path):
    df = _frame()
    pre = Preprocessor().fit(df[["age", "smoker", "city"]])
    path = tmp_path / "pre.json"
    pre.to_json(path)
    assert path.read_text().lstrip().startswith("{")
    back = Preprocessor.from_json(path)
    shuffled = df[["city", "age", "smoker"]]  # order-insensitive by name
    assert np.array_equal(pre.transform(df), back.transform(shuffled))
    assert back.feature_names_ == pre.feature_names_ and back.input_columns_ == ["age", "smoker", "city"]
    assert Preprocessor.from_dict(pre.to_dict()).to_dict() == pre.to_dict()


def test_preprocessor_missing_column_and_bad_dict():
    pre = Preprocessor().fit(_frame()[["age", "city"]])
    with pytest.raises(DataError, match="city"):
        pre.transform(_frame()[["age"]])
    with pytest.raises(DataError):
        Preprocessor.from_dict({"version": 1, "columns": [], "extra": 0})


# ---------------------------------------------------------------- splits


@pytest.mark.parametrize("stratify", [False, True])
def test_split_indices(stratify):
    n = 747
    labels = ihdp(0).T if stratify else None
    train, val, test = split_indices(n, seed=3, stratify=labels)
    allidx = np.concatenate([train, val, test])
    assert len(allidx) == n and np.array_equal(np.sort(allidx), np.arange(n))
    for part in (train, val, test):
        assert np.array_equal(part, np.sort(part)) and part.dtype == np.int64
    assert abs(len(train) - 0.63 * n) <= 2 and abs(len(val) - 0.27 * n) <= 2
    again = split_indices(n, seed=3, stratify=labels)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again))
    other = split_indices(n, seed=4, stratify=labels)
    assert not np.array_equal(train, other[0])
    if stratify:
        share = labels.mean()
        for part in (train, val, test):
            assert abs(labels[part].mean() - share) < 0.02


def test_split_indices_bad_fractions():
    with pytest.raises(ValueError):
        split_indices(10, fractions=(0.5, 0.2, 0.2))


def test_quantile_scaling_is_scikit_learns_and_survives_json():
    from sklearn.preprocessing import QuantileTransformer

    rng = np.random.default_rng(0)
    skewed = np.exp(rng.normal(3, 0.8, 400)) * np.where(rng.random(400) < 0.02, 15.0, 1.0)
    X = pd.DataFrame({"income": skewed, "flag": rng.integers(0, 2, 400), "site": rng.choice(["a", "b"], 400)})
    pre = Preprocessor("quantile").fit(X)
    new = pd.DataFrame({"income": [skewed.min() / 2, np.median(skewed), skewed.max() * 10, np.nan],
                        "flag": [0, 1, 0, 1], "site": ["a", "b", "a", "b"]})
    ref = QuantileTransformer(n_quantiles=400, output_distribution="normal").fit(skewed[:, None])
    assert np.allclose(pre.transform(new)[:, 0], ref.transform(new[["income"]].to_numpy())[:, 0], atol=1e-6,
                       equal_nan=True)
    assert np.allclose(pre.transform(X)[:, 0], ref.transform(skewed[:, None])[:, 0], atol=1e-6)
    assert np.abs(pre.transform(X)[:, 0]).max() < 5.3  # an outlier is one more extreme rank, not 15×
    assert pre.transform(X)[:, 1].tolist() == X["flag"].tolist()  # binary and one-hot columns as before
    again = Preprocessor.from_dict(json.loads(json.dumps(pre.to_dict())))
    assert np.array_equal(again.transform(new), pre.transform(new), equal_nan=True)
    with pytest.raises(ValueError, match="numeric"):
        Preprocessor("log")


def test_auto_scaling_squashes_only_the_skewed_columns():
    rng = np.random.default_rng(1)
    X = pd.DataFrame({"income": np.exp(rng.normal(3, 1.0, 500)), "height": rng.normal(170, 10, 500)})
    kinds = [s["kind"] for s in Preprocessor("auto").fit(X).to_dict()["columns"]]
    assert kinds == ["quantile", "standard"]
    # No skewed column: exactly the standard preprocessing, so such tables are unchanged.
    assert Preprocessor("auto").fit(X[["height"]]).to_dict() == Preprocessor().fit(X[["height"]]).to_dict()


def test_clipped_standard_scaling_matches_numpy_and_old_files_still_load():
    rng = np.random.default_rng(2)
    income = np.exp(rng.normal(3, 0.8, 300)) * np.where(rng.random(300) < 0.02, 15.0, 1.0)
    height = rng.normal(170, 10, 300)
    X = pd.DataFrame({"income": income, "height": height, "site": rng.choice(["a", "b"], 300)})
    new = pd.DataFrame({"income": [income.max() * 10, np.median(income), np.nan, -1e6],
                        "height": [170.0, 400.0, 50.0, 171.0], "site": ["a", "b", "a", "b"]})
    plain, clipped = Preprocessor().fit(X), Preprocessor(clip_sd=3.0).fit(X)
    for frame in (X, new):
        z = np.column_stack([(frame[c].to_numpy() - X[c].mean()) / X[c].std(ddof=0) for c in ("income", "height")])
        assert np.allclose(plain.transform(frame)[:, :2], z, rtol=1e-5, equal_nan=True)
        assert np.allclose(clipped.transform(frame)[:, :2], np.clip(z, -3.0, 3.0), rtol=1e-5, equal_nan=True)
        assert np.array_equal(clipped.transform(frame)[:, 2:], plain.transform(frame)[:, 2:])  # one-hot as before
    assert (np.abs(plain.transform(X)[:, 0]) > 3).any()  # the clip did something on the training rows too
    # A row inside ± clip_sd of every column is transformed exactly as without the clip.
    inside = (np.abs(plain.transform(X)[:, :2]) <= 3).all(1)
    assert np.array_equal(clipped.transform(X)[inside], plain.transform(X)[inside])
    again = Preprocessor.from_dict(json.loads(json.dumps(clipped.to_dict())))
    assert np.array_equal(again.transform(new), clipped.transform(new), equal_nan=True)
    # A preprocess.json written before data.clip_sd existed has no "clip" and is not clipped.
    old = Preprocessor.from_dict(json.loads(json.dumps(plain.to_dict())))
    assert "clip" not in json.dumps(plain.to_dict()) and old.transform(new)[0, 0] > 3
    with pytest.raises(DataError, match="bad Preprocessor column spec"):
        Preprocessor.from_dict({"version": 1, "columns": [{**plain.to_dict()["columns"][1], "clip": 3.0, "x": 1}]})
    with pytest.raises(ValueError, match="clip_sd"):
        Preprocessor(clip_sd=-1.0)
