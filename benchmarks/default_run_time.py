"""Wall time of `csna train` with no arguments (the README's main job), one code version against
another, runs interleaved so that a slow minute of the host falls on both.

    python benchmarks/default_run_time.py --repeats 3 [--base DIR] [--extra "--set k=v"]

Each run is a fresh process, `python -m csna train --out TMP --quiet`, timed from start to exit
(imports, four members on the machine's cores, evaluation, figures, report). ``--base`` is a
source tree to compare with (e.g. `git archive <commit> src | tar -x -C DIR`, then DIR/src); the
current checkout's `src` is the other. Prints one row per run and the medians; the metrics
columns show whether the two versions trained the same model.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1] / "src"


def one_run(src: Path, extra: list[str]) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="csna-time-") as tmp:
        out = Path(tmp) / "run"
        env = dict(os.environ, PYTHONPATH=str(src))
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "csna", "train", "--out", str(out), "--quiet", *extra],
                              env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"csna train failed under {src}:\n{proc.stderr[-2000:]}")
        m = json.loads((out / "metrics.json").read_text())
    return {"wall_s": wall, "time_fit_s": m["time_fit_s"], "sqrt_pehe_out": m["sqrt_pehe_out"], "ate": m["ate"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--base", type=Path, help="another source tree (the directory holding csna/) to compare with")
    ap.add_argument("--extra", default="", help="arguments added to every `csna train`")
    args = ap.parse_args()
    versions = {"this": HERE} | ({"base": args.base.resolve()} if args.base else {})
    extra = shlex.split(args.extra)
    rows: dict[str, list[dict[str, float]]] = {v: [] for v in versions}
    print(f"host: {os.cpu_count()} CPUs; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("| version | run | wall s | time_fit_s | √PEHE_out | ATE |\n|---|---:|---:|---:|---:|---:|")
    for i in range(args.repeats):
        for name, src in versions.items():
            r = one_run(src, extra)
            rows[name].append(r)
            print(f"| {name} | {i + 1} | {r['wall_s']:.1f} | {r['time_fit_s']:.1f} | {r['sqrt_pehe_out']:.5f} "
                  f"| {r['ate']:.5f} |", flush=True)
    print("\n| version | median wall s | median time_fit_s |\n|---|---:|---:|")
    for name, rs in rows.items():
        print(f"| {name} | {statistics.median(r['wall_s'] for r in rs):.1f} "
              f"| {statistics.median(r['time_fit_s'] for r in rs):.1f} |")


if __name__ == "__main__":
    main()
