"""λ_causal and L_causal's reference on tuning seeds (issue 18; Session 13's default change).

Saved fits (``benchmarks/effect_shrink.py`` dumps: the members' predictions, the truth and each
member's training rows) of two variants of csna on the same cells and seeds, scored with the
default effect shrinkage; per pair of variants the geometric-mean ratio of √PEHE_out, ε_ATE_out
and ε_ATT_out with the standard error of the mean log ratio (and that mean in standard errors),
the fits where the first is better, and the share of the naive difference's bias that the
ensemble's plug-in level keeps (median over the confounded fits).

    python benchmarks/effect_shrink.py --out D_DEF --cells C --reps 1003                  # the default
    python benchmarks/effect_shrink.py --out D_NC --cells C --reps 1003 --set phase1.lambda_causal=0 ...
    python benchmarks/lambda_causal_tuning.py pair ipw D_DEF λ0 D_NC [aipw D_AIPW λ0 D_NC ...]
    python benchmarks/lambda_causal_tuning.py pooled --dumps "LABEL=A1,A2:B1,B2" ... --rows "LABEL=A.csv:B.csv" ...

``pooled`` concatenates the log ratios of every source (dumps scored here, or csna rows of two
``csna bench suite`` results.csv files on the same splits) for the pre-registered rule.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from effect_shrink import scores  # noqa: E402

METRICS = ("sqrt_pehe_out", "eps_ate_out", "eps_att_out")
_cache: dict[Path, tuple] = {}


def score(p: Path) -> tuple:
    """(√PEHE_out, ε_ATE_out, ε_ATT_out) with the default shrinkage ('rloss')."""
    if p not in _cache:
        _cache[p] = scores(p, 0)["rloss"]
    return _cache[p]


def fits(dirs: str) -> dict[str, Path]:
    return {p.stem: p for d in dirs.split(",") for p in Path(d).glob("*.npz")}


def bias_share(p: Path) -> float:
    """(mean τ̂ − mean τ) / (naive difference − mean τ) over the non-test rows."""
    z = np.load(p)
    n = len(z["T"])
    cand = np.setdiff1d(np.arange(n), z["test"])
    ens = z["mus"].mean(0)
    tau_hat, tau = ens[:, 1] - ens[:, 0], z["mu"][:, 1] - z["mu"][:, 0]
    t, y = z["T"][cand], z["Y"][cand].astype(float)
    naive = y[t == 1].mean() - y[t == 0].mean() - tau[cand].mean()
    return float((tau_hat[cand].mean() - tau[cand].mean()) / naive) if abs(naive) > 1e-9 else float("nan")


def log_ratios(a: tuple, b: tuple) -> list[float]:
    return [float(np.log((a[i] + 1e-3) / (b[i] + 1e-3))) for i in range(3)]


def summary(lr: np.ndarray) -> str:
    lr = lr[np.isfinite(lr)]
    se = lr.std(ddof=1) / np.sqrt(len(lr))
    better = f"{(lr < 0).sum()}/{len(lr)}"
    return f"{np.exp(lr.mean()):.3f} (log s.e. {se:.3f}; {lr.mean() / se:+.1f} s.e.), better on {better}"


def pair(name_a: str, dirs_a: str, name_b: str, dirs_b: str) -> None:
    A, B = fits(dirs_a), fits(dirs_b)
    keys = sorted(set(A) & set(B))
    print(f"\n#### {name_a} / {name_b}: {len(keys)} fits\n")
    print(f"| fit | √PEHE_out {name_a} | {name_b} | ε_ATE_out {name_a} | {name_b} | bias kept {name_a} | {name_b} |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    lrs, shares = [], []
    for k in keys:
        a, b = score(A[k]), score(B[k])
        lrs.append(log_ratios(a, b))
        shares.append((bias_share(A[k]), bias_share(B[k]), "randomised" in k))
        sa, sb = shares[-1][:2]
        print(f"| {k} | {a[0]:.3f} | {b[0]:.3f} | {a[1]:.3f} | {b[1]:.3f} | {sa:+.2f} | {sb:+.2f} |")
    lrs = np.array(lrs)
    print()
    for i, m in enumerate(METRICS):
        print(f"- {m}: {name_a}/{name_b} {summary(lrs[:, i])}")
    s = np.array([(x, y) for x, y, rand in shares if not rand and np.isfinite(x) and np.isfinite(y)])
    print(f"- median share of the naive difference's bias kept by the plug-in level (confounded fits): "
          f"{name_a} {np.median(s[:, 0]):.2f}, {name_b} {np.median(s[:, 1]):.2f}")


def pooled(dump_specs: list[str], row_specs: list[str]) -> None:
    rows = []
    for spec in dump_specs:
        label, ab = spec.split("=", 1)
        da, db = ab.split(":")
        A, B = fits(da), fits(db)
        rows += [[label, k, *log_ratios(score(A[k]), score(B[k]))] for k in sorted(set(A) & set(B))]
    for spec in row_specs:
        label, ab = spec.split("=", 1)
        fa, fb = ab.split(":")
        a, b = (pd.read_csv(f) for f in (fa, fb))
        m = a[a.estimator == "csna"].merge(b[b.estimator == "csna"], on=["cell", "replication"], suffixes=("_a", "_b"))
        assert (m.split_id_a == m.split_id_b).all(), "different splits"
        for _, r in m.iterrows():
            lr = [float(np.log((r[c + "_a"] + 1e-3) / (r[c + "_b"] + 1e-3))) for c in METRICS]
            rows.append([label, f"{r['cell']}-{r['replication']}", *lr])
    df = pd.DataFrame(rows, columns=["source", "fit", *METRICS])
    print("| tuning fits | n | √PEHE_out | ε_ATE_out | ε_ATT_out |")
    print("|---|---:|---|---|---|")
    for label, g in list(df.groupby("source", sort=False)) + [("**pooled**", df)]:
        print(f"| {label} | {len(g)} | " + " | ".join(summary(g[m].to_numpy()) for m in METRICS) + " |")


def main() -> None:
    warnings.filterwarnings("ignore")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pair")
    p.add_argument("specs", nargs="+", help="NAME_A DIRS_A NAME_B DIRS_B, repeated")
    q = sub.add_parser("pooled")
    q.add_argument("--dumps", action="append", default=[], help="LABEL=DIRS_A:DIRS_B (comma-separated dirs)")
    q.add_argument("--rows", action="append", default=[], help="LABEL=A.csv:B.csv (csna bench suite results)")
    args = ap.parse_args()
    if args.cmd == "pair":
        s = args.specs
        for i in range(0, len(s) - 3, 4):
            pair(*s[i:i + 4])
    else:
        pooled(args.dumps, args.rows)


if __name__ == "__main__":
    main()
