"""Training on a table larger than memory: ``data.stream: true`` (``csna train --data big.parquet
--set data.stream=true``).

One bounded pass (``csna.data.stream.scan_table``) validates the file and keeps three samples:
training rows to fit the preprocessing and outcome scaling on, and validation and test rows
for model selection and the metrics. The trainer then reads shuffled training batches chunk by
chunk (``StreamingTable``), so memory stays bounded whatever the file's size. A row's split is a
seeded hash of its index, the same for every process of a data-parallel run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .config import Config
from .splits import base_split_seed
from .data import CausalData
from .data.chunks import read_batches
from .data.stream import StreamingTable, TableScan, row_split, scan_table
from .sources import Split

ROW_HASH_BLOCK = 1 << 20  # row indices hashed at a time when counting the training rows


def scan(cfg: Config) -> TableScan:
    d = cfg.data
    seed = base_split_seed(cfg)
    return scan_table(d.source, treatment=d.treatment, outcome=d.outcome, covariates=d.covariates or None,
                      fractions=tuple(d.split), seed=seed, fit_rows=d.stream_fit_rows,
                      eval_rows=d.stream_eval_rows, outcome_type=d.outcome_type)


def count_rows(sc: TableScan) -> int:
    """Rows in the file: the Parquet footer, or one pass over one CSV column."""
    if sc.n_rows is not None:
        return int(sc.n_rows)
    return sum(b.num_rows for b in read_batches(sc.path, sc.kind, [sc.treatment], 1 << 18))


def count_split(n_rows: int, fractions, seed: int, split: int = 0) -> int:
    """Rows of ``split`` among the first ``n_rows``, hashed in blocks (bounded memory)."""
    return int(sum(int((row_split(np.arange(s, min(s + ROW_HASH_BLOCK, n_rows)), fractions, seed) == split).sum())
                   for s in range(0, n_rows, ROW_HASH_BLOCK)))


def fit_data(sc: TableScan) -> CausalData:
    """The training sample as CausalData (no truth: the scan keeps it for evaluation rows only)."""
    return CausalData(X=sc.fit_frame, T=sc.fit_t, Y=sc.fit_y, mu=None, outcome_type=sc.outcome_type,
                      n_treatments=sc.n_treatments, name=Path(sc.path).name)


def eval_data(sc: TableScan) -> tuple[CausalData, dict[str, np.ndarray]]:
    """Validation and test samples stacked into one CausalData, with the split the evaluation
    reads. The training rows are not in memory, so the "in" metrics of a streamed run are
    measured on the validation sample (the evaluation's train part is the validation rows)."""
    v, t = sc.val, sc.test
    mu = np.concatenate([v.mu, t.mu]) if v.mu is not None and t.mu is not None else None
    data = CausalData(X=pd.concat([v.X, t.X], ignore_index=True), T=np.concatenate([v.T, t.T]),
                      Y=np.concatenate([v.Y, t.Y]), mu=mu, outcome_type=sc.outcome_type,
                      n_treatments=sc.n_treatments, name=Path(sc.path).name)
    nv, nt = len(v.T), len(t.T)
    iv = np.arange(nv)
    return data, {"train": iv, "val": iv, "test": np.arange(nv, nv + nt)}


class StreamSource:
    """Training batches read from a file chunk by chunk, for ``Trainer`` (the interface of
    ``csna.sources.TensorSource``)."""

    def __init__(self, cfg: Config, sc: TableScan, transform, n_train: int, probe: Split,
                 device: torch.device):
        d = cfg.data
        seed = base_split_seed(cfg)
        self.table = StreamingTable(sc.path, transform=transform, columns=sc.stream_columns,
                                    batch_size=cfg.train.batch_size, fractions=tuple(d.split), seed=seed,
                                    shuffle_rows=d.shuffle_rows, treatment=sc.treatment, outcome=sc.outcome,
                                    n_treatments=sc.n_treatments)
        self.n_train, self._probe, self._device, self.workers = n_train, probe, device, d.workers

    def __len__(self) -> int:
        return self.n_train

    @property
    def device(self) -> torch.device:
        return self._device

    def num_batches(self, batch_size: int) -> int:
        if batch_size != self.table.batch_size:
            self.table.batch_size = batch_size
            self.table.shuffle_rows = max(self.table.shuffle_rows, 2 * batch_size)
        full, rest = divmod(self.n_train, batch_size)
        # StreamingTable: a last batch of >= 2 rows is its own, a single leftover row joins it.
        return max(1, full + (1 if rest >= 2 else 0))

    def batches(self, batch_size: int, seed: int, start: int = 0):
        self.num_batches(batch_size)
        # The shuffle of each (phase, epoch) is seeded by the trainer's order seed.
        self.table.set_epoch(seed)
        cuda = self._device.type == "cuda"
        loader = torch.utils.data.DataLoader(self.table, batch_size=None, num_workers=self.workers,
                                             pin_memory=cuda, persistent_workers=False)
        for b, (x, t, y) in enumerate(loader):
            if b < start:  # resuming mid-epoch: the batches already trained on
                continue
            yield b, Split(x.to(self._device, non_blocking=cuda), t.to(self._device, non_blocking=cuda),
                           y.to(self._device, non_blocking=cuda))

    def probe(self, n: int) -> Split:
        return self._probe.rows(torch.arange(min(n, len(self._probe)), device=self._probe.x.device))
