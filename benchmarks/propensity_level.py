"""Issues 17 and 18, a diagnostic on tuning fits: how much of the R-loss level's error is the
propensity's? (benchmarks/RESULTS.md, Session 18.)

For each saved fit of ``benchmarks/effect_shrink.py`` of a stress-suite cell (whose generator
knows the true propensity, ``extra["propensity"]``), Robinson's level a (``csna.shrink.
rloss_level``, the default's m̂ and arms) on the held-out rows is computed with four ê: the
default's cross-fitted logistic regression (scikit-learn's C = 1), the same with C chosen by
cross-validated log-loss (scikit-learn's ``LogisticRegressionCV``, ten values from 1e-4 to 1e4,
inner 5-fold), a cross-fitted LightGBM classifier tuned as the bench tunes it
(``csna.boosting.tuned_fit``), the one of the default and LightGBM with the lower held-out
log-loss, and the true propensity. Printed against the truth (the mean true effect over the held-out rows),
with each ê's mean absolute error against the true propensity and its held-out log-loss.

    python benchmarks/propensity_level.py DIR [DIR ...] > fits.jsonl
    python benchmarks/propensity_level.py --table fits.jsonl
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

E_CLIP = 0.01


def crossfit_lgbm_propensity(x: np.ndarray, t: np.ndarray, seed: int = 0, folds: int = 5) -> np.ndarray:
    """Out-of-fold P(T = 1 | x) of a LightGBM classifier tuned on a random 20% of each fold's
    fitting rows and refitted on all of them (``crossfit_outcome``'s recipe, classifying)."""
    from sklearn.model_selection import StratifiedKFold

    from csna.boosting import INNER_VAL, tuned_fit

    out = np.zeros(len(t))
    k = int(min(folds, np.bincount(t.astype(int)).min()))
    for i, (fit_idx, held) in enumerate(StratifiedKFold(k, shuffle=True, random_state=seed).split(x, t)):
        perm = np.random.default_rng(seed + i).permutation(fit_idx)
        cut = int(round((1.0 - INNER_VAL) * len(perm)))
        out[held] = tuned_fit(x, t, perm[:cut], perm[cut:], True, seed).predict_proba(x[held])[:, 1]
    return out


def crossfit_logistic_cv(x: np.ndarray, t: np.ndarray, seed: int = 0, folds: int = 5) -> np.ndarray:
    """Out-of-fold P(T = 1 | x) of a logistic regression whose C is chosen by an inner 5-fold
    cross-validated log-loss (``LogisticRegressionCV``)."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold

    out = np.zeros(len(t))
    k = int(min(folds, np.bincount(t.astype(int)).min()))
    for fit_idx, held in StratifiedKFold(k, shuffle=True, random_state=seed).split(x, t):
        m = LogisticRegressionCV(Cs=10, cv=5, scoring="neg_log_loss", max_iter=2000).fit(x[fit_idx], t[fit_idx])
        out[held] = m.predict_proba(x[held])[:, 1]
    return out


def logloss(e: np.ndarray, t: np.ndarray) -> float:
    e = np.clip(e, E_CLIP, 1 - E_CLIP)
    return float(-np.mean(t * np.log(e) + (1 - t) * np.log(1 - e)))


def score_fit(path: Path) -> dict:
    from tau_correction import default_on_saved_fit

    from csna.bench.suite import CELLS
    from csna.shrink import rloss_level

    name, rep = path.stem.rsplit("-", 1)
    g = default_on_saved_fit(path)
    e_true = np.asarray({c.name: c for c in CELLS}[name].data(int(rep)).extra["propensity"])[g["rows"]]
    e_lgbm = crossfit_lgbm_propensity(g["xr"], g["t"].astype(np.int64))
    e_cv = crossfit_logistic_cv(np.nan_to_num(g["xr"]), g["t"].astype(np.int64))
    ll = {"logistic": logloss(g["e1"], g["t"]), "lgbm": logloss(e_lgbm, g["t"]), "logistic_cv": logloss(e_cv, g["t"])}
    es = {"logistic": g["e1"], "lgbm": e_lgbm, "logistic_cv": e_cv, "true": e_true}
    es["select"] = es["lgbm"] if ll["lgbm"] < ll["logistic"] else es["logistic"]
    args = (g["y"], g["t"], g["a0"], g["a1"])
    return {"fit": path.stem, "dir": path.parent.name, "truth": float(g["tau"][g["rows"]].mean()), "c": g["c"],
            **{f"a_{k}": rloss_level(*args, e, g["c"])[0] for k, e in es.items()},
            **{f"se_{k}": rloss_level(*args, e, g["c"])[2] for k, e in es.items()},
            **{f"mae_{k}": float(np.abs(e - e_true).mean()) for k, e in es.items() if k != "true"},
            **{f"logloss_{k}": v for k, v in ll.items()}, "logloss_true": logloss(e_true, g["t"])}


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    if sys.argv[1] == "--table":
        lines = [json.loads(s) for s in Path(sys.argv[2]).read_text().splitlines() if s.strip()]
        print("| fit | truth | c | a, logistic ê | a, logistic CV | a, LightGBM ê | a, selected | a, true e "
              "| |ê − e|: logistic, CV, LightGBM | log-loss: logistic, CV, LightGBM, true |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---|---|")
        for r in lines:
            print(f"| {r['fit']} | {r['truth']:.4g} | {r['c']:.4g} | {r['a_logistic']:.4g} | {r['a_logistic_cv']:.4g} "
                  f"| {r['a_lgbm']:.4g} | {r['a_select']:.4g} | {r['a_true']:.4g} | {r['mae_logistic']:.3f}, "
                  f"{r['mae_logistic_cv']:.3f}, {r['mae_lgbm']:.3f} | {r['logloss_logistic']:.3f}, "
                  f"{r['logloss_logistic_cv']:.3f}, {r['logloss_lgbm']:.3f}, {r['logloss_true']:.3f} |")
        print("\nMedian over the fits of |a − truth| / |c − truth| (below 1: the level beats the plug-in):")
        for k in ("logistic", "logistic_cv", "lgbm", "select", "true"):
            rel = [abs(r[f"a_{k}"] - r["truth"]) / max(abs(r["c"] - r["truth"]), 1e-12) for r in lines]
            print(f"- {k}: {np.median(rel):.2f} (better than c on {sum(x < 1 for x in rel)} of {len(rel)})")
        print("\nMean |ê − e| and log-loss over the fits:")
        for k in ("logistic", "logistic_cv", "lgbm"):
            print(f"- {k}: {np.mean([r[f'mae_{k}'] for r in lines]):.3f}, "
                  f"{np.mean([r[f'logloss_{k}'] for r in lines]):.3f}")
        print(f"- true: 0, {np.mean([r['logloss_true'] for r in lines]):.3f}")
        return
    from tau_correction import dump

    dump(sys.argv[1:], score_fit)


if __name__ == "__main__":
    main()
