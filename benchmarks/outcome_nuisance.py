"""The effect shrinkage's outcome nuisance m̂(x) = E[Y | x] (csna.shrink) on tuning fits: the
default builds it from the ensemble's held-out arms, m̂ = ê μ̂1 + (1 − ê) μ̂0, which carries
μ̂0's error on every treated row under strong confounding (benchmarks/RESULTS.md, Session 14).
Two candidates, scored offline on saved default fits (``benchmarks/effect_shrink.py`` dumps):

- ``mx``: m̂ is a direct regression of y on x, cross-fitted over the held-out rows (5 folds; in
  each, LightGBM tuned as the bench's tree peers are, ``csna.bench.trees.tuned_fit``, on an
  80/20 split of the fold's rows);
- ``mx_sel``: per fit, whichever of the two m̂ has the lower mean squared error against y over
  the held-out rows (both are out-of-fold there).

Everything else is the default rule (``shrink_rule``: same ê, τ̂, centre and tests).

    python benchmarks/outcome_nuisance.py DIR [DIR ...] > fits.jsonl     # one JSON line per fit
    python benchmarks/outcome_nuisance.py --table fits.jsonl [--candidate mx_sel]

The table gives, per set of fits, the geometric-mean ratio candidate / default, the mean log
ratio in standard errors, and the fits the candidate improves of those it changes.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

FOLDS = 5


def direct_m(x: np.ndarray, y: np.ndarray, seed: int = 0) -> np.ndarray:
    """Out-of-fold LightGBM predictions of y from x (n,), tuned per fold as the tree peers are."""
    from sklearn.model_selection import KFold

    from csna.bench.trees import tuned_fit

    out = np.zeros(len(y))
    for i, (fit_idx, held) in enumerate(KFold(FOLDS, shuffle=True, random_state=seed).split(x)):
        perm = np.random.default_rng(seed + i).permutation(fit_idx)
        k = int(round(0.8 * len(perm)))
        out[held] = tuned_fit(x, y, perm[:k], perm[k:], False, seed).predict(x[held])
    return out


def score_fit(path: Path) -> dict:
    """Default, mx and mx_sel on one saved fit: [√PEHE_out, ε_ATE_out, ε_ATT_out] each."""
    from effect_shrink import saved_fit

    from csna.shrink import E_CLIP, shrink_rule

    f = saved_fit(path, 0)
    T, Y, test, rows, e1, tau_hat, c, tau, treated, x, oof = (f[k] for k in (
        "T", "Y", "test", "rows", "e1", "tau_hat", "c", "tau", "treated", "x", "oof"))

    def score(rule):
        t = rule["level"] + rule["scale"] * (tau_hat - c)  # (n,)
        att = abs(float(t[treated].mean() - tau[treated].mean())) if len(treated) else float("nan")
        return [float(np.sqrt(np.mean((t[test] - tau[test]) ** 2))), abs(float(t[test].mean() - tau[test].mean())),
                att]

    y, t = Y[rows].astype(np.float64), T[rows].astype(np.float64)
    default = shrink_rule(y, t, oof[:, 0], oof[:, 1], e1, c)
    m = direct_m(x[rows].astype(np.float64), y)
    e1c = np.clip(e1, E_CLIP, 1 - E_CLIP)  # as shrink's residuals clip it
    th = oof[:, 1] - oof[:, 0]
    mu0 = m - e1c * th  # arms whose ê-weighted mean is m̂ and whose difference is the held-out τ̂
    mx = shrink_rule(y, t, mu0, mu0 + th, e1c, c)
    mse_mu = float(np.mean((y - (e1c * oof[:, 1] + (1 - e1c) * oof[:, 0])) ** 2))
    mse_direct = float(np.mean((y - m) ** 2))
    return {"fit": path.stem, "dir": path.parent.name, "default": score(default), "mx": score(mx),
            "mx_sel": score(mx if mse_direct < mse_mu else default), "centre": c,
            "level_default": default["level"], "level_mx": mx["level"], "level_mx_se": mx["level_se"],
            "mse_mu": mse_mu, "mse_direct": mse_direct}


def table(lines: list[dict], cand: str, sets: dict[str, callable]) -> None:
    print(f"{cand} against the default: geometric-mean ratio (mean log ratio / s.e.), fits better of those changed")
    print()
    print("| set | fits | √PEHE_out | ε_ATE_out | ε_ATT_out |")
    print("|---|---:|---|---|---|")
    for name, keep in sets.items():
        sel = [r for r in lines if keep(r)]
        cells = []
        for i in range(3):
            lr = np.array([np.log((r[cand][i] + 1e-3) / (r["default"][i] + 1e-3)) for r in sel])
            lr = lr[np.isfinite(lr)]
            se = lr.std(ddof=1) / np.sqrt(len(lr))
            z = f"{lr.mean() / se:+.1f}" if se > 0 else "0"
            cells.append(f"{np.exp(lr.mean()):.3f} ({z}), {int((lr < -1e-9).sum())}/{int((np.abs(lr) > 1e-9).sum())}")
        print(f"| {name} | {len(sel)} | " + " | ".join(cells) + " |")
    print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dirs", nargs="*", help="directories of saved fits (*.npz)")
    ap.add_argument("--table", help="a JSON-lines file this script wrote: print the tables")
    ap.add_argument("--candidate", default=None, help="mx or mx_sel (default: both)")
    args = ap.parse_args()
    if args.table:
        lines = [json.loads(s) for s in Path(args.table).read_text().splitlines() if s.strip()]
        suite = ("d_nc_1003", "d_nc_1004")
        sets = {"primary: suite 1003–1004 + IHDP tuning": lambda r: r["dir"] in suite + ("ihdp_nc",),
                "suite 1003–1004": lambda r: r["dir"] in suite,
                "IHDP tuning replications": lambda r: r["dir"] == "ihdp_nc",
                "strongly confounded cells (primary)": lambda r: r["dir"] in suite + ("ihdp_nc",)
                and "strong-conf" in r["fit"],
                "confirmation: seeds 1000–1001": lambda r: r["dir"] in ("st_nc", "st2_nc")}
        for cand in ([args.candidate] if args.candidate else ["mx", "mx_sel"]):
            table(lines, cand, sets)
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    for d in args.dirs:
        for p in sorted(Path(d).glob("*.npz")):
            t0 = time.time()
            res = score_fit(p)
            res["seconds"] = round(time.time() - t0, 2)
            print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
