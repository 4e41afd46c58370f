"""Accuracy–compute trade-off of the Meta Utility Layer: a sweep of η (issue 4).

For each η, trains csna on IHDP replications (√PEHE_out, gated and with every block run) and on
a binary-outcome synthetic task (AUC of the factual outcome), and records whole-model FLOPs per
sample counted by torch.utils.flop_counter on real forward passes, plus wall time per sample at
batch 4096.

Usage:
    python benchmarks/compute_tradeoff.py --etas 0,0.02,0.05,0.1,0.2 --reps 0-9 --out bench_compute
    python benchmarks/compute_tradeoff.py --merge A/tradeoff.csv B/tradeoff.csv --out ALL
Writes OUT/tradeoff.csv, OUT/tradeoff.md and OUT/tradeoff.png, and prints the table; --merge
only summarises runs made side by side (one process per core) into one table and plot.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from _common import parse_reps

from csna.config import load_config
from csna.data import synthetic
from csna.ensemble import train_run
from csna.report import evaluate_and_report


@torch.no_grad()
def wall_per_sample(run, n: int = 4096, repeats: int = 5) -> tuple[float, float]:
    """Median wall time per sample (µs) at batch ``n``: every block run vs gated, summed over
    the ensemble's members (each runs on every row)."""
    x = torch.randn(n, run.model.p, device=run.model.y_mean.device)
    out = [0.0, 0.0]
    for member in run.all_members():
        model = member.model.eval()
        for i, mode in enumerate(("off", "hard")):
            model(x, gate_mode=mode)  # warm-up
            ts = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                model(x, gate_mode=mode)
                ts.append(time.perf_counter() - t0)
            out[i] += float(np.median(ts)) / n * 1e6
    return out[0], out[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--etas", default="0,0.02,0.05,0.1,0.2")
    ap.add_argument("--reps", default="0-9")
    ap.add_argument("--synthetic-reps", default="0-2")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--out", default="bench_compute")
    ap.add_argument("--merge", nargs="+", metavar="CSV", help="summarise these tradeoff.csv files instead of training")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.merge:
        summarise(pd.concat([pd.read_csv(f) for f in args.merge], ignore_index=True), out)
        return
    rows = []
    for eta in [float(e) for e in args.etas.split(",")]:
        for task, reps in (("ihdp", parse_reps(args.reps)), ("synthetic-binary", parse_reps(args.synthetic_reps))):
            for r in reps:
                ov = args.set + [f"phase4.eta={eta}"]
                if task == "ihdp":
                    cfg = load_config(None, ov + [f"data.replication={r}"])
                    data = None
                else:
                    cfg = load_config(None, ov, data_source="synthetic")
                    data = synthetic(4000, 25, seed=r, outcome="binary")
                run = train_run(cfg, data=data)
                m = evaluate_and_report(run, run.data, figures=False)
                w_full, w_gated = wall_per_sample(run)
                rows.append({"eta": eta, "task": task, "replication": r,
                             "flops_full": m.get("flops_full"), "flops_gated": m.get("flops_gated"),
                             "flops_reduction": m.get("flops_reduction"),
                             "sqrt_pehe_out": m.get("sqrt_pehe_out"), "sqrt_pehe_out_full": m.get("sqrt_pehe_out_full"),
                             "auc_out": m.get("auc_out"), "auc_out_full": m.get("auc_out_full"),
                             "wall_full_us": w_full, "wall_gated_us": w_gated})
                print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in rows[-1].items()}, flush=True)
    summarise(pd.DataFrame(rows), out)


def summarise(df: pd.DataFrame, out: Path) -> None:
    """tradeoff.csv, the mean ± s.e. table (tradeoff.md) and the plot (tradeoff.png)."""
    df = df.sort_values(["task", "eta", "replication"])
    df.to_csv(out / "tradeoff.csv", index=False)
    g = df.groupby(["task", "eta"])
    agg = g.agg(["mean", "sem"])
    lines = ["| task | η | runs | FLOPs reduction | √PEHE_out gated | √PEHE_out full | AUC gated | AUC full "
             "| µs/sample full | µs/sample gated |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (task, eta), rows_ in g:
        a = agg.loc[(task, eta)]

        def f(col):
            mu, se = a[(col, "mean")], a[(col, "sem")]
            return "–" if pd.isna(mu) else f"{mu:.3f} ± {0 if pd.isna(se) else se:.3f}"
        lines.append(f"| {task} | {eta:g} | {len(rows_)} | {f('flops_reduction')} | "
                     f"{f('sqrt_pehe_out')} | {f('sqrt_pehe_out_full')} | "
                     f"{f('auc_out')} | {f('auc_out_full')} | {f('wall_full_us')} | {f('wall_gated_us')} |")
    table = "\n".join(lines)
    (out / "tradeoff.md").write_text(table + "\n")
    print(table)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, task, col, label in ((axes[0], "ihdp", "sqrt_pehe_out", "√PEHE out-of-sample (IHDP)"),
                                 (axes[1], "synthetic-binary", "auc_out", "factual AUC (synthetic, binary)")):
        d = df[df.task == task].groupby("eta").mean(numeric_only=True)
        if d.empty:
            continue
        ax.plot(100 * d["flops_reduction"], d[col], "o-", label="gated")
        ax.plot(np.zeros(len(d)), d[f"{col}_full"], "s", label="every block run (0% saved)")
        for eta, row in d.iterrows():
            ax.annotate(f"η={eta:g}", (100 * row["flops_reduction"], row[col]),
                        textcoords="offset points", xytext=(4, 4))
        ax.set_xlabel("FLOPs reduction per sample (%)")
        ax.set_ylabel(label)
        ax.set_title(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Meta Utility Layer: accuracy against compute")
    fig.tight_layout()
    fig.savefig(out / "tradeoff.png", dpi=120)


if __name__ == "__main__":
    main()
