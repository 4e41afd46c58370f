"""The `csna` command's entry point, and the ensemble's worker processes started before torch.

`csna train` trains an ensemble's members in several processes (``csna.ensemble``). A spawned
worker spends five seconds importing torch, pandas and scikit-learn, and two more importing
``torch._dynamo`` at its first optimizer, before its first step; started when the first member's
data were ready, it finished its members seven seconds after this process finished its own, and
this process waited. So ``run`` starts those workers first, before this process imports
anything heavy: the two import at once, on their own cores, and the workers are ready when
their jobs arrive. This module imports nothing heavy itself (argparse, multiprocessing, the
YAML config), so that the workers start within a fraction of a second.

``run`` is the console script and ``python -m csna``; library and test callers use
``csna.cli.main``, which starts its workers when they are needed (``csna.ensemble``).
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing as mp
import os
import sys
from pathlib import Path
from typing import Any

from .config import load_config

_PRESTARTED: dict[str, Any] = {}  # "pool", "size": the workers run() started, until taken


def add_train_arguments(t: argparse.ArgumentParser) -> None:
    """The options of `csna train` (shared by the full parser and run()'s early look)."""
    t.add_argument("--config", help="YAML config file (any subset of src/csna/configs/default.yaml)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. phase3.lr=1e-4")
    t.add_argument("--data", help="ihdp | synthetic | path to a CSV/Parquet table (default: ihdp)")
    t.add_argument("--treatment", help="treatment column of a user table")
    t.add_argument("--outcome", help="outcome column of a user table")
    t.add_argument("--out", help="run directory (default: a new folder under runs/)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    t.add_argument("--overwrite", action="store_true", help="replace the csna run that --out holds")
    t.add_argument("--impute", action="store_true",
                   help="fill NaN/Inf covariates with training medians (reported) instead of failing")
    t.add_argument("--no-figures", action="store_true", help="skip the figures and report")
    t.add_argument("--quiet", action="store_true", help="no progress bars")


def train_config(args: argparse.Namespace):
    """The Config a `csna train` command line asks for: the defaults, or a resumed run's
    ``config.yaml``, then ``--config``, ``--set`` and the data options."""
    overrides = list(args.set or [])
    if args.treatment:
        overrides.append(f"data.treatment={args.treatment}")
    if args.outcome:
        overrides.append(f"data.outcome={args.outcome}")
    if args.impute:
        overrides.append("data.impute=true")
    path = Path(args.resume) / "config.yaml" if args.resume else args.config
    return load_config(path, overrides, data_source=args.data)


def planned_workers(cfg, distributed: bool, daemon: bool) -> int:
    """Processes that train an ensemble's members at once: ``train.ensemble_workers``, or with
    0 as many as there are members and usable CPU cores; 1 (one after another) for a single
    model, a streamed table, a data-parallel run or a daemonic process (a multiprocessing.Pool
    worker may not start processes of its own)."""
    m = cfg.train.ensemble
    if m <= 1 or cfg.data.stream or distributed or daemon:
        return 1
    if cfg.train.ensemble_workers > 0:
        return min(cfg.train.ensemble_workers, m)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(m, cores // max(cfg.train.threads, 1)))


def _warm() -> None:
    """A prestarted worker's initializer: the imports a member job needs, and torch._dynamo,
    which torch imports at the first optimizer's construction (torch.optim wraps
    ``add_param_group`` in ``torch._disable_dynamo``, 2.4 s here), so the first step is not
    kept waiting for them. A failure here is left to the job to meet and report: a
    multiprocessing.Pool replaces a worker whose initializer raised, forever."""
    try:
        import torch._dynamo  # noqa: F401

        from . import ensemble  # noqa: F401
    except Exception:
        pass


class _QuietParser(argparse.ArgumentParser):
    """A parser that raises instead of printing usage and exiting: the early look at the
    command line stays silent, and the full parser reports what is wrong, once."""

    def error(self, message: str):
        raise ValueError(message)


def _prestart(argv: list[str]) -> None:
    """Start the ensemble's worker processes for a `csna train` command line, if it will use
    any. Anything this early look cannot read is left to the full parser, which reports it."""
    parser = _QuietParser(add_help=False)
    add_train_arguments(parser)
    try:
        args, _ = parser.parse_known_args(argv)
        cfg = train_config(args)
    except Exception:
        return
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    workers = planned_workers(cfg, distributed, mp.current_process().daemon)
    if workers > 1:
        # spawn: a forked child of a process that has started torch's thread pools can hang.
        _PRESTARTED.update(pool=mp.get_context("spawn").Pool(workers - 1, initializer=_warm), size=workers - 1)


def take_prestarted(size: int):
    """The pool ``run`` started, if it has ``size`` workers (it is then the caller's to close);
    otherwise None, and a pool of another size is shut down."""
    pool = _PRESTARTED.pop("pool", None)
    have = _PRESTARTED.pop("size", None)
    if pool is not None and have != size:
        _shutdown(pool)
        return None
    return pool


def _shutdown(pool) -> None:
    pool.terminate()
    pool.join()


def run() -> int:
    """The `csna` command: ``csna.cli.main`` on ``sys.argv``, with `csna train`'s ensemble
    workers started first (module docstring).

    Before the interpreter exits, every object still alive is moved out of the garbage
    collector's reach (``gc.freeze``): the final collection then skips the hundreds of
    thousands of objects torch, scikit-learn and matplotlib leave behind, and the process
    ends in 0.4 s instead of 2.1 s. Nothing is lost: every file the command writes is closed
    before ``main`` returns, and the interpreter flushes the standard streams either way.
    """
    argv = sys.argv[1:]
    if argv[:1] == ["train"] and not {"-h", "--help"} & set(argv):
        _prestart(argv[1:])
    try:
        from .cli import main

        code = main(argv)
    finally:
        pool = _PRESTARTED.pop("pool", None)  # not taken: the command stopped before training
        _PRESTARTED.clear()
        if pool is not None:
            _shutdown(pool)
    gc.freeze()
    return code
