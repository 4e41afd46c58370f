"""How many ensemble members? csna's own ensemble, member by member, scored at each size.

For each IHDP replication, trains members 0 … M−1 exactly as ``csna train`` with
``train.ensemble: M`` does (member j: seed + j, its own redrawn train / validation split, the
first member's preprocessing; ``ensemble.member_config`` / ``member_splits``) and scores the mean
of the first m members on the test rows for every m in ``--sizes``. The ensemble of m members
is the prefix of the ensemble of M, so one pass prices every size. Member predictions
(μ̂, ê and the member's validation rows) are cached in ``--cache``, one .npz per replication
and member, so a larger size, or ``ate_correction_probe.py``, reuses them.

Usage:
    python benchmarks/ensemble_size.py --reps 1000-1019 --sizes 1,3,4,5    # tuning replications only
Prints per-replication √PEHE_out, ε_ATE_out at each size and a mean ± s.e. summary with the
paired difference against the first size listed after 1 (or the first size).
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import torch

from _common import parse_reps

from csna.config import load_config
from csna.ensemble import member_config, member_splits, train_member
from csna.predict import _predict_member
from csna.prepare import fit_preparation, load_data, split_data


def member_predictions(cfg, data, splits, prep, j: int, cache: Path | None, rep: int) -> dict[str, np.ndarray]:
    """Member j's gated ``mu`` (n, K) and ``propensity`` (n, K) on every row and its ``val``
    mask (n,); from the cache when it is there."""
    f = cache / f"rep{rep}_member{j}.npz" if cache is not None else None
    if f is not None and f.is_file():
        return dict(np.load(f))
    sp = member_splits(splits, data.T, j, cfg.train.ensemble_resplit)
    run = train_member(member_config(cfg, j), data, None, False, sp, prep=prep)
    with torch.no_grad():  # _predict_member is the one-model half of predict_features
        p = _predict_member(run, prep.features(data.X), True, 4096)
    out = {"mu": p["mu"], "propensity": p["propensity"], "val": np.isin(np.arange(data.n), sp["val"])}
    if f is not None:
        np.savez(f, **out)
    return out


def replication(rep: int, members: int, overrides: list[str], cache: Path | None):
    """The data, its split and the first ``members`` members' predictions for one replication."""
    cfg = load_config(None, overrides + [f"data.replication={rep}", "train.progress=false"])
    data = load_data(cfg)
    splits = split_data(cfg, data)
    prep = fit_preparation(cfg, data, splits["train"])
    return data, splits, [member_predictions(cfg, data, splits, prep, j, cache, rep) for j in range(members)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", default="1000-1019")
    ap.add_argument("--sizes", default="1,3,4,5")
    ap.add_argument("--set", action="append", default=[], help="csna config override, KEY=VALUE")
    ap.add_argument("--cache", default=None, help="directory for member predictions (reused across calls)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    sizes = sorted({int(s) for s in args.sizes.split(",")})
    cache = Path(args.cache) if args.cache else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    rows = []
    print(f"{'rep':>5} " + " ".join(f"{'√PEHE M=' + str(m):>11}" for m in sizes)
          + " " + " ".join(f"{'ε_ATE M=' + str(m):>11}" for m in sizes))
    for rep in parse_reps(args.reps):
        data, splits, preds = replication(rep, max(sizes), args.set, cache)
        mus = [p["mu"] for p in preds]
        te = splits["test"]
        truth = data.mu[te, 1] - data.mu[te, 0]
        pehe, ate = [], []
        for m in sizes:
            mu = np.mean(mus[:m], axis=0)[te]
            tau = mu[:, 1] - mu[:, 0]
            pehe.append(float(np.sqrt(np.mean((tau - truth) ** 2))))
            ate.append(abs(float(tau.mean() - truth.mean())))
        rows.append(pehe + ate)
        print(f"{rep:>5} " + " ".join(f"{v:>11.3f}" for v in pehe + ate), flush=True)
    a = np.array(rows)
    k = len(sizes)
    ref = next((i for i, m in enumerate(sizes) if m > 1), 0)
    se = lambda x: float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else 0.0  # noqa: E731
    print(f"\n| members | √PEHE_out | paired vs {sizes[ref]} | ε_ATE_out | paired vs {sizes[ref]} |\n"
          "|---:|---:|---:|---:|---:|")
    for i, m in enumerate(sizes):
        dp, da = a[:, i] - a[:, ref], a[:, k + i] - a[:, k + ref]
        print(f"| {m} | {a[:, i].mean():.3f} ± {se(a[:, i]):.3f} | {dp.mean():+.3f} ± {se(dp):.3f} "
              f"| {a[:, k + i].mean():.3f} ± {se(a[:, k + i]):.3f} | {da.mean():+.3f} ± {se(da):.3f} |")


if __name__ == "__main__":
    main()
