"""Tests of csna.metrics against closed forms, scipy/sklearn and hand examples."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from csna import metrics as M


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# --- task ------------------------------------------------------------------------------------


def test_mse_rmse_accuracy(rng):
    y, p = rng.normal(size=20), rng.normal(size=20)
    assert M.mse(y, p) == pytest.approx(np.mean((y - p) ** 2))
    assert M.rmse(y, p) == pytest.approx(np.sqrt(np.mean((y - p) ** 2)))
    assert M.accuracy([0, 1, 2, 1], [0, 1, 1, 1]) == 0.75
    assert M.accuracy([0, 1], [[0.9, 0.1], [0.2, 0.8]]) == 1.0


def test_auc_vs_rank_statistic(rng):
    y = rng.integers(0, 2, 50)
    s = rng.normal(size=50) + y
    pos, neg = s[y == 1], s[y == 0]
    # Mann-Whitney: share of (positive, negative) pairs ranked correctly, ties count half
    ref = np.mean([(a > b) + 0.5 * (a == b) for a in pos for b in neg])
    assert M.auc_roc(y, s) == pytest.approx(ref)
    assert M.auc_roc(y, np.stack([-s, s], 1)) == pytest.approx(ref)
    assert math.isnan(M.auc_roc(np.ones(5), rng.normal(size=5)))


# --- effects ---------------------------------------------------------------------------------


def test_pehe_ate_att():
    tau, hat = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.5, 2.0, 2.0, 5.0])
    t = np.array([1, 0, 1, 0])
    assert M.sqrt_pehe(tau, hat) == pytest.approx(math.sqrt((0.25 + 0 + 1 + 1) / 4))
    assert M.eps_ate(tau, hat) == pytest.approx(abs(2.5 - 2.625))
    assert M.eps_att(tau, hat, t) == pytest.approx(abs(2.0 - 1.75))
    assert math.isnan(M.eps_att(tau, hat, np.zeros(4)))


def test_policy_risk_hand_example():
    tau_hat = np.array([1.0, 1.0, -1.0, -1.0, 1.0, -1.0])
    t = np.array([1, 0, 0, 1, 1, 0])
    y = np.array([1.0, 0.0, 1.0, 0.0, 0.0, 0.0])
    # π=1 on units 0,1,4 → P(π=1)=0.5; agree & treated: 0,4 → mean y = 0.5
    # π=0 on units 2,3,5; agree & control: 2,5 → mean y = 0.5
    assert M.policy_risk(tau_hat, y, t) == pytest.approx(1 - (0.5 * 0.5 + 0.5 * 0.5))
    mask = np.array([1, 1, 1, 1, 0, 0], bool)
    # subset: π=1 on 0,1 (P=0.5), treated agree: 0 → 1.0; π=0 on 2,3, control agree: 2 → 1.0
    assert M.policy_risk(tau_hat, y, t, mask) == pytest.approx(0.0)


def test_pearson(rng):
    a, b = rng.normal(size=30), rng.normal(size=30)
    assert M.pearson(a, b) == pytest.approx(np.corrcoef(a, b)[0, 1])
    assert M.pearson(np.ones(5), a[:5]) == 0.0


# --- KL --------------------------------------------------------------------------------------


@pytest.mark.parametrize("m1,v1,m2,v2", [(0, 1, 0, 1), (0.3, 0.5, -1.0, 2.0), (2, 3, 1, 0.7)])
def test_kl_gaussian_vs_quadrature(m1, v1, m2, v2):
    p, q = stats.norm(m1, math.sqrt(v1)), stats.norm(m2, math.sqrt(v2))
    ref, _ = integrate.quad(lambda y: p.pdf(y) * (p.logpdf(y) - q.logpdf(y)), -30, 30)
    assert M.kl_gaussian(m1, v1, m2, v2) == pytest.approx(ref, abs=1e-8)


def test_kl_categorical_vs_scipy_entropy(rng):
    p, q = rng.dirichlet(np.ones(5)), rng.dirichlet(np.ones(5))
    assert M.kl_categorical(p, q) == pytest.approx(stats.entropy(p, q))
    assert M.kl_categorical(p, p) == 0.0


def test_kl_do_true_vs_hat(rng):
    mu = rng.normal(size=(100, 2))
    assert M.kl_do_true_vs_hat(mu, mu, "continuous") == pytest.approx(0.0, abs=1e-12)
    hat = mu + np.array([0.5, 0.0])
    ref = np.mean(
        [
            M.kl_gaussian(
                mu[:, t].mean(), 1 + mu[:, t].var(), hat[:, t].mean(), 2 + hat[:, t].var()
            )
            for t in range(2)
        ]
    )
    assert M.kl_do_true_vs_hat(mu, hat, "continuous", 1.0, 2.0) == pytest.approx(ref)
    p, q = rng.uniform(size=(50, 2)), rng.uniform(size=(50, 2))
    ref = np.mean(
        [stats.entropy([1 - p[:, t].mean(), p[:, t].mean()], [1 - q[:, t].mean(), q[:, t].mean()])
         for t in range(2)]
    )
    assert M.kl_do_true_vs_hat(p, q, "binary") == pytest.approx(ref)


# --- structure and stability -----------------------------------------------------------------


def test_graph_connectivity_hand_graph():
    A = np.array([[0.9, 0.5, 0.0], [0.0, 0.0, 0.2], [0.05, 0.0, 0.0]])
    assert M.graph_connectivity(A) == pytest.approx(3 / 6)
    assert M.graph_connectivity(A, eps=0.1) == pytest.approx(2 / 6)


def test_laplacian_smoothness_np_matches_torch(rng):
    from csna.losses import laplacian_smoothness

    H, A = rng.normal(size=(4, 5, 3)), rng.uniform(size=(5, 5))
    ref = laplacian_smoothness(torch.tensor(H), torch.tensor(A)).item()
    assert M.laplacian_smoothness_np(H, A) == pytest.approx(ref)
    # constant node embeddings are perfectly smooth
    assert M.laplacian_smoothness_np(np.ones((2, 5, 3)), A) == pytest.approx(0.0, abs=1e-12)


def test_utility_entropy_bounds():
    assert M.utility_entropy(np.ones((10, 3))) == 0.0
    assert M.utility_entropy(np.zeros((10, 3))) == 0.0
    half = np.tile([[1.0], [0.0]], (5, 2))  # each block runs for half the samples
    assert M.utility_entropy(half) == pytest.approx(1.0)
    mixed = np.column_stack([np.ones(4), [1, 0, 1, 0]])
    assert M.utility_entropy(mixed) == pytest.approx(0.5)


def test_z_stability(rng):
    z = rng.normal(size=(10, 4))
    assert M.z_stability(z, z) == pytest.approx(1.0)
    assert M.z_stability(z, z + 0.1 * rng.normal(size=z.shape)) < 1.0


def test_jacobian_spectral_norm_linear_equals_svd():
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 6).double()
    sv = np.linalg.svd(lin.weight.detach().numpy(), compute_uv=False)
    x = torch.randn(5, 4, dtype=torch.float64)
    mean, mx = M.jacobian_spectral_norm(lin, x, iters=200)
    assert mean == pytest.approx(sv[0], rel=1e-6)
    assert mx == pytest.approx(sv[0], rel=1e-6)


def test_jacobian_spectral_norm_per_sample_nonlinear():
    torch.manual_seed(0)
    W = torch.randn(3, 2, dtype=torch.float64)
    f = lambda x: torch.tanh(x @ W.T)  # noqa: E731
    x = torch.randn(4, 2, dtype=torch.float64)
    mean, mx = M.jacobian_spectral_norm(f, x, iters=200)
    refs = [
        np.linalg.svd(torch.autograd.functional.jacobian(f, x[b : b + 1])[0, :, 0].numpy(),
                      compute_uv=False)[0]
        for b in range(4)
    ]
    assert mean == pytest.approx(np.mean(refs), rel=1e-6)
    assert mx == pytest.approx(np.max(refs), rel=1e-6)


# --- effects on real data --------------------------------------------------------------------


def test_ate_with_ci_contains_mean_and_shrinks(rng):
    small = rng.normal(1.0, 1.0, 50)
    big = rng.normal(1.0, 1.0, 5000)
    t = rng.integers(0, 2, 5000)
    r_small = M.ate_with_ci(small, n_boot=500)
    r_big = M.ate_with_ci(big, t, n_boot=500)
    for r in (r_small, r_big):
        assert r["ate_lo"] <= r["ate"] <= r["ate_hi"]
    assert r_big["ate_hi"] - r_big["ate_lo"] < 0.3 * (r_small["ate_hi"] - r_small["ate_lo"])
    assert r_big["att"] == pytest.approx(big[t == 1].mean())
    assert r_big["att_lo"] <= r_big["att"] <= r_big["att_hi"]
    assert math.isnan(r_small["att"])
    assert M.ate_with_ci(big, t, n_boot=200, seed=3) == M.ate_with_ci(big, t, n_boot=200, seed=3)


def test_bootstrap_ci_degenerate():
    assert M.bootstrap_ci(np.full(10, 2.0)) == (2.0, 2.0)
    assert M.bootstrap_ci([3.0]) == (3.0, 3.0)


def test_overlap_report():
    e = np.array([0.01, 0.5, 0.6, 0.97, 0.3, 0.4, 0.5, 0.5, 0.5, 0.5])
    r = M.overlap_report(e)
    assert r["frac_extreme"] == pytest.approx(0.2)
    assert r["min"] == 0.01 and r["max"] == 0.97 and r["warn"] is True
    r2 = M.overlap_report(np.stack([1 - e, e], 1))
    assert r2["frac_extreme"] == pytest.approx(0.2)
    assert M.overlap_report(np.full(10, 0.5))["warn"] is False


# --- compute ---------------------------------------------------------------------------------


def test_flops_reduction_is_signed_so_a_dear_controller_shows():
    assert M.flops_reduction(200.0, 50.0) == pytest.approx(0.75)
    assert M.flops_reduction(200.0, 200.0) == 0.0
    # gates that skip little while the controller adds its own FLOPs: gated costs more than full
    assert M.flops_reduction(200.0, 230.0) == pytest.approx(-0.15)
    assert math.isnan(M.flops_reduction(0.0, 10.0)) and math.isnan(M.flops_reduction(float("nan"), 1.0))
