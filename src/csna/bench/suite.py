"""``csna bench suite``: csna and every peer on a fixed list of data-generating processes.

Each cell is one ``Knobs`` of ``csna.bench.dgp`` that changes one or two knobs of ``BASE``; the
list covers every regime of the generator at least once (``docs/stress_suite.md``). A cell's
replication r is ``dgp.generate(knobs, cell_seed(name, r))``. Replications 0–999 are the
reported seeds; defaults are chosen on seeds ≥ 1000 only (``--start 1000``).

Every estimator of a cell sees the same rows and csna's own split of them, drawn as for a user's
table (``csna_config`` of a suite spec: ``data.impute`` where values are missing); the fits
run through ``csna bench``'s own machinery (``run.execute``), one task per (cell, estimator,
replication), and a failed fit is reported, not fatal.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import zlib
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from ..config import ConfigError
from ..data import CausalData, DataError
from . import suite_report as SR
from .results import known_columns, records, report_failures
from .dgp import Knobs, generate
from .peers import PEERS, check_installed, resolve
from .run import BenchSpec, add_run_options, draw_splits, execute, pair_singles, split_id, tasks_for

BASE = Knobs(covariates="mixed", n=500, treated_share=0.5, confounding="moderate", heterogeneity="moderate",
             outcome="gaussian")
# The neural peers but TARNet are left out of the 50,000-row cell for cost (docs/stress_suite.md),
# which results.md says.
SLOW = tuple(n for n, p in PEERS.items() if p.neural and n != "tarnet")


@dataclass(frozen=True)
class Cell:
    """One data-generating process of the suite."""

    name: str
    knobs: Knobs
    varies: str  # what it changes from BASE, for results.md
    skip: tuple[str, ...] = ()  # estimators not run on it (cost)

    @property
    def source(self) -> str:
        """csna's ``data.source`` for this cell: a name, as a user's table has."""
        return f"suite/{self.name}.csv"

    def data(self, rep: int) -> CausalData:
        data = generate(self.knobs, cell_seed(self.name, rep))
        data.name = f"{self.name}-{rep}"
        return data


def cell_seed(name: str, rep: int) -> int:
    """The generator seed of replication ``rep`` of cell ``name``: replications of different cells
    draw independent streams (SeedSequence of the replication and the name's CRC-32)."""
    return int(np.random.SeedSequence([rep % 2**32, zlib.crc32(name.encode())]).generate_state(1)[0])


def _cell(name: str, varies: str, skip: tuple[str, ...] = (), **knobs) -> Cell:
    return Cell(name, replace(BASE, **knobs), varies, skip)


CELLS: tuple[Cell, ...] = (
    _cell("base", "the base: mixed covariates, n 500, 50% treated, moderate confounding and heterogeneity, gaussian"),
    _cell("ihdp-cov", "IHDP's 25 real covariates (resampled)", covariates="ihdp"),
    _cell("ihdp-cov-strong-het", "IHDP covariates, strong nonlinear heterogeneity", covariates="ihdp",
          heterogeneity="strong"),
    _cell("ihdp-cov-missing", "IHDP covariates, 10% of three of them missing", covariates="ihdp", missing=0.10),
    _cell("randomised", "randomised treatment", confounding="randomised"),
    _cell("randomised-constant", "randomised treatment, constant effect", confounding="randomised",
          heterogeneity="constant"),
    _cell("strong-conf", "strong confounding, poor overlap", confounding="strong"),
    _cell("strong-conf-strong-het", "strong confounding and strong heterogeneity", confounding="strong",
          heterogeneity="strong"),
    _cell("constant-effect", "constant effect", heterogeneity="constant"),
    _cell("strong-het", "strong nonlinear heterogeneity", heterogeneity="strong"),
    _cell("earnings", "earnings-like outcome (hurdle: zeros, lognormal amounts in thousands)", outcome="earnings"),
    _cell("earnings-strong-conf", "earnings-like outcome, strong confounding", outcome="earnings",
          confounding="strong"),
    _cell("earnings-treated-10", "earnings-like outcome, 10% treated", outcome="earnings", treated_share=0.10),
    _cell("binary", "binary outcome", outcome="binary"),
    _cell("binary-strong-het", "binary outcome, strong heterogeneity", outcome="binary", heterogeneity="strong"),
    _cell("binary-strong-conf", "binary outcome, strong confounding", outcome="binary", confounding="strong"),
    _cell("missing", "10% of three continuous covariates missing at random", missing=0.10),
    _cell("instruments", "5 instruments (cause T only)", instruments=5),
    _cell("instruments-strong-conf", "5 instruments, strong confounding", instruments=5, confounding="strong"),
    _cell("precision", "5 precision variables (cause Y only)", precision=5),
    _cell("irrelevant", "20 irrelevant covariates", irrelevant=20),
    _cell("precision-irrelevant", "5 precision variables and 20 irrelevant covariates", precision=5,
          irrelevant=20),
    _cell("treated-10", "10% treated, n 1,000", treated_share=0.10, n=1000),
    _cell("treated-2-n5k", "2% treated, n 5,000", treated_share=0.02, n=5000),
    _cell("n50k", "n 50,000 (of the neural peers TARNet only: cost)", n=50_000, skip=SLOW),
)
QUICK_N = 500
QUICK: tuple[str, ...] = ("base", "ihdp-cov", "strong-conf", "strong-het", "earnings", "binary", "missing",
                          "instruments")


def quick_cells() -> tuple[Cell, ...]:
    """Eight cells of the list at n <= 500, for development (at today's base n they are the full
    cells themselves; ``--resume`` checks split fingerprints, so a resized cell never mixes)."""
    by = {c.name: c for c in CELLS}
    return tuple(replace(by[n], knobs=replace(by[n].knobs, n=min(by[n].knobs.n, QUICK_N))) for n in QUICK)


def select_cells(quick: bool, names: str | None) -> tuple[Cell, ...]:
    cells = quick_cells() if quick else CELLS
    if not names:
        return cells
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in {c.name for c in cells}]
    if unknown:
        raise ConfigError(f"unknown cell(s) {', '.join(unknown)} (valid: {', '.join(c.name for c in cells)})")
    return tuple(c for c in cells if c.name in wanted)


