"""The figures of a run (design §7, seed §IX), drawn from plain arrays.

Shape alphabet: n units, k nodes, h heads, nb gated blocks, K treatments.

Matplotlib's object API with the Agg canvas: no pyplot state, no GUI backend, safe in tests and
on servers. Every function writes one PNG and returns its path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .phases import PHASES

DPI = 110


def _figure(w: float, h: float) -> Figure:
    fig = Figure(figsize=(w, h), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def node_names(k: int, names: list[str] | None = None) -> list[str]:
    """The nodes' labels: the variables' names with variable nodes, z0 … z(k-1) otherwise."""
    return list(names) if names is not None and len(names) == k else [f"z{i}" for i in range(k)]


def _node_ticks(ax, k: int, x_label: str, y_label: str, names: list[str] | None = None) -> None:
    names = node_names(k, names)
    ax.set_xticks(range(k), names, rotation=90 if max(map(len, names)) > 3 else 0)
    ax.set_yticks(range(k), names)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)


def loss_curves(history: dict[str, list[dict]], path: Path) -> Path:
    """One panel per phase: its epoch-mean losses (and validation loss or reward) per epoch."""
    phases = sorted(history, key=int)
    if not phases:
        fig = _figure(6.0, 3.0)
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no training history in this run directory", ha="center", va="center")
        ax.set_axis_off()
        return _save(fig, path)
    cols = min(len(phases), 2)
    rows = (len(phases) + cols - 1) // cols
    fig = _figure(5.6 * cols, 3.9 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    all_keys = sorted({k for ph in phases for r in history[ph] for k in r if k.startswith(("loss/", "val/", "rl/"))})
    # One colour per quantity in every panel; a validation curve takes its training twin's colour.
    palette = _cmap("tab20").colors
    twin = {k: t for k in all_keys if k.startswith("val/")
            for t in (f"loss/{k[4:]}", f"rl/{k[4:]}") if t in all_keys}
    own = [k for k in all_keys if k not in twin]
    colour = {k: palette[(2 * i) % 20 + (2 * i) // 20 % 2] for i, k in enumerate(own)}
    colour.update({k: colour[t] for k, t in twin.items()})
    for ax in axes[len(phases):]:
        ax.set_axis_off()
    for ax, ph in zip(axes, phases):
        recs = history[ph]
        epochs = [r.get("epoch", i + 1) for i, r in enumerate(recs)]
        keys = [k for k in all_keys if any(k in r for r in recs) and k != "loss/reg"]  # L_reg = dc + dis + stable
        log = int(ph) < 4 and all(r[k] > 0 for r in recs for k in keys if k in r)
        for key in keys:
            ys = [r.get(key, np.nan) for r in recs]
            ax.plot(epochs, ys, "--" if key.startswith("val/") else "-", color=colour[key], marker="o", ms=4,
                    label=key)
        if log:
            ax.set_yscale("log")
        if len(epochs) <= 12:
            ax.set_xticks(epochs)
        name = PHASES[int(ph)].name if int(ph) in PHASES else ""
        ax.set_title(f"phase {ph}: {name}", fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss (log scale)" if log else "reward, rate, value")
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
        ax.grid(alpha=0.3)
    fig.suptitle("Training curves per phase (epoch means; dashed: validation)")
    return _save(fig, path)


def adjacency_heatmap(A: np.ndarray, path: Path, names: list[str] | None = None) -> Path:
    """A (k, k) as a heatmap, with the weight written in each cell."""
    k = A.shape[0]
    fig = _figure(1.0 + 0.6 * k + 1.2, 0.6 * k + 1.6)
    ax = fig.add_subplot()
    im = ax.imshow(A, cmap="Blues", vmin=0.0, vmax=max(float(A.max()), 1e-6))
    for i in range(k if k <= 16 else 0):  # weights written in the cells while they fit
        for j in range(k):
            if i != j:
                ax.text(j, i, f"{A[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if A[i, j] > 0.6 * A.max() else "black")
    _node_ticks(ax, k, "child j", "parent i", names)
    ax.set_title("Learned causal graph A\n(A[i, j] > 0: edge i → j)", fontsize=10)
    fig.colorbar(im, ax=ax, label="edge weight", shrink=0.8)
    return _save(fig, path)


def graph_drawing(A: np.ndarray, path: Path, eps: float = 0.0, names: list[str] | None = None) -> Path:
    """The directed graph of A drawn with networkx; edge width and shade follow A."""
    import networkx as nx

    k = A.shape[0]
    labels = node_names(k, names)
    g = nx.DiGraph()
    g.add_nodes_from(labels)
    edges = [(labels[i], labels[j], float(A[i, j])) for i in range(k) for j in range(k) if i != j and A[i, j] > eps]
    g.add_weighted_edges_from(edges)
    pos = nx.circular_layout(g)
    fig = _figure(6.0, 6.0)
    ax = fig.add_subplot()
    top = max((w for *_, w in edges), default=1.0)
    weights = [w for *_, w in edges]
    nx.draw_networkx_nodes(g, pos, ax=ax, node_size=900, node_color="#dbe9f6", edgecolors="#2b5d8a")
    nx.draw_networkx_labels(g, pos, ax=ax, font_size=11)
    if edges:
        nx.draw_networkx_edges(g, pos, ax=ax, edgelist=[(a, b) for a, b, _ in edges],
                               width=[0.4 + 4.0 * w / top for w in weights], edge_color=weights,
                               edge_cmap=_cmap("Blues"), edge_vmin=-0.3 * top, edge_vmax=top,
                               arrows=True, arrowstyle="-|>", arrowsize=14, node_size=900,
                               connectionstyle="arc3,rad=0.12")
    n_pairs = k * (k - 1)
    ax.set_title(f"Learned causal graph: {len(edges)} of {n_pairs} possible edges\n"
                 f"(arrow i → j: i is a parent of j; width ∝ A[i, j], max {top:.2f})", fontsize=10)
    ax.set_axis_off()
    return _save(fig, path)


def _cmap(name: str):
    import matplotlib

    return matplotlib.colormaps[name]


def attention_heads(attn: np.ndarray, path: Path, n_rows: int) -> Path:
    """A_causal: the last attention block's map per head (h, k, k), averaged over test rows."""
    h, k, _ = attn.shape
    cols = min(h, 4)
    rows = (h + cols - 1) // cols
    fig = _figure(0.8 + 3.1 * cols, 0.4 + 3.2 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    # Shared colour range from the data, not from 0: near-uniform maps would look flat.
    lo, hi = float(attn.min()), float(attn.max())
    im = None
    for ax in axes[h:]:
        ax.set_axis_off()
    for i, ax in enumerate(axes[:h]):
        im = ax.imshow(attn[i], cmap="magma", vmin=lo, vmax=max(hi, lo + 1e-6))
        _node_ticks(ax, k, "key j (attended to)", "query i" if i % cols == 0 else "")
        ax.tick_params(labelsize=7)
        ax.set_title(f"head {i}", fontsize=10)
    fig.colorbar(im, ax=list(axes), label="attention weight", shrink=0.85)
    fig.suptitle(f"A_causal: last attention block, mean over {n_rows} test units (uniform = {1 / k:.3f})")
    return _save(fig, path)


def utility_heatmap(u: np.ndarray, names: list[str], gated: bool, path: Path) -> Path:
    """u (n, nb) per test unit and block; rows sorted by mean utility."""
    n, nb = u.shape
    order = np.argsort(u.mean(axis=1), kind="stable")
    fig = _figure(2.2 + 1.3 * nb, 5.0)
    ax = fig.add_subplot()
    im = ax.imshow(u[order], aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
    rates = (u >= 0.5).mean(axis=0)
    ax.set_xticks(range(nb), [f"{nm}\nu ≥ 0.5: {r:.0%}" for nm, r in zip(names, rates)], fontsize=8)
    ax.set_xlabel("gated block")
    ax.set_ylabel(f"test unit ({n}, sorted by mean u)")
    if gated:
        title = "Meta Utility u per unit and block\n(block runs where u ≥ 0.5)"
    else:
        title = ("Meta Utility u (NOT gated: phase 4 not trained,\nevery block runs; u of the untrained controller)")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, label="utility u")
    return _save(fig, path)


def theta_curve(theta: list[tuple[np.ndarray, np.ndarray]], d_max: int | None, k: int, path: Path) -> Path:
    """θ(d) = θ0 + w·clip(d, −d_max, d_max) per head, one panel per attention block."""
    nb = max(len(theta), 1)
    fig = _figure(4.4 * nb, 3.6)
    axes = fig.subplots(1, nb, squeeze=False)[0]
    span = (d_max if d_max is not None else k - 1) + 2
    d = np.arange(-span, span + 1)
    dc = np.clip(d, -d_max, d_max) if d_max is not None else d
    for b, ax in enumerate(axes):
        if b >= len(theta):
            ax.text(0.5, 0.5, "no attention block", ha="center", va="center")
            ax.set_axis_off()
            continue
        theta0, w = theta[b]
        for i in range(len(theta0)):
            ax.plot(d, theta0[i] + w[i] * dc, marker="o", ms=3,
                    label=f"head {i}: θ0={round(float(theta0[i]), 3) + 0.0:+.3f}, w={w[i]:.3f}")
        if d_max is not None:
            for lo, hi in ((-span - 0.5, -d_max), (d_max, span + 0.5)):
                ax.axvspan(lo, hi, color="grey", alpha=0.15, lw=0)
        ax.set_xlim(-span - 0.5, span + 0.5)
        ax.set_xlabel("causal distance d(i, j)" + (f"  (shaded: clipped at ±{d_max})" if d_max else ""))
        ax.set_ylabel("angle θ(d) (× ω_f rad)")
        ax.set_title(f"attention.{b}: θ(d) = θ0 + w·clip(d)\n(equal heads draw over each other)", fontsize=10)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    return _save(fig, path)


def attention_vs_distance(attn: np.ndarray, dist: np.ndarray, unrelated: np.ndarray, path: Path) -> Path:
    """Mean attention weight of (query i, key j) pairs grouped by causal distance d(i, j)."""
    h, k, _ = attn.shape
    eye = np.eye(k, dtype=bool)
    related = ~unrelated & ~eye
    groups: list[tuple[str, np.ndarray]] = [("self", eye)]
    for v in np.unique(dist[related]):
        groups.append((f"d={int(v):+d}" if v else "d=0\n(cycle)", related & (dist == v)))
    groups.append(("unrelated", unrelated))
    groups = [(lbl, m) for lbl, m in groups if m.any()]
    per_head = np.array([[attn[i][m].mean() for _, m in groups] for i in range(h)])  # (h, groups)
    x = np.arange(len(groups))
    fig = _figure(max(6.5, 3.0 + 0.9 * len(groups)), 4.2)
    ax = fig.add_subplot()
    ax.bar(x, per_head.mean(axis=0), color="#7fa7d0", label="mean over heads")
    for i in range(h):
        ax.plot(x, per_head[i], "o", ms=4, label=f"head {i}")
    ax.axhline(1.0 / k, ls="--", color="grey", label=f"uniform 1/k = {1 / k:.3f}")
    ax.set_xticks(x, [f"{lbl}\n{int(m.sum())} pair{'s' if m.sum() > 1 else ''}" for lbl, m in groups], fontsize=8)
    ax.set_xlabel("causal distance d(i, j), query i, key j\n(d > 0: key j is an ancestor of i; d < 0: a descendant)")
    ax.set_ylabel("mean attention weight")
    ax.set_title("Attention weight by causal distance\n(last block, mean over test units)", fontsize=10)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return _save(fig, path)


def tau_scatter(tau_true: np.ndarray, tau_hat: np.ndarray, path: Path) -> Path:
    """Predicted against true τ(x) on the test units, with the identity line."""
    from .metrics import pearson, sqrt_pehe

    fig = _figure(4.8, 4.6)
    ax = fig.add_subplot()
    ax.scatter(tau_true, tau_hat, s=14, alpha=0.7, edgecolors="none")
    lo = float(min(tau_true.min(), tau_hat.min()))
    hi = float(max(tau_true.max(), tau_hat.max()))
    ax.plot([lo, hi], [lo, hi], "--", color="grey", label="τ̂ = τ")
    ax.set_xlabel("true effect τ(x)")
    ax.set_ylabel("predicted effect τ̂(x)")
    ax.set_title(f"Individual effects, {len(tau_true)} test units\n"
                 f"Pearson r = {pearson(tau_true, tau_hat):.3f}, √PEHE = {sqrt_pehe(tau_true, tau_hat):.3f}",
                 fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def propensity_overlap(prop: np.ndarray, T: np.ndarray, path: Path, low: float = 0.05, high: float = 0.95) -> Path:
    """Histogram of ê(x) by treatment group: P(T=1|x) for K = 2, else P(T = own group | x)."""
    K = prop.shape[1]
    fig = _figure(5.6, 3.8)
    ax = fig.add_subplot()
    bins = np.linspace(0.0, 1.0, 31)
    for t in range(K):
        rows = T == t
        if rows.any():
            e = prop[rows, 1] if K == 2 else prop[rows, t]
            ax.hist(e, bins=bins, alpha=0.55, label=f"T = {t} ({int(rows.sum())} units)")
    for v in (low, high):
        ax.axvline(v, ls="--", color="grey")
    ax.set_xlim(0, 1)
    ax.set_xlabel("estimated propensity ê(x) = P(T=1 | x)" if K == 2 else "ê(x) = P(T = own group | x)")
    ax.set_ylabel("units")
    ax.set_title(f"Propensity overlap by treatment group (dashed: {low}, {high})", fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, path)
