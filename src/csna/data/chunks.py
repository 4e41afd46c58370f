"""Reading a CSV or Parquet table chunk by chunk, validating each chunk, and the row-hash split.

Shape alphabet: m rows in a chunk.

Row numbers in messages are 1-based data rows of the whole file (the header is not a row),
as in `csna.data.tables`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from csna.data.tables import DataError, check_path  # noqa: F401 (check_path is part of this module's API)

_MASK64 = (1 << 64) - 1


# ---------------------------------------------------------------- splits

def _splitmix64(z: np.ndarray) -> np.ndarray:
    """uint64 -> uint64 finaliser of SplitMix64 (Steele et al. 2014); numpy wraps on overflow."""
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def check_fractions(fractions) -> np.ndarray:
    f = np.asarray(fractions, dtype=np.float64)
    if f.shape != (3,) or (f < 0).any() or abs(f.sum() - 1.0) > 1e-6:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    return f


def row_split(index: np.ndarray, fractions: tuple[float, float, float], seed: int) -> np.ndarray:
    """Split of each global row index: 0 train, 1 validation, 2 test.

    u = splitmix64(index ^ splitmix64(seed)) / 2^64 in [0, 1); the row goes to train if
    u < f_train, to validation if u < f_train + f_val, else to test.

    Args:
        index: (n,) non-negative integer row indices (0 = first data row of the file).
        fractions: (train, val, test), non-negative, summing to 1.
        seed: any integer; taken modulo 2^64.

    Returns:
        (n,) int8 split of each row.
    """
    f = check_fractions(fractions)
    mix = _splitmix64(np.array([seed & _MASK64], dtype=np.uint64))[0]
    h = _splitmix64(np.asarray(index, dtype=np.int64).astype(np.uint64) ^ mix)  # (n,)
    u = (h >> np.uint64(11)).astype(np.float64) * 2.0**-53  # top 53 bits, exact in float64
    return ((u >= f[0]).astype(np.int8) + (u >= f[0] + f[1])).astype(np.int8)


# ---------------------------------------------------------------- reading chunks

def _csv_block_size(path: Path, chunk_rows: int) -> int:
    """Bytes per CSV block so that a block holds about chunk_rows rows (estimated from the first MiB)."""
    with open(path, "rb") as fh:
        sample = fh.read(1 << 20)
    header = sample.find(b"\n") + 1 or len(sample)
    rows = max(sample.count(b"\n", header), 1)
    per_row = (len(sample) - header) / rows
    return int(min(max(1.1 * chunk_rows * per_row + header, 1 << 14), 1 << 30))


def _csv_reader(path: Path, columns: list[str] | None, chunk_rows: int, keep_int: tuple[str, ...] = ()):
    """A pyarrow CSV stream. Integer (or all-empty) columns of the first block other than
    `keep_int` are read as float64, so that a later 1.5 or empty cell is not a type error."""
    read = pacsv.ReadOptions(block_size=_csv_block_size(path, chunk_rows))
    first = pacsv.open_csv(path, read_options=read).schema
    names = first.names if columns is None else columns
    types = {name: pa.float64() for name in names if name in first.names and name not in keep_int
             and (pa.types.is_integer(first.field(name).type) or pa.types.is_null(first.field(name).type))}
    convert = pacsv.ConvertOptions(include_columns=columns, column_types=types, strings_can_be_null=True)
    return pacsv.open_csv(path, read_options=read, convert_options=convert)


def column_names(path: Path, kind: str) -> list[str]:
    try:
        if kind == "parquet":
            return pq.read_schema(path).names
        return pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=1 << 22)).schema.names
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"cannot read {path}: {str(err).splitlines()[0]}") from err


def read_batches(path: Path, kind: str, columns: list[str], chunk_rows: int,
             keep_int: tuple[str, ...] = ()) -> Iterator[pa.RecordBatch]:
    """Record batches of about chunk_rows rows (exactly, for Parquet) holding `columns` in that order."""
    rows = 0
    try:
        if kind == "parquet":
            # Without pre-buffering a row group's column chunks stream in 1 MiB reads: half the peak memory.
            source = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)
            it = source.iter_batches(batch_size=chunk_rows, columns=columns)
        else:
            source = _csv_reader(path, columns, chunk_rows, keep_int)
            it = iter(source)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"cannot read {path}: {str(err).splitlines()[0]}") from err
    try:
        while True:
            try:
                batch = next(it)
            except StopIteration:
                return
            except (pa.ArrowException, OSError) as err:  # e.g. a CSV cell that does not parse
                raise DataError(f"cannot read {path} after data row {rows}: {str(err).splitlines()[0]}") from err
            if batch.num_rows:
                rows += batch.num_rows
                yield batch.select(columns)
    finally:
        source.close()  # also when the reader stops early


# ---------------------------------------------------------------- validation

def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def check_batch(batch: pa.RecordBatch, start: int, path: Path, roles: dict[str, str],
                 treatment: str | None, n_treatments: int | None) -> None:
    """Raises DataError naming the column and the data row (1-based, global) of the first bad value."""
    for name in batch.schema.names:
        col, kind = batch.column(name), batch.schema.field(name).type
        role = roles.get(name, "column")
        numeric = pa.types.is_integer(kind) or pa.types.is_floating(kind)
        if name == treatment and not numeric:
            raise DataError(f"treatment '{name}' in {path} must be integer-coded 0..K-1, got type {kind}")
        if role == "outcome" and not (numeric or pa.types.is_boolean(kind)):
            raise DataError(f"outcome '{name}' in {path} must be numeric, got type {kind}")
        if pa.types.is_floating(kind):
            values = col.to_numpy(zero_copy_only=False)  # (m,), nulls become NaN
            finite = np.isfinite(values)
            if not finite.all():
                raise DataError(f"{role} '{name}' in {path} is NaN/Inf at data row {start + _first_bad(~finite) + 1}")
        elif col.null_count:
            missing = col.is_null().to_numpy(zero_copy_only=False)
            raise DataError(f"{role} '{name}' in {path} is missing at data row {start + _first_bad(missing) + 1}")
        if name == treatment:
            t = col.to_numpy(zero_copy_only=False)
            bad = (t != np.round(t)) | (t < 0)
            if n_treatments is not None:
                bad |= t >= n_treatments
            if bad.any():
                i = _first_bad(bad)
                want = f"0..{n_treatments - 1}" if n_treatments is not None else "0..K-1"
                raise DataError(f"treatment '{name}' in {path} must take the values {want}, "
                                f"got {t[i]} at data row {start + i + 1}")
