"""csna with ``model.nodes: variables`` against the default latent nodes, paired by (cell,
replication) on the same test rows (split fingerprints asserted): geometric mean of the ratio,
standard error of the mean log ratio, and a per-cell table.

    python benchmarks/results/suite_variables_s21/compare.py VARIABLES.csv LATENT.csv
"""
import sys

import numpy as np
import pandas as pd

variables = pd.read_csv(sys.argv[1])
latent = pd.read_csv(sys.argv[2])
latent = latent[latent.estimator == "csna"]
m = variables.merge(latent, on=["cell", "replication"], suffixes=("_var", "_lat"))
assert (m.split_id_var == m.split_id_lat).all(), "different test rows"
for k in ("sqrt_pehe_out", "eps_att_out", "eps_ate_out"):
    r = np.log(m[f"{k}_var"] / m[f"{k}_lat"])
    se = r.std(ddof=1) / np.sqrt(len(r))
    print(f"- {k}: variables / latent {np.exp(r.mean()):.3f} ± {se:.3f} (s.e. of the mean log ratio); "
          f"variables better on {(r < 0).sum()} of {len(r)}")
print("\n| cell | replication | √PEHE_out latent | variables | ratio | ε_ATT_out latent | variables |")
print("|---|---:|---:|---:|---:|---:|---:|")
for _, x in m.sort_values("cell").iterrows():
    ratio = x.sqrt_pehe_out_var / x.sqrt_pehe_out_lat
    print(f"| {x.cell} | {x.replication} | {x.sqrt_pehe_out_lat:.4g} | {x.sqrt_pehe_out_var:.4g} | {ratio:.2f} "
          f"| {x.eps_att_out_lat:.4g} | {x.eps_att_out_var:.4g} |")
