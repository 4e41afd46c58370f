"""Command line: ``csna train | evaluate | predict``.

Bad input ends with one line on stderr naming what and where, exit code 2, no traceback.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
from pathlib import Path

from .checkpoint import CheckpointError
from .config import ConfigError, load_config
from .data import DataError

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


def _is_run_dir(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def cmd_train(args: argparse.Namespace) -> int:
    from .evaluate import write_metrics
    from .report import evaluate_and_report
    from .runner import train_run

    overrides = list(args.set or [])
    if args.treatment:
        overrides.append(f"data.treatment={args.treatment}")
    if args.outcome:
        overrides.append(f"data.outcome={args.outcome}")
    if args.resume:
        rd = Path(args.resume)
        if not (rd / "config.yaml").is_file():
            raise UsageError(f"--resume {rd}: not a csna run directory (config.yaml missing)")
        cfg = load_config(rd / "config.yaml", overrides, data_source=args.data)
    else:
        cfg = load_config(args.config, overrides, data_source=args.data)
        rd = Path(args.out) if args.out else _new_run_dir()
        if _is_run_dir(rd) and not args.overwrite:
            raise UsageError(f"--out {rd} already holds a run; use --overwrite to replace it or --resume {rd} to continue it")
        if rd.exists() and not rd.is_dir():
            raise UsageError(f"--out {rd} is a file, not a directory")
        if args.overwrite and rd.is_dir():
            import shutil

            shutil.rmtree(rd)
    print(f"csna train: data={cfg.data.source} seed={cfg.train.seed} → {rd}", file=sys.stderr)
    run = train_run(cfg, run_dir=rd, progress=cfg.train.progress and not args.quiet, resume=bool(args.resume))
    metrics = evaluate_and_report(run, run.data, figures=not args.no_figures)
    metrics["time_fit_s"] = getattr(run, "fit_seconds", None)
    write_metrics(metrics, rd)
    _print_table(metrics)
    print(f"run directory: {rd}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import write_metrics
    from .report import evaluate_and_report
    from .runner import load_data, load_run

    run = load_run(args.run_dir)
    if args.data:
        data_cfg = load_config(None, [f"data.{k}={v}" for k, v in (("treatment", args.treatment),
                                                                       ("outcome", args.outcome)) if v],
                               data_source=args.data)
        data = load_data(data_cfg)
        if args.data not in ("ihdp", "synthetic"):
            import numpy as np

            run.splits = {"train": np.zeros(0, dtype=np.int64), "val": np.zeros(0, dtype=np.int64),
                          "test": np.arange(data.n)}
    else:
        data = load_data(run.cfg)
    metrics = evaluate_and_report(run, data, figures=not args.no_figures)
    path = write_metrics(metrics, args.run_dir)
    _print_table(metrics)
    print(f"wrote {path}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .data import read_frame
    from .predict import predict_frame
    from .runner import load_run

    run = load_run(args.run_dir)
    X = read_frame(args.data)
    missing = [c for c in run.prep.pre.input_columns_ if c not in X.columns]
    if missing:
        raise DataError(f"{args.data}: missing covariate column(s) {', '.join(missing)} used in training")
    bad = X[run.prep.pre.input_columns_].select_dtypes(include="number")
    if not run.prep.impute and bad.isna().any().any():
        col = bad.columns[bad.isna().any()][0]
        raise DataError(f"{args.data}: column '{col}' has {int(bad[col].isna().sum())} missing value(s)")
    out = predict_frame(run, X[run.prep.pre.input_columns_], gates=not args.no_gates)
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(out_path, index=False)
    print(f"wrote {len(out)} rows to {out_path}")
    return 0


def _print_table(m: dict) -> None:
    keys = ["sqrt_pehe_in", "sqrt_pehe_out", "eps_ate_in", "eps_ate_out", "ate_hat", "ate_true",
            "rmse_out", "auc_out", "flops_reduction", "time_fit_s"]
    rows = [(k, m[k]) for k in keys if m.get(k) is not None]
    if not rows:
        return
    width = max(len(k) for k, _ in rows)
    print("-" * (width + 14))
    for k, v in rows:
        print(f"{k:<{width}}  {v:>10.4f}" if isinstance(v, (int, float)) else f"{k:<{width}}  {v}")
    print("-" * (width + 14))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="csna", description="Causal structural neural architecture")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train the four phases and evaluate")
    t.add_argument("--config", help="YAML config file (any subset of configs/default.yaml)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. phase3.lr=1e-4")
    t.add_argument("--data", help="ihdp | synthetic | path to a CSV/Parquet table (default: ihdp)")
    t.add_argument("--treatment", help="treatment column of a user table")
    t.add_argument("--outcome", help="outcome column of a user table")
    t.add_argument("--out", help="run directory (default: a new folder under runs/)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    t.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    t.add_argument("--no-figures", action="store_true", help="skip the figures and report")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
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
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS + (UsageError,) as exc:
        return _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    except KeyboardInterrupt:
        return _fail("interrupted; finished phase checkpoints are kept")
    except Exception as exc:
        from .train import TrainingError

        if isinstance(exc, TrainingError):
            return _fail(str(exc))
        raise


if __name__ == "__main__":
    sys.exit(main())
