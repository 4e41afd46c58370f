"""Time of one AdamW step on the default model's parameters: torch's three implementations.

    python benchmarks/optimizer_step.py [--steps 500] [--repeats 3]

The default model is built for IHDP (csna.prepare.build_model), every parameter gets a random
gradient, and each implementation takes the same steps (single-tensor loop, multi-tensor
foreach, fused kernel). Prints the median milliseconds per step over the repeats and the largest
parameter difference from the foreach update after 100 steps (the implementations run one
formula; they differ in float rounding only).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from csna.config import load_config
from csna.prepare import build_model, fit_preparation, load_data

KINDS = {"foreach": {"foreach": True}, "single-tensor": {"foreach": False}, "fused": {"fused": True}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = load_config(None, [])
    data = load_data(cfg)
    model = build_model(fit_preparation(cfg, data, np.arange(len(data.T))), cfg, torch.device("cpu"))
    base = [p.detach().clone() for p in model.parameters()]
    grads = [torch.randn_like(p) for p in base]
    print(f"{len(base)} parameter tensors, {sum(p.numel() for p in base):,} values; torch {torch.__version__}")
    print("| AdamW | ms per step (median) | max |Δ| from foreach after 100 steps |\n|---|---:|---:|")
    after = {}
    for name, kw in KINDS.items():
        params = [torch.nn.Parameter(p.clone()) for p in base]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt = torch.optim.AdamW(params, lr=1e-3, **kw)
        for _ in range(100):
            opt.step()
        after[name] = [p.detach().clone() for p in params]
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for _ in range(args.steps):
                opt.step()
            times.append((time.perf_counter() - t0) / args.steps * 1e3)
        diff = max(float((a - b).abs().max()) for a, b in zip(after[name], after["foreach"]))
        print(f"| {name} | {statistics.median(times):.3f} | {diff:.1e} |")


if __name__ == "__main__":
    main()
