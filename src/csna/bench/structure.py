"""``csna bench structure``: csna's learned graph (``model.nodes: variables``) against DAGMA and
PC on SCMs with a known DAG over observed variables, the treatment and the outcome among them
(``csna.bench.structure_scm``).

Each (setting, graph) is one sampled SCM; every learner gets the same standardised table and is
scored by edge precision, recall, F1 and SHD (two conventions, ``structure_scm``). Graphs 0–999
are reported; choose on ≥ 1000.
``results.csv`` has one row per (setting, graph, estimator); ``results.md`` the means with
standard errors and csna's paired differences.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import ConfigError
from .structure_learners import LEARNERS, learn
from .structure_scm import QUICK, SETTINGS, cpdag_shd, edge_scores, sample_scm

COLUMNS = ("setting", "graph", "estimator", "precision", "recall", "f1", "shd", "edges_true", "edges_found",
           "shd_cpdag", "fit_seconds")


def graph_seed(setting: str, graph: int) -> int:
    """The SCM seed of one (setting, graph): stable across runs and learners."""
    return 7919 * (list(SETTINGS).index(setting) + 1) + graph


def run_one(setting: str, graph: int, name: str, overrides: tuple[str, ...]) -> dict:
    scm = sample_scm(setting, graph_seed(setting, graph))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d, u, sec = learn(name, scm.data, SETTINGS[setting][2], graph, overrides)
    s = edge_scores(scm.dag, d, u)
    return {"setting": setting, "graph": graph, "estimator": name, **{k: s[k] for k in COLUMNS[3:9]},
            "shd_cpdag": cpdag_shd(scm.dag, d, u), "fit_seconds": round(sec, 2)}


def summary(df: pd.DataFrame) -> str:
    """Per setting and estimator: mean (s.e.) of F1, precision, recall and both SHDs; then csna's
    paired differences in F1 and both SHDs against each other learner."""
    lines = ["| setting | estimator | graphs | F1 | precision | recall | SHD | SHD of CPDAGs | fit s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]

    def se(x: pd.Series) -> float:
        return x.std(ddof=1) / np.sqrt(len(x)) if len(x) > 1 else float("nan")

    def ms(x: pd.Series, digits: int = 3) -> str:
        return f"{x.mean():.{digits}f} ({se(x):.{digits}f})"

    for (setting, est), g in df.groupby(["setting", "estimator"], sort=False):
        lines.append(f"| {setting} | {est} | {len(g)} | {ms(g.f1)} | {ms(g.precision)} | {ms(g.recall)} | "
                     f"{ms(g.shd, 1)} | {ms(g.shd_cpdag, 1)} | {g.fit_seconds.median():.1f} |")
    lines += ["", "SHD counts a learner's undirected (CPDAG) edge as right in either direction (NOTEARS' "
              "`count_accuracy`); SHD of CPDAGs compares the true DAG's CPDAG with the learned graph's, a "
              "learned DAG reduced to its CPDAG first (causal-learn's `dag2cpdag` and `SHD`).", "",
              "Paired, csna minus the other learner on the same graphs (mean ± s.e.; csna better / n):", "",
              "| setting | against | ΔF1 | csna F1 higher | ΔSHD | csna SHD lower | ΔSHD of CPDAGs | csna lower |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    wide = df.pivot_table(index=["setting", "graph"], columns="estimator", values=["f1", "shd", "shd_cpdag"])

    def paired(d: pd.Series, better) -> str:
        return f"{d.mean():+.3f} ± {se(d):.3f} | {int(better(d).sum())}/{len(d)}"

    for setting in df.setting.unique():
        w = wide.loc[setting]
        for other in [e for e in df.estimator.unique() if e != "csna"]:
            if ("f1", "csna") not in w or ("f1", other) not in w:
                continue
            pair = w[[(m, e) for m in ("f1", "shd", "shd_cpdag") for e in ("csna", other)]].dropna()
            if len(pair) < 2:
                continue
            d = {m: pair[(m, "csna")] - pair[(m, other)] for m in ("f1", "shd", "shd_cpdag")}
            lines.append(f"| {setting} | {other} | {paired(d['f1'], lambda x: x > 0)} | "
                         f"{paired(d['shd'], lambda x: x < 0)} | {paired(d['shd_cpdag'], lambda x: x < 0)} |")
    return "\n".join(lines)


def cmd_structure(args: argparse.Namespace) -> int:
    settings = QUICK if args.quick else tuple(SETTINGS)
    if args.settings:
        settings = tuple(s.strip() for s in args.settings.split(",") if s.strip())
        bad = [s for s in settings if s not in SETTINGS]
        if bad:
            raise ConfigError(f"unknown structure setting(s) {', '.join(bad)} (valid: {', '.join(SETTINGS)})")
    learners = tuple(e.strip() for e in args.estimators.split(",") if e.strip())
    bad = [e for e in learners if e not in LEARNERS]
    if bad:
        raise ConfigError(f"unknown estimator(s) {', '.join(bad)} (valid: {', '.join(LEARNERS)})")
    if args.graphs < 1 or args.start < 0:
        raise ConfigError(f"--graphs must be >= 1 and --start >= 0, got {args.graphs} and {args.start}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a directory")
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.csv"
    rows = pd.read_csv(path).to_dict("records") if path.is_file() and args.resume else []
    done = {(r["setting"], int(r["graph"]), r["estimator"]) for r in rows}
    command = "csna " + " ".join(shlex.quote(a) for a in (args.argv or sys.argv[1:]))
    (out / "bench.json").write_text(json.dumps({"command": command, "settings": list(settings),
                                                "estimators": list(learners), "overrides": args.set or []}, indent=2))
    overrides = tuple(args.set or ())
    for setting in settings:
        for graph in range(args.start, args.start + args.graphs):
            for name in learners:
                if (setting, graph, name) in done:
                    continue
                row = run_one(setting, graph, name, overrides if name == "csna" else ())
                rows.append(row)
                if not args.quiet:
                    print(f"{setting} graph {graph} {name}: F1 {row['f1']:.3f} SHD {row['shd']} "
                          f"({row['fit_seconds']:.1f} s)", file=sys.stderr)
                df = pd.DataFrame(rows, columns=COLUMNS)
                df.to_csv(path, index=False)
    df = pd.DataFrame(rows, columns=COLUMNS)
    df.to_csv(path, index=False)
    (out / "results.md").write_text(f"# csna bench structure\n\n`{command}`\n\n{summary(df)}\n")
    print(summary(df))
    return 0


def add_structure_parser(sub) -> argparse.ArgumentParser:
    """Register ``csna bench structure`` on the ``bench`` subparsers."""
    p = sub.add_parser("structure", help="csna's learned graph (model.nodes=variables) against DAGMA and PC "
                                         "on SCMs with known DAGs")
    p.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}")
    p.add_argument("--settings", metavar="LIST", help=f"comma list of {', '.join(SETTINGS)}")
    p.add_argument("--graphs", type=int, default=10, help="graphs per setting (default 10)")
    p.add_argument("--start", type=int, default=0, help="first graph (default 0; 0-999 reported, tune on >= 1000)")
    p.add_argument("--estimators", default=",".join(LEARNERS), help=f"comma list of {', '.join(LEARNERS)}")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a csna config key")
    p.add_argument("--resume", action="store_true", help="keep the rows already in --out/results.csv")
    p.add_argument("--quiet", action="store_true", help="no line per fit")
    p.add_argument("--out", required=True, help="output directory (results.csv, results.md)")
    p.set_defaults(func=cmd_structure, argv=None)
    return p
