"""Would a doubly-robust correction of the average effect lower csna's ε_ATE? (issue 5 probe)

csna's ensemble estimates τ(x) = μ̂_1(x) − μ̂_0(x) by regression alone. The classic remedy for
a biased average is to correct it with the residuals of held-out factual outcomes, weighted by
the inverse propensity. Each member has its own validation rows (never used for its weights),
so each member's correction is computed on them and applied to its μ̂; the ensemble is the
mean of the corrected members. Compared, on the test rows:

- ``none``: the product as it is;
- ``arm-shift``: μ̂_t += mean residual of the arm-t validation rows;
- ``hajek``: μ̂_t += inverse-propensity-weighted (self-normalised) mean residual of arm t, with
  ê(x) from csna's propensity head, clipped to [0.05, 0.95] (the AIPW correction);
- ``hajek-half``: half of it (a shrunk correction);
- ``tmle``: one-step targeted fluctuation, μ̂_1 += ε/ê(x), μ̂_0 −= ε/(1−ê(x)), ε the least-squares
  coefficient of the residual on the clever covariate H = T/ê − (1−T)/(1−ê) over validation rows.

Usage (reuses the member predictions ensemble_size.py caches; trains the missing ones):
    python benchmarks/ate_correction_probe.py --reps 1000-1019 --members 4 --cache DIR
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np

from _common import parse_reps
from ensemble_size import replication

CLIP = 0.05


def corrected(p: dict[str, np.ndarray], t: np.ndarray, y: np.ndarray, how: str) -> np.ndarray:
    """One member's μ̂ (n, 2) after the correction ``how``, fitted on the member's validation rows."""
    mu = p["mu"].copy()
    v = np.where(p["val"])[0]
    tv, yv = t[v], y[v]
    res = yv - mu[v, tv]  # factual residuals
    e = np.clip(p["propensity"][:, 1], CLIP, 1 - CLIP)
    if how == "arm-shift":
        for a in (0, 1):
            mu[:, a] += res[tv == a].mean()
    elif how in ("hajek", "hajek-half"):
        lam = 1.0 if how == "hajek" else 0.5
        w = np.where(tv == 1, 1 / e[v], 1 / (1 - e[v]))
        for a in (0, 1):
            mu[:, a] += lam * np.sum(w[tv == a] * res[tv == a]) / np.sum(w[tv == a])
    elif how == "tmle":
        h = np.where(tv == 1, 1 / e[v], -1 / (1 - e[v]))
        eps = np.sum(h * res) / np.sum(h * h)
        mu[:, 1] += eps / e
        mu[:, 0] -= eps / (1 - e)
    return mu


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", default="1000-1019")
    ap.add_argument("--members", type=int, default=4)
    ap.add_argument("--set", action="append", default=[], help="csna config override, KEY=VALUE")
    ap.add_argument("--cache", default=None, help="member predictions, as ensemble_size.py writes them")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    cache = Path(args.cache) if args.cache else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    hows = ["none", "arm-shift", "hajek", "hajek-half", "tmle"]
    rows = []
    for rep in parse_reps(args.reps):
        data, splits, preds = replication(rep, args.members, args.set, cache)
        te = splits["test"]
        truth = data.mu[te, 1] - data.mu[te, 0]
        row = []
        for how in hows:
            mu = np.mean([corrected(p, data.T, data.Y, how) for p in preds], axis=0)[te]
            tau = mu[:, 1] - mu[:, 0]
            row += [float(np.sqrt(np.mean((tau - truth) ** 2))), abs(float(tau.mean() - truth.mean()))]
        rows.append(row)
    a = np.array(rows)
    se = lambda x: float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else 0.0  # noqa: E731
    print(f"{len(rows)} replications, ensembles of {args.members}\n")
    print("| correction | √PEHE_out | paired vs none | ε_ATE_out | paired vs none |\n|---|---:|---:|---:|---:|")
    for i, how in enumerate(hows):
        dp, da = a[:, 2 * i] - a[:, 0], a[:, 2 * i + 1] - a[:, 1]
        print(f"| {how} | {a[:, 2 * i].mean():.3f} | {dp.mean():+.3f} ± {se(dp):.3f} "
              f"| {a[:, 2 * i + 1].mean():.3f} | {da.mean():+.3f} ± {se(da):.3f} |")


if __name__ == "__main__":
    main()
