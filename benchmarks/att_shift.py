"""Issue 18, a diagnostic on tuning seeds: is csna's error in the effect on the treated a level
that a doubly-robust ATT on the held-out rows could correct?

For each saved fit of ``benchmarks/effect_shrink.py`` (the members' predictions, the truth and
each member's training rows, in DIR/*.npz), it prints the true ATT and csna's plug-in ATT (mean
of the default τ' over the treated rows: test rows and held-out rows), and the AIPW ATT of the
held-out rows (``csna.dr.aipw_att`` with the members' held-out μ̂0 and a cross-fitted logistic
ê, ``fit_effect_scale``'s nuisances) with its standard error. Then it scores shifting τ' by
δ = ATT_AIPW − ATT_plug-in when |δ| > k · se (k = 1, 2, 3) and always, against the default, as
geometric-mean ratios of √PEHE_out, ε_ATE_out and ε_ATT_out (log s.e.), fits better and worse.

    python benchmarks/effect_shrink.py --out DIR ...          # the fits (see that script)
    python benchmarks/att_shift.py DIR [DIR2 ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def analyse(path: Path, seed: int = 0) -> tuple[dict[str, tuple[float, float, float]], dict[str, float]]:
    from effect_shrink import saved_fit

    from csna.dr import aipw_att
    from csna.shrink import shrink_rule

    f = saved_fit(path, seed)
    t, y, test, rows, oof, e1, tau_hat, c, tau = (f[k] for k in (
        "T", "Y", "test", "rows", "oof", "e1", "tau_hat", "c", "tau"))
    y = y.astype(float)
    rule = shrink_rule(y[rows], t[rows].astype(float), oof[:, 0], oof[:, 1], e1, c)
    tp = rule["level"] + rule["scale"] * (tau_hat - c)  # the default τ'
    treated = test[t[test] == 1]

    def score(v):
        return (float(np.sqrt(np.mean((v[test] - tau[test]) ** 2))), abs(float(v[test].mean() - tau[test].mean())),
                abs(float(v[treated].mean() - tau[treated].mean())))

    att_dr, se = aipw_att(y[rows], t[rows].astype(float), oof[:, 0], e1)
    held_treated = rows[t[rows] == 1]
    delta = att_dr - float(tp[held_treated].mean())
    out = {"default": score(tp)}
    for k in (1.0, 2.0, 3.0):
        out[f"shift at {k:g} se"] = score(tp + delta) if abs(delta) > k * se else score(tp)
    out["shift always"] = score(tp + delta)
    info = {"true_test": float(tau[treated].mean()), "plug_test": float(tp[treated].mean()),
            "true_held": float(tau[held_treated].mean()), "plug_held": float(tp[held_treated].mean()),
            "dr": att_dr, "se": se, "n_treated": len(held_treated)}
    return out, info


def main() -> None:
    paths = sorted(p for d in sys.argv[1:] for p in Path(d).glob("*.npz"))
    res = []
    print("| fit | ATT true (test) | plug-in (test) | ATT true (held-out) | plug-in (held-out) "
          "| AIPW ± se (held-out) |")
    print("|---|---:|---:|---:|---:|---:|")
    for p in paths:
        out, i = analyse(p)
        res.append(out)
        print(f"| {p.stem} | {i['true_test']:.3f} | {i['plug_test']:.3f} | {i['true_held']:.3f} | {i['plug_held']:.3f} "
              f"| {i['dr']:.3f} ± {i['se']:.3f} |", flush=True)
    print("\n| rule | √PEHE_out | ε_ATE_out | ε_ATT_out |\n|---|---|---|---|")
    for v in res[0]:
        r = np.array([[o[v][i] / o["default"][i] for i in range(3)] for o in res])  # (fits, 3)
        lr = np.log(np.maximum(r, 1e-12))
        print(f"| {v} | " + " | ".join(
            f"{np.exp(lr[:, i].mean()):.3f} ({lr[:, i].std(ddof=1) / np.sqrt(len(lr)):.3f}), "
            f"{int((r[:, i] < 0.999).sum())} better, {int((r[:, i] > 1.001).sum())} worse" for i in range(3)) + " |")


if __name__ == "__main__":
    main()
