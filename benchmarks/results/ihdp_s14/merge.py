"""IHDP under the honest protocol, replications 0 to the last one every estimator finished.

Replications 0–10: the peers' rows of ``ihdp_honest`` and csna's rows of ``ihdp_s13`` (today's
default, which reproduces them bit for bit). csna-single's rows of 0–10 in ``ihdp_honest`` are an
older default (8ead46f), so csna-single is left out there, and the ridge floor was not yet a
peer then. Replications 11 on: one run of every
estimator at today's default (``RUN``). Checks that every estimator of a replication has the
same test rows (``split_id``), keeps the replications every estimator finished, and writes
results.csv and results.md (with the like-for-like table) here.

    python benchmarks/results/ihdp_s14/merge.py RUN "COMMAND OF RUN"
"""
import sys
from pathlib import Path

import pandas as pd

from csna.bench.peers import PEERS
from csna.bench.results import write_markdown

here = Path(__file__).resolve().parent
res = here.parent
run, command = Path(sys.argv[1]), sys.argv[2]
old_peers = pd.read_csv(res / "ihdp_honest" / "results.csv")
old_peers = old_peers[~old_peers.estimator.isin(["csna", "csna-single"])]
old_csna = pd.read_csv(res / "ihdp_s13" / "results.csv")
new = pd.read_csv(run / "results.csv")
new = new[new.replication >= 11]
df = pd.concat([old_peers, old_csna, new], ignore_index=True)
ids = df.groupby("replication")["split_id"].nunique()
assert (ids == 1).all(), ids[ids > 1]
want = (set(PEERS) - {"ridge-t"}) | {"csna"}  # the ridge floor joined the peers after ihdp_honest
have = df.groupby("replication")["estimator"].apply(set)
complete = [r for r, s in have.items() if want <= s and (r <= 10 or "csna-single" in s)]
last = max(r for r in range(max(complete) + 1) if all(q in complete for q in range(r + 1)))
df = df[df.replication <= last].sort_values(["estimator", "replication"])
df.to_csv(here / "results.csv", index=False)
labels = {"csna": "csna, default config (0203cad and later; replications 0–10 from ihdp_s13)",
          "csna-single": "csna with train.ensemble=1, replications 11 on only",
          "ridge-t": "ridge T-learner (the floor), replications 11 on only"} | {k: p.label for k, p in PEERS.items()}
write_markdown(df, here / "results.md", "csna bench: IHDP (response surface B), per-replication splits",
               labels, f"{command}; merged by benchmarks/results/ihdp_s14/merge.py: replications 0–{last}")
print(f"replications 0–{last}, {len(df)} rows")
