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

import sys
from pathlib import Path

import numpy as np


def score_fit(path: Path) -> dict:
    """The default and level_if_flat on one saved fit: [√PEHE_out, ε_ATE_out, ε_ATT_out] each."""
    from tau_correction import default_on_saved_fit

    from csna.shrink import _residuals

    g = default_on_saved_fit(path)
    rule, default, score = g["rule"], g["default"], g["score"]
    ry, rt, _ = _residuals(g["y"], g["t"], g["a0"], g["a1"], g["e1"])
    robinson = float(rt @ ry / (rt @ rt))
    flat = rule["scale"] == 0.0
    cand = np.full(len(default), robinson) if flat else default
    tau, test = g["tau"], g["test"]
    return {"fit": path.stem, "dir": path.parent.name, "default": score(default), "level_if_flat": score(cand),
            "flat": bool(flat), "level": rule["level"], "centre": g["c"], "robinson": robinson, "outcome": g["used"],
            "true_ate_test": float(tau[test].mean())}


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    if sys.argv[1] == "--table":
        from outcome_nuisance import table
        from tau_correction import read_fits, worst_fit

        lines, sets = read_fits(sys.argv[2])
        table(lines, "level_if_flat", sets)
        ratio, fit = worst_fit(lines, "level_if_flat")
        flat = sum(r["flat"] for r in lines)
        print(f"flat on {flat} of {len(lines)} fits; worst √PEHE_out ratio {ratio:.3f} ({fit})")
        return
    from tau_correction import dump

    dump(sys.argv[1:], score_fit)


if __name__ == "__main__":
    main()
