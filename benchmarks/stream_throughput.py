"""Throughput and peak memory of StreamingTable over a Parquet table (issue "Scale").

Iterates one epoch of training batches with an identity-like transform (covariates to float32,
nothing else), single-threaded, and prints rows/s and the process's peak RSS.

Usage:
    csna data synthetic --rows 1000000 --cols 100 --out /tmp/big.parquet
    python benchmarks/stream_throughput.py /tmp/big.parquet --batch-size 1024
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import pyarrow as pa
import torch

from csna.data.stream import StreamingTable, row_split


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path")
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--shuffle-rows", type=int, default=262144)
    ap.add_argument("--chunk-rows", type=int, default=65536)
    args = ap.parse_args()
    torch.set_num_threads(1)
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)

    import pyarrow.parquet as pq

    names = pq.read_schema(args.path).names
    covariates = [c for c in names if c.startswith("x")]

    def transform(df):
        return (df[covariates].to_numpy(np.float32), df["treatment"].to_numpy(np.int64),
                df["outcome"].to_numpy(np.float32))

    table = StreamingTable(args.path, transform=transform, columns=covariates + ["treatment", "outcome"],
                           batch_size=args.batch_size, fractions=(0.63, 0.27, 0.10), seed=0,
                           shuffle_rows=args.shuffle_rows, chunk_rows=args.chunk_rows,
                           treatment="treatment", outcome="outcome", n_treatments=2)
    n_rows = pq.ParquetFile(args.path).metadata.num_rows
    start = time.perf_counter()
    rows = 0
    for x, _, _ in table:
        rows += len(x)
    seconds = time.perf_counter() - start
    expected = int((row_split(np.arange(n_rows), table.fractions, 0) == 0).sum())
    assert rows == expected, (rows, expected)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    print(f"{rows} training rows of {n_rows} x {len(covariates)} in {seconds:.2f}s: "
          f"{rows / seconds:,.0f} training rows/s, {n_rows / seconds:,.0f} file rows/s; peak RSS {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
