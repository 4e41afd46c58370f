"""IHDP 0–99 under the honest protocol: every estimator, per-replication splits, one table (or
replications 0 to the last one every estimator has finished, while the run continues).

Where each row comes from (every file is kept here, in ``raw/`` or a sibling directory):

- csna and csna-single, replications 0–37: ``raw/csna_0-37.csv``, today's default (b3d88b5,
  ``train.shrink_outcome: select``), with FLOPs per fit.
- csna and csna-single, replications 38–99, and every peer on 11–99: ``raw/run_11-99.csv``, one
  resumed run (``RUN``); its csna rows before 38 were made with the previous default and match
  ``raw/csna_0-37.csv`` to the printed digit, so they are not used.
- the peers on 0–10: ``../ihdp_honest/results.csv`` (same peer code, same splits);
- the ridge floor on 0–10: ``raw/ridge_0-10.csv`` (it joined the peers after ``ihdp_honest``).

Checks that every estimator of a replication was scored on the same test rows (``split_id``),
keeps replications 0 to the last one that every estimator finished, then writes results.csv and
results.md (with the like-for-like table).

    python benchmarks/results/ihdp_honest_0-99/merge.py "COMMAND OF THE RUN"
"""
import sys
from pathlib import Path

import pandas as pd

from csna.bench.peers import PEERS
from csna.bench.results import write_markdown

here = Path(__file__).resolve().parent
raw = here / "raw"
command = sys.argv[1]
ours = ["csna", "csna-single"]
old = pd.read_csv(here.parent / "ihdp_honest" / "results.csv")
old = old[~old.estimator.isin(ours)]
ridge = pd.read_csv(raw / "ridge_0-10.csv")
csna = pd.read_csv(raw / "csna_0-37.csv")
run = pd.read_csv(raw / "run_11-99.csv")
run = run[(run.replication >= 11) & (~run.estimator.isin(ours) | (run.replication >= 38))]
df = pd.concat([old, ridge, csna, run], ignore_index=True)
assert not df.duplicated(["estimator", "replication"]).any(), "a row from two sources"
ids = df.groupby("replication")["split_id"].nunique()
assert (ids == 1).all(), ids[ids > 1]
want = set(PEERS) | set(ours)
have = df.groupby("replication")["estimator"].apply(set)
last = max(r for r in range(100) if all(r2 in have.index and want <= have[r2] for r2 in range(r + 1)))
df = df[df.replication <= last].sort_values(["estimator", "replication"])
df.to_csv(here / "results.csv", index=False)
labels = {"csna": "csna, default config (b3d88b5)", "csna-single": "csna with train.ensemble=1"}
labels |= {k: p.label for k, p in PEERS.items()}
write_markdown(df, here / "results.md", "csna bench: IHDP (response surface B), per-replication splits",
               labels, f"{command}; merged by benchmarks/results/ihdp_honest_0-99/merge.py: replications 0–{last}")
print(f"{len(df)} rows, {df.estimator.nunique()} estimators, replications 0–{last}")
