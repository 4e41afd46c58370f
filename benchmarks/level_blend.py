"""The effect shrinkage's level as a precision-weighted blend of the plug-in c and the R-loss
level a, scored offline on saved tuning fits (candidate ``level_blend``; benchmarks/RESULTS.md,
Session 18; the adoption rule is ``benchmarks/results/level_blend_s18/rule.md``).

The default keeps c unless |a − c| > 2 se(a), then takes a. The candidate (``csna.shrink.
blend_level``, ``train.shrink_level: blend``) takes c + max(0, 1 − se² / (a − c)²) (a − c) and
refits λ given that level; it equals the default wherever |a − c| ≤ se.

    python benchmarks/level_blend.py DIR [DIR ...] > fits.jsonl     # one JSON line per fit
    python benchmarks/level_blend.py --table fits.jsonl
"""
from __future__ import annotations

import sys
from pathlib import Path


def score_fit(path: Path) -> dict:
    """The default and level_blend on one saved fit: [√PEHE_out, ε_ATE_out, ε_ATT_out] each, the
    levels c, a, se(a) and both rules' level and λ, and the true ATE of the test rows."""
    from tau_correction import default_on_saved_fit

    from csna.shrink import shrink_rule

    g = default_on_saved_fit(path)
    rule, c = g["rule"], g["c"]
    args = (g["y"], g["t"], g["a0"], g["a1"], g["e1"], c)
    blend = shrink_rule(*args, level="blend")
    cand = blend["level"] + blend["scale"] * (g["tau_hat"] - c)
    from csna.shrink import rloss_level

    a, _, se = rloss_level(*args)
    return {"fit": path.stem, "dir": path.parent.name, "default": g["score"](g["default"]),
            "level_blend": g["score"](cand), "c": c, "a": a, "a_se": se, "level_default": rule["level"],
            "level_blend_value": blend["level"], "lambda_default": rule["scale"], "lambda_blend": blend["scale"],
            "ate_true_test": float(g["tau"][g["test"]].mean()), "used": g["used"]}


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    if sys.argv[1] == "--table":
        from tau_correction import candidate_table

        lines, ratio, fit = candidate_table(sys.argv[2], "level_blend")
        changed = [r for r in lines if r["level_blend"] != r["default"]]
        print(f"changed on {len(changed)} of {len(lines)} fits; worst √PEHE_out ratio {ratio:.3f} ({fit})")
        print("\n| fit | c | a ± se | level default → blend | λ default → blend | true ATE (test) "
              "| ε_ATT_out default → blend |\n|---|---:|---|---|---|---:|---|")
        for r in changed:
            print(f"| {r['fit']} | {r['c']:.4g} | {r['a']:.4g} ± {r['a_se']:.2g} | {r['level_default']:.4g} → "
                  f"{r['level_blend_value']:.4g} | {r['lambda_default']:.2f} → {r['lambda_blend']:.2f} "
                  f"| {r['ate_true_test']:.4g} | {r['default'][2]:.4g} → {r['level_blend'][2]:.4g} |")
        return
    from tau_correction import dump

    dump(sys.argv[1:], score_fit)


if __name__ == "__main__":
    main()
