"""results.csv (one row per estimator × replication) and results.md (mean ± standard error, and
like-for-like pairs: single csna against the single peers, csna's ensemble against the peers'
ensembles, paired replication by replication)."""

from __future__ import annotations

import sys

import os
import platform
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .peers import LIKE_FOR_LIKE

METRICS = ["sqrt_pehe_in", "sqrt_pehe_out", "eps_ate_in", "eps_ate_out"]
TITLES = {"sqrt_pehe_in": "√PEHE in", "sqrt_pehe_out": "√PEHE out", "eps_ate_in": "ε_ATE in",
          "eps_ate_out": "ε_ATE out", "auc_out": "AUC out"}


# csna's rows also carry its doubly-robust estimates and interval coverage (bench.run.interval_columns)
INTERVAL_COLUMNS = ["ate_dr", "ate_dr_se", "att_dr", "att_dr_se", "eps_ate_dr", "eps_att_dr", "ate_dr_covered",
                    "att_dr_covered", "cate_covered_out", "cate_se_out"]


def with_intervals(rows: list[dict[str, Any]], cols: list[str]) -> list[str]:
    """``cols`` and the interval columns some row has."""
    return cols + [c for c in INTERVAL_COLUMNS if any(c in r for r in rows)]


def known_columns(df: pd.DataFrame, cols: list[str]) -> bool:
    """Whether ``df`` has exactly ``cols`` first, then only interval columns."""
    return list(df.columns[:len(cols)]) == cols and set(df.columns[len(cols):]) <= set(INTERVAL_COLUMNS)


def records(df: pd.DataFrame, cols: list[str]) -> list[dict[str, Any]]:
    """Rows of a results file as written: an interval column a row did not have (a peer's) is
    dropped rather than read back as NaN (v == v fails only for NaN)."""
    return [{k: v for k, v in r.items() if k in cols or v == v} for r in df.to_dict("records")]


def columns(binary: bool) -> list[str]:
    """The results.csv columns; ``flops_fit`` is the FLOPs of the fit where the estimator counts them
    (the neural peers), ``split_id`` fingerprints the test rows each row was scored on."""
    return (["estimator", "replication"] + METRICS + (["auc_out"] if binary else [])
            + ["fit_seconds", "flops_fit", "split_id"])


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def read_csv(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, dtype={"split_id": str})
    if "flops_fit" not in df.columns and "split_id" in df.columns:  # written before FLOPs were recorded
        df.insert(df.columns.get_loc("split_id"), "flops_fit", np.nan)
    return df


