"""Options against the confounded counterfactual on tuning seeds (issues 17 and 18, Session 14).

Saved fits (``benchmarks/effect_shrink.py`` dumps) of a candidate and of the default on the same
cells and seeds. For each pair: the geometric-mean ratio candidate/default of √PEHE_out,
ε_ATE_out and ε_ATT_out with the mean log ratio in standard errors and the fits where the
candidate is better, on all fits, the strongly confounded cells and the others, scored

- ``rloss``: the default effect shrinkage (level test and test of λ, ``csna.shrink``);
- ``keep``: the test of λ alone, the level left at the ensemble's plug-in c;
- ``raw``: τ̂ as trained;

and where the ensemble's counterfactual predictions go wrong: the mean error of μ̂_0 on the
treated and of μ̂_1 on the controls (non-test rows, outcome units).

    python benchmarks/effect_shrink.py --out D_CAND --cells C --reps 1003 --set model.propensity_rep=1
    python benchmarks/confounding_options.py pair D_CAND1,D_CAND2 D_DEF1,D_DEF2
    python benchmarks/confounding_options.py counterfactual D_DIR ...
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from effect_shrink import saved_fit  # noqa: E402
from lambda_causal_tuning import fits  # noqa: E402

MODES = ("rloss", "keep", "raw")
STRONG = "strong-conf"  # the cells whose name holds this are the strongly confounded ones
_cache: dict[tuple[Path, str], tuple[float, float, float]] = {}


def score(p: Path, mode: str) -> tuple[float, float, float]:
    """(√PEHE_out, ε_ATE_out, ε_ATT_out) of a saved fit under ``mode`` (module docstring)."""
    from csna.shrink import TEST_Z, rloss_scale, scale_stderr, shrink_rule

    if (p, mode) not in _cache:
        f = saved_fit(p, 0)
        y, t, rows, oof, c, tau_hat = f["Y"], f["T"], f["rows"], f["oof"], f["c"], f["tau_hat"]
        args = (y[rows].astype(float), t[rows].astype(float), oof[:, 0], oof[:, 1], f["e1"], c)
        if mode == "rloss":
            rule = shrink_rule(*args)
            level, lam = rule["level"], rule["scale"]
        elif mode == "keep":
            level, lam = c, rloss_scale(*args)
            if not lam > TEST_Z * scale_stderr(*args, c, lam):
                lam = 0.0
        else:
            level, lam = c, 1.0
        est = level + lam * (tau_hat - c)  # (n,)
        tau, test, treated = f["tau"], f["test"], f["treated"]
        _cache[(p, mode)] = (float(np.sqrt(np.mean((est[test] - tau[test]) ** 2))),
                             abs(float(est[test].mean() - tau[test].mean())),
                             abs(float(est[treated].mean() - tau[treated].mean())))
    return _cache[(p, mode)]


def ratios(a: dict[str, Path], b: dict[str, Path], keys: list[str], mode: str) -> str:
    lr = np.array([[np.log((score(a[k], mode)[i] + 1e-3) / (score(b[k], mode)[i] + 1e-3)) for i in range(3)]
                   for k in keys])  # (fits, 3)
    cells = []
    for i in range(3):
        x = lr[:, i]
        se = x.std(ddof=1) / np.sqrt(len(x))
        cells.append(f"{np.exp(x.mean()):.3f} ({x.mean() / se:+.1f} s.e., {(x < 0).sum()}/{len(x)})")
    return " | ".join(cells)


def pair(dirs_a: str, dirs_b: str) -> None:
    a, b = fits(dirs_a), fits(dirs_b)
    keys = sorted(set(a) & set(b))
    print(f"candidate {dirs_a} / default {dirs_b}: {len(keys)} fits\n")
    print("| shrinkage | fits | n | √PEHE_out | ε_ATE_out | ε_ATT_out |")
    print("|---|---|---:|---|---|---|")
    groups = (("all", keys), ("strongly confounded", [k for k in keys if STRONG in k]),
              ("the others", [k for k in keys if STRONG not in k]))
    for mode in MODES:
        for name, ks in groups:
            if len(ks) > 1:
                print(f"| {mode} | {name} | {len(ks)} | {ratios(a, b, ks, mode)} |")


def counterfactual(dirs: list[str]) -> None:
    print("| fit | μ̂0 − μ0 on the treated | μ̂1 − μ1 on the controls | μ̂0 − μ0 on the controls | sd τ̂ |")
    print("|---|---:|---:|---:|---:|")
    for d in dirs:
        for p in sorted(Path(d).glob("*.npz")):
            z = np.load(p)
            ens, mu, t = z["mus"].mean(0), z["mu"], z["T"]  # (n, 2), (n, 2), (n,)
            rows = np.setdiff1d(np.arange(len(t)), z["test"])

            def err(arm: int, group: int) -> float:
                r = rows[t[rows] == group]
                return float((ens[r, arm] - mu[r, arm]).mean())

            print(f"| {d}/{p.stem} | {err(0, 1):+.3f} | {err(1, 0):+.3f} | {err(0, 0):+.3f} | "
                  f"{(ens[:, 1] - ens[:, 0]).std():.3f} |")


def main() -> None:
    warnings.filterwarnings("ignore")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pair", help="candidate dumps against the default's, by shrinkage and cell group")
    p.add_argument("candidate")
    p.add_argument("default")
    q = sub.add_parser("counterfactual", help="the ensemble's counterfactual errors, fit by fit")
    q.add_argument("dirs", nargs="+")
    args = ap.parse_args()
    if args.cmd == "pair":
        pair(args.candidate, args.default)
    else:
        counterfactual(args.dirs)


if __name__ == "__main__":
    main()
