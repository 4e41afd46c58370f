"""An R-loss correction of csna's effect τ̂(x), scored offline on saved tuning fits (candidate
``rcorr``; benchmarks/RESULTS.md, Session 16).

The default shrinks the ensemble's τ̂ affinely, τ_s = a + λ (τ̂ − c) (``csna.shrink``), so it can
move the level and the spread of τ̂ but never its shape. Where the members' τ̂ has the wrong
shape (strong confounding, poor overlap), the causal forest and the R-learner fit τ(x) to the
R-loss directly. The candidate adds to τ_s a correction δ(x) that minimises the same R-loss,

    Σ_i [(y_i − m̂_i) − (t_i − ê_i)(τ_s,i + δ(x_i))]²,

a LightGBM regression of the pseudo-outcome ((y − m̂) − (t − ê) τ_s) / (t − ê) on x with weights
(t − ê)² (Nie & Wager's R-learner as a weighted regression), 5-fold cross-fitted over the
held-out rows, rounds by early stopping on the weighted loss of an inner validation split. δ is
kept only when the cross-fitted R-loss falls by more than ``TEST_Z`` standard errors per row;
test rows then get the mean of the 5 fold models' δ. Everything else is the default (m̂ chosen
by held-out error, the level and scale tests).

    python benchmarks/tau_correction.py DIR [DIR ...] > fits.jsonl     # one JSON line per fit
    python benchmarks/tau_correction.py --table fits.jsonl
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

FOLDS = 5
SHAPE = dict(num_leaves=7, min_child_samples=20)  # a small tree: δ is a correction, not a model of y


def weighted_fit(x: np.ndarray, psi: np.ndarray, w: np.ndarray, seed: int):
    """LightGBM of ``psi`` on ``x`` with weights ``w``; rounds by early stopping on an inner 20%.

    Written here rather than with ``csna.boosting.tune``, which has no sample weights."""
    import lightgbm as lgb

    from csna.boosting import _eval_kwargs, lgbm

    perm = np.random.default_rng(seed).permutation(len(psi))
    k = int(round(0.8 * len(perm)))
    tr, va = perm[:k], perm[k:]
    model = lgbm(SHAPE, False, seed)
    kw = _eval_kwargs(x[va], psi[va])
    kw["eval_sample_weight"] = [w[va]]
    model.fit(x[tr], psi[tr], sample_weight=w[tr], eval_metric="l2",
              callbacks=[lgb.early_stopping(50, verbose=False)], **kw)
    rounds = max(1, int(model.best_iteration_ or 1))
    return lgbm({**SHAPE, "n_estimators": rounds}, False, seed).fit(x, psi, sample_weight=w)


def correction(x: np.ndarray, ry: np.ndarray, rt: np.ndarray, tau_s: np.ndarray, x_new: np.ndarray,
               seed: int = 0) -> tuple[np.ndarray, float, float]:
    """(δ on ``x_new``, mean R-loss gain per row, its s.e.), δ cross-fitted on (x, ry, rt, tau_s)."""
    from sklearn.model_selection import KFold

    psi = (ry - rt * tau_s) / rt
    w = rt ** 2
    oof = np.zeros(len(ry))
    new = np.zeros(len(x_new))
    for i, (fit, held) in enumerate(KFold(FOLDS, shuffle=True, random_state=seed).split(x)):
        model = weighted_fit(x[fit], psi[fit], w[fit], seed + i)
        oof[held] = model.predict(x[held])
        new += model.predict(x_new) / FOLDS
    gain = (ry - rt * tau_s) ** 2 - (ry - rt * (tau_s + oof)) ** 2  # (n,) per-row R-loss fall
    return new, float(gain.mean()), float(gain.std(ddof=1) / np.sqrt(len(gain)))


def default_on_saved_fit(path: Path) -> dict:
    """Today's default shrinkage on one saved fit (``effect_shrink.saved_fit``): the fit's arrays,
    plus ``score`` (τ over all rows → [√PEHE_out, ε_ATE_out, ε_ATT_out]), the R-loss inputs on
    the held-out rows (``y``, ``t``, ``xr``, the arms ``a0``, ``a1`` with m̂ chosen by held-out
    error, ``used``), the default ``rule`` and its τ over all rows, ``default``."""
    from effect_shrink import saved_fit

    from csna.boosting import crossfit_outcome
    from csna.shrink import outcome_arms, shrink_rule

    f = saved_fit(path, 0)
    test, rows, tau, treated = f["test"], f["rows"], f["tau"], f["treated"]

    def score(t):
        att = abs(float(t[treated].mean() - tau[treated].mean())) if len(treated) else float("nan")
        return [float(np.sqrt(np.mean((t[test] - tau[test]) ** 2))), abs(float(t[test].mean() - tau[test].mean())),
                att]

    y, t = f["Y"][rows].astype(np.float64), f["T"][rows].astype(np.float64)
    xr = f["x"][rows].astype(np.float64)
    a0, a1, used, _ = outcome_arms(y, f["oof"][:, 0], f["oof"][:, 1], f["e1"], crossfit_outcome(xr, y), "select")
    rule = shrink_rule(y, t, a0, a1, f["e1"], f["c"])
    default = rule["level"] + rule["scale"] * (f["tau_hat"] - f["c"])  # (n,)
    return {**f, "score": score, "y": y, "t": t, "xr": xr, "a0": a0, "a1": a1, "used": used, "rule": rule,
            "default": default}


def dump(dirs: list[str], score_fit) -> None:
    """One JSON line per saved fit (*.npz) of ``dirs``: ``score_fit(path)`` and its seconds."""
    for d in dirs:
        for p in sorted(Path(d).glob("*.npz")):
            t0 = time.time()
            out = score_fit(p)
            out["seconds"] = round(time.time() - t0, 2)
            print(json.dumps(out), flush=True)


def worst_fit(lines: list[dict], cand: str) -> tuple[float, str]:
    """The largest √PEHE_out ratio candidate / default over the fits (+1e-3 each) and its fit."""
    ratios = [(r[cand][0] + 1e-3) / (r["default"][0] + 1e-3) for r in lines]
    i = int(np.argmax(ratios))
    return ratios[i], lines[i]["fit"]


def candidate_table(path: str, cand: str) -> tuple[list[dict], float, str]:
    """Print ``cand``'s table against the default over the fits of ``path`` (a ``dump`` file),
    with one set per directory of fits; return the fits and the worst √PEHE_out ratio and fit."""
    from outcome_nuisance import table

    lines, sets = read_fits(path)
    for d in sorted({r["dir"] for r in lines}):
        sets[d] = lambda r, d=d: r["dir"] == d
    table(lines, cand, sets)
    return (lines, *worst_fit(lines, cand))


def read_fits(path: str) -> tuple[list[dict], dict]:
    """The JSON lines of ``dump`` and the sets of fits the tables report."""
    lines = [json.loads(s) for s in Path(path).read_text().splitlines() if s.strip()]
    sets = {"pooled": lambda r: True, "suite seeds": lambda r: r["dir"] != "ihdp_nc",
            "IHDP tuning replications": lambda r: r["dir"] == "ihdp_nc",
            "strongly confounded cells": lambda r: "strong-conf" in r["fit"],
            "binary cells": lambda r: r["fit"].startswith("binary")}
    return lines, sets


def score_fit(path: Path) -> dict:
    """The default and rcorr on one saved fit: [√PEHE_out, ε_ATE_out, ε_ATT_out] each."""
    from csna.shrink import E_CLIP, TEST_Z, _residuals

    g = default_on_saved_fit(path)
    rule, c, score, full = g["rule"], g["c"], g["score"], g["default"]
    ry, rt, th = _residuals(g["y"], g["t"], g["a0"], g["a1"], np.clip(g["e1"], E_CLIP, 1 - E_CLIP))
    tau_s = rule["level"] + rule["scale"] * (th - c)  # on the held-out rows
    delta, gain, se = correction(g["xr"], ry, rt, tau_s, g["x"].astype(np.float64))
    kept = gain > TEST_Z * se
    return {"fit": path.stem, "dir": path.parent.name, "default": score(full),
            "rcorr": score(full + delta if kept else full), "rcorr_always": score(full + delta),
            "kept": bool(kept), "gain": gain, "gain_se": se, "outcome": g["used"]}


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    if sys.argv[1] == "--table":
        from outcome_nuisance import table

        lines, sets = read_fits(sys.argv[2])
        for cand in ("rcorr", "rcorr_always"):
            table(lines, cand, sets)
        kept = [r["fit"] for r in lines if r["kept"]]
        print(f"δ kept on {len(kept)} of {len(lines)} fits: {', '.join(kept)}")
        return
    dump(sys.argv[1:], score_fit)


if __name__ == "__main__":
    main()
