"""``csna evaluate``: every metric of design §6, the seed's three final axes (§X) with their
verdicts, the figures of §7 and ``report.md`` for a run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from . import figures as F
from . import metrics as M
from .data import CausalData
from .evaluate import Evaluation, evaluate_run, split_indices_of
from .graph_export import write_graph
from .rundir import Run

KL_TARGET_NATS = 0.05  # design §6, second final axis
IPW_VERDICT_ROWS = 200  # test rows per arm below which kl_do_ipw is reported without a verdict
COMPUTE_TARGET, COMPUTE_GOAL = 0.20, 0.40  # seed §X, design §6

FIGURES_DIR = "figures"
ALL_FIGURES = ("loss_curves.png", "adjacency.png", "graph.png", "attention_heads.png", "attention_vs_distance.png",
               "theta_curve.png", "utility.png", "tau_scatter.png", "propensity_overlap.png")

# (group, [(key, meaning)]) in the order of the report; "*_full" variants get their own column.
GROUPS: list[tuple[str, list[tuple[str, str]]]] = [
    ("Effects", [
        ("ate", "ATE over all units, mean τ̂(x)"), ("ate_lo", "ATE 95% bootstrap interval, low"),
        ("ate_hi", "ATE 95% bootstrap interval, high"), ("ate_true", "true ATE (semi-synthetic truth)"),
        ("att", "ATT over the treated, mean τ̂(x)"), ("att_lo", "ATT interval, low"), ("att_hi", "ATT interval, high"),
        ("ate_dr", "doubly-robust (AIPW) ATE, cross-fitted, over the `dr_rows` units"),
        ("ate_dr_se", "its standard error (95% interval: ± 1.96 se)"),
        ("att_dr", "doubly-robust ATT, same units"), ("att_dr_se", "its standard error"),
        ("dr_rows", "non-test units held out by at least one ensemble member (new data: all)"),
        ("eps_ate_dr", "|ATE_dr − ATE_true| over those units"), ("eps_att_dr", "|ATT_dr − ATT_true| over those units"),
        ("ate_hat_out", "mean τ̂(x) on the test units"),
        ("sqrt_pehe_in", "√PEHE, train + validation units"), ("sqrt_pehe_out", "√PEHE, test units"),
        ("ref_sqrt_pehe_out", "√PEHE of the gradient-boosting T-learner, test units"),
        ("eps_ate_in", "|ATE − ATE_true|, train + validation"), ("eps_ate_out", "|ATE − ATE_true|, test"),
        ("ref_eps_ate_out", "ε_ATE of the T-learner, test"),
        ("eps_att_in", "ε_ATT, train + validation"), ("eps_att_out", "ε_ATT, test"),
        ("pearson_ite", "Pearson r of τ̂(x) with τ(x), test"),
        ("overlap_frac_extreme", "share of units with ê(x) outside [0.05, 0.95]"),
        ("propensity_min", "smallest ê_t(x)"), ("propensity_max", "largest ê_t(x)"),
    ]),
    ("Task (factual outcome, test units)", [
        ("mse_out", "MSE"), ("rmse_out", "RMSE"), ("ref_rmse_out", "RMSE of the T-learner"),
        ("accuracy_out", "accuracy"), ("ref_accuracy_out", "accuracy of the T-learner"),
        ("auc_out", "AUC-ROC"), ("ref_auc_out", "AUC-ROC of the T-learner"),
    ]),
    ("Causal stability", [
        ("kl_do_ipw", "L_causal: KL(P̂(Y|do(t)) ‖ IPW-reweighted observed Y), nats, test"),
        ("kl_do_obs", "diagnostic: model's KL(P(Y|do(T)) ‖ P(Y|T)), zero when confounding is ignored, nats, test"),
        ("kl_do_true", "KL(P_true(Y|do(t)) ‖ P̂(Y|do(t))), nats, test"),
        ("z_stability", "Pearson r of z(x) with z(x + 0.01·sd noise)"),
    ]),
    ("Structure", [
        ("graph_connectivity", "edges / k(k−1) of the learned graph"),
        ("laplacian_smoothness", "Tr(HᵀLH)/Tr(HᵀH), mean over test units"),
        ("jacobian_spectral_norm", "‖∂z/∂x‖₂, mean over test units"),
        ("jacobian_spectral_norm_max", "‖∂z/∂x‖₂, max over test units"),
        ("utility_entropy", "mean binary entropy of block execution rates, bits"),
        ("attn_weight_self", "mean attention weight on itself"),
        ("attn_weight_near", "… on causally related nodes with |d| ≤ 1"),
        ("attn_weight_far", "… on related nodes with |d| ≥ 2"),
        ("attn_weight_unrelated", "… on causally unrelated nodes"),
    ]),
    ("Compute (per sample, test units)", [
        ("flops_full", "FLOPs per sample, every block run"), ("flops_gated", "FLOPs per sample, as gated"),
        ("flops_reduction", "1 − gated / full; negative: gating costs more than it saves"),
        ("wall_full_ms", "ms per forward over the test units, full"),
        ("wall_gated_ms", "ms per forward over the test units, gated"),
        ("wall_predict_all_ms", "ms to predict every row"), ("time_fit_s", "training time, s"),
        ("time_evaluate_s", "evaluation time, s"),
    ]),
]


# --- the seed's final axes (§X) and the reference model of the first -------------------------


def reference_t_learner(x_train: np.ndarray, t_train: np.ndarray, y_train: np.ndarray, x: np.ndarray,
                        outcome_type: str, K: int, seed: int = 0) -> np.ndarray:
    """A gradient-boosting T-learner (scikit-learn's HistGradientBoosting), one model per arm.

    The "commercial-grade model" of seed §X: fitted on the same training split and features.

    Returns:
        (n, K) predicted E[Y | x, t] (P(Y=1 | x, t) for a binary outcome, the expected class
        index for multiclass).
    """
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from threadpoolctl import threadpool_limits

    # One OpenMP thread on small data: faster, and immune to oversubscribed cores.
    with threadpool_limits(1 if len(x_train) < 20000 else None):
        return _t_learner(x_train, t_train, y_train, x, outcome_type, K, seed,
                          HistGradientBoostingRegressor, HistGradientBoostingClassifier)


def _t_learner(x_train, t_train, y_train, x, outcome_type, K, seed, Reg, Clf) -> np.ndarray:
    mu = np.zeros((len(x), K))
    for t in range(K):
        rows = t_train == t
        y_t = y_train[rows]
        if rows.sum() < 5 or np.unique(y_t).size < 2:  # too few to fit: the arm's mean
            mu[:, t] = float(y_t.mean()) if rows.any() else float(y_train.mean())
            continue
        if outcome_type == "continuous":
            mu[:, t] = Reg(random_state=seed).fit(x_train[rows], y_t).predict(x)
            continue
        clf = Clf(random_state=seed).fit(x_train[rows], y_t)
        proba = clf.predict_proba(x)  # (n, classes seen)
        if outcome_type == "binary":
            mu[:, t] = proba[:, list(clf.classes_).index(1)] if 1 in clf.classes_ else 0.0
        else:
            mu[:, t] = proba @ clf.classes_.astype(np.float64)
    return mu


def reference_metrics(run: Run, data: CausalData, x: np.ndarray, splits: dict[str, np.ndarray]) -> dict[str, Any]:
    """``ref_*`` metrics of the gradient-boosting T-learner on the test rows."""
    tr, te = splits["train"], splits["test"]
    kind = run.prep.outcome_type
    if len(tr) == 0 or len(te) == 0:
        return {}
    mu = reference_t_learner(x[tr], data.T[tr], data.Y[tr], x[te], kind, data.n_treatments, run.cfg.train.seed)
    out: dict[str, Any] = {}
    if data.mu is not None and mu.shape[1] >= 2 and kind != "multiclass":
        tau = data.mu[te, 1] - data.mu[te, 0]
        out["ref_sqrt_pehe_out"] = M.sqrt_pehe(tau, mu[:, 1] - mu[:, 0])
        out["ref_eps_ate_out"] = M.eps_ate(tau, mu[:, 1] - mu[:, 0])
    f = mu[np.arange(len(te)), data.T[te]]  # (n,)
    y = data.Y[te]
    if kind == "continuous":
        out["ref_rmse_out"] = M.rmse(y, f)
    elif kind == "binary":
        out["ref_accuracy_out"] = M.accuracy(y, (f >= 0.5).astype(int))
        if np.unique(y).size == 2:
            out["ref_auc_out"] = M.auc_roc(y, f)
    return out


def final_axes(m: dict[str, Any]) -> dict[str, Any]:
    """The seed's three final axes (§X) with the design's targets (§6), from the metrics."""
    out: dict[str, Any] = {}
    # performance: at least the reference; the effect error where the truth is known
    for mine, ref, higher_better in (("sqrt_pehe_out", "ref_sqrt_pehe_out", False), ("auc_out", "ref_auc_out", True),
                                     ("rmse_out", "ref_rmse_out", False),
                                     ("accuracy_out", "ref_accuracy_out", True)):
        a, b = m.get(mine), m.get(ref)
        if _finite(a) and _finite(b):
            out.update(axis_performance_basis=mine, axis_performance_value=a, axis_performance_target=b,
                       axis_performance_pass=bool(a >= b if higher_better else a <= b))
            break
    else:
        out.update(axis_performance_basis=None, axis_performance_pass=None)
    # Causal stability (design §6, issue 18): a KL that the truth makes small - against the
    # truth where it is known, else against the IPW-reweighted observed outcomes.
    # kl_do_ipw is judged only with at least IPW_VERDICT_ROWS test rows in every arm: with ~75
    # test rows it exceeds the target at the true model about half the time (noise, not a verdict).
    for basis in ("kl_do_true", "kl_do_ipw"):
        if _finite(m.get(basis)):
            enough = basis == "kl_do_true" or m.get("kl_do_ipw_min_arm", 0) >= IPW_VERDICT_ROWS
            out.update(axis_causal_kl_basis=basis, axis_causal_kl_value=m[basis],
                       axis_causal_kl_pass=bool(m[basis] <= KL_TARGET_NATS) if enough else None)
            break
    else:  # neither could be computed (too few units of an arm, or a run saved without ê)
        out.update(axis_causal_kl_basis="kl_do_obs", axis_causal_kl_value=m.get("kl_do_obs"),
                   axis_causal_kl_pass=None)
    out["axis_causal_kl_target_nats"] = KL_TARGET_NATS
    red = m.get("flops_reduction")
    out.update(axis_compute_value=red, axis_compute_target=COMPUTE_TARGET, axis_compute_goal=COMPUTE_GOAL,
               axis_compute_pass=bool(red > COMPUTE_TARGET) if _finite(red) else None)
    return out


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)


def load_history(run: Run) -> dict[str, Any]:
    """``{"phases": {"1": [epoch records], ...}, "time_fit_s": ...}`` of the run: history.json
    when the run directory has one, else the trainer in memory."""
    path = Path(run.run_dir) / "history.json" if run.run_dir is not None else None
    if path is not None and path.is_file():
        return json.loads(path.read_text())
    if run.trainer is not None and getattr(run.trainer, "results", None):
        return {"phases": {str(k): v.history for k, v in run.trainer.results.items()}}
    return {"phases": {}}


def evaluate_and_report(run: Run, data: CausalData, figures: bool = True) -> dict[str, Any]:
    """Compute every metric that applies to ``run`` on ``data``; with ``figures`` and a run
    directory, also draw ``figures/*.png`` and write ``report.md``, ``graph.json`` and
    ``graph.graphml`` there (without, nothing is written)."""
    ev = evaluate_run(run, data)
    ev.metrics.update(reference_metrics(run, data, run.prep.features(data.X), split_indices_of(run, data)))
    ev.metrics.update(final_axes(ev.metrics))
    history = load_history(run)
    fit = history.get("time_fit_s", getattr(run, "fit_seconds", None))
    if fit is not None:
        ev.metrics["time_fit_s"] = float(fit)
    if figures and run.run_dir is not None:
        rd = Path(run.run_dir)
        made = draw_figures(ev, history.get("phases", {}), rd / FIGURES_DIR, run.cfg.model.edge_eps)
        write_graph(run.model, rd)
        for name in set(ALL_FIGURES) - {n for n, _ in made}:  # a stale figure of an earlier evaluation
            (rd / FIGURES_DIR / name).unlink(missing_ok=True)
        write_report(ev, made, rd / "report.md", run, data)
    return ev.metrics


def draw_figures(ev: Evaluation, history: dict[str, list], out: Path, eps: float = 0.0) -> list[tuple[str, str]]:
    """Every figure that applies; returns (file name, caption) pairs in report order."""
    a, m = ev.arrays, ev.metrics
    made: list[tuple[str, str]] = []

    def add(name: str, caption: str, draw) -> None:
        draw(out / name)
        made.append((name, caption))

    add("loss_curves.png", "Epoch-mean losses of each phase (log scale for phases 1–3), validation dashed; "
        "phase 4 shows reward, gate rate and compute.", lambda p: F.loss_curves(history, p))
    add("adjacency.png", "The learned adjacency A; row i, column j is the weight of the edge i → j.",
        lambda p: F.adjacency_heatmap(a["A"], p, a.get("node_names")))
    add("graph.png", f"The learned causal graph (connectivity {m['graph_connectivity']:.2f}); arrow width ∝ A.",
        lambda p: F.graph_drawing(a["A"], p, eps, a.get("node_names")))
    if "attn" in a:
        add("attention_heads.png", "A_causal: the last attention block's weights per head, query rows, key columns, "
            "averaged over the test units (all blocks run).",
            lambda p: F.attention_heads(a["attn"], p, len(a["te"])))
        add("attention_vs_distance.png", "Mean attention weight by signed causal distance d(i, j) (seed §IX: do "
            "causally near nodes get more weight?); dashed: uniform attention.",
            lambda p: F.attention_vs_distance(a["attn"], a["dist"], a["unrelated"], p))
    if a["theta"]:
        add("theta_curve.png", "Causal-RoPE angle θ(d) = θ0 + w·clip(d, ±d_max) per head and block.",
            lambda p: F.theta_curve(a["theta"], a["d_max"], a["k"], p))
    if "u" in a:
        add("utility.png", "Meta Utility u per test unit (rows) and gated block (columns)"
            + ("." if a["gated"] else "; phase 4 was not trained, so the model runs every block."),
            lambda p: F.utility_heatmap(a["u"], a["block_names"], a["gated"], p))
    if "tau_true" in a:
        add("tau_scatter.png", f"Predicted against true individual effects on the test units "
            f"(Pearson r {m.get('pearson_ite', float('nan')):.3f}).",
            lambda p: F.tau_scatter(a["tau_true"], a["tau_hat"], p))
    add("propensity_overlap.png", f"Estimated propensity by treatment group, all units; "
        f"{m['overlap_frac_extreme']:.1%} lie outside [0.05, 0.95].",
        lambda p: F.propensity_overlap(a["propensity"], a["T"], p))
    return made


def fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if v != v:
            return "—"
        if abs(v) >= 1e4:
            return f"{v:,.0f}"
        return f"{v:.4g}"
    return str(v)


# Groups whose metrics ``evaluate_run`` reads off one ensemble member (``structure_members``).
ONE_MEMBER_GROUPS = ("Causal stability", "Structure")


def member_note(m: dict[str, Any]) -> list[str]:
    """The line that says, in an ensemble run, which metrics describe member 0 only."""
    n, k = m.get("ensemble_members") or 1, m.get("structure_members") or 1
    if n <= k:
        return []
    return [f"*Ensemble member 0 only (`structure_members` = {k} of {n} members); effects, task "
            "and compute use every member.*", ""]


def metrics_tables(m: dict[str, Any], gated: bool) -> list[str]:
    lines: list[str] = []
    for title, rows in GROUPS:
        rows = [(k, d) for k, d in rows if m.get(k) is not None]
        if not rows:
            continue
        lines += [f"### {title}", ""]
        if title in ONE_MEMBER_GROUPS:
            lines += member_note(m)
        lines += (["| metric | gated model | all blocks | meaning |", "|---|---:|---:|---|"] if gated
                  else ["| metric | value | meaning |", "|---|---:|---|"])
        for k, desc in rows:
            desc = desc.replace("|", "\\|")  # a bare | would end the table cell
            if gated:
                full = fmt(m[f"{k}_full"]) if f"{k}_full" in m else ""
                lines.append(f"| `{k}` | {fmt(m[k])} | {full} | {desc} |")
            else:
                lines.append(f"| `{k}` | {fmt(m[k])} | {desc} |")
        lines.append("")
    rates = [k for k in m if k.startswith("gate_rate_")]  # block order
    if rates:
        lines += ["### Gate rates (share of test units that run each block)", "", *member_note(m),
                  "| block | rate |", "|---|---:|"]
        lines += [f"| `{k[len('gate_rate_'):]}` | {fmt(m[k])} |" for k in rates]
        lines.append("")
    return lines


def axes_table(m: dict[str, Any]) -> list[str]:
    def verdict(v):
        return "n/a" if v is None else ("**PASS**" if v else "**FAIL**")

    perf = m.get("axis_performance_basis")
    kl = m.get("axis_causal_kl_basis")
    ci = f" (ATE {fmt(m.get('ate'))}, 95% CI [{fmt(m.get('ate_lo'))}, {fmt(m.get('ate_hi'))}])"
    if perf is None:
        perf_row = "| performance | — | — | no reference: these data have no training split to fit it on | n/a |"
    else:
        perf_row = (f"| performance | `{perf}` | {fmt(m.get('axis_performance_value'))} | "
                    f"{'≥' if perf in ('auc_out', 'accuracy_out') else '≤'} gradient-boosting T-learner "
                    f"({fmt(m.get('axis_performance_target'))}) | {verdict(m.get('axis_performance_pass'))} |")
    return [
        "| axis | measure | csna | target | result |", "|---|---|---:|---|---|",
        perf_row,
        f"| causal stability | `{kl}` | {fmt(m.get('axis_causal_kl_value'))} | "
        + (f"≤ {fmt(m.get('axis_causal_kl_target_nats'))} nats" if m.get('axis_causal_kl_pass') is not None
           else ("reported (no truth)" if kl == "kl_do_obs"
                 else f"reported (fewer than {IPW_VERDICT_ROWS} test rows in an arm for a verdict)") + ci)
        + f" | {verdict(m.get('axis_causal_kl_pass'))} |",
        f"| compute | `flops_reduction` | {fmt(m.get('axis_compute_value'))} | > {fmt(m.get('axis_compute_target'))} "
        f"(goal {fmt(m.get('axis_compute_goal'))}) | {verdict(m.get('axis_compute_pass'))} |",
        "",
    ]


def shrink_note(es: dict[str, Any] | None) -> list[str]:
    """report.md's lines on the effect shrinkage of ``effect_scale.json`` (``csna.shrink``): per
    arm, λ and whether the level moved."""
    if es is None:
        return ["- effect shrinkage: none (`train.effect_shrink: none`, a streamed run or too few held-out rows): "
                "effects are μ̂1 − μ̂0 as the heads predict them"]
    out = []
    for k, (c, lam) in enumerate(zip(es["centre"], es["scale"]), start=1):
        a = es.get("level", es["centre"])[k - 1]
        se = (es.get("level_se") or [None] * k)[k - 1]
        joint = f" ± {se:.4g}" if se is not None else ""
        level = (f"level moved from the plug-in {c:.4g} to the R-loss level {a:.4g}{joint}: the held-out rows "
                 "rejected the plug-in level" if a != c else f"level kept at the plug-in mean {c:.4g}")
        spread = ("no heterogeneity kept (λ = 0: the held-out rows did not support τ̂'s spread)" if lam == 0 else
                  f"τ̂'s spread about it scaled by λ = {lam:.3g}")
        used = (es.get("outcome") or [None] * k)[k - 1]
        source = {"direct": "; the R-loss's m̂(x) from a cross-fitted LightGBM regression of y on x (lower held-out "
                            "error than the arms')",
                  "ensemble": "; the R-loss's m̂(x) from the members' held-out arms"}.get(used, "")
        out.append(f"- effect shrinkage, arm {k} against 0 (`effect_scale.json`, {es.get('method', 'rloss')}): "
                   f"{level}; {spread}{source}")
    return out


def write_report(ev: Evaluation, made: list[tuple[str, str]], path: Path, run: Run, data: CausalData) -> Path:
    m = ev.metrics
    phases = ", ".join(str(p) for p in run.phases_trained) or "none"
    lines = [
        f"# csna run report: {data.name}", "",
        f"- run directory: `{run.run_dir}`",
        f"- data: {data.name}, {data.n} units ({m.get('n_train', 0)} train / {m.get('n_val', 0)} validation / "
        f"{m.get('n_test', 0)} test), outcome {run.prep.outcome_type}, {data.n_treatments} treatments",
        f"- phases trained: {phases}; Meta Utility gating: {'on' if run.gated else 'off'}; seed {run.cfg.train.seed}",
        ("- new data: every unit is out-of-sample (none trained or selected the model), so every "
         "metric is on all units and there are no `*_in` metrics" if m.get("eval_new_data") else
         "- the run's own data and split: train and validation units are in-sample (`*_in`), test units "
         "out-of-sample (`*_out`)"),
        "- test-split metrics are on the test units; ATE, ATT and overlap on every unit of the data",
        "- `ate`/`att` average the model's τ̂(x) (plug-in: its bias is the outcome model's); "
        "`ate_dr`/`att_dr` add propensity-weighted residuals (consistent if either the outcome model or ê(x) "
        "is right) and have a standard error: prefer them for averages under confounding and for intervals, "
        "the plug-in for individual effects and tiny data",
        *shrink_note(run.effect_scale),
        "",
        "## Final axes (seed §X, targets of design §6)", "",
        *axes_table(m),
        "## Metrics", "",
        *metrics_tables(m, run.gated),
        "## Figures", "",
    ]
    for name, caption in made:
        lines += [f"![{Path(name).stem}]({FIGURES_DIR}/{name})", "", f"*{caption}*", ""]
    path.write_text("\n".join(lines))
    return path
