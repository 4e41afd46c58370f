"""The stress suite's results: results.csv (one row per cell × estimator × replication),
results.md (the ratio to the best other estimator, per estimator and per cell) and the heat map.

The ratio of estimator e on cell c is its mean over the cell's replications divided by the
lowest mean of the *other* estimators run on that cell: above 1 it trails the best of the others
by that factor, below 1 it is the cell's best by that margin (where e is not the best, this is
its ratio to the cell's best estimator). Lower metrics are better throughout.

Shape alphabet: c cells, e estimators.
"""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .results import _atomic_write, with_intervals

METRICS = ["sqrt_pehe_in", "sqrt_pehe_out", "eps_ate_in", "eps_ate_out", "eps_att_out"]
RATIO_METRICS = ["sqrt_pehe_out", "eps_ate_out", "eps_att_out"]
TITLES = {"sqrt_pehe_out": "√PEHE out", "eps_ate_out": "ε_ATE out", "eps_att_out": "ε_ATT out"}
COLUMNS = ["cell", "estimator", "replication"] + METRICS + ["fit_seconds", "flops_fit", "split_id"]
HEATMAP = "heatmap_sqrt_pehe_out.png"


def read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"split_id": str, "cell": str})


def write_csv(rows: list[dict[str, Any]], path: Path, cell_order: list[str]) -> pd.DataFrame:
    """Rows sorted by cell (in the suite's order), estimator and replication; error rows left out.
    The interval columns are written when some row has them."""
    kept = [r for r in rows if "error" not in r]
    df = pd.DataFrame(kept, columns=with_intervals(kept, COLUMNS))
    rank = {c: i for i, c in enumerate(cell_order)}
    df = df.assign(_k=df["cell"].map(lambda c: rank.get(c, len(rank))))
    df = df.sort_values(["_k", "cell", "estimator", "replication"], kind="stable").drop(columns="_k")
    df = df.reset_index(drop=True)
    _atomic_write(path, df.to_csv(index=False, float_format="%.6g"))
    return df


def cell_means(df: pd.DataFrame, metric: str, cell_order: list[str] | None = None) -> pd.DataFrame:
    """(c, e) mean of ``metric`` over each cell's replications (non-finite values left out; NaN
    where an estimator has no finite value on a cell)."""
    v = df.assign(_v=pd.to_numeric(df[metric], errors="coerce").where(lambda s: np.isfinite(s)))
    means = v.pivot_table(index="cell", columns="estimator", values="_v", aggfunc="mean", dropna=False)
    if cell_order is not None:
        means = means.reindex([c for c in cell_order if c in means.index])
    return means


def ratio_to_best(means: pd.DataFrame) -> pd.DataFrame:
    """(c, e) each estimator's cell mean over the lowest cell mean of the other estimators (NaN
    where it has no mean, or no other estimator has one)."""
    m = means.to_numpy(dtype=np.float64)  # (c, e)
    out = np.full_like(m, np.nan)
    for j in range(m.shape[1]):
        others = np.delete(m, j, axis=1)  # (c, e - 1)
        best = np.where(np.isfinite(others), others, np.inf).min(axis=1, initial=np.inf)  # (c,)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[:, j] = np.where(np.isfinite(best) & np.isfinite(m[:, j]), m[:, j] / best, np.nan)
    return pd.DataFrame(out, index=means.index, columns=means.columns)


def ratio_summary(means: pd.DataFrame) -> pd.DataFrame:
    """Per estimator: cells with a mean, the mean and the worst of its ratios over them, and the
    cells where it is last (the highest mean among the estimators of a cell, two or more of them;
    ties count for each)."""
    r = ratio_to_best(means)
    m = means.to_numpy(dtype=np.float64)  # (c, e)
    finite = np.isfinite(m)
    worst = np.nanmax(np.where(finite, m, -np.inf), axis=1)  # (c,)
    contested = finite.sum(axis=1) >= 2
    rows = []
    for j, name in enumerate(means.columns):
        rj = r.iloc[:, j].to_numpy()
        ok = np.isfinite(rj)
        rows.append({"estimator": name, "cells": int(finite[:, j].sum()),
                     "mean_ratio": float(rj[ok].mean()) if ok.any() else float("nan"),
                     "worst_ratio": float(rj[ok].max()) if ok.any() else float("nan"),
                     "last": int((contested & finite[:, j] & (m[:, j] == worst)).sum())})
    return pd.DataFrame(rows).set_index("estimator")


def _g(v: float, digits: int = 3) -> str:
    """Three significant digits, but whole numbers (no exponent) from 1,000 up: earnings are in thousands."""
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.{digits}g}"


def _pm(v: np.ndarray) -> str:
    v = v[np.isfinite(v)]
    if not len(v):
        return "—"
    return f"{_g(v.mean())} ± {_g(v.std(ddof=1) / np.sqrt(len(v)), 2)}" if len(v) > 1 else _g(v.mean())


def _r(v: float) -> str:
    return f"{v:.2f}" if np.isfinite(v) else "—"


