"""What one node per variable costs (issue 19, item 4): fit time and prediction
throughput of one model with ``model.nodes: latent`` (k = 8) and ``variables`` (k = p + 2) at
p = 25, 100 and 300 covariates.

    python benchmarks/variable_nodes_cost.py [--rows 2000] [--p 25,100,300] [--repeats 1]

Prints a table (median over repeats). One torch thread, one model (``train.ensemble=1``), the
default phase lengths for the table's training rows.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def fit(p: int, rows: int, nodes: str, seed: int) -> dict[str, float]:
    import torch

    from csna.config import load_config
    from csna.data import synthetic
    from csna.ensemble import train_run
    from csna.predict import predict_frame

    torch.set_num_threads(1)
    data = synthetic(rows, p, seed)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(None, ["train.ensemble=1", f"model.nodes={nodes}", "log.tensorboard=false",
                                 "train.effect_shrink=none", "train.progress=false", f"train.seed={seed}"])
        start = time.perf_counter()
        run = train_run(cfg, data=data, run_dir=Path(tmp) / "run")
        total = time.perf_counter() - start
        X = data.X.sample(n=min(20000, len(data.X)), replace=True, random_state=0)
        t0 = time.perf_counter()
        predict_frame(run, X)
        rate = len(X) / (time.perf_counter() - t0)
    return {"fit_s": total, "predict_rows_per_s": rate, "k": run.model.k}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--p", default="25,100,300")
    ap.add_argument("--repeats", type=int, default=1)
    a = ap.parse_args()
    print("| p | nodes | k | fit s (one model, 4 phases) | predict rows/s |\n|---:|---|---:|---:|---:|")
    for p in (int(v) for v in a.p.split(",")):
        for nodes in ("latent", "variables"):
            runs = [fit(p, a.rows, nodes, s) for s in range(a.repeats)]
            med = {k: float(np.median([r[k] for r in runs])) for k in ("fit_s", "predict_rows_per_s")}
            print(f"| {p} | {nodes} | {runs[0]['k']} | {med['fit_s']:.1f} | {med['predict_rows_per_s']:,.0f} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
