"""Effect shrinkage (csna.shrink) on tuning seeds: √PEHE_out of the ensemble's τ̂ as trained,
shrunk by the least-squares R-loss (the default), by the R-loss with winsorised residuals, and
replaced by its mean c, from the same fits.

    python benchmarks/effect_shrink.py --out DIR [--cells base,earnings] [--reps 1000,1001]
    python benchmarks/effect_shrink.py --out DIR --ihdp --reps 1005,1010     # IHDP tuning replications

Each fit trains csna with ``train.effect_shrink=none`` on a quick cell (csna.bench.suite) and
saves the members' predictions, the truth and each member's training rows to DIR/<cell>-<rep>.npz
(no pickles); a second call reuses them. The scale is then fitted as ``fit_effect_scale`` fits
it (held-out μ̂ of the members that did not train on a row, a cross-fitted logistic ê), for
each variant. Seeds ≥ 1000 are tuning seeds: the choice of the default was made here.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def dump(cell, rep: int, path: Path) -> None:
    """``cell`` None: IHDP replication ``rep``."""
    import torch
    from threadpoolctl import threadpool_limits

    from csna.bench.run import BenchSpec, csna_config, draw_splits, load_data
    from csna.dr import member_train_rows
    from csna.ensemble import train_run
    from csna.predict import member_predictions

    torch.set_num_threads(1)
    spec = BenchSpec(dataset="suite" if cell is not None else "ihdp", replications=(rep,), cores=1, cell=cell,
                     overrides=("train.effect_shrink=none",))
    with threadpool_limits(1):
        data = load_data(spec, rep)
        sp = {k: np.asarray(v, dtype=np.int64) for k, v in draw_splits(spec, rep).items()}
        t0 = time.time()
        run = train_run(csna_config(spec, rep), data=data, splits=sp)
        secs = time.time() - t0
        x = run.prep.features(data.X)
        mus = np.stack([p["mu"] for p in member_predictions(run, x)])  # (M, n, K)
        rows = {f"train_rows_{j}": np.asarray(r) for j, r in enumerate(member_train_rows(run, data))}
    np.savez(path, mus=mus, x=x, T=data.T, Y=data.Y, mu=data.mu, test=sp["test"], secs=secs, **rows)
    print(f"{path.stem}: fitted in {secs:.0f} s", flush=True)


def scores(path: Path, seed: int) -> dict[str, float]:
    from csna.dr import out_of_fold_mu
    from csna.propensity import crossfit_propensity
    from csna.shrink import rloss_scale

    z = np.load(path)
    mus, x, T, Y, mu, test = z["mus"], z["x"], z["T"], z["Y"], z["mu"], z["test"]
    train_rows = [z[f"train_rows_{j}"] for j in range(len(mus))]
    n = len(T)
    cand = np.setdiff1d(np.arange(n), test)
    pos = np.full(n, -1)
    pos[cand] = np.arange(len(cand))
    local = [pos[r][pos[r] >= 0] for r in train_rows]
    oof, mask = out_of_fold_mu([m[cand] for m in mus], local, len(cand))
    rows = cand[mask]
    e1 = crossfit_propensity(x[rows], T[rows].astype(np.int64), 2, seed=seed)[:, 1]
    ens = mus.mean(0)
    tau_hat = ens[:, 1] - ens[:, 0]  # (n,)
    c = float(tau_hat[cand].mean())
    tau = mu[:, 1] - mu[:, 0]

    def pehe(t):
        return float(np.sqrt(np.mean((t[test] - tau[test]) ** 2)))

    out = {"raw": pehe(tau_hat), "constant": pehe(np.full(n, c))}
    for name, winsor in (("least_squares", np.inf), ("winsorised", 5.0)):
        lam = rloss_scale(Y[rows].astype(float), T[rows].astype(float), oof[mask, 0], oof[mask, 1], e1, c, winsor)
        out[name] = pehe(c + lam * (tau_hat - c))
        out[f"lambda_{name}"] = lam
    return out


def main() -> None:
    from csna.bench.suite import quick_cells

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--cells", default=None, help="comma-separated quick cells (default: all eight)")
    ap.add_argument("--reps", default="1000,1001")
    ap.add_argument("--also", default=None, help="another DIR of saved fits to score in the same table")
    ap.add_argument("--seed", type=int, default=0, help="the cross-fitted propensity's seed")
    ap.add_argument("--ihdp", action="store_true", help="IHDP replications instead of the suite's quick cells")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    wanted = set(args.cells.split(",")) if args.cells else None
    table = []
    cells = [None] if args.ihdp else [c for c in quick_cells() if wanted is None or c.name in wanted]
    for rep in (int(r) for r in args.reps.split(",")):
        for cell in cells:
            path = out / f"{'ihdp' if cell is None else cell.name}-{rep}.npz"
            if not path.exists():
                dump(cell, rep, path)
            table.append((path.stem, scores(path, args.seed)))
    if args.also:
        table += [(p.stem, scores(p, args.seed)) for p in sorted(Path(args.also).glob("*.npz"))]
    print("| fit | raw | least squares, the default (λ) | winsorised at 5 robust sd (λ) | constant c |")
    print("|---|---:|---:|---:|---:|")
    for name, s in sorted(table):
        print(f"| {name} | {s['raw']:.3f} | {s['least_squares']:.3f} ({s['lambda_least_squares']:.2f}) | "
              f"{s['winsorised']:.3f} ({s['lambda_winsorised']:.2f}) | {s['constant']:.3f} |")
    raw = np.array([s["raw"] for _, s in table])
    print()
    for v in ("least_squares", "winsorised", "constant"):
        lr = np.log(np.array([s[v] for _, s in table]) / raw)
        se = lr.std(ddof=1) / np.sqrt(len(lr)) if len(lr) > 1 else float("nan")
        print(f"- {v}: geometric-mean ratio to raw {np.exp(lr.mean()):.3f} (log s.e. {se:.3f}), "
              f"better on {(lr < -1e-9).sum()} of {len(lr)}, worst {np.exp(lr.max()):.3f}")


if __name__ == "__main__":
    main()
