"""The peers (not csna) on IHDP replications, as `csna bench ihdp --no-csna` runs them.

Usage:
    python benchmarks/ihdp_peers.py                      # replications 0-9, 2 workers
    python benchmarks/ihdp_peers.py --reps 20 --jobs 1 --peers tarnet,cfr-wass
    python benchmarks/ihdp_peers.py --out runs/peers --resume

Writes results.csv and results.md to --out (default runs/bench-ihdp-peers) and prints the table.
Needs the optional extra: pip install 'csna[bench]'.
"""

from __future__ import annotations

import argparse
import sys

from csna.bench.cli import main as bench_main


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", default="10")
    ap.add_argument("--start", default="0")
    ap.add_argument("--jobs", default="2")
    ap.add_argument("--peers", default="all")
    ap.add_argument("--out", default="runs/bench-ihdp-peers")
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args()
    argv = ["bench", "ihdp", "--no-csna", "--reps", args.reps, "--start", args.start, "--jobs", args.jobs,
            "--peers", args.peers, "--out", args.out] + (["--resume"] if args.resume else [])
    return bench_main(argv)


if __name__ == "__main__":
    sys.exit(main())
