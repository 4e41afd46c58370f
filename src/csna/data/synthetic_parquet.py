"""A large synthetic table with its truth, written to Parquet chunk by chunk.

Shape alphabet: n rows, p covariates, K treatments, k latent nodes.

The rows are exactly those of `synthetic(n, p, seed, outcome=...)`; the truth that is not
per row (the latent graph, the arguments) sits in the schema metadata as JSON under
`METADATA_KEY`. Memory is O(chunk_rows p) whatever n is.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from csna.data.synthetic import synthetic_chunks
from csna.data.tables import DataError, truth_column

METADATA_KEY = "csna.synthetic"
DEFAULT_CHUNK_ROWS = 262144


def _schema(p: int, n_treatments: int, outcome: str, meta: dict) -> pa.Schema:
    fields = [pa.field(f"x{i}", pa.float32()) for i in range(p)]
    fields += [pa.field("treatment", pa.int64()),
               pa.field("outcome", pa.float32() if outcome == "continuous" else pa.int64())]
    fields += [pa.field(truth_column(t), pa.float64()) for t in range(n_treatments)]
    return pa.schema(fields, metadata={METADATA_KEY: json.dumps(meta)})


def write_synthetic(path, *, rows: int, cols: int, seed: int = 0, outcome: str = "continuous",
                    chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Path:
    """Writes `synthetic(rows, cols, seed, outcome=outcome)` to a Parquet file.

    Columns x0..x{p-1} float32, treatment int64, outcome float32 (continuous) or int64
    (binary), and the truth mu0, mu1 float64 (expected potential outcomes; probabilities
    when binary). One row group per chunk. The file appears whole or not at all: it is
    written next to `path` and moved into place at the end.

    Args:
        path: the .parquet file; its parent must exist.
        rows: n >= 1.
        cols: p >= 1.
        seed: fixes the model and the sample, as in `synthetic`.
        outcome: "continuous" or "binary".
        chunk_rows: rows generated and written at a time; bounds the memory.

    Returns:
        path.
    """
    path = Path(os.fspath(path))
    chunks = synthetic_chunks(rows, cols, seed, chunk_rows, outcome=outcome)
    chunk = next(chunks)  # validates the arguments before any file is created
    params = chunk.extra["params"]
    n_treatments = chunk.n_treatments
    meta = {"format": 1, "rows": rows, "cols": cols, "seed": seed, "outcome": outcome,
            "n_treatments": n_treatments, "k_latent": len(params["order"]),
            "graph": params["graph"].tolist(), "order": params["order"].tolist()}
    schema = _schema(cols, n_treatments, outcome, meta)
    # Dictionaries only where values repeat: for the float columns they give up and cost 1 MB a chunk.
    dictionary = ["treatment"] + (["outcome"] if outcome == "binary" else [])
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with pq.ParquetWriter(tmp, schema, use_dictionary=dictionary) as writer:
            while chunk is not None:
                writer.write_batch(_record_batch(chunk, schema), row_group_size=chunk.n)
                chunk = None  # one chunk alive at a time
                chunk = next(chunks, None)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _record_batch(chunk, schema: pa.Schema) -> pa.RecordBatch:
    X = np.asfortranarray(chunk.X.to_numpy())  # (b, p), each column contiguous: pa.array copies nothing
    arrays = [pa.array(X[:, i]) for i in range(X.shape[1])]
    arrays += [pa.array(chunk.T), pa.array(chunk.Y)]
    arrays += [pa.array(np.ascontiguousarray(chunk.mu[:, t])) for t in range(chunk.n_treatments)]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def read_synthetic_meta(path) -> dict:
    """The JSON metadata that `write_synthetic` stored in the file's schema (graph as a list of lists)."""
    meta = pq.read_schema(os.fspath(path)).metadata or {}
    raw = meta.get(METADATA_KEY.encode())
    if raw is None:
        raise DataError(f"{path} has no '{METADATA_KEY}' metadata; it was not written by write_synthetic")
    return json.loads(raw)
