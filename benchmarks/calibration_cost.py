"""What phase 4's gate calibration costs with its paths computed once per phase (``meta.CalibrationRows``
with ``frozen=True``, the default since Session 19) against computing them at every call (the
code before it: the encoder, the full model and the threshold sweep after each epoch).

Trains one member with the defaults (IHDP replication 0 unless ``--set`` says otherwise), then
runs phase 4's calibrations as its history counts them (one before the first epoch and one per
epoch) on the trained member both ways, alternating, and prints a table: seconds per phase
(median of ``--repeats``), FLOPs per phase (``torch.utils.flop_counter``) and whether every call
chose the same threshold with the same figures.

    python benchmarks/calibration_cost.py [--repeats 3] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from csna.config import load_config
from csna.ensemble import train_member
from csna.fit_flops import _trainer
from csna.meta import CalibrationRows, calibrate_gates
from csna.prepare import to_split


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    a = ap.parse_args()
    torch.set_num_threads(1)
    cfg = load_config(None, ["train.ensemble=1", "train.threads=1"] + a.overrides)
    run = train_member(cfg)
    calls = run.phase_counts[4][1] + 1
    model, pc = run.model, cfg.phase4
    cpu = torch.device("cpu")
    train, val = (to_split(run.prep, run.data, np.asarray(run.splits[s]), cpu) for s in ("train", "val"))
    tr = _trainer(model, cfg, train, val)
    tr.loss_scale, costs, inf = 1.0, model.measure_block_costs(), float("inf")

    def phase(frozen: bool) -> list:
        rows = CalibrationRows(tr, pc.cate_tolerance, frozen=True) if frozen else None
        return [calibrate_gates(tr, costs, pc.eta, inf, inf, pc.cate_tolerance, rows) for _ in range(calls)]

    seconds: dict[bool, list[float]] = {False: [], True: []}
    picks = {}
    for _ in range(a.repeats):
        for frozen in (False, True):
            t0 = time.perf_counter()
            picks[frozen] = phase(frozen)
            seconds[frozen].append(time.perf_counter() - t0)
    flops = {}
    for frozen in (False, True):
        with FlopCounterMode(display=False) as fc:
            phase(frozen)
        flops[frozen] = fc.get_total_flops()
    same = all(p.threshold == q.threshold and p.passed == q.passed
               and np.allclose(p[:1] + p[2:5], q[:1] + q[2:5], rtol=1e-5, atol=1e-7)
               for p, q in zip(picks[False], picks[True]))
    print(f"one member, {len(val)} validation rows, {calls} calibrations (phase 4's epochs + 1), "
          f"{model.n_blocks} gated blocks; the member's fit took {run.fit_seconds:.1f} s")
    print("| calibration | s per phase (median) | runs | FLOPs per phase |")
    print("|---|---:|---|---:|")
    for frozen, name in ((False, "every call from scratch (before)"), (True, "paths once per phase (now)")):
        runs = ", ".join(f"{s:.2f}" for s in seconds[frozen])
        print(f"| {name} | {statistics.median(seconds[frozen]):.2f} | {runs} | {flops[frozen]:.3g} |")
    print(f"same threshold and figures at every call: {same}")


if __name__ == "__main__":
    main()
