"""Does the learned graph pay for the effect? (issue 19, item 3)

On the SCMs of ``csna bench structure`` (a DAG over covariates, T and Y: some covariates are
confounders, instruments or precision variables, others are descendants of T or of Y), fit one
model each of

- ``csna``: the default (latent nodes) with one member;
- ``csna-variables``: ``model.nodes=variables``, every column read;
- ``csna-adjust``: ``model.nodes=variables`` and ``model.adjust=graph``: the outcome pathway reads
  only the optimal adjustment set of the learned DAG;
- ``tarnet`` and ``cfr-wass``: the bench's neural peers, single fits (their own small grid);

on the same train/validation/test rows, and score them against the individual effects
Y_i(1) − Y_i(0) (same exogenous noise, T set by intervention): √PEHE_out, ε_ATE_out. Also the
adjustment set's agreement with the true DAG's.

    python benchmarks/structure_effect.py --settings er-10-nonlinear --graphs 10 --out DIR

Graphs 0–999 are reported; choose on ≥ 1000. Prints a table of means and csna-adjust's paired
differences; writes DIR/results.csv.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ESTIMATORS = ("csna", "csna-variables", "csna-adjust", "tarnet", "cfr-wass")
SETS = {"csna": [], "csna-variables": ["model.nodes=variables"],
        "csna-adjust": ["model.nodes=variables", "model.adjust=graph"]}


def one(setting: str, graph: int, name: str) -> dict:
    from csna.bench.peers import fit_peer
    from csna.bench.structure import graph_seed
    from csna.bench.structure_scm import sample_scm
    from csna.config import load_config
    from csna.data import CausalData
    from csna.data.prep import split_indices
    from csna.ensemble import train_run
    from csna.metrics import eps_ate, sqrt_pehe
    from csna.nn.structure import adjustment_set

    scm = sample_scm(setting, graph_seed(setting, graph))
    q = scm.data.shape[1]
    x, t, y = scm.data[:, :q - 2], scm.treatment.astype(np.int64), scm.data[:, q - 1]
    tau = scm.y1 - scm.y0
    tr, va, te = split_indices(len(t), (0.56, 0.24, 0.20), seed=graph, stratify=t)
    splits = {"train": tr, "val": va, "test": te}
    row = {"setting": setting, "graph": graph, "estimator": name}
    start = time.perf_counter()
    if name.startswith("csna"):
        X = pd.DataFrame(x, columns=scm.names[:q - 2])
        cd = CausalData(X, t, y.astype(np.float32), np.column_stack([scm.y0, scm.y1]), "continuous", 2, "scm")
        cfg = load_config(None, ["train.ensemble=1", "log.tensorboard=false", f"train.seed={graph}", *SETS[name]])
        run = train_run(cfg, data=cd, splits=splits)
        model = run.model
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from csna.predict import predict_frame
            pred = predict_frame(run, X)
        tau_hat = pred["ite"].to_numpy()
        if name == "csna-adjust":
            found = adjustment_set(model.lattice.adjacency().detach().cpu().numpy(), q - 2, q - 1)
            truth = adjustment_set(scm.dag, q - 2, q - 1)
            row["adjust_found"] = -1 if found is None else len(found)
            row["adjust_true"] = len(truth or [])
            row["adjust_overlap"] = -1 if found is None else len(set(found) & set(truth or []))
    else:
        tau_hat = fit_peer(name, x, t, y, splits, False, graph).tau
    row["fit_seconds"] = round(time.perf_counter() - start, 1)
    row["sqrt_pehe_out"] = sqrt_pehe(tau[te], tau_hat[te])
    row["eps_ate_out"] = eps_ate(tau[te], tau_hat[te])
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settings", default="er-10-nonlinear")
    ap.add_argument("--graphs", type=int, default=10)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--estimators", default=",".join(ESTIMATORS))
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for setting in a.settings.split(","):
        for g in range(a.start, a.start + a.graphs):
            for name in a.estimators.split(","):
                rows.append(one(setting, g, name))
                r = rows[-1]
                print(f"{setting} {g} {name}: √PEHE {r['sqrt_pehe_out']:.3f} ε_ATE {r['eps_ate_out']:.3f} "
                      f"({r['fit_seconds']} s)", file=sys.stderr, flush=True)
                pd.DataFrame(rows).to_csv(out / "results.csv", index=False)
    df = pd.DataFrame(rows)
    print("| setting | estimator | graphs | √PEHE_out | ε_ATE_out | fit s |\n|---|---|---:|---:|---:|---:|")
    for (s, e), g in df.groupby(["setting", "estimator"], sort=False):
        se = lambda v: v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else float("nan")  # noqa: E731
        print(f"| {s} | {e} | {len(g)} | {g.sqrt_pehe_out.mean():.3f} ({se(g.sqrt_pehe_out):.3f}) | "
              f"{g.eps_ate_out.mean():.3f} ({se(g.eps_ate_out):.3f}) | {g.fit_seconds.median():.1f} |")
    wide = df.pivot_table(index=["setting", "graph"], columns="estimator", values="sqrt_pehe_out")
    if "csna-adjust" in wide:
        print("\nPaired √PEHE_out, csna-adjust minus each (mean ± s.e.; csna-adjust better / n):")
        for other in [c for c in wide.columns if c != "csna-adjust"]:
            d = (wide["csna-adjust"] - wide[other]).dropna()
            if len(d) > 1:
                se = d.std(ddof=1) / np.sqrt(len(d))
                print(f"  vs {other}: {d.mean():+.3f} ± {se:.3f} ({int((d < 0).sum())}/{len(d)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
