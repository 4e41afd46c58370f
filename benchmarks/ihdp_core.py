"""IHDP accuracy and wall time of the default `csna train` (issue 2's benchmark).

Usage:
    python benchmarks/ihdp_core.py --reps 0-9            # the reported replications
    python benchmarks/ihdp_core.py --reps 1000-1009      # tuning replications (never reported)
    python benchmarks/ihdp_core.py --reps 0-9 --set phase4.eta=2.0

Prints one row per replication and a mean ± standard error table; with --cli-time also times
the plain `csna train` command (no arguments) end to end, median of --cli-repeats runs.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

from _common import parse_reps

from csna.config import load_config
from csna.ensemble import train_run
from csna.report import evaluate_and_report

KEYS = ["sqrt_pehe_in", "sqrt_pehe_out", "eps_ate_in", "eps_ate_out", "sqrt_pehe_out_full", "eps_ate_out_full",
        "flops_reduction"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", default="0-9")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--cli-time", action="store_true")
    ap.add_argument("--cli-repeats", type=int, default=3)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    rows = []
    print(f"{'rep':>5} " + " ".join(f"{k:>18}" for k in KEYS) + f" {'fit_s':>7} {'gate_thr':>8}")
    for r in parse_reps(args.reps):
        cfg = load_config(None, args.set + [f"data.replication={r}"])
        t0 = time.perf_counter()
        run = train_run(cfg)
        fit = time.perf_counter() - t0
        m = evaluate_and_report(run, run.data, figures=False)
        row = [m.get(k, float("nan")) for k in KEYS] + [fit]
        rows.append(row)
        print(f"{r:>5} " + " ".join(f"{v:>18.4f}" for v in row) + f" {float(run.model.gate_threshold):>8.2f}",
              flush=True)
    a = np.array(rows, dtype=float)
    mean = np.nanmean(a, 0)
    se = np.nanstd(a, 0, ddof=1) / np.sqrt(len(a)) if len(a) > 1 else np.zeros(a.shape[1])
    print("\n| metric | mean ± s.e. |\n|---|---|")
    for k, mu, s in zip(KEYS + ["fit_seconds"], mean, se):
        print(f"| {k} | {mu:.3f} ± {s:.3f} |")
    if args.cli_time:
        times = []
        for _ in range(args.cli_repeats):
            with tempfile.TemporaryDirectory() as d:
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-m", "csna", "train", "--out", f"{d}/run", "--quiet"],
                               check=True, capture_output=True)
                times.append(time.perf_counter() - t0)
        print(f"\n`csna train` (no arguments) wall time: median {statistics.median(times):.1f} s "
              f"over {len(times)} runs ({', '.join(f'{t:.1f}' for t in times)})")


if __name__ == "__main__":
    main()
