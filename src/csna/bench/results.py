"""results.csv (one row per estimator × replication) and results.md (mean ± standard error)."""

from __future__ import annotations

import os
import platform
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

METRICS = ["sqrt_pehe_in", "sqrt_pehe_out", "eps_ate_in", "eps_ate_out"]
TITLES = {"sqrt_pehe_in": "√PEHE in", "sqrt_pehe_out": "√PEHE out", "eps_ate_in": "ε_ATE in",
          "eps_ate_out": "ε_ATE out", "auc_out": "AUC out"}


def columns(binary: bool) -> list[str]:
    """The results.csv columns; ``split_id`` fingerprints the test rows each row was scored on."""
    return ["estimator", "replication"] + METRICS + (["auc_out"] if binary else []) + ["fit_seconds", "split_id"]


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"split_id": str})


def write_csv(rows: list[dict[str, Any]], path: Path, binary: bool) -> pd.DataFrame:
    """Rows sorted by estimator then replication; the error rows are left out."""
    cols = columns(binary)
    df = pd.DataFrame([r for r in rows if "error" not in r], columns=cols)
    df = df.sort_values(["estimator", "replication"], kind="stable").reset_index(drop=True)
    _atomic_write(path, df.to_csv(index=False, float_format="%.6g"))
    return df


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per estimator: n, mean and standard error of each metric, median fit seconds; sorted by
    mean √PEHE out (ties and NaN last)."""
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
        out.append(row)
    s = pd.DataFrame(out)
    return s.sort_values("sqrt_pehe_out", na_position="last", kind="stable").reset_index(drop=True) if len(s) else s


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
    lines += ["", "| estimator | n | " + " | ".join(TITLES[m] for m in metrics) + " | median fit s |",
              "|---|---:|" + "---:|" * len(metrics) + "---:|"]
    for _, r in s.iterrows():
        cells = [_pm(r[m], r[f"{m}_se"]) for m in metrics]
        lines.append(f"| {r['estimator']} | {r['n']} | " + " | ".join(cells) + f" | {r['fit_seconds_median']:.1f} |")
    used = [e for e in s["estimator"]] if len(s) else []
    notes = [f"- **{e}**: {labels[e]}" for e in used if e in labels]
    if notes:
        lines += ["", "Estimators:", ""] + notes
    return "\n".join(lines) + "\n"


def write_markdown(df: pd.DataFrame, path: Path, title: str, labels: dict[str, str], command: str | None = None) -> None:
    _atomic_write(path, markdown(df, title, labels, command))
