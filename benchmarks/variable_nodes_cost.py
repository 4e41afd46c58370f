"""What one node per variable costs (issue 19, item 4): fit time and prediction
throughput of one model with ``model.nodes: latent`` (k = 8) and ``variables`` (one node per
variable up to ``model.max_variable_nodes``, then groups of correlated variables: k at most the
cap + 2) at p = 25, 100 and 300 covariates.

    python benchmarks/variable_nodes_cost.py [--rows 2000] [--p 25,100,300] [--repeats 1] [--cap 32]

``--cap 0`` is one node per variable whatever p (k = p + 2; at p = 100 a step costs about 1 s).

Prints a table (median over repeats). One torch thread, one model (``train.ensemble=1``), every
phase capped at ``--max-steps`` optimizer steps. "ms per step" is the difference between that fit
and one of a third the steps, per step: the fixed costs (the PC skeleton, the evaluation, phase
4's gate calibration) cancel.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def fit(p: int, rows: int, nodes: str, seed: int, max_steps: int, cap: int) -> dict[str, float]:
    import torch

    from csna.config import load_config
    from csna.data import synthetic
    from csna.ensemble import train_run
    from csna.predict import predict_frame

    torch.set_num_threads(1)
    data = synthetic(rows, p, seed)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(None, ["train.ensemble=1", f"model.nodes={nodes}", "log.tensorboard=false",
                                 "train.effect_shrink=none", "train.progress=false", f"train.seed={seed}",
                                 f"train.max_steps={max_steps}", f"model.max_variable_nodes={cap}"])
        start = time.perf_counter()
        run = train_run(cfg, data=data, run_dir=Path(tmp) / "run")
        total = time.perf_counter() - start
        X = data.X.sample(n=5000, replace=True, random_state=0)
        t0 = time.perf_counter()
        predict_frame(run, X)
        rate = len(X) / (time.perf_counter() - t0)
    return {"fit_s": total, "predict_rows_per_s": rate, "k": run.model.k}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--p", default="25,100,300")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--max-steps", type=int, default=40, help="optimizer steps per phase (train.max_steps)")
    ap.add_argument("--cap", type=int, default=32, help="model.max_variable_nodes (0: one node per variable)")
    a = ap.parse_args()
    print(f"| p | nodes | k | fit s ({a.max_steps} steps × 4 phases, with evaluation) | ms per step | "
          "predict rows/s |\n"
          "|---:|---|---:|---:|---:|---:|")
    for p in (int(v) for v in a.p.split(",")):
        for nodes in ("latent", "variables"):
            runs = [fit(p, a.rows, nodes, s, a.max_steps, a.cap) for s in range(a.repeats)]
            # The cost of a step without the fixed costs: the difference with a run of a third the steps.
            short = [fit(p, a.rows, nodes, s, a.max_steps // 3, a.cap) for s in range(a.repeats)]
            extra = 4 * (a.max_steps - a.max_steps // 3)
            step = [1000 * (r["fit_s"] - q["fit_s"]) / extra for r, q in zip(runs, short)]
            med = {k: float(np.median([r[k] for r in runs])) for k in ("fit_s", "predict_rows_per_s")}
            print(f"| {p} | {nodes} | {runs[0]['k']} | {med['fit_s']:.1f} | {float(np.median(step)):.0f} | "
                  f"{med['predict_rows_per_s']:,.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
