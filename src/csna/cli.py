"""Command line: ``csna train | evaluate | predict | bench | data``.

Bad input ends with one line on stderr naming what and where, exit code 2, no traceback.
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import sys
import time
from pathlib import Path

from .checkpoint import CheckpointError
from .config import ConfigError
from .launch import add_train_arguments, train_config
from .data import DataError
from .perf import tune_malloc

USER_ERRORS = (ConfigError, DataError, CheckpointError)


class UsageError(ValueError):
    """A command-line use that cannot work (e.g. an existing run directory without --overwrite)."""


def _fail(msg: str) -> int:
    print(f"csna: error: {msg}", file=sys.stderr)
    return 2


def _new_run_dir() -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / stamp
    path, i = base, 1
    while path.exists():
        i += 1
        path = Path(f"{base}-{i}")
    return path


def cmd_train(args: argparse.Namespace) -> int:
    from .dist import init_from_env, shutdown

    # Under torchrun (WORLD_SIZE > 1) join the process group; a plain run is rank 0 of 1.
    ctx = init_from_env()
    try:
        return _train(args, ctx)
    finally:
        shutdown()


def _train(args: argparse.Namespace, ctx) -> int:
    from .ensemble import train_run
    from .evaluate import write_metrics
    from .report import evaluate_and_report
    from .rundir import check_run_dir

    if args.resume:
        if args.out or args.overwrite:
            raise UsageError("--resume RUN_DIR continues that run in place; drop --out/--overwrite")
        rd = Path(args.resume)
        if ctx.is_main:
            check_run_dir(rd, resume=True)
        cfg = train_config(args)  # the run's config.yaml, then --set
    else:
        cfg = train_config(args)
        if not args.out and ctx.enabled:
            raise UsageError("a distributed run (torchrun) needs --out: every process must name the same run directory")
        rd = Path(args.out) if args.out else _new_run_dir()
        if ctx.is_main:
            check_run_dir(rd, overwrite=args.overwrite)
    if ctx.is_main:
        print(f"csna train: data={cfg.data.source} seed={cfg.train.seed} → {rd}"
              + (f" ({ctx.world} processes)" if ctx.enabled else "") + (" (resuming)" if args.resume else ""))
    run = train_run(cfg, run_dir=rd, progress=cfg.train.progress and not args.quiet, resume=bool(args.resume),
                    overwrite=args.overwrite)
    if not ctx.is_main:  # rank 0 evaluates and writes the results
        return 0
    imputed = run.imputed
    if imputed:
        cols = ", ".join(f"{c}: {n}" for c, n in imputed.items())
        print(f"imputed {sum(imputed.values())} missing value(s) with training medians ({cols})")
    metrics = evaluate_and_report(run, run.data, figures=not args.no_figures)
    metrics["time_fit_s"] = run.fit_seconds
    write_metrics(metrics, rd)
    _print_table(metrics)
    print(f"run directory: {rd}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import splits_for_data, write_metrics
    from .prepare import load_data
    from .report import evaluate_and_report
    from .rundir import check_compatible, load_run

    run = load_run(args.run_dir)
    _warn_partial_ensemble(run)
    if args.data:
        data_cfg = copy.deepcopy(run.cfg)
        data_cfg.data.source = args.data
        if args.treatment:
            data_cfg.data.treatment = args.treatment
        if args.outcome:
            data_cfg.data.outcome = args.outcome
        data = load_data(data_cfg)
        check_compatible(run, data, args.data)
        # The training table keeps its split (train and validation rows "in"); other data is all "out".
        run.splits = splits_for_data(run, data, data_cfg)
    elif run.cfg.data.stream:
        # A streamed run is evaluated, as at the end of training, on the samples one bounded scan
        # keeps (csna.streaming); the whole table is never loaded.
        from .streaming import eval_data, scan

        data, run.splits = eval_data(scan(run.cfg))
        check_compatible(run, data, run.cfg.data.source)
    else:
        data = load_data(run.cfg)
        check_compatible(run, data, run.cfg.data.source)
    metrics = evaluate_and_report(run, data, figures=not args.no_figures)
    path = write_metrics(metrics, args.run_dir)
    _print_table(metrics)
    print(f"wrote {path}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .data import read_frame
    from .predict import predict_frame
    from .rundir import load_run

    run = load_run(args.run_dir)
    _warn_partial_ensemble(run)
    X = read_frame(args.data)
    out = predict_frame(run, X, gates=not args.no_gates, where=str(args.data))
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(out_path, index=False)
    print(f"wrote {len(out)} rows to {out_path}")
    return 0


def cmd_data_synthetic(args: argparse.Namespace) -> int:
    from .data.synthetic_parquet import write_synthetic

    for flag, value in (("--rows", args.rows), ("--cols", args.cols), ("--chunk-rows", args.chunk_rows)):
        if value < 1:
            raise UsageError(f"{flag} must be >= 1, got {value}")
    if args.outcome not in ("continuous", "binary"):
        raise UsageError(f"--outcome must be continuous or binary, got '{args.outcome}'")
    out = Path(args.out)
    if out.suffix.lower() not in (".parquet", ".pq"):
        raise UsageError(f"--out {out} must end in .parquet or .pq")
    if not out.parent.is_dir():
        raise UsageError(f"--out {out}: directory {out.parent} does not exist")
    if out.is_dir():
        raise UsageError(f"--out {out} is a directory")
    if out.exists() and not args.overwrite:
        raise UsageError(f"--out {out} exists; use --overwrite to replace it")
    start = time.perf_counter()
    write_synthetic(out, rows=args.rows, cols=args.cols, seed=args.seed, outcome=args.outcome,
                    chunk_rows=args.chunk_rows)
    seconds = time.perf_counter() - start
    size = out.stat().st_size
    print(f"wrote {args.rows} rows x {args.cols + 4} columns to {out} ({size / 1e6:.2f} MB) in {seconds:.2f}s")
    return 0


def _print_table(m: dict) -> None:
    keys = ["sqrt_pehe_in", "sqrt_pehe_out", "eps_ate_in", "eps_ate_out", "pearson_ite", "ate_hat", "ate_lo",
            "ate_hi", "ate_true", "kl_do_true", "rmse_out", "auc_out", "graph_connectivity", "flops_reduction",
            "sqrt_pehe_out_full", "axis_performance_pass", "axis_causal_kl_pass", "axis_compute_pass", "time_fit_s"]
    rows = [(k, m[k]) for k in keys if m.get(k) is not None]
    if not rows:
        return
    width = max(len(k) for k, _ in rows)
    print("-" * (width + 14))
    for k, v in rows:
        if isinstance(v, bool):
            print(f"{k:<{width}}  {'PASS' if v else 'FAIL':>10}")
        else:
            print(f"{k:<{width}}  {v:>10.4f}" if isinstance(v, (int, float)) else f"{k:<{width}}  {v}")
    print("-" * (width + 14))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="csna", description="Causal structural neural architecture")
    sub = p.add_subparsers(dest="command", required=True)
    from .bench.cli import add_subparser as add_bench

    add_bench(sub)

    t = sub.add_parser("train", help="train the four phases and evaluate")
    add_train_arguments(t)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="write metrics.json, figures/ and report.md for a run")
    e.add_argument("run_dir")
    e.add_argument("--data", help="evaluate on other data (ihdp | synthetic | table path)")
    e.add_argument("--treatment")
    e.add_argument("--outcome")
    e.add_argument("--no-figures", action="store_true")
    e.set_defaults(func=cmd_evaluate)

    pr = sub.add_parser("predict", help="score a table: mu_t, ite, propensity per row")
    pr.add_argument("run_dir")
    pr.add_argument("--data", required=True, help="CSV/Parquet with the training covariate columns")
    pr.add_argument("--out", required=True, help="output CSV")
    pr.add_argument("--no-gates", action="store_true", help="run every block (ignore the Meta Utility Layer)")
    pr.set_defaults(func=cmd_predict)

    d = sub.add_parser("data", help="make data sets")
    dsub = d.add_subparsers(dest="data_command", required=True)
    ds = dsub.add_parser("synthetic", help="write a large synthetic table with its truth (mu0, mu1) to Parquet")
    ds.add_argument("--rows", type=int, required=True, help="rows n")
    ds.add_argument("--cols", type=int, required=True, help="covariates p, named x0..x{p-1}")
    ds.add_argument("--out", required=True, help="the .parquet file to write")
    ds.add_argument("--seed", type=int, default=0, help="fixes the model and the sample (default 0)")
    ds.add_argument("--outcome", default="continuous", help="continuous (default) or binary")
    ds.add_argument("--chunk-rows", type=int, default=262144,
                    help="rows generated and written at a time, one row group each (default 262144)")
    ds.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    ds.set_defaults(func=cmd_data_synthetic)
    return p


def main(argv: list[str] | None = None) -> int:
    from .rundir import RunDirError
    from .train import TrainingError, TrainingInterrupted

    parser = build_parser()
    args = parser.parse_args(argv)
    tune_malloc()
    try:
        return args.func(args)
    except USER_ERRORS + (UsageError, RunDirError, TrainingError) as exc:
        return _fail(_one_line(exc))
    except TrainingInterrupted as exc:
        print(f"csna: {exc}", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print("csna: interrupted; saved checkpoints are kept", file=sys.stderr)
        return 130
    except OSError as exc:  # a full disk, a missing permission: say which file, keep the rest
        return _fail(_one_line(exc))


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _warn_partial_ensemble(run) -> None:
    """An interrupted ensemble run scores with the members trained so far; say so."""
    have, want = len(run.all_members()), run.cfg.train.ensemble
    if have < want:
        print(f"csna: warning: {run.run_dir} holds {have} of its {want} ensemble members "
              f"(csna train --resume {run.run_dir} trains the rest); scoring with {have}", file=sys.stderr)


if __name__ == "__main__":
    from .launch import run

    sys.exit(run())
