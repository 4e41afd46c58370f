"""Large tables: the chunked synthetic Parquet writer, the row-hash split, scan_table and StreamingTable."""

import types

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from csna.cli import main
from csna.data import DataError, synthetic
from csna.data.stream import StreamingTable, _shuffled, row_split, scan_table
from csna.data.synthetic_parquet import read_synthetic_meta, write_synthetic

torch.set_num_threads(1)
FRACTIONS = (0.63, 0.27, 0.10)


def _naive_row_split(i: int, fractions, seed: int) -> int:
    """SplitMix64 on Python ints, masked to 64 bits: the reference for row_split."""
    def mix(z):
        z = (z + 0x9E3779B97F4A7C15) & (2**64 - 1)
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & (2**64 - 1)
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & (2**64 - 1)
        return z ^ (z >> 31)

    u = (mix(i ^ mix(seed)) >> 11) / 2**53
    return 0 if u < fractions[0] else 1 if u < fractions[0] + fractions[1] else 2


def _table(n: int, seed: int = 0) -> pd.DataFrame:
    """x0 is the row index, so every row can be traced; t and y are functions of it."""
    rng = np.random.default_rng(seed)
    rows = np.arange(n)
    return pd.DataFrame({"x0": rows.astype(np.float64), "x1": rng.standard_normal(n),
                         "t": rows % 2, "y": (rows * 0.5).astype(np.float64)})


def _write(df: pd.DataFrame, path) -> None:
    if str(path).endswith(".csv"):
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path, index=False)


def _identity(df: pd.DataFrame):
    return df[["x0", "x1"]].to_numpy(np.float32), df["t"].to_numpy(), df["y"].to_numpy(np.float32)


def _stream(path, **kw) -> StreamingTable:
    args = {"transform": _identity, "columns": ["x0", "x1", "t", "y"], "batch_size": 32, "fractions": FRACTIONS,
            "seed": 3, "shuffle_rows": 200, "chunk_rows": 97, "treatment": "t", "outcome": "y", "n_treatments": 2}
    return StreamingTable(path, **{**args, **kw})


def _rows(batches) -> np.ndarray:
    return np.concatenate([x[:, 0].numpy() for x, _, _ in batches]).astype(np.int64)


# ---------------------------------------------------------------- synthetic Parquet

@pytest.mark.parametrize("outcome", ["continuous", "binary"])
def test_chunked_parquet_equals_one_synthetic_draw(tmp_path, outcome):
    path = write_synthetic(tmp_path / "s.parquet", rows=1000, cols=5, seed=7, outcome=outcome, chunk_rows=300)
    ref = synthetic(1000, 5, seed=7, outcome=outcome)
    f = pq.ParquetFile(path)
    assert f.metadata.num_row_groups == 4
    df = f.read().to_pandas()
    assert list(df.columns) == [f"x{i}" for i in range(5)] + ["treatment", "outcome", "mu0", "mu1"]
    pd.testing.assert_frame_equal(df[[f"x{i}" for i in range(5)]], ref.X)  # exact, dtype float32
    assert df["treatment"].dtype == np.int64 and np.array_equal(df["treatment"], ref.T)
    assert df["outcome"].dtype == ref.Y.dtype and np.array_equal(df["outcome"], ref.Y)
    assert np.array_equal(df[["mu0", "mu1"]].to_numpy(), ref.mu)
    meta = read_synthetic_meta(path)
    assert np.array_equal(meta["graph"], ref.graph)
    assert (meta["rows"], meta["cols"], meta["seed"], meta["outcome"]) == (1000, 5, 7, outcome)


# ---------------------------------------------------------------- row_split

def test_row_split_matches_naive_splitmix_and_its_fractions():
    index = np.arange(100_000)
    split = row_split(index, FRACTIONS, seed=11)
    for i in [0, 1, 2, 77, 4095, 99_999]:
        assert split[i] == _naive_row_split(i, FRACTIONS, 11)
    assert row_split(np.array([2**40 + 5]), FRACTIONS, -1)[0] == _naive_row_split(2**40 + 5, FRACTIONS, 2**64 - 1)
    shares = np.bincount(split, minlength=3) / len(split)
    np.testing.assert_allclose(shares, FRACTIONS, atol=0.01)  # binomial sd is 0.0015
    assert (row_split(index, FRACTIONS, seed=12) != split).mean() > 0.3


def test_row_split_does_not_depend_on_chunking_or_order():
    index = np.arange(10_000)
    whole = row_split(index, FRACTIONS, seed=5)
    pieces = np.concatenate([row_split(index[s:s + 333], FRACTIONS, seed=5) for s in range(0, 10_000, 333)])
    perm = np.random.default_rng(0).permutation(10_000)
    assert np.array_equal(pieces, whole)
    assert np.array_equal(row_split(index[perm], FRACTIONS, seed=5), whole[perm])


# ---------------------------------------------------------------- StreamingTable

