"""How much would averaging csna over training seeds gain? (a probe for issue 5's next step)

For each IHDP replication, trains the default csna with several seeds on one fixed split and
compares √PEHE_out and ε_ATE_out of each single model (gated, as users run it) with those of the
seeds' mean τ̂(x).

Usage:
    python benchmarks/ensemble_probe.py --reps 1000-1009            # tuning replications only
    python benchmarks/ensemble_probe.py --reps 1000-1009 --seeds 42,43,44,45
    python benchmarks/ensemble_probe.py --reps 1000-1009 --resplit   # members also redraw train/val
Prints one row per replication and a mean ± s.e. summary (paired: ensemble − mean single).
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np

from _common import parse_reps

from csna.config import load_config
from csna.ensemble import train_run
from csna.predict import predict_features


def resplit(splits: dict, t: np.ndarray, seed: int) -> dict:
    """The same test rows; the other rows redrawn into train / validation, stratified by t."""
    from sklearn.model_selection import train_test_split

    rest = np.sort(np.concatenate([splits["train"], splits["val"]]))
    tr, va = train_test_split(rest, test_size=len(splits["val"]), random_state=seed, stratify=t[rest])
    return {"train": np.sort(tr), "val": np.sort(va), "test": splits["test"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", default="1000-1009")
    ap.add_argument("--seeds", default="42,43,44")
    ap.add_argument("--split-seed", type=int, default=42, help="one split for every seed")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--resplit", action="store_true",
                    help="each seed after the first also redraws the train/validation partition (same test rows)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    print(f"{'rep':>5} {'single √PEHE_out (each seed)':>32} {'ensemble':>9} {'single ε_ATE':>26} {'ensemble':>9}")
    for rep in parse_reps(args.reps):
        taus = []
        base, run = None, None
        for j, seed in enumerate(seeds):
            cfg = load_config(None, args.set + ["train.ensemble=1", f"data.replication={rep}", f"train.seed={seed}",
                                                f"data.split_seed={args.split_seed}", "train.progress=false"])
            splits = None
            if args.resplit and run is not None:  # the previous member's data
                splits = resplit(base, run.data.T, j)
            run = train_run(cfg, splits=splits)
            base = base or run.splits
            idx = run.splits["test"]
            mu = predict_features(run, run.prep.features(run.data.X.iloc[idx]), gates=True)["mu"]  # (n, 2)
            taus.append(mu[:, 1] - mu[:, 0])
        truth = run.data.mu[idx, 1] - run.data.mu[idx, 0]  # (n,)
        pehe = [float(np.sqrt(np.mean((t - truth) ** 2))) for t in taus]
        ate = [abs(float(t.mean() - truth.mean())) for t in taus]
        avg = np.mean(taus, axis=0)
        pehe_e, ate_e = float(np.sqrt(np.mean((avg - truth) ** 2))), abs(float(avg.mean() - truth.mean()))
        rows.append((np.mean(pehe), pehe_e, np.mean(ate), ate_e))
        print(f"{rep:>5} {' '.join(f'{v:.3f}' for v in pehe):>32} {pehe_e:>9.3f} "
              f"{' '.join(f'{v:.3f}' for v in ate):>26} {ate_e:>9.3f}", flush=True)
    a = np.array(rows)
    se = lambda x: float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else 0.0  # noqa: E731
    print(f"\n| figure | mean single | ensemble of {len(seeds)} | paired difference |\n|---|---:|---:|---:|")
    print(f"| √PEHE_out | {a[:, 0].mean():.3f} | {a[:, 1].mean():.3f} | "
          f"{(a[:, 1] - a[:, 0]).mean():+.3f} ± {se(a[:, 1] - a[:, 0]):.3f} |")
    print(f"| ε_ATE_out | {a[:, 2].mean():.3f} | {a[:, 3].mean():.3f} | "
          f"{(a[:, 3] - a[:, 2]).mean():+.3f} ± {se(a[:, 3] - a[:, 2]):.3f} |")


if __name__ == "__main__":
    main()
