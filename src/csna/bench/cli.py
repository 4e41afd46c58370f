"""``csna bench ihdp | synthetic``: csna, its ablations and the peers on shared splits.

``add_subparser(subparsers)`` registers the ``bench`` verb on csna's command line; ``main``
runs it on its own (``python -m csna.bench.cli bench ihdp ...``).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from ..config import ConfigError
from ..data import DataError
from . import results as R
from .peers import INSTALL_HINT, PEERS, check_installed, resolve
from .run import (ABLATIONS, BenchSpec, ablation_path, add_run_options, draw_splits, execute, pair_singles, split_id,
                  tasks_for)


def _ablations(text: str | None) -> tuple[str, ...]:
    if text is None:
        return ()
    if text == "all":
        return ABLATIONS
    names = tuple(a.strip() for a in text.split(",") if a.strip())
    bad = [a for a in names if a not in ABLATIONS]
    if bad:
        raise ConfigError(f"unknown ablation(s) {', '.join(bad)} (valid: {', '.join(ABLATIONS)})")
    return names


def spec_from_args(args: argparse.Namespace) -> BenchSpec:
    if args.reps < 1 or args.start < 0:
        raise ConfigError(f"--reps must be >= 1 and --start >= 0, got {args.reps} and {args.start}")
    if args.jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {args.jobs}")
    peers = resolve(args.peers)
    check_installed(peers)
    ablations = _ablations(args.ablations)
    for a in ablations:
        ablation_path(a)
    options = {k: v for k, v in (("max_epochs", args.neural_epochs), ("n_configs", args.neural_configs)) if v}
    return BenchSpec(dataset=args.bench_data, replications=tuple(range(args.start, args.start + args.reps)),
                     peers=tuple(peers), csna=not args.no_csna, ablations=ablations,
                     ablation_reps=args.ablation_reps, overrides=tuple(args.set or ()),
                     n=getattr(args, "n", 2000), p=getattr(args, "p", 25), peer_options=options,
                     cores=max(1, usable_cores() // args.jobs))


def _existing(out: Path, args: argparse.Namespace, binary: bool) -> list[dict]:
    path = out / "results.csv"
    if not path.is_file():
        return []
    if args.overwrite:
        return []
    if not args.resume:
        raise ConfigError(f"--out {out} already holds results.csv; use --resume to run only the missing rows "
                          "or --overwrite to start again")
    df = R.read_csv(path)
    if not R.known_columns(df, R.columns(binary)):
        raise DataError(f"{path} does not hold {'synthetic' if binary else 'IHDP'} bench results (other columns)")
    return R.records(df, R.columns(binary))


def cmd_bench(args: argparse.Namespace) -> int:
    """Run the benchmark; 0 when every fit succeeded, 1 when some failed (they are listed)."""
    spec = spec_from_args(args)
    binary = spec.dataset == "synthetic"
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a directory")
    rows = _existing(out, args, binary)
    splits = {rep: draw_splits(spec, rep) for rep in spec.replications}
    fingerprints = {rep: split_id(s["test"]) for rep, s in splits.items()}
    for r in rows:
        rep = int(r["replication"])
        if rep in fingerprints and str(r["split_id"]) != fingerprints[rep]:
            raise DataError(f"{out / 'results.csv'}: replication {rep} was scored on another split "
                            "(the config changed); use --overwrite or another --out")
    done = {(str(r["estimator"]), int(r["replication"])) for r in rows}
    tasks = pair_singles([t for t in tasks_for(spec, splits) if (t.estimator, t.replication) not in done])
    out.mkdir(parents=True, exist_ok=True)
    command = "csna " + " ".join(shlex.quote(a) for a in (args.argv or sys.argv[1:]))
    (out / "bench.json").write_text(json.dumps({"command": command, "dataset": spec.dataset,
                                                "replications": list(spec.replications), "peers": list(spec.peers),
                                                "ablations": list(spec.ablations), "overrides": list(spec.overrides),
                                                "peer_options": spec.peer_options, "jobs": args.jobs}, indent=2))
    labels = {"csna": "csna, default config"} | {f"csna-{a}": f"csna ablation, src/csna/configs/ablations/{a}.yaml"
                                                  for a in ABLATIONS} | {n: p.label for n, p in PEERS.items()}
    title = "csna bench: IHDP (response surface B)" if not binary else \
        f"csna bench: synthetic SCM, binary outcome (n={spec.n}, p={spec.p})"
    failures: list[dict] = []

    def save(row: dict) -> None:
        if "error" in row:
            failures.append(row)
            print(f"csna bench: {row['estimator']} on replication {row['replication']} failed: {row['error']}",
                  file=sys.stderr)
            return
        rows.append(row)
        df = R.write_csv(rows, out / "results.csv", binary)
        R.write_markdown(df, out / "results.md", title, labels, command)

    print(f"csna bench {spec.dataset}: {len(tasks)} fits ({len(done)} already done) → {out}", file=sys.stderr)
    execute(tasks, jobs=args.jobs, progress=not args.quiet, on_row=save)
    df = R.write_csv(rows, out / "results.csv", binary)
    R.write_markdown(df, out / "results.md", title, labels, command)
    return R.report_failures(out, failures, "csna bench")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reps", type=int, required=True, help="number of replications")
    p.add_argument("--start", type=int, default=0, help="first replication (default 0)")
    p.add_argument("--peers", default="all", help=f"comma list, 'all' or 'none' (peers: {', '.join(PEERS)})")
    p.add_argument("--no-csna", action="store_true", help="leave csna's own row out (peers and ablations only)")
    p.add_argument("--ablations", nargs="?", const="all", default=None, metavar="LIST",
                   help=f"add csna ablation rows: all, or a comma list of {', '.join(ABLATIONS)}")
    p.add_argument("--ablation-reps", type=int, default=None, metavar="K",
                   help="run the ablations on the first K replications only")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a csna config key (ablations too)")
    p.add_argument("--jobs", type=int, default=1,
                   help="worker processes, one replication fit each (default 1); a csna fit trains its "
                   "ensemble members on the cores left per job")
    add_run_options(p, "results.csv, results.md")


def add_subparser(subparsers) -> argparse.ArgumentParser:
    """Register ``bench`` (with ``ihdp`` and ``synthetic``) on csna's subparsers; ``func`` is set."""
    b = subparsers.add_parser("bench", help=f"csna vs peers and ablations on shared splits ({INSTALL_HINT})")
    sub = b.add_subparsers(dest="bench_data", required=True)
    i = sub.add_parser("ihdp", help="IHDP replications (response surface B)")
    _common(i)
    s = sub.add_parser("synthetic", help="synthetic SCM with a binary outcome: AUC, ε_ATE, √PEHE")
    _common(s)
    s.add_argument("--n", type=int, default=2000, help="rows per replication")
    s.add_argument("--p", type=int, default=25, help="covariates")
    for p in (i, s):
        p.set_defaults(func=cmd_bench, argv=None)
    from .suite import add_suite_parser

    add_suite_parser(sub)
    from .structure import add_structure_parser

    add_structure_parser(sub)
    t = sub.add_parser("throughput", help="training and prediction speed, peak memory and MFU on a large table")
    t.add_argument("--rows", type=int, default=1_000_000, help="rows of the synthetic table (default 1,000,000)")
    t.add_argument("--cols", type=int, default=100, help="covariates (default 100)")
    t.add_argument("--data", help="stream this Parquet/CSV file instead (treatment/outcome columns as "
                                  "`csna data synthetic` writes them)")
    t.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as train.threads)")
    t.add_argument("--steps", type=int, default=200, help="timed steps per phase at batch 128 (a quarter at 1024)")
    t.add_argument("--device", default="auto", help="auto | cpu | cuda")
    t.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                   help="training precision (train.precision); prediction is timed in fp32")
    t.add_argument("--out", required=True, help="output directory (throughput.json)")
    t.set_defaults(func=cmd_throughput, argv=None)
    return b