def test_streaming_table_yields_each_training_row_once_with_its_own_t_and_y(tmp_path):
    path = tmp_path / "t.parquet"
    _write(_table(2003), path)
    batches = list(_stream(path))
    rows = _rows(batches)
    expected = np.flatnonzero(row_split(np.arange(2003), FRACTIONS, seed=3) == 0)
    assert np.array_equal(np.sort(rows), expected)
    assert not np.array_equal(rows, expected)  # shuffled
    sizes = [len(t) for _, t, _ in batches]
    assert all(s == 32 for s in sizes[:-1]) and 2 <= sizes[-1] <= 33
    t = np.concatenate([t.numpy() for _, t, _ in batches])
    y = np.concatenate([y.numpy() for _, _, y in batches])
    assert np.array_equal(t, rows % 2) and np.array_equal(y, rows * 0.5)
    assert batches[0][0].dtype == torch.float32 and batches[0][1].dtype == torch.int64
    val = _rows(_stream(path, split=1))
    assert np.array_equal(np.sort(val), np.flatnonzero(row_split(np.arange(2003), FRACTIONS, seed=3) == 1))


def test_streaming_order_is_fixed_by_seed_and_epoch(tmp_path):
    path = tmp_path / "t.parquet"
    _write(_table(1500), path)
    a, b = _stream(path), _stream(path, chunk_rows=250)
    first = _rows(a)
    assert np.array_equal(first, _rows(b))  # same seed and epoch, any chunking
    a.set_epoch(1)
    second = _rows(a)
    assert not np.array_equal(first, second) and np.array_equal(np.sort(first), np.sort(second))
    assert np.array_equal(second, _rows(_stream(path, epoch=1)))
    assert not np.array_equal(first, _rows(_stream(path, seed=4)))


@pytest.mark.parametrize("n, buffer_rows, sizes", [(21, 40, [10, 11]), (51, 20, [10] * 4 + [11]),
                                                   (47, 20, [10] * 4 + [7])])
def test_shuffle_buffer_batches_and_the_lone_last_row(n, buffer_rows, sizes):
    rows = np.arange(n)
    parts = iter([(rows[:7], -rows[:7]), (rows[7:30], -rows[7:30]), (rows[30:], -rows[30:])])
    batches = list(_shuffled(parts, buffer_rows, 10, np.random.default_rng(0)))
    assert [len(b[0]) for b in batches] == sizes
    assert all(np.array_equal(a, -b) for a, b in batches)  # arrays stay aligned row by row
    out = np.concatenate([b[0] for b in batches])
    assert np.array_equal(np.sort(out), rows) and not np.array_equal(out, rows)


def test_workers_share_the_rows_between_them(tmp_path, monkeypatch):
    path = tmp_path / "t.parquet"
    _write(_table(1200), path)
    seen = []
    for worker in range(2):
        info = types.SimpleNamespace(id=worker, num_workers=2)
        monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda info=info: info)
        seen.append(_rows(_stream(path)))
    assert len(seen[0]) > 0 and len(seen[1]) > 0
    expected = np.flatnonzero(row_split(np.arange(1200), FRACTIONS, seed=3) == 0)
    assert np.array_equal(np.sort(np.concatenate(seen)), expected)


def test_csv_and_parquet_give_the_same_rows(tmp_path):
    df = _table(1000, seed=1)
    _write(df, tmp_path / "t.csv")
    _write(df, tmp_path / "t.parquet")
    from_csv = list(_stream(tmp_path / "t.csv", chunk_rows=64))
    from_pq = list(_stream(tmp_path / "t.parquet", chunk_rows=300))
    assert len(from_csv) == len(from_pq)
    for a, b in zip(from_csv, from_pq):
        for u, v in zip(a, b):
            assert torch.equal(u, v)
    kw = {"treatment": "t", "outcome": "y", "fit_rows": 200, "eval_rows": 50, "chunk_rows": 64}
    sc, sp = scan_table(tmp_path / "t.csv", **kw), scan_table(tmp_path / "t.parquet", **kw)
    pd.testing.assert_frame_equal(sc.fit_frame, sp.fit_frame)
    pd.testing.assert_frame_equal(sc.test.X, sp.test.X)
    assert np.array_equal(sc.fit_y, sp.fit_y) and np.array_equal(sc.val.T, sp.val.T)


# ---------------------------------------------------------------- scan_table

