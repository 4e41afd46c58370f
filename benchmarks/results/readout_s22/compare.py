"""csna with ``model.readout: nodes`` against the default ``mean``, paired per fit on the same
test rows (split fingerprints asserted where the results carry them): the rule's figures
(geometric mean of the ratio, s.e. of the mean log ratio, wins, worst fit, median fit-time
ratio) and a per-fit table.

    python benchmarks/results/readout_s22/compare.py NODES.csv MEAN.csv [NAME_A NAME_B]

The optional names label the two files in the output (default "nodes" and "mean"); Session 23's
variable-node pilot passes "variables" and "latent".
"""
import sys

import numpy as np
import pandas as pd

nodes, mean = (pd.read_csv(p) for p in sys.argv[1:3])
A, B = sys.argv[3:5] if len(sys.argv) >= 5 else ("nodes", "mean")
nodes, mean = (d[d.estimator == "csna"] for d in (nodes, mean))
keys = [k for k in ("cell", "replication") if k in nodes.columns]
m = nodes.merge(mean, on=keys, suffixes=("_n", "_m"))
if "split_id_n" in m.columns:
    assert (m.split_id_n == m.split_id_m).all(), "different test rows"
print(f"{len(m)} paired fits")
for k in ("sqrt_pehe_out", "eps_att_out", "eps_ate_out", "fit_seconds"):
    if f"{k}_n" not in m.columns:
        continue
    r = np.log(m[f"{k}_n"] / m[f"{k}_m"])
    se = r.std(ddof=1) / np.sqrt(len(r))
    print(f"- {k}: {A} / {B} {np.exp(r.mean()):.3f} (s.e. {se:.3f}, z {r.mean() / se:+.1f}); median "
          f"{np.exp(r.median()):.3f}; worst {np.exp(r.max()):.3f}; {A} lower on {(r < 0).sum()} of {len(r)}")
att = "eps_att_out_m" in m.columns
cols = " | ".join(keys)
print(f"\n| {cols} | √PEHE_out {B} | {A} | ratio |" + (f" ε_ATT_out {B} | {A} |" if att else "")
      + f" fit s {B} | {A} |")
print("|" + "---|" * len(keys) + "---:|" * (7 if att else 5))
for _, x in m.sort_values(keys).iterrows():
    ids = " | ".join(str(x[k]) for k in keys)
    a = f" {x.eps_att_out_m:.4g} | {x.eps_att_out_n:.4g} |" if att else ""
    print(f"| {ids} | {x.sqrt_pehe_out_m:.4g} | {x.sqrt_pehe_out_n:.4g} | {x.sqrt_pehe_out_n / x.sqrt_pehe_out_m:.2f} |"
          f"{a} {x.fit_seconds_m:.0f} | {x.fit_seconds_n:.0f} |")
