"""The level of a flat effect, scored offline on saved tuning fits (candidate ``level_if_flat``;
benchmarks/RESULTS.md, Session 16).

When the effect shrinkage drops τ̂'s spread (λ = 0: no heterogeneity the held-out rows can
confirm), csna's τ̂ is one constant. The default keeps it at the plug-in centre c, the mean of the
ensemble's τ̂, unless the R-loss level rejects c at 2 standard errors. The candidate always takes
the R-loss level with λ = 0 there, a = Σ (t − ê)(y − m̂) / Σ (t − ê)², Robinson's partially
linear estimate of a constant effect (what double machine learning reports for it), since c
comes from the outcome arms alone and carries their confounding bias. With λ > 0 nothing
changes. Everything else is the default (m̂ chosen by held-out error, both tests).

    python benchmarks/flat_level.py DIR [DIR ...] > fits.jsonl     # one JSON line per fit
    python benchmarks/flat_level.py --table fits.jsonl
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np


def score_fit(path: Path) -> dict:
    """The default and level_if_flat on one saved fit: [√PEHE_out, ε_ATE_out, ε_ATT_out] each."""
    from effect_shrink import saved_fit

    from csna.boosting import crossfit_outcome
    from csna.shrink import _residuals, outcome_arms, shrink_rule

    f = saved_fit(path, 0)
    T, Y, test, rows, e1, tau_hat, c, tau, treated, x, oof = (f[k] for k in (
        "T", "Y", "test", "rows", "e1", "tau_hat", "c", "tau", "treated", "x", "oof"))

    def score(t):
        att = abs(float(t[treated].mean() - tau[treated].mean())) if len(treated) else float("nan")
        return [float(np.sqrt(np.mean((t[test] - tau[test]) ** 2))), abs(float(t[test].mean() - tau[test].mean())),
                att]

    y, t = Y[rows].astype(np.float64), T[rows].astype(np.float64)
    m = crossfit_outcome(x[rows].astype(np.float64), y)
    a0, a1, used, _ = outcome_arms(y, oof[:, 0], oof[:, 1], e1, m, "select")
    rule = shrink_rule(y, t, a0, a1, e1, c)
    default = rule["level"] + rule["scale"] * (tau_hat - c)  # (n,)
    ry, rt, _ = _residuals(y, t, a0, a1, e1)
    robinson = float(rt @ ry / (rt @ rt))
    flat = rule["scale"] == 0.0
    cand = np.full(len(tau_hat), robinson) if flat else default
    return {"fit": path.stem, "dir": path.parent.name, "default": score(default), "level_if_flat": score(cand),
            "flat": bool(flat), "level": rule["level"], "centre": c, "robinson": robinson, "outcome": used,
            "true_ate_test": float(tau[test].mean())}


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    if sys.argv[1] == "--table":
        from outcome_nuisance import table

        lines = [json.loads(s) for s in Path(sys.argv[2]).read_text().splitlines() if s.strip()]
        sets = {"pooled": lambda r: True, "suite seeds": lambda r: r["dir"] != "ihdp_nc",
                "IHDP tuning replications": lambda r: r["dir"] == "ihdp_nc",
                "strongly confounded cells": lambda r: "strong-conf" in r["fit"],
                "binary cells": lambda r: r["fit"].startswith("binary")}
        table(lines, "level_if_flat", sets)
        ratios = [(r["level_if_flat"][0] + 1e-3) / (r["default"][0] + 1e-3) for r in lines]
        worst = int(np.argmax(ratios))
        print(f"flat on {sum(r['flat'] for r in lines)} of {len(lines)} fits; worst √PEHE_out ratio "
              f"{ratios[worst]:.3f} ({lines[worst]['fit']})")
        return
    for d in sys.argv[1:]:
        for p in sorted(Path(d).glob("*.npz")):
            t0 = time.time()
            out = score_fit(p)
            out["seconds"] = round(time.time() - t0, 2)
            print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
