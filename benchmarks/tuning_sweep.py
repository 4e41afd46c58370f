"""A hyperparameter sweep of csna on IHDP tuning replications, one fit per process.

For choosing settings on replications ≥ 1000 (never the reported 0–99). Each variant is a list
of config overrides; every (variant, replication) pair is one fit, run ``--jobs`` at a time
(one torch thread each, on the CPU), and each row is appended to ``--out`` (CSV) as it lands,
so a run cut short keeps what it finished. Prints mean √PEHE_out / ε_ATE_out per variant and the
paired difference against the first variant, over the replications both finished.

Usage:
    python benchmarks/tuning_sweep.py --reps 1000-1029 --jobs 16 --out sweep.csv \\
        --variant base= --variant wd=train.weight_decay=0.1 --variant wide=model.hidden=512,model.head_hidden=256
    python benchmarks/tuning_sweep.py --summary sweep.csv      # the table of a finished (or cut) sweep
"""

from __future__ import annotations

import argparse
import csv
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from _common import parse_reps

FIELDS = ["variant", "replication", "sqrt_pehe_out", "eps_ate_out", "sqrt_pehe_out_full",
          "fit_seconds"]


def fit_one(variant: str, overrides: list[str], rep: int) -> dict:
    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(1)
    from csna.config import load_config
    from csna.ensemble import train_run
    from csna.evaluate import core_metrics

    cfg = load_config(None, overrides + [f"data.replication={rep}", "train.progress=false", "log.tensorboard=false",
                                         "train.device=cpu"])
    t0 = time.perf_counter()
    run = train_run(cfg)
    fit = time.perf_counter() - t0
    m = core_metrics(run, run.data)
    return {"variant": variant, "replication": rep, "sqrt_pehe_out": m["sqrt_pehe_out"],
            "eps_ate_out": m["eps_ate_out"], "sqrt_pehe_out_full": m.get("sqrt_pehe_out_full", m["sqrt_pehe_out"]),
            "fit_seconds": fit}


def summary(path: Path) -> None:
    import pandas as pd

    df = pd.read_csv(path)
    names = list(dict.fromkeys(df["variant"]))
    base = df[df.variant == names[0]].set_index("replication")
    print(f"| variant | reps | √PEHE_out | ε_ATE_out | paired Δ√PEHE vs {names[0]} | paired Δε_ATE | fit s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for v in names:
        d = df[df.variant == v].set_index("replication")
        common = d.index.intersection(base.index)
        dp = d.loc[common, "sqrt_pehe_out"] - base.loc[common, "sqrt_pehe_out"]
        da = d.loc[common, "eps_ate_out"] - base.loc[common, "eps_ate_out"]
        se = lambda x: x.std(ddof=1) / np.sqrt(len(x)) if len(x) > 1 else 0.0  # noqa: E731
        print(f"| {v} | {len(d)} | {d.sqrt_pehe_out.mean():.3f} | {d.eps_ate_out.mean():.3f} | "
              f"{dp.mean():+.3f} ± {se(dp):.3f} | {da.mean():+.3f} ± {se(da):.3f} | {d.fit_seconds.median():.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", default="1000-1019")
    ap.add_argument("--variant", action="append", default=[], help="NAME=key=value,key=value (NAME= for defaults)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", default="sweep.csv")
    ap.add_argument("--summary", help="print the table of this CSV and stop")
    args = ap.parse_args()
    if args.summary:
        summary(Path(args.summary))
        return
    variants = []
    for v in args.variant or ["base="]:
        name, _, rest = v.partition("=")
        variants.append((name, [o for o in rest.split(",") if o]))
    out = Path(args.out)
    new = not out.exists()
    tasks = [(name, ov, rep) for rep in parse_reps(args.reps) for name, ov in variants]
    with out.open("a", newline="") as fh, ProcessPoolExecutor(args.jobs) as pool:
        w = csv.DictWriter(fh, FIELDS)
        if new:
            w.writeheader()
        futs = [pool.submit(fit_one, *t) for t in tasks]
        for i, f in enumerate(as_completed(futs), 1):
            try:
                w.writerow(f.result())
            except Exception as exc:  # one failed fit must not lose the sweep
                print(f"failed: {type(exc).__name__}: {exc}", flush=True)
            fh.flush()
            print(f"{i}/{len(tasks)}", end="\r", flush=True)
    print()
    summary(out)


if __name__ == "__main__":
    main()
