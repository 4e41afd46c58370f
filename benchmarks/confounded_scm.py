"""Issue 18's check: a strongly confounded linear-Gaussian SCM through the product's own commands.

A table of 4,000 rows and 6 covariates, P(T = 1 | x) = sigmoid(x·a), Y = x·b + 2·T + N(0, 1)
with b along a: the true effect is 2 for every unit (ATT = ATE = 2), while the naive
difference of means is about 7. For each variant, `csna train --data table.csv` then
`csna predict` on the same table; the plug-in ATT is the mean of `ite` over the treated rows
(what a user who averages `ite` gets), the doubly-robust ATT is metrics.json's `att_dr`.

    python benchmarks/confounded_scm.py --out /tmp/scm [--seeds 0,1] [--variants default,dis]

``--csna "python -m csna"`` (default) runs the installed csna; set PYTHONPATH to run another
checkout (the previous commit's code, for a before/after table).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd

VARIANTS = {
    "default": [],  # λ_Dis 0 since Session 8, λ_causal 0 since Session 13
    "dis": ["phase3.lambda_dis=0.5", "phase4.lambda_dis=0.5"],  # the seed's MMD balancing, as before
    "causal": [f"phase{n}.lambda_causal=0.5" for n in (1, 2, 3, 4)],  # L_causal on, as before Session 13
    "dis-no-causal": ["phase3.lambda_dis=0.5", "phase4.lambda_dis=0.5"]
    + [f"phase{n}.lambda_causal=0" for n in (1, 2, 3, 4)],
}
EFFECT = 2.0


def table(seed: int, n: int = 4000) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6))
    a = np.array([1.2, 1.0, -0.8, 0.0, 0.0, 0.0])
    b = np.array([3.0, 2.5, -2.0, 1.0, 0.0, 0.0])
    t = (rng.random(n) < 1 / (1 + np.exp(-x @ a))).astype(np.int64)
    y = x @ b + EFFECT * t + rng.normal(size=n)
    return pd.DataFrame({**{f"x{i}": x[:, i] for i in range(6)}, "treatment": t, "outcome": y})


def run(cmd: str, *args: str) -> None:
    res = subprocess.run(shlex.split(cmd) + list(args), capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"{cmd} {' '.join(args)} failed:\n{res.stderr[-2000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--variants", default="default,dis")
    ap.add_argument("--csna", default="python -m csna", help="the command that runs csna")
    ap.add_argument("--label", default="", help="a name for this checkout in the table")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print("| code | variant | seed | naive | ATT plug-in | error | ATT dr ± se | error | fit s |\n"
          "|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for seed in (int(s) for s in args.seeds.split(",")):
        df = table(seed)
        path = out / f"scm{seed}.csv"
        df.to_csv(path, index=False)
        naive = df.outcome[df.treatment == 1].mean() - df.outcome[df.treatment == 0].mean()
        for v in args.variants.split(","):
            rd = out / f"{args.label or 'run'}-{v}-{seed}"
            sets = [a for s in VARIANTS[v] for a in ("--set", s)]
            t0 = time.perf_counter()
            run(args.csna, "train", "--data", str(path), "--treatment", "treatment", "--outcome", "outcome",
                "--out", str(rd), "--overwrite", "--quiet", "--no-figures", *sets)
            fit = time.perf_counter() - t0
            run(args.csna, "predict", str(rd), "--data", str(path), "--out", str(rd / "scores.csv"))
            ite = pd.read_csv(rd / "scores.csv")["ite"].to_numpy()
            att = float(ite[df.treatment.to_numpy() == 1].mean())
            m = json.loads((rd / "metrics.json").read_text())
            dr, se = m.get("att_dr"), m.get("att_dr_se")
            dr_cells = (f"{dr:.2f} ± {se:.2f} | {abs(dr - EFFECT) / EFFECT:.0%}" if dr is not None
                        else "— | —")
            print(f"| {args.label} | {v} | {seed} | {naive:.2f} | {att:.2f} | {abs(att - EFFECT) / EFFECT:.0%} | "
                  f"{dr_cells} | {fit:.0f} |", flush=True)


if __name__ == "__main__":
    main()
