"""Merge the peers' and csna's suite rows (run into two directories so that two processes never
write one results.csv) and write results.md and the heat map, over the (cell, replication)
pairs that every estimator of the cell has finished."""
import sys
from pathlib import Path
import pandas as pd
from csna.bench import suite_report as SR
from csna.bench.suite import CELLS
from csna.bench.peers import PEERS

peers, mine, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
out.mkdir(parents=True, exist_ok=True)
df = pd.concat([SR.read_csv(peers / "results.csv"), SR.read_csv(mine / "results.csv")], ignore_index=True)
# the same rows: csna's split_id equals the peers' on every (cell, replication)
ids = df.groupby(["cell", "replication"])["split_id"].nunique()
assert (ids == 1).all(), ids[ids > 1]
expected = {c.name: 1 + sum(1 for p in PEERS if p not in c.skip) for c in CELLS}
n = df.groupby(["cell", "replication"])["estimator"].nunique()
complete = {k for k, v in n.items() if v == expected[k[0]]}
df = df[[(c, r) in complete for c, r in zip(df["cell"], df["replication"])]]
reps = sorted(set(df["replication"]))
order = [c.name for c in CELLS]
df = df.sort_values(["cell", "estimator", "replication"])
df.to_csv(out / "results.csv", index=False)
labels = {"csna": "csna, default config, run as on a user's table"} | {k: p.label for k, p in PEERS.items()}
cmd = (f"{sys.argv[4]}; merged by benchmarks/results/suite_s8/merge.py over the (cell, replication) pairs "
       "every estimator finished: "
       f"{len(complete)} pairs, {len(df)} rows")
(out / "results.md").write_text(SR.markdown(df, [c for c in CELLS if c.name in set(df['cell'])], labels, cmd, [], reps))
SR.write_heatmap(df, out / SR.HEATMAP, order)
print(len(complete), "complete pairs;", len(df), "rows; reps", reps)
