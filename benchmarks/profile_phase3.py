"""Profile phase-3 training steps with torch.profiler and print the ops that cost the most.

    python benchmarks/profile_phase3.py --batch 1024 --steps 30 [--threads 1] [--rows 50000]

The steps run through the real training loop (Trainer.run_phase with train.max_steps) on an
in-memory synthetic table of 100 covariates, after a warm-up phase; the table is sorted by
self CPU time, so it names the kernels to remove first (issue 6).
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from csna.bench.throughput import table
from csna.config import Config
from csna.model import CSNAModel
from csna.train import Trainer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--cols", type=int, default=100)
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device("cpu")
    train, val = table(args.rows, args.cols, 0, dev)
    cfg = Config()
    cfg.train.batch_size, cfg.train.max_steps, cfg.train.progress = args.batch, args.steps, False
    model = CSNAModel(train.x.shape[1], 2, 0, cfg.model)
    trainer = Trainer(model, cfg, train, val)
    trainer.run_phase(3)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        trainer.run_phase(3)
    print(f"phase 3, batch {args.batch}, {args.steps} steps, {args.threads} thread(s)")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))


if __name__ == "__main__":
    main()