def cmd_throughput(args: argparse.Namespace) -> int:
    from . import throughput as TP

    if args.rows < 10_000 or args.cols < 1 or args.steps < 20 or args.threads < 1:
        raise ConfigError("need --rows >= 10000, --cols >= 1, --steps >= 20 and --threads >= 1")
    source = val = None
    note = "in-memory synthetic table"
    if args.data:
        from ..config import load_config
        from ..prepare import prepare_stream, select_device, to_split

        cfg = load_config(None, ["data.stream=true", "data.stream_eval_rows=4096"], data_source=args.data)
        data, splits, prep, source, n_rows = prepare_stream(cfg, select_device(args.device))
        val = to_split(prep, data, splits["val"], source.device)
        args.rows, note = n_rows, f"streamed from {args.data}"
    res = TP.run(args.rows, args.cols, Path(args.out), threads=args.threads, steps=args.steps,
                 device=args.device, source=source, val=val, note=note, precision=args.precision)
    TP.print_table(res)
    print(f"wrote {Path(args.out) / 'throughput.json'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry: ``python -m csna.bench.cli bench ihdp --reps 2 --out DIR``."""
    parser = argparse.ArgumentParser(prog="csna")
    add_subparser(parser.add_subparsers(dest="command", required=True))
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        return args.func(args)
    except (ConfigError, DataError) as exc:
        print(f"csna: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2


def usable_cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


if __name__ == "__main__":
    sys.exit(main())
