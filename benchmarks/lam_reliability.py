"""The effect shrinkage's λ corrected for the held-out τ̂'s extra noise, scored offline on saved
tuning fits (candidate ``lam_reliability``; benchmarks/RESULTS.md, Session 17; the adoption rule
is ``benchmarks/results/lam_reliability_s17/rule.md``).

The default (``csna.shrink``) fits λ by regressing the R-loss pseudo-outcome on the *held-out* τ̂
(the mean of the m_i ≈ 1 members that did not train on row i), then applies it to the *whole
ensemble's* τ̂ (the mean of M = 4 members, all out of sample on a test row). With member noise
of variance σ², independent across members, the regression is attenuated (errors in variables):

    λ_oof ≈ cov(τ, s) / (var s + σ² E[1/m_i]),   what the ensemble needs: cov(τ, s) / (var s + σ²/M),

so the candidate multiplies the tested λ by V / (V − σ² E[1/m_i] + σ²/M), V = var of the held-out
τ̂ over the held-out rows, σ² = the mean, over held-out rows with m_i ≥ 2, of the sample variance
(ddof 1) of their held-out members' τ̂; clipped to [0, 1]. λ = 0 and the level do not change.

    python benchmarks/lam_reliability.py DIR [DIR ...] > fits.jsonl     # one JSON line per fit
    python benchmarks/lam_reliability.py --table fits.jsonl
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def score_fit(path: Path) -> dict:
    """The default and lam_reliability on one saved fit: [√PEHE_out, ε_ATE_out, ε_ATT_out] each,
    plus the test-row λ that would have minimised √PEHE_out given the default's level (oracle)."""
    from tau_correction import default_on_saved_fit

    from csna.shrink import reliability_factor

    g = default_on_saved_fit(path)
    rule, score, tau, test = g["rule"], g["score"], g["tau"], g["test"]
    z = np.load(path)
    n = len(g["T"])
    held = np.ones((len(g["mus"]), n), dtype=bool)
    for j in range(len(g["mus"])):
        held[j, z[f"train_rows_{j}"]] = False
    held[:, test] = False  # the held-out rows are non-test rows
    rows = held.any(0)
    mus = g["mus"].astype(np.float64)[:, rows]  # (M, n_r, K)
    rho, parts = reliability_factor(mus[:, :, 1] - mus[:, :, 0], held[:, rows])
    lam = float(np.clip(rule["scale"] * rho, 0.0, 1.0))
    cand = rule["level"] + lam * (g["tau_hat"] - g["c"])
    dev = g["tau_hat"][test] - g["c"]
    target = tau[test] - rule["level"]
    oracle = float(np.clip(dev @ target / max(dev @ dev, 1e-300), 0.0, 1.0))
    return {"fit": path.stem, "dir": path.parent.name, "default": score(g["default"]), "lam_reliability": score(cand),
            "lambda": rule["scale"], "lambda_se": rule["scale_se"], "rho": rho, "lambda_new": lam,
            "lambda_oracle": oracle, **parts}


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    if sys.argv[1] == "--table":
        from tau_correction import candidate_table

        lines, ratio, fit = candidate_table(sys.argv[2], "lam_reliability")
        print(f"λ changed on {sum(r['lambda_new'] != r['lambda'] for r in lines)} of {len(lines)} fits; worst "
              f"√PEHE_out ratio {ratio:.3f} ({fit})")
        print("\n| fit | λ (se) | ρ | λ new | λ oracle | √PEHE_out default → new |\n|---|---|---:|---:|---:|---|")
        for r in lines:
            print(f"| {r['fit']} | {r['lambda']:.2f} ({r['lambda_se']:.2f}) | {r['rho']:.2f} | {r['lambda_new']:.2f} "
                  f"| {r['lambda_oracle']:.2f} | {r['default'][0]:.4g} → {r['lam_reliability'][0]:.4g} |")
        return
    from tau_correction import dump

    dump(sys.argv[1:], score_fit)


if __name__ == "__main__":
    main()