def write_csv(rows: list[dict[str, Any]], path: Path, binary: bool) -> pd.DataFrame:
    """Rows sorted by estimator then replication; the error rows are left out."""
    kept = [r for r in rows if "error" not in r]
    df = pd.DataFrame(kept, columns=with_intervals(kept, columns(binary)))
    df = df.sort_values(["estimator", "replication"], kind="stable").reset_index(drop=True)
    _atomic_write(path, df.to_csv(index=False, float_format="%.6g"))
    return df


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per estimator: n, mean and standard error of each metric, median and mean fit seconds, mean
    FLOPs per fit (NaN where not counted); sorted by mean √PEHE out (ties and NaN last)."""
    metrics = [m for m in METRICS + ["auc_out"] if m in df.columns]
    out = []
    for name, g in df.groupby("estimator", sort=False):
        row: dict[str, Any] = {"estimator": name, "n": len(g)}
        for m in metrics:
            v = g[m].to_numpy(dtype=np.float64)
            v = v[np.isfinite(v)]
            row[m] = float(v.mean()) if len(v) else float("nan")
            row[f"{m}_se"] = float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")
        row["fit_seconds_median"] = float(g["fit_seconds"].median())
        row["fit_seconds_mean"] = float(g["fit_seconds"].mean())
        row["flops_fit"] = _finite_mean(g["flops_fit"]) if "flops_fit" in g else float("nan")
        out.append(row)
    s = pd.DataFrame(out)
    return s.sort_values("sqrt_pehe_out", na_position="last", kind="stable").reset_index(drop=True) if len(s) else s


def _finite_mean(values) -> float:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else float("nan")


def paired_difference(ours, theirs) -> dict[str, float]:
    """Paired comparison of one error metric over replications (lower is better).

    Args:
        ours, theirs: (k,) the two estimators' errors on the same k replications, in the same
            order; a replication where either is not finite is left out.

    Returns:
        n pairs, mean and standard error (ddof 1; NaN for n < 2) of ours − theirs, and wins:
        the replications where ours is strictly lower.
    """
    a, b = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    d = (a - b)[np.isfinite(a) & np.isfinite(b)]  # (n,)
    n = len(d)
    return {"n": n, "mean": float(d.mean()) if n else float("nan"),
            "se": float(d.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan"), "wins": int((d < 0).sum())}


def like_for_like(df: pd.DataFrame, pairs=LIKE_FOR_LIKE, metrics=("sqrt_pehe_out", "eps_ate_out")) -> pd.DataFrame:
    """One row per (ours, peer) pair that both have results for: the paired difference of each
    metric over their common replications, and each side's mean fit seconds and FLOPs per fit
    on those replications."""
    out = []
    for ours, peer in pairs:
        a = df[df["estimator"] == ours].set_index("replication")
        b = df[df["estimator"] == peer].set_index("replication")
        common = sorted(set(a.index) & set(b.index))
        if not common:
            continue
        a, b = a.loc[common], b.loc[common]
        row: dict[str, Any] = {"ours": ours, "peer": peer, "n": len(common)}
        for m in metrics:
            row.update({f"{m}_{k}": v for k, v in paired_difference(a[m], b[m]).items()})
        for side, g in (("ours", a), ("peer", b)):
            row[f"fit_seconds_{side}"] = float(g["fit_seconds"].mean())
            row[f"flops_fit_{side}"] = _finite_mean(g["flops_fit"]) if "flops_fit" in g else float("nan")
        out.append(row)
    return pd.DataFrame(out)


def _sci(v: float) -> str:
    return f"{v:.3g}" if np.isfinite(v) else "—"


def _signed(mean: float, se: float) -> str:
    if not np.isfinite(mean):
        return "—"
    return f"{mean:+.3f} ± {se:.3f}" if np.isfinite(se) else f"{mean:+.3f}"


_PAIR_NOTE = (
    "csna's single model against the single peers, csna's ensemble of four against the peers' ensembles "
    "built with its member recipe. Δ = csna − peer on the same replications and test rows (negative: csna "
    "better), mean ± standard error; wins: replications where csna's error is lower. Fit seconds: mean wall "
    "time of one fit (an ensembled peer trains its members one after another; csna's members train as many "
    "at a time as the cores per job allow). FLOPs per fit: the training steps' and validation passes' FLOPs "
    "as FlopCounterMode counts them, summed over members and configurations tried; — where not counted.")
_PAIR_HEADER = ("| csna | peer | n | Δ √PEHE out | wins | Δ ε_ATE out | wins | fit s csna | fit s peer "
                "| FLOPs/fit csna | FLOPs/fit peer |")


def like_for_like_markdown(df: pd.DataFrame) -> list[str]:
    """The results.md section of ``like_for_like`` (no lines when no pair has results)."""
    p = like_for_like(df)
    if not len(p):
        return []
    lines = ["", "## Like for like", "", _PAIR_NOTE, "", _PAIR_HEADER, "|---|---|" + "---:|" * 9]
    for _, r in p.iterrows():
        cells = [_signed(r[f"{m}_mean"], r[f"{m}_se"]) + f" | {r[f'{m}_wins']}/{r[f'{m}_n']}"
                 for m in ("sqrt_pehe_out", "eps_ate_out")]
        lines.append(f"| {r['ours']} | {r['peer']} | {r['n']} | " + " | ".join(cells)
                     + f" | {r['fit_seconds_ours']:.1f} | {r['fit_seconds_peer']:.1f}"
                     + f" | {_sci(r['flops_fit_ours'])} | {_sci(r['flops_fit_peer'])} |")
    return lines


def _pm(mean: float, se: float) -> str:
    if not np.isfinite(mean):
        return "—"
    return f"{mean:.3f} ± {se:.3f}" if np.isfinite(se) else f"{mean:.3f}"


def markdown(df: pd.DataFrame, title: str, labels: dict[str, str], command: str | None = None) -> str:
    """The results.md text: a header saying where and when, then one table row per estimator."""
    s = summary(df)
    metrics = [m for m in METRICS + ["auc_out"] if m in df.columns]
    reps = sorted(df["replication"].unique().tolist()) if len(df) else []
    lines = [f"# {title}", "",
             f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
             f"- machine: {platform.platform()}, {os.cpu_count()} CPU cores, {platform.processor() or 'cpu'}",
             f"- replications: {len(reps)} ({reps[0]}–{reps[-1]})" if reps else "- replications: none",
             "- in = train + validation rows, out = held-out test rows; mean ± standard error over replications",
             ]
    if command:
        lines.append(f"- command: `{command}`")
    flops = len(s) > 0 and bool(np.isfinite(s["flops_fit"]).any())
    lines += ["", "| estimator | n | " + " | ".join(TITLES[m] for m in metrics) + " | median fit s |"
              + (" FLOPs/fit |" if flops else ""),
              "|---|---:|" + "---:|" * len(metrics) + "---:|" + ("---:|" if flops else "")]
    for _, r in s.iterrows():
        cells = [_pm(r[m], r[f"{m}_se"]) for m in metrics]
        lines.append(f"| {r['estimator']} | {r['n']} | " + " | ".join(cells) + f" | {r['fit_seconds_median']:.1f} |"
                     + (f" {_sci(r['flops_fit'])} |" if flops else ""))
    used = [e for e in s["estimator"]] if len(s) else []
    notes = [f"- **{e}**: {labels[e]}" for e in used if e in labels]
    if notes:
        lines += ["", "Estimators:", ""] + notes
    lines += like_for_like_markdown(df)
    return "\n".join(lines) + "\n"


def write_markdown(df: pd.DataFrame, path: Path, title: str, labels: dict[str, str],
                   command: str | None = None) -> None:
    _atomic_write(path, markdown(df, title, labels, command))


def report_failures(out: Path, failures: list[dict[str, Any]], command: str) -> int:
    """Write failures.log (one entry per failed fit: where, then its traceback), print
    results.md and, when fits failed, a one-line pointer to the log; the exit code."""
    if failures:
        where = [" ".join(str(f[k]) for k in ("cell", "estimator") if f.get(k) is not None)
                 + f" @ {f['replication']}" for f in failures]
        (out / "failures.log").write_text("\n".join(f"{w}\n{f['traceback']}" for w, f in zip(where, failures)))
    print((out / "results.md").read_text())
    if failures:
        print(f"{command}: {len(failures)} fit(s) failed, see {out / 'failures.log'}; "
              "rerun with --resume to retry them", file=sys.stderr)
        return 1
    return 0
