"""Figures of the merged suite run (replications 0–4) quoted in benchmarks/RESULTS.md, Session 19:
csna's mean ratio to the best other estimator over all five replications and over the blocks
0–2 and 3–4 apart, its cells above 1.5×, ε_ATT_out on the strongly confounded cells, the
doubly-robust and pointwise interval coverage, and the wall time of csna's fits.

    python benchmarks/results/suite_s19_r01234/summary.py benchmarks/results/suite_s19_r01234/results.csv
"""
import sys


from csna.bench import suite_report as SR

df = SR.read_csv(sys.argv[1])
order = list(dict.fromkeys(df["cell"]))
blocks = {"0-4": df, "0-2": df[df["replication"] <= 2], "3-4": df[df["replication"] >= 3]}
for name, d in ((k, v) for k, v in blocks.items() if len(v)):
    t = SR.summary_table(d, order)
    rank = list(t.index).index("csna") + 1
    cols = ["sqrt_pehe_out:mean_ratio", "eps_att_out:mean_ratio", "eps_ate_out:mean_ratio"]
    pehe, att, ate = (t.loc["csna", c] for c in cols)
    print(f"reps {name}: csna √PEHE_out ratio {pehe:.3f} (rank {rank} of {len(t)}), "
          f"ε_ATT_out {att:.3f}, ε_ATE_out {ate:.3f}")
    print(t[cols].head(5).round(2).to_string())
for metric in ("sqrt_pehe_out", "eps_att_out"):
    r = SR.ratio_to_best(SR.cell_means(df, metric, order))["csna"]
    print(f"{metric}: csna's cells above 1.5x:", r[r > 1.5].round(2).to_dict())
r = SR.ratio_to_best(SR.cell_means(df, "eps_att_out", order))["csna"]
strong = [c for c in order if "strong-conf" in c]
print("eps_att_out ratio on the strongly confounded cells:", r[strong].round(2).to_dict())
me = df[df["estimator"] == "csna"]
print(f"csna rows {len(me)}: DR ATE covered {int(me['ate_dr_covered'].sum())}/{len(me)}, "
      f"ATT {int(me['att_dr_covered'].sum())}/{len(me)}; pointwise CATE coverage mean "
      f"{me['cate_covered_out'].mean():.3f}, median {me['cate_covered_out'].median():.3f}")
print("median fit seconds:", df.groupby("estimator")["fit_seconds"].median().round(1).sort_values().to_dict())
print("core-minutes per replication:", round(float(df["fit_seconds"].sum() / 60 / df["replication"].nunique()), 1))