def summary_table(df: pd.DataFrame, cell_order: list[str]) -> pd.DataFrame:
    """Per estimator: for each of RATIO_METRICS its mean ratio, last count and worst ratio, and the
    mean fit seconds; sorted by the mean √PEHE_out ratio."""
    parts = []
    for metric in RATIO_METRICS:
        s = ratio_summary(cell_means(df, metric, cell_order))
        parts.append(s.add_prefix(f"{metric}:"))
    out = pd.concat(parts, axis=1)
    out["fit_seconds"] = df.groupby("estimator")["fit_seconds"].mean()
    return out.sort_values("sqrt_pehe_out:mean_ratio", na_position="last", kind="stable")


def markdown(df: pd.DataFrame, cells: list, labels: dict[str, str], command: str | None,
             failures: list[dict], reps: list[int]) -> str:
    """results.md: where and when, the per-estimator ratios, then one table per cell."""
    order = [c.name for c in cells]
    lines = ["# csna bench suite: the stress suite", "",
             f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
             f"- machine: {platform.platform()}, {os.cpu_count()} CPU cores",
             f"- replications: {reps[0]}–{reps[-1]} ({len(reps)}); seeds 0–999 are the reported ones, "
             "defaults are tuned on seeds ≥ 1000 only (docs/stress_suite.md)" if reps else "- replications: none",
             "- out = the held-out test rows of csna's own split of each cell (every estimator the same rows)"]
    if command:
        lines.append(f"- command: `{command}`")
    lines += ["", "## Per estimator: ratio to the best other estimator of each cell", "",
              "Mean over cells of (its cell mean) / (the lowest cell mean of the other estimators on that "
              "cell); below 1 it won the cell. last: cells where its mean is the highest. worst: its highest ratio.",
              ""]
    if len(df):
        s = summary_table(df, order)
        head = "| estimator | cells | " + " | ".join(f"{TITLES[m]} ratio | last | worst" for m in RATIO_METRICS)
        lines += [head + " | mean fit s |", "|---|---:|" + "---:|" * (3 * len(RATIO_METRICS) + 1)]
        for name, r in s.iterrows():
            cells_run = int(r["sqrt_pehe_out:cells"])
            vals = [f"{_r(r[f'{m}:mean_ratio'])} | {int(r[f'{m}:last'])} | {_r(r[f'{m}:worst_ratio'])}"
                    for m in RATIO_METRICS]
            lines.append(f"| {name} | {cells_run} | " + " | ".join(vals) + f" | {r['fit_seconds']:.1f} |")
        lines += ["", f"![√PEHE_out ratio, cells × estimators]({HEATMAP})"]
    restricted = [c for c in cells if c.skip]
    if restricted:
        lines += ["", "Not run for cost: " + "; ".join(f"{c.name}: {', '.join(c.skip)}" for c in restricted) + "."]
    if failures:
        lines += ["", f"## Failed fits ({len(failures)})", "", "| cell | estimator | replication | error |",
                  "|---|---|---:|---|"]
        lines += [f"| {f.get('cell', '')} | {f['estimator']} | {f['replication']} | {f['error']} |" for f in failures]
    lines += ["", "## Per cell", "", "Mean ± standard error over replications; fit s: mean seconds per fit."]
    for cell in cells:
        g = df[df["cell"] == cell.name]
        if not len(g):
            continue
        lines += ["", f"### {cell.name}: {cell.varies}", "",
                  "| estimator | reps | √PEHE out | ε_ATE out | ε_ATT out | fit s |", "|---|---:|---:|---:|---:|---:|"]
        by = sorted(g.groupby("estimator"), key=lambda kv: np.nanmean(kv[1]["sqrt_pehe_out"].to_numpy(float)))
        for name, e in by:
            vals = [_pm(e[m].to_numpy(dtype=np.float64)) for m in RATIO_METRICS]
            lines.append(f"| {name} | {len(e)} | " + " | ".join(vals) + f" | {e['fit_seconds'].mean():.1f} |")
    used = sorted(set(df["estimator"])) if len(df) else []
    notes = [f"- **{e}**: {labels[e]}" for e in used if e in labels]
    if notes:
        lines += ["", "Estimators:", ""] + notes
    return "\n".join(lines) + "\n"


def write_heatmap(df: pd.DataFrame, path: Path, cell_order: list[str]) -> Path | None:
    """Cells × estimators, colour log2 of the √PEHE_out ratio (white at 1), the ratio written in."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.figure import Figure

    means = cell_means(df, "sqrt_pehe_out", cell_order)
    if means.empty:
        return None
    order = summary_table(df, cell_order).index
    r = ratio_to_best(means)[[e for e in order if e in means.columns]]  # (c, e)
    v = np.log2(r.to_numpy(dtype=np.float64))
    fig = Figure(figsize=(max(5.5, 2.5 + 0.62 * r.shape[1]), 1.4 + 0.32 * r.shape[0]), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(np.clip(v, -1, 2), cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -1.0, 2.0), aspect="auto")
    for (i, j), x in np.ndenumerate(r.to_numpy()):
        if np.isfinite(x):
            ax.text(j, i, f"{x:.2f}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(r.shape[1]), r.columns, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(r.shape[0]), r.index, fontsize=8)
    ax.set_title("√PEHE_out ratio to the best other estimator (blue: best of the cell)", fontsize=9)
    fig.colorbar(im, ax=ax, label="log2 ratio (clipped to [−1, 2])")
    fig.savefig(path)
    return path
