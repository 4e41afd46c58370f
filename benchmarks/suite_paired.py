"""Paired comparisons on the stress suite's (cell, replication) pairs, from a merged results.csv.

    python benchmarks/suite_paired.py RESULTS.csv                       # csna against every other estimator
    python benchmarks/suite_paired.py RESULTS.csv --variant OTHER.csv   # csna against csna's rows in OTHER.csv

For each other estimator: the geometric mean over pairs of csna's error over the other's (with
the standard error of the mean log ratio) and the pairs where csna's error is lower, for
√PEHE_out, ε_ATT_out and ε_ATE_out. With ``--variant`` (e.g. the λ_causal = 0 run), the same for
csna against the variant, then per cell the mean errors and the geometric mean ratio over the
cell's replications. A pair counts only where both estimators have a row.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

METRICS = ("sqrt_pehe_out", "eps_att_out", "eps_ate_out")
KEY = ["cell", "replication"]


def paired(a: pd.DataFrame, b: pd.DataFrame, metric: str) -> tuple[float, float, int, int]:
    """(geometric mean of a/b, s.e. of the mean log ratio, pairs where a < b, pairs)."""
    m = a[KEY + [metric]].merge(b[KEY + [metric]], on=KEY, suffixes=("_a", "_b"))
    lr = np.log(np.maximum(m[f"{metric}_a"].to_numpy(), 1e-12) / np.maximum(m[f"{metric}_b"].to_numpy(), 1e-12))
    se = float(lr.std(ddof=1) / np.sqrt(len(lr))) if len(lr) > 1 else float("nan")
    return float(np.exp(lr.mean())), se, int((m[f"{metric}_a"] < m[f"{metric}_b"]).sum()), len(m)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results")
    ap.add_argument("--variant", default=None, help="a results.csv whose csna rows are the variant")
    ap.add_argument("--estimator", default="csna")
    args = ap.parse_args()
    df = pd.read_csv(args.results)
    me = df[df["estimator"] == args.estimator]
    head = " | ".join(f"{m} | wins" for m in METRICS)
    if args.variant is None:
        print(f"| other | {head} |\n|---|" + "---:|---:|" * len(METRICS))
        for other in sorted(set(df["estimator"]) - {args.estimator}):
            cells = []
            for m in METRICS:
                g, se, w, n = paired(me, df[df["estimator"] == other], m)
                cells += [f"{g:.3f} ± {se:.3f}", f"{w}/{n}"]
            print(f"| {other} | " + " | ".join(cells) + " |")
        return
    var = pd.read_csv(args.variant)
    var = var[var["estimator"] == args.estimator]
    cells = []
    for m in METRICS:
        g, se, w, n = paired(me, var, m)
        cells += [f"{g:.3f} ± {se:.3f}", f"{w}/{n}"]
    print(f"| default / variant | {head} |\n|---|" + "---:|---:|" * len(METRICS))
    print("| all pairs | " + " | ".join(cells) + " |\n")
    j = me[KEY + list(METRICS)].merge(var[KEY + list(METRICS)], on=KEY, suffixes=("", "_v"))
    print("| cell | reps | √PEHE_out default | variant | ratio | ε_ATT_out default | variant |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for cell, g in j.groupby("cell"):
        a, b = np.maximum(g["sqrt_pehe_out"], 1e-12), np.maximum(g["sqrt_pehe_out_v"], 1e-12)
        ratio = float(np.exp(np.mean(np.log(a / b))))
        print(f"| {cell} | {len(g)} | {g['sqrt_pehe_out'].mean():.3f} | {g['sqrt_pehe_out_v'].mean():.3f} "
              f"| {ratio:.3f} | {g['eps_att_out'].mean():.3f} | {g['eps_att_out_v'].mean():.3f} |")


if __name__ == "__main__":
    main()
