"""Effect shrinkage (csna.shrink) on tuning seeds: √PEHE_out, ε_ATE_out and ε_ATT_out of the
ensemble's τ̂ as trained, scaled by the R-loss λ about its mean c (Session 9's default), with the
tested R-loss level, with the tested level and the test of λ (the default), with the R-loss level
always, and replaced by c, from the same fits. (Session 9's table, with the winsorised variant,
came from this script at 832752e.)

    python benchmarks/effect_shrink.py --out DIR [--cells base,earnings] [--reps 1000,1001]
    python benchmarks/effect_shrink.py --out DIR --also DIR2,DIR3     # score saved fits of several DIRs
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


def dump(cell, rep: int, path: Path, overrides: tuple[str, ...] = ()) -> None:
    """``cell`` None: IHDP replication ``rep``; ``overrides``: csna ``--set`` KEY=VALUE pairs."""
    import torch
    from threadpoolctl import threadpool_limits

    from csna.bench.run import BenchSpec, csna_config, draw_splits, load_data
    from csna.dr import member_train_rows
    from csna.ensemble import train_run
    from csna.predict import member_predictions

    torch.set_num_threads(1)
    spec = BenchSpec(dataset="suite" if cell is not None else "ihdp", replications=(rep,), cores=1, cell=cell,
                     overrides=("train.effect_shrink=none", *overrides))
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


VARIANTS = ("raw", "scale", "level_test", "rloss", "level_always", "constant")


def saved_fit(path: Path, seed: int) -> dict:
    """A saved fit (``dump``) with what every rule reads: the members' held-out μ̂ of the
    non-test rows (``oof``, on ``rows``), a cross-fitted logistic ê there (``e1``), the ensemble's
    τ̂ and its held-out mean c, the true τ, and the treated test rows."""
    from csna.dr import out_of_fold_mu
    from csna.propensity import crossfit_propensity

    z = np.load(path)
    f = {k: z[k] for k in ("mus", "x", "T", "Y", "mu", "test")}
    train_rows = [z[f"train_rows_{j}"] for j in range(len(f["mus"]))]
    n, test = len(f["T"]), f["test"]
    cand = np.setdiff1d(np.arange(n), test)
    pos = np.full(n, -1)
    pos[cand] = np.arange(len(cand))
    local = [pos[r][pos[r] >= 0] for r in train_rows]
    oof, mask = out_of_fold_mu([m[cand] for m in f["mus"]], local, len(cand))
    rows = cand[mask]
    ens = f["mus"].mean(0)
    tau_hat = ens[:, 1] - ens[:, 0]  # (n,)
    f.update(oof=oof[mask], rows=rows, tau_hat=tau_hat, c=float(tau_hat[cand].mean()), n=n,
             e1=crossfit_propensity(f["x"][rows], f["T"][rows].astype(np.int64), 2, seed=seed)[:, 1],
             tau=f["mu"][:, 1] - f["mu"][:, 0], treated=test[f["T"][test] == 1])
    return f


def scores(path: Path, seed: int) -> dict[str, tuple[float, float, float]]:
    """Per variant, (√PEHE_out, ε_ATE_out, ε_ATT_out) on the fit's test rows: τ̂ as trained
    (raw), λ alone about c (``scale``, Session 9's default), λ with the tested level and no test
    of λ (level_test), both tests (``rloss``, the default: ``shrink_rule``), the joint (a, λ)
    always (level_always), and c."""
    from csna.shrink import TEST_Z, rloss_level, rloss_scale, shrink_rule

    f = saved_fit(path, seed)
    T, Y, test, rows, e1, tau_hat, c, tau, treated, n = (f[k] for k in (
        "T", "Y", "test", "rows", "e1", "tau_hat", "c", "tau", "treated", "n"))
    oof = f["oof"]

    def score(t):
        att = abs(float(t[treated].mean() - tau[treated].mean())) if len(treated) else float("nan")
        pehe = float(np.sqrt(np.mean((t[test] - tau[test]) ** 2)))
        return (pehe, abs(float(t[test].mean() - tau[test].mean())), att)

    args = (Y[rows].astype(float), T[rows].astype(float), oof[:, 0], oof[:, 1], e1, c)
    lam = rloss_scale(*args)
    a, lam_a, se = rloss_level(*args)
    moved = abs(a - c) > TEST_Z * se
    rule = shrink_rule(*args)
    return {"raw": score(tau_hat), "scale": score(c + lam * (tau_hat - c)),
            "level_test": score((a + lam_a * (tau_hat - c)) if moved else (c + lam * (tau_hat - c))),
            "rloss": score(rule["level"] + rule["scale"] * (tau_hat - c)),
            "level_always": score(a + lam_a * (tau_hat - c)), "constant": score(np.full(n, c)),
            "moved": moved, "level": a, "centre": c, "level_se": se, "lambda": rule["scale"],
            "lambda_se": rule["scale_se"]}


def main() -> None:
    from csna.bench.suite import CELLS, quick_cells

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--cells", default=None, help="comma-separated cells of the suite (default: the eight quick ones)")
    ap.add_argument("--reps", default="1000,1001")
    ap.add_argument("--also", default=None, help="other DIRs of saved fits (comma-separated) to score too")
    ap.add_argument("--seed", type=int, default=0, help="the cross-fitted propensity's seed")
    ap.add_argument("--ihdp", action="store_true", help="IHDP replications instead of the suite's quick cells")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a csna config override for the fits (e.g. phase1.lambda_causal=0); repeatable")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    wanted = set(args.cells.split(",")) if args.cells else None
    table = []
    cells = [None] if args.ihdp else (list(quick_cells()) if wanted is None else [c for c in CELLS if c.name in wanted])
    for rep in (int(r) for r in args.reps.split(",")):
        for cell in cells:
            path = out / f"{'ihdp' if cell is None else cell.name}-{rep}.npz"
            if not path.exists():
                dump(cell, rep, path, tuple(args.set))
            table.append((path.stem, scores(path, args.seed)))
    if args.also:
        table += [(p.stem, scores(p, args.seed)) for d in args.also.split(",") for p in sorted(Path(d).glob("*.npz"))]
    print("| fit | raw | scale (Session 9) | level test | rloss, the default | level always | constant c "
          "| c → a ± se (moved) | rloss λ (se) |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---|")
    for name, s in sorted(table):
        print(f"| {name} | " + " | ".join(f"{s[v][0]:.3f}" for v in VARIANTS)
              + f" | {s['centre']:.3f} → {s['level']:.3f} ± {s['level_se']:.3f} ({'yes' if s['moved'] else 'no'})"
              + f" | {s['lambda']:.2f} ({s['lambda_se']:.2f}) |")
    print()
    print("Against `scale` (Session 9's default): geometric-mean ratio (log s.e.), fits better of all, worst ratio")
    print()
    print("| variant | √PEHE_out | ε_ATE_out | ε_ATT_out |")
    print("|---|---|---|---|")
    for v in VARIANTS:
        cells = []
        for i in range(3):
            lr = np.log(np.array([(s[v][i] + 1e-3) / (s["scale"][i] + 1e-3) for _, s in table]))
            lr = lr[np.isfinite(lr)]
            se = lr.std(ddof=1) / np.sqrt(len(lr)) if len(lr) > 1 else float("nan")
            cells.append(f"{np.exp(lr.mean()):.3f} ({se:.3f}), {(lr < -1e-9).sum()}/{len(lr)}, {np.exp(lr.max()):.2f}")
        print(f"| {v} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