def test_scan_table_samples_the_splits_and_reads_the_truth(tmp_path):
    path = write_synthetic(tmp_path / "s.parquet", rows=3000, cols=4, seed=2, chunk_rows=700)
    scan = scan_table(path, treatment="treatment", outcome="outcome", fit_rows=500, eval_rows=100, chunk_rows=256)
    ref = synthetic(3000, 4, seed=2)
    split = row_split(np.arange(3000), FRACTIONS, seed=0)
    assert scan.covariates == ["x0", "x1", "x2", "x3"] and scan.truth == ["mu0", "mu1"]
    assert scan.stream_columns == ["x0", "x1", "x2", "x3", "treatment", "outcome"]
    assert scan.n_rows == 3000 and scan.rows_scanned < 3000  # stopped once the samples were full
    assert (scan.outcome_type, scan.n_treatments) == ("continuous", 2)
    train = np.flatnonzero(split == 0)[:500]
    pd.testing.assert_frame_equal(scan.fit_frame, ref.X.iloc[train].reset_index(drop=True))
    assert np.array_equal(scan.fit_t, ref.T[train]) and np.array_equal(scan.fit_y, ref.Y[train])
    test = np.flatnonzero(split == 2)[:100]
    assert np.array_equal(scan.test.extra["rows"], test)
    assert np.array_equal(scan.test.mu, ref.mu[test])
    np.testing.assert_array_equal(scan.val.ite_true, ref.ite_true[np.flatnonzero(split == 1)[:100]])


def _corrupted(path, n, row, column, value):
    """A table of n rows with one cell set to value, written to path; (path, frame)."""
    df = _table(n)
    df.loc[row, column] = value
    _write(df, path)
    return path, df


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_nan_covariate_names_column_file_and_global_row(tmp_path, suffix):
    # a CSV of several 16 KiB blocks, the smallest the reader uses
    path, _ = _corrupted(tmp_path / f"bad{suffix}", 2000, 1250, "x1", np.nan)
    with pytest.raises(DataError, match=r"covariate 'x1' in .*bad.* at data row 1251$"):
        scan_table(path, treatment="t", outcome="y", chunk_rows=100)
    with pytest.raises(DataError, match=r"'x1' in .*bad.* at data row 1251$"):
        list(_stream(path, chunk_rows=100))


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_treatment_errors_name_the_value_and_row(tmp_path, suffix):
    path, df = _corrupted(tmp_path / f"t{suffix}", 300, 123, "t", 3)
    with pytest.raises(DataError,
                       match=r"treatment 't' in .* 0\.\.2, got \[0, 1, 3\] \(value 3 first at data row 124\)"):
        scan_table(path, treatment="t", outcome="y", chunk_rows=50)
    with pytest.raises(DataError, match=r"treatment 't' .* 0\.\.1, got 3 at data row 124"):
        list(_stream(path, chunk_rows=50))
    df["t"] = 1
    _write(df, path)
    with pytest.raises(DataError, match=r"treatment 't' in .* only one treatment group \(\[1\]\)"):
        scan_table(path, treatment="t", outcome="y", chunk_rows=50)


def test_missing_file_and_columns(tmp_path):
    path = tmp_path / "t.parquet"
    _write(_table(50), path)
    with pytest.raises(DataError, match=r"treatment column 'T' not in .*t.parquet; available: x0, x1, t, y"):
        scan_table(path, treatment="T", outcome="y")
    with pytest.raises(DataError, match=r"covariate column\(s\) \['x9'\] not in"):
        scan_table(path, treatment="t", outcome="y", covariates=["x0", "x9"])
    with pytest.raises(DataError, match=r"column\(s\) \['x9'\] not in"):
        _stream(path, columns=["x9", "t", "y"])
    with pytest.raises(DataError, match="table not found"):
        scan_table(tmp_path / "none.csv", treatment="t", outcome="y")


# ---------------------------------------------------------------- csna data synthetic

def test_cli_writes_the_synthetic_table(tmp_path, capsys):
    out = tmp_path / "s.parquet"
    args = ["data", "synthetic", "--rows", "500", "--cols", "3", "--seed", "4", "--outcome", "binary",
            "--chunk-rows", "128", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and printed[0].startswith("wrote 500 rows x 7 columns to")
    df = pd.read_parquet(out)
    ref = synthetic(500, 3, seed=4, outcome="binary")
    assert np.array_equal(df["outcome"], ref.Y) and np.array_equal(df[["mu0", "mu1"]], ref.mu)
    assert main(args + ["--overwrite"]) == 0


@pytest.mark.parametrize("change, message", [
    (["--rows", "0"], "--rows must be >= 1, got 0"),
    (["--cols", "-1"], "--cols must be >= 1"),
    (["--outcome", "ordinal"], "--outcome must be continuous or binary"),
    (["--out", "{tmp}/nodir/s.parquet"], "does not exist"),
    (["--out", "{tmp}/s.csv"], "must end in .parquet or .pq"),
    (["--out", "{tmp}/old.parquet"], "exists; use --overwrite"),
])
def test_cli_bad_arguments_are_one_line_exit_2(tmp_path, capsys, change, message):
    (tmp_path / "old.parquet").write_bytes(b"keep")
    args = {"--rows": "10", "--cols": "2", "--out": str(tmp_path / "new.parquet")}
    args.update({change[0]: change[1].format(tmp=tmp_path)})
    assert main(["data", "synthetic", *[s for kv in args.items() for s in kv]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("csna: error:") and message in err[0]
    assert not (tmp_path / "new.parquet").exists()
    assert (tmp_path / "old.parquet").read_bytes() == b"keep"
