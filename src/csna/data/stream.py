"""Streaming a CSV or Parquet table larger than memory: splits by row hash, one scan, batches.

Shape alphabet: n rows in the file, m rows in a chunk, B batch, p covariates, K treatments.

A row's split is a seeded hash of its global index (`row_split`), so it never depends on
chunking, order or the number of processes. `scan_table` reads the file once, chunk by
chunk, to validate it and keep bounded samples (training rows to fit the preprocessor,
validation and test rows to evaluate); `StreamingTable` then yields shuffled training
batches with memory O(shuffle_rows + chunk_rows) rows whatever the file's size.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from csna.data.chunks import (
    check_batch,
    check_fractions,
    check_path,
    column_names,
    read_batches,
    row_split,
)
from csna.data.tables import (
    OUTCOME_TYPES,
    CausalData,
    DataError,
    _check_classes,
    _infer_outcome_type,
    column_roles,
    truth_column,
)

__all__ = ["StreamingTable", "TableScan", "row_split", "scan_table"]


def _outcome_values(y: np.ndarray, outcome_type: str, path: Path, column: str) -> np.ndarray:
    if outcome_type == "continuous":
        return y.astype(np.float32)
    y64 = y.astype(np.float64)
    if (y64 != np.round(y64)).any() or (y64 < 0).any():
        raise DataError(f"{outcome_type} outcome '{column}' in {path} must be class indices 0, 1, ...")
    if outcome_type == "binary" and (y64 > 1).any():
        raise DataError(f"binary outcome '{column}' in {path} has values other than 0 and 1")
    return y64.astype(np.int64)


# ---------------------------------------------------------------- one scan

@dataclass
class TableScan:
    """What one pass over (a prefix of) a table tells us.

    Attributes:
        path, kind: the file and "parquet" or "csv".
        columns: every column of the file; covariates, treatment, outcome: the roles.
        n_rows: rows in the file; exact for Parquet, for CSV only when the scan reached its end.
        fit_frame: (n_fit, p) covariates of the first fit_rows training rows.
        fit_t: (n_fit,) int64; fit_y: (n_fit,) float32 or int64.
        val, test: the first eval_rows validation / test rows, with mu (n, K) when the file
            has mu0..mu{K-1}; extra["rows"] holds their global row indices.
        outcome_type: "continuous", "binary" or "multiclass"; n_treatments: K.
        truth: the mu columns of the file.
        rows_scanned: rows read to fill the samples.
    """

    path: Path
    kind: str
    columns: list[str]
    covariates: list[str]
    treatment: str
    outcome: str
    n_rows: int | None
    fit_frame: pd.DataFrame
    fit_t: np.ndarray
    fit_y: np.ndarray
    val: CausalData
    test: CausalData
    outcome_type: str
    n_treatments: int
    truth: list[str] = field(default_factory=list)
    rows_scanned: int = 0

    @property
    def stream_columns(self) -> list[str]:
        """The columns a `StreamingTable` of this table reads: covariates, treatment, outcome."""
        return [*self.covariates, self.treatment, self.outcome]


def scan_table(path, *, treatment: str, outcome: str, covariates: list[str] | None = None,
               fractions=(0.63, 0.27, 0.10), seed: int = 0, fit_rows: int = 100_000, eval_rows: int = 50_000,
               outcome_type: str = "auto", chunk_rows: int = 65536) -> TableScan:
    """Reads a table once, chunk by chunk, until it holds fit_rows training rows and eval_rows
    validation and test rows each (or the file ends); memory O(fit_rows + eval_rows + chunk_rows).

    Validates like `load_table` and raises DataError with a one-line message naming the file,
    the column and the data row: NaN/Inf or missing values, a treatment that is not 0..K-1 or
    has one group only (within the rows read), a missing column. Truth columns (mu0, mu1, ...)
    are never covariates, by the rule of `load_table` (``tables.column_roles``). String
    covariates are kept for the preprocessor to encode; CSV integer covariates are read as
    float64.

    Args:
        path: a .csv, .parquet or .pq file.
        treatment, outcome: column names.
        covariates: default every column but treatment, outcome and truth.
        fractions, seed: the row split, see `row_split`.
        fit_rows, eval_rows: caps of the training sample and of each evaluation sample.
        outcome_type: "auto" (integers {0, 1} -> binary, else continuous) or one of OUTCOME_TYPES.
        chunk_rows: rows read at a time.
    """
    path, kind = check_path(path)
    if outcome_type != "auto" and outcome_type not in OUTCOME_TYPES:
        raise DataError(f"outcome_type '{outcome_type}' is not 'auto' or one of {OUTCOME_TYPES}")
    f = check_fractions(fractions)
    names = column_names(path, kind)
    covariates, truth = column_roles(path, names, treatment, outcome, covariates)
    columns = covariates + [treatment, outcome] + truth
    roles = {**{c: "covariate" for c in covariates}, treatment: "treatment", outcome: "outcome",
             **{c: "truth" for c in truth}}
    caps = [fit_rows if f[0] > 0 else 0, eval_rows if f[1] > 0 else 0, eval_rows if f[2] > 0 else 0]
    parts: list[list[tuple[pa.RecordBatch, np.ndarray]]] = [[], [], []]
    counts = [0, 0, 0]
    first_row: dict[int, int] = {}  # treatment value -> global row where it first appears
    integer_outcome, offset, reached_end = None, 0, True
    for batch in read_batches(path, kind, columns, chunk_rows, keep_int=(treatment, outcome)):
        m = batch.num_rows
        check_batch(batch, offset, path, roles, treatment, None)
        t = batch.column(treatment).to_numpy(zero_copy_only=False).astype(np.int64)
        values, where = np.unique(t, return_index=True)
        for v, i in zip(values.tolist(), where.tolist()):
            first_row.setdefault(v, offset + i)
        if integer_outcome is None:
            y_type = batch.schema.field(outcome).type
            integer_outcome = pa.types.is_integer(y_type) or pa.types.is_boolean(y_type)
        split = row_split(np.arange(offset, offset + m), f, seed)  # (m,)
        for s in range(3):
            if counts[s] < caps[s]:
                idx = np.flatnonzero(split == s)[:caps[s] - counts[s]]
                if len(idx):
                    parts[s].append((batch.take(pa.array(idx)), offset + idx))
                    counts[s] += len(idx)
        offset += m
        if counts == caps:
            reached_end = False
            break
    if offset == 0:
        raise DataError(f"table has no rows: {path}")

    k = len(first_row)
    if k < 2:
        raise DataError(f"treatment '{treatment}' in {path} has only one treatment group "
                        f"({sorted(first_row)}) in the {offset} rows read")
    bad = sorted(v for v in first_row if v >= k)
    if bad:
        row = min(first_row[v] for v in bad)
        raise DataError(f"treatment '{treatment}' in {path} must take the values 0..{k - 1}, "
                        f"got {sorted(first_row)} (value {bad[0]} first at data row {row + 1})")

    frames = [pd.concat([b.to_pandas() for b, _ in ps], ignore_index=True) if ps
              else pa.schema([pa.field(c, pa.float64()) for c in columns]).empty_table().to_pandas()
              for ps in parts]
    rows = [np.concatenate([r for _, r in ps]) if ps else np.zeros(0, dtype=np.int64) for ps in parts]
    if outcome_type == "auto":
        y_all = pd.concat([fr[outcome] for fr in frames], ignore_index=True)
        outcome_type = _infer_outcome_type(y_all.astype(np.int64)) if integer_outcome else "continuous"
    ys = [_outcome_values(fr[outcome].to_numpy(), outcome_type, path, outcome) for fr in frames]
    if len(ys[0]):
        _check_classes(ys[0], outcome_type, str(path), outcome)
    mu_cols = [truth_column(j) for j in range(k)]
    has_mu = all(c in truth for c in mu_cols)

    def sample(s: int) -> CausalData:
        fr = frames[s]
        return CausalData(X=fr[covariates], T=fr[treatment].to_numpy().astype(np.int64), Y=ys[s],
                          mu=fr[mu_cols].to_numpy(dtype=np.float64) if has_mu else None,
                          outcome_type=outcome_type, n_treatments=k, name=path.name, extra={"rows": rows[s]})

    if kind == "parquet":
        n_rows = pq.ParquetFile(path).metadata.num_rows
    else:
        n_rows = offset if reached_end else None
    return TableScan(path=path, kind=kind, columns=names, covariates=covariates, treatment=treatment,
                     outcome=outcome, n_rows=n_rows, fit_frame=frames[0][covariates],
                     fit_t=frames[0][treatment].to_numpy().astype(np.int64), fit_y=ys[0], val=sample(1),
                     test=sample(2), outcome_type=outcome_type, n_treatments=k, truth=truth, rows_scanned=offset)


# ---------------------------------------------------------------- training batches

def _shuffled(parts: Iterator[tuple[np.ndarray, ...]], buffer_rows: int, batch_size: int,
              rng: np.random.Generator) -> Iterator[tuple[np.ndarray, ...]]:
    """Batches from a stream of row arrays, shuffled within a buffer of buffer_rows rows.

    The buffer (at least 2 batch_size rows, allocated once) fills to the brim (chunks are
    cut at its edge), is permuted, and all full batches of its first half leave; the rest
    moves to the front to mix with later rows. The order is thus a function of the rows,
    the generator and the sizes, never of chunking. A last batch of 1 row joins the batch
    before it (B + 1), so no row is dropped. Batches are copies, never views of the buffer.
    """
    size = max(buffer_rows, 2 * batch_size)
    emit = (size - size // 2) // batch_size * batch_size  # >= batch_size
    buf: tuple[np.ndarray, ...] | None = None
    n = 0
    for arrays in parts:
        if buf is None:
            buf = tuple(np.empty((size,) + a.shape[1:], dtype=a.dtype) for a in arrays)  # (S, ...) each
        pos, m = 0, len(arrays[0])
        while pos < m:
            take = min(size - n, m - pos)
            for b, a in zip(buf, arrays):
                b[n:n + take] = a[pos:pos + take]
            n, pos = n + take, pos + take
            if n == size:
                perm = rng.permutation(size)
                for s in range(0, emit, batch_size):
                    yield tuple(b[perm[s:s + batch_size]] for b in buf)
                for b in buf:
                    b[:size - emit] = b[perm[emit:]]
                n = size - emit
    if n == 0:
        return
    perm = rng.permutation(n)
    bounds = list(range(0, n, batch_size)) + [n]
    if n % batch_size == 1 and len(bounds) > 2:
        del bounds[-2]  # the lone last row joins the previous batch
    for s, e in itertools.pairwise(bounds):
        yield tuple(b[perm[s:e]] for b in buf)


class StreamingTable(torch.utils.data.IterableDataset):
    """Shuffled training batches of one split of a table, read chunk by chunk.

    Each item is (x (B, p) float32, t (B,) int64, y (B,)) torch tensors, from the rows whose
    `row_split` is `split`. Rows are shuffled within a buffer of shuffle_rows rows (at least
    2 batch_size) by a numpy Generator seeded by (seed, epoch, worker), so a seed and epoch
    give the same order on every run, and the order does not depend on chunk_rows or on the
    file being CSV or Parquet. Batches are full except the last (>= 2 rows; B + 1 when one
    row would be left). Memory is O(shuffle_rows + chunk_rows) rows, plus the Parquet row
    group being decoded (the file's row group size, e.g. 262144 rows for `csna data synthetic`).

    Under a DataLoader with W workers (use batch_size=None there), worker w takes chunks
    w, w + W, ...; each reads the whole file but transforms only its chunks.

    Args:
        path: a .csv, .parquet or .pq file.
        transform: maps a chunk's DataFrame (the `columns`) to (x (m, p), t (m,), y (m,))
            numpy arrays, e.g. the fitted preprocessing and outcome scaling.
        columns: the columns to read and pass to `transform`.
        batch_size: B.
        fractions, seed: the row split, see `row_split`; seed also seeds the shuffle.
        split: 0 train, 1 validation, 2 test.
        shuffle_rows: rows of the shuffle buffer.
        chunk_rows: rows read at a time.
        epoch: the epoch whose order to produce; see `set_epoch`.
        treatment: the treatment column, checked to hold integers in 0..n_treatments-1.
        outcome: the outcome column (named as such in errors; CSV keeps its integer type).
        n_treatments: K, from `scan_table`; None checks only for non-negative integers.

    Raises (while iterating):
        DataError: a NaN/Inf or missing value, or a treatment out of range, naming the
            column and the global data row.
    """

    def __init__(self, path, *, transform: Callable[[pd.DataFrame], tuple[np.ndarray, np.ndarray, np.ndarray]],
                 columns: list[str], batch_size: int, fractions, seed: int, split: int = 0,
                 shuffle_rows: int = 262144, chunk_rows: int = 65536, epoch: int = 0,
                 treatment: str | None = None, outcome: str | None = None, n_treatments: int | None = None):
        super().__init__()
        self.path, self.kind = check_path(path)
        if batch_size < 1 or chunk_rows < 1 or shuffle_rows < 1:
            raise ValueError(f"batch_size, chunk_rows and shuffle_rows must be >= 1, "
                             f"got {batch_size}, {chunk_rows}, {shuffle_rows}")
        if split not in (0, 1, 2):
            raise ValueError(f"split must be 0 (train), 1 (validation) or 2 (test), got {split}")
        names = column_names(self.path, self.kind)
        missing = [c for c in columns if c not in names]
        if missing:
            raise DataError(f"column(s) {missing} not in {self.path}; available: {', '.join(names)}")
        self.transform, self.columns = transform, list(columns)
        self.batch_size, self.fractions, self.seed, self.split = batch_size, check_fractions(fractions), seed, split
        self.shuffle_rows, self.chunk_rows, self.epoch = max(shuffle_rows, 2 * batch_size), chunk_rows, epoch
        self.treatment, self.n_treatments = treatment, n_treatments
        self._keep_int = tuple(c for c in (treatment, outcome) if c is not None)
        self._roles = {**({treatment: "treatment"} if treatment else {}), **({outcome: "outcome"} if outcome else {})}

    def set_epoch(self, epoch: int) -> None:
        """The next iteration yields this epoch's order."""
        self.epoch = epoch

    def _chunks(self, worker: int, n_workers: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        offset = 0
        batches = read_batches(self.path, self.kind, self.columns, self.chunk_rows, self._keep_int)
        for i, batch in enumerate(batches):
            m = batch.num_rows
            if i % n_workers == worker:
                check_batch(batch, offset, self.path, self._roles, self.treatment, self.n_treatments)
                keep = row_split(np.arange(offset, offset + m), self.fractions, self.seed) == self.split  # (m,)
                n_keep = int(keep.sum())
                if n_keep:
                    x, t, y = self.transform(batch.filter(pa.array(keep)).to_pandas())
                    x, t, y = np.asarray(x, dtype=np.float32), np.asarray(t, dtype=np.int64), np.asarray(y)
                    if not len(x) == len(t) == len(y) == n_keep:
                        raise ValueError(f"transform returned {len(x)}, {len(t)}, {len(y)} rows for {n_keep}")
                    yield x, t, y
            offset += m

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        worker, n_workers = (0, 1) if info is None else (info.id, info.num_workers)
        rng = np.random.default_rng([self.seed, self.epoch, worker])
        for x, t, y in _shuffled(self._chunks(worker, n_workers), self.shuffle_rows, self.batch_size, rng):
            yield torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(y)