# --- the command -------------------------------------------------------------------------------


def _existing(out: Path, args: argparse.Namespace) -> list[dict]:
    path = out / "results.csv"
    if not path.is_file() or args.overwrite:
        return []
    if not args.resume:
        raise ConfigError(f"--out {out} already holds results.csv; use --resume to run only the missing rows "
                          "or --overwrite to start again")
    df = SR.read_csv(path)
    if not known_columns(df, SR.COLUMNS):
        raise DataError(f"{path} does not hold stress-suite results (other columns)")
    return records(df, SR.COLUMNS)


def specs_for(args: argparse.Namespace, cells: tuple[Cell, ...], cores: int) -> list[BenchSpec]:
    if args.reps < 1 or args.start < 0 or args.jobs < 1:
        raise ConfigError(f"need --reps >= 1, --start >= 0 and --jobs >= 1, got {args.reps}, {args.start}, {args.jobs}")
    peers = resolve(args.peers)
    check_installed(peers)
    options = {k: v for k, v in (("max_epochs", args.neural_epochs), ("n_configs", args.neural_configs)) if v}
    reps = tuple(range(args.start, args.start + args.reps))
    return [BenchSpec(dataset="suite", replications=reps, peers=tuple(p for p in peers if p not in c.skip),
                      csna=not args.no_csna, overrides=tuple(args.set or ()), peer_options=options, cores=cores,
                      cell=c) for c in cells]


