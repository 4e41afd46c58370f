"""csna.evaluate on a tiny trained IHDP run: every metric key, ranges, FLOPs against an
independent count, determinism, and the overlap warning."""

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch.utils.flop_counter import FlopCounterMode

from csna import metrics as M
from csna.config import load_config
from csna.ensemble import train_run
from csna.evaluate import evaluate_run
from csna.nn.distance import causal_distance
from csna.predict import predict_features
from csna.report import evaluate_and_report, reference_t_learner

TINY = ["train.ensemble=1", "phase1.epochs=2", "phase2.epochs=1", "phase3.epochs=1", "phase4.epochs=1",
        "train.progress=false"]

KEYS = [
    "sqrt_pehe_in", "sqrt_pehe_out", "eps_ate_in", "eps_ate_out", "eps_att_out", "ate_hat", "rmse_out", "mse_out",
    "sqrt_pehe_out_full", "pearson_ite", "kl_do_obs", "kl_do_true", "z_stability", "laplacian_smoothness",
    "graph_connectivity", "jacobian_spectral_norm", "jacobian_spectral_norm_max", "utility_entropy", "flops_full",
    "flops_gated", "flops_reduction", "wall_full_ms", "wall_gated_ms", "ate", "ate_lo", "ate_hi", "att", "att_lo",
    "att_hi", "overlap_frac_extreme", "ref_sqrt_pehe_out", "ref_rmse_out", "axis_performance_pass",
    "axis_causal_kl_pass", "axis_compute_pass", "gate_rate_lattice_0", "gate_rate_lattice_1",
    "gate_rate_attention_0", "gate_rate_attention_1", "attn_weight_self",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    cfg = load_config(None, TINY)
    return train_run(cfg, run_dir=tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def metrics(run):
    return evaluate_and_report(run, run.data, figures=False)


def _x_test(run):
    x = run.prep.features(run.data.X)[run.splits["test"]]
    return torch.from_numpy(x)


def test_every_key_and_range(metrics):
    missing = [k for k in KEYS if k not in metrics]
    assert not missing
    m = metrics
    assert m["flops_reduction"] <= 1.0  # signed: negative when gating costs more than it saves
    assert 0.0 <= m["graph_connectivity"] <= 1.0
    assert 0.0 <= m["utility_entropy"] <= 1.0
    assert 0.0 <= m["overlap_frac_extreme"] <= 1.0
    assert -1.0 <= m["pearson_ite"] <= 1.0
    assert 0.9 < m["z_stability"] <= 1.0  # 0.01 sd of noise barely moves z
    assert m["kl_do_obs"] >= 0 and m["kl_do_true"] >= 0
    assert m["laplacian_smoothness"] >= 0
    assert 0 < m["jacobian_spectral_norm"] <= m["jacobian_spectral_norm_max"]
    assert m["ate_lo"] <= m["ate"] <= m["ate_hi"] and m["att_lo"] <= m["att"] <= m["att_hi"]
    assert m["flops_full"] > 0 and m["flops_gated"] > 0 and m["wall_full_ms"] > 0
    for k in ("axis_performance_pass", "axis_causal_kl_pass", "axis_compute_pass"):
        assert isinstance(m[k], bool)


def test_flops_match_an_independent_count(run, metrics):
    x = _x_test(run)
    n = len(x)
    with torch.no_grad():
        with FlopCounterMode(display=False) as fc:
            run.model(x, gate_mode="off")
        full = fc.get_total_flops() / n
        with FlopCounterMode(display=False) as fc:
            run.model(x, gate_mode="hard")
        gated = fc.get_total_flops() / n
        with FlopCounterMode(display=False) as fc:
            run.model(x, gate_mode="given", gates=torch.zeros(n, run.model.n_blocks))
        none = fc.get_total_flops() / n
    assert metrics["flops_full"] == pytest.approx(full, rel=1e-12)
    assert metrics["flops_gated"] == pytest.approx(gated, rel=1e-12)
    assert none < full  # skipping every block saves real FLOPs (the controller still runs)
    assert metrics["flops_reduction"] == pytest.approx(1.0 - gated / full)


def test_effect_and_causal_metrics_by_hand(run, metrics):
    te = run.splits["test"]
    res = predict_features(run, run.prep.features(run.data.X), gates=True)
    tau = run.data.mu[te, 1] - run.data.mu[te, 0]
    tau_hat = res["mu"][te, 1] - res["mu"][te, 0]
    assert metrics["pearson_ite"] == pytest.approx(stats.pearsonr(tau, tau_hat)[0])
    ite = res["mu"][:, 1] - res["mu"][:, 0]
    assert metrics["ate"] == pytest.approx(ite.mean())
    assert metrics["att"] == pytest.approx(ite[run.data.T == 1].mean())

    model = run.model
    with torch.no_grad():
        pred = model(_x_test(run), gate_mode="hard").pred.double()  # (n, K) standardised
    t = torch.from_numpy(run.data.T[te].astype(np.int64))
    assert metrics["kl_do_obs"] == pytest.approx(float(M.causal_kl_obs(pred, t, "continuous", model.sigma2.double())))
    # kl_do_ipw: test rows reweighted by P(T=t)/ê_t(x) of the saved propensity, written out here
    x_te = run.prep.features(run.data.X.iloc[te]).astype(np.float64)
    logits = x_te @ run.prep.propensity.coef.T + run.prep.propensity.intercept  # (n, 2)
    e = np.exp(logits - logits.max(1, keepdims=True))
    e = np.clip(e / e.sum(1, keepdims=True), 1e-3, 1 - 1e-3)
    e /= e.sum(1, keepdims=True)
    tt = run.data.T[te]
    share = np.bincount(tt, minlength=2) / len(tt)
    w = np.clip(share[tt] / e[np.arange(len(tt)), tt], 0.1, 10.0)
    y = (run.data.Y[te] - float(model.y_mean)) / float(model.y_std)
    kls_ipw = []
    for k in range(2):
        wk, yk = w[tt == k] / w[tt == k].sum(), y[tt == k]
        m2 = (wk * yk).sum()
        v2 = (wk * (yk - m2) ** 2).sum()
        mu = pred[:, k].numpy()
        m1, v1 = mu.mean(), float(model.sigma2[k]) + mu.var()
        kls_ipw.append(0.5 * (np.log(v2 / v1) + (v1 + (m1 - m2) ** 2) / v2 - 1.0))
    assert metrics["kl_do_ipw"] == pytest.approx(np.mean(kls_ipw), rel=1e-5)
    # KL(N(m1, v1) ‖ N(m2, v2)) of the moment-matched back-door mixtures, unit noise for IHDP
    s = float(model.y_std)
    mu_hat = pred.numpy() * s + float(model.y_mean)
    kls = []
    for k in range(2):
        m1, v1 = run.data.mu[te, k].mean(), 1.0 + run.data.mu[te, k].var()
        m2, v2 = mu_hat[:, k].mean(), float(model.sigma2[k]) * s**2 + mu_hat[:, k].var()
        kls.append(0.5 * (math.log(v2 / v1) + (v1 + (m1 - m2) ** 2) / v2 - 1))
    assert metrics["kl_do_true"] == pytest.approx(np.mean(kls), rel=1e-6)


def test_attention_by_distance_reads_the_distances_attention_reads(run):
    """On a graph whose literal reading (every chain edge also a weaker back edge: all 2-cycles)
    gives other distances than its dominant orientation, the attn_weight_* metrics group pairs
    by the distances the model's attention received, checked by a loop over pairs."""
    model = copy.deepcopy(run.model)
    k = model.cfg.k
    W = torch.full((k, k), -6.0)  # sigmoid(-6) < tau: no edge
    for i in range(k - 2):  # the chain 0 -> 1 -> ... -> k-2; node k-1 is unrelated to all
        W[i, i + 1], W[i + 1, i] = 3.0, 1.0  # both directions above edge_eps, forward dominant
    with torch.no_grad():
        model.lattice.adjacency.W.copy_(W)
    r = dataclasses.replace(run, model=model, members=[])
    seen = {}
    hook = model.attention[-1].register_forward_hook(
        lambda mod, args, out: seen.update(dist=args[1].numpy(), unrel=args[2].numpy(),
                                           attn=mod.last_attn.double().mean(0).numpy()))  # (h, k, k)
    with torch.no_grad():
        model(_x_test(run), gate_mode="off")
    hook.remove()
    raw, _ = causal_distance(model.lattice.adjacency().detach(), model.cfg.edge_eps)
    assert not np.array_equal(raw.numpy(), seen["dist"])  # the two readings of A differ

    ev = evaluate_run(r, run.data, quiet=True)
    np.testing.assert_array_equal(ev.arrays["dist"], seen["dist"])  # the figure's distances too
    np.testing.assert_array_equal(ev.arrays["unrelated"], seen["unrel"])
    groups = {"self": [], "near": [], "far": [], "unrelated": []}
    for i in range(k):
        for j in range(k):
            g = ("self" if i == j else "unrelated" if seen["unrel"][i, j]
                 else "near" if abs(seen["dist"][i, j]) <= 1 else "far")
            groups[g].extend(seen["attn"][:, i, j])
    assert groups["far"]  # the chain has pairs two hops apart
    for g, weights in groups.items():
        assert ev.metrics[f"attn_weight_{g}"] == pytest.approx(np.mean(weights), rel=1e-9), g


def test_gate_rates_and_entropy_agree(run, metrics):
    names = [n.replace(".", "_") for n, _ in run.model.blocks()]
    rates = np.array([metrics[f"gate_rate_{n}"] for n in names])
    assert ((rates >= 0) & (rates <= 1)).all()
    h = [stats.entropy([r, 1 - r], base=2) for r in rates]
    assert metrics["utility_entropy"] == pytest.approx(np.mean(h))


def test_final_axes_follow_their_targets(metrics):
    m = metrics
    assert m["axis_performance_basis"] == "sqrt_pehe_out"
    assert m["axis_performance_pass"] == (m["sqrt_pehe_out"] <= m["ref_sqrt_pehe_out"])
    assert m["axis_causal_kl_pass"] == (m["kl_do_true"] <= 0.05)
    assert m["axis_compute_pass"] == (m["flops_reduction"] > 0.20)


def test_two_evaluations_agree_except_timings(run, metrics):
    again = evaluate_and_report(run, run.data, figures=False)
    assert again.keys() == metrics.keys()
    for k, v in metrics.items():
        if k.startswith(("time_", "wall_")):
            continue
        assert again[k] == v, k


def test_poor_overlap_prints_one_warning(run, capsys):
    bad = copy.deepcopy(run)
    with torch.no_grad():
        last = bad.model.heads["propensity"].net[-1]
        last.weight.zero_()
        last.bias.copy_(torch.tensor([-8.0, 8.0]))  # ê₁(x) ≈ 1 for everyone
    capsys.readouterr()
    m = evaluate_run(bad, bad.data).metrics
    err = capsys.readouterr().err.strip().splitlines()
    assert m["overlap_frac_extreme"] == 1.0
    assert len([line for line in err if "overlap" in line]) == 1


def test_reference_t_learner_recovers_a_constant_effect():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 3))
    t = rng.integers(0, 2, 600)
    y = x[:, 0] + 2.0 * t + 0.1 * rng.normal(size=600)
    mu = reference_t_learner(x, t, y, x, "continuous", 2, seed=0)
    assert mu.shape == (600, 2)
    assert np.mean(mu[:, 1] - mu[:, 0]) == pytest.approx(2.0, abs=0.1)