def cmd_suite(args: argparse.Namespace) -> int:
    """Run the suite; 0 when every fit succeeded, 1 when some failed (listed in results.md)."""
    from .cli import usable_cores

    cells = select_cells(args.quick, args.cells)
    specs = specs_for(args, cells, max(1, usable_cores() // args.jobs))
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a directory")
    rows = _existing(out, args)
    tasks = []
    fingerprints: dict[tuple[str, int], str] = {}
    for spec in specs:
        splits = {rep: draw_splits(spec, rep) for rep in spec.replications}
        fingerprints.update({(spec.cell.name, rep): split_id(np.asarray(s["test"])) for rep, s in splits.items()})
        tasks += tasks_for(spec, splits)
    for r in rows:
        key = (str(r["cell"]), int(r["replication"]))
        if key in fingerprints and str(r["split_id"]) != fingerprints[key]:
            raise DataError(f"{out / 'results.csv'}: cell {key[0]} replication {key[1]} was scored on other rows "
                            "(another cell definition or config); use --overwrite or another --out")
    done = {(str(r["cell"]), str(r["estimator"]), int(r["replication"])) for r in rows}
    tasks = pair_singles([t for t in tasks if (t.spec.cell.name, t.estimator, t.replication) not in done])
    out.mkdir(parents=True, exist_ok=True)
    command = "csna " + " ".join(shlex.quote(a) for a in (args.argv or sys.argv[1:]))
    reps = list(specs[0].replications) if specs else []
    (out / "suite.json").write_text(json.dumps({
        "command": command, "replications": reps, "jobs": args.jobs, "overrides": list(args.set or ()),
        "peer_options": specs[0].peer_options if specs else {},
        "cells": [{"name": c.name, "varies": c.varies, "knobs": asdict(c.knobs), "skip": list(c.skip),
                   "estimators": (["csna"] if s.csna else []) + list(s.peers)} for c, s in zip(cells, specs)]},
        indent=2))
    labels = {"csna": "csna, default config, run as on a user's table"} | \
        {n: p.label for n, p in PEERS.items()}
    order = [c.name for c in cells]
    failures: list[dict] = []

    def write(final: bool = False) -> None:
        df = SR.write_csv(rows, out / "results.csv", order)
        (out / "results.md").write_text(SR.markdown(df, list(cells), labels, command, failures, reps))
        if final and len(df):
            SR.write_heatmap(df, out / SR.HEATMAP, order)

    def save(row: dict) -> None:
        if "error" in row:
            failures.append(row)
            print(f"csna bench suite: {row['estimator']} on {row.get('cell')} replication {row['replication']} "
                  f"failed: {row['error']}", file=sys.stderr)
        else:
            rows.append(row)
        write()

    print(f"csna bench suite: {len(cells)} cells, {len(tasks)} fits ({len(done)} already done) → {out}",
          file=sys.stderr)
    execute(tasks, jobs=args.jobs, progress=not args.quiet, on_row=save)
    write(final=True)
    return report_failures(out, failures, "csna bench suite")


def add_suite_parser(sub) -> argparse.ArgumentParser:
    """Register ``csna bench suite`` on the ``bench`` subparsers."""
    p = sub.add_parser("suite", help=f"the stress suite: {len(CELLS)} data-generating processes with known "
                                     "effects, csna against every peer (docs/stress_suite.md)")
    p.add_argument("--quick", action="store_true", help=f"{len(QUICK)} cells at n = {QUICK_N} (development)")
    p.add_argument("--cells", metavar="LIST", help="run only these cells (comma list of names)")
    p.add_argument("--reps", type=int, default=5, help="replications per cell (default 5)")
    p.add_argument("--start", type=int, default=0,
                   help="first replication (default 0; 0-999 are reported, tune on >= 1000)")
    p.add_argument("--peers", default="all", help=f"comma list, 'all' or 'none' (peers: {', '.join(PEERS)})")
    p.add_argument("--no-csna", action="store_true", help="leave csna's own rows out")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a csna config key")
    p.add_argument("--jobs", type=int, default=1, help="worker processes, one fit each (default 1)")
    add_run_options(p, "results.csv, results.md, the heat map")
    p.set_defaults(func=cmd_suite, argv=None)
    return p
