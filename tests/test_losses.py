"""Tests of csna.losses against naive references (loops, closed forms, scipy)."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from csna import balance as B
from csna import losses as L
from csna import metrics as M


pytestmark = pytest.mark.usefixtures("float64_and_seed")


def test_factual_and_task_loss_continuous():
    pred = torch.randn(6, 3)
    t = torch.tensor([0, 1, 2, 2, 1, 0])
    y = torch.randn(6)
    f = L.factual(pred, t)
    assert torch.equal(f, torch.stack([pred[b, t[b]] for b in range(6)]))
    per = L.task_loss(pred, y, t, "continuous", reduction="none")
    assert per.shape == (6,)
    torch.testing.assert_close(per, (y - f) ** 2)
    torch.testing.assert_close(L.task_loss(pred, y, t, "continuous"), ((y - f) ** 2).mean())


def test_task_loss_classification():
    pred = torch.randn(5, 2, 3)
    t = torch.tensor([0, 1, 1, 0, 1])
    y = torch.tensor([2, 0, 1, 1, 2])
    per = L.task_loss(pred, y, t, "multiclass", reduction="none")
    ref = torch.stack([-torch.log_softmax(pred[b, t[b]], -1)[y[b]] for b in range(5)])
    torch.testing.assert_close(per, ref)
    with pytest.raises(ValueError):
        L.task_loss(pred, y, t, "ordinal")


def _gauss_kl(m1, v1, m2, v2):
    return 0.5 * (math.log(v2 / v1) + (v1 + (m1 - m2) ** 2) / v2 - 1)


def _causal_kl_obs_ref(pred, t, outcome_type, sigma2=None, min_group=4):
    """Slow loop over the definition."""
    pred, t = pred.detach().numpy(), t.numpy()
    B, K = pred.shape[:2]
    kls = []
    for g in range(K):
        idx = [b for b in range(B) if t[b] == g]
        if len(idx) < min_group:
            continue
        if outcome_type == "continuous":
            mu_all = [pred[b, g] for b in range(B)]
            mu_grp = [pred[b, g] for b in idx]
            m1 = sum(mu_all) / B
            v1 = sigma2[g] + sum((m - m1) ** 2 for m in mu_all) / B
            m2 = sum(mu_grp) / len(idx)
            v2 = sigma2[g] + sum((m - m2) ** 2 for m in mu_grp) / len(idx)
            kls.append(_gauss_kl(m1, v1, m2, v2))
        else:
            C = pred.shape[2]
            sm = lambda z: np.exp(z - z.max()) / np.exp(z - z.max()).sum()  # noqa: E731
            p_do = sum(sm(pred[b, g]) for b in range(B)) / B
            p_obs = sum(sm(pred[b, g]) for b in idx) / len(idx)
            kls.append(sum(p_do[c] * math.log(p_do[c] / p_obs[c]) for c in range(C)))
    return sum(kls) / len(kls) if kls else 0.0


def test_causal_kl_obs_continuous_matches_loop():
    pred = torch.randn(40, 3, requires_grad=True)
    t = torch.randint(0, 3, (40,))
    t[:3] = 2  # make sure of group sizes; group 1 may be skipped by min_group below
    sigma2 = torch.tensor([0.5, 1.0, 2.0])
    got = M.causal_kl_obs(pred, t, "continuous", sigma2=sigma2, min_group=4)
    ref = _causal_kl_obs_ref(pred, t, "continuous", sigma2.numpy(), min_group=4)
    assert got.item() == pytest.approx(ref, rel=1e-9)
    got.backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all()


def test_causal_kl_obs_continuous_sigma2_detached_and_default_from_residuals():
    pred = torch.randn(30, 2)
    t = torch.tensor([0] * 15 + [1] * 15)
    y = torch.randn(30)
    sigma2 = torch.tensor([1.0, 2.0], requires_grad=True)
    M.causal_kl_obs(pred + 0 * sigma2.sum(), t, "continuous", sigma2=sigma2).backward()
    assert sigma2.grad is None or torch.all(sigma2.grad == 0)
    res = L.residual_variance(pred, y, t, 2)
    got = M.causal_kl_obs(pred, t, "continuous", y=y)
    ref = _causal_kl_obs_ref(pred, t, "continuous", res.numpy())
    assert got.item() == pytest.approx(ref, rel=1e-9)
    with pytest.raises(ValueError):
        M.causal_kl_obs(pred, t, "continuous")


@pytest.mark.parametrize("outcome_type,C", [("binary", 2), ("multiclass", 4)])
def test_causal_kl_obs_classification_matches_loop(outcome_type, C):
    pred = torch.randn(25, 3, C) * 2
    t = torch.randint(0, 3, (25,))
    got = M.causal_kl_obs(pred, t, outcome_type, min_group=3)
    ref = _causal_kl_obs_ref(pred, t, outcome_type, min_group=3)
    assert got.item() == pytest.approx(ref, rel=1e-9, abs=1e-12)
    assert got.item() >= 0


@pytest.mark.parametrize("outcome_type", ["continuous", "binary"])
def test_causal_kl_obs_zero_when_x_identical(outcome_type):
    # Every unit has the same x, so T carries no information about x and do(t) = T=t.
    shape = (1, 2) if outcome_type == "continuous" else (1, 2, 2)
    pred = torch.randn(shape).expand(20, *shape[1:]).clone().requires_grad_(True)
    t = torch.tensor([0, 1] * 10)
    kl = M.causal_kl_obs(pred, t, outcome_type, sigma2=torch.ones(2))
    assert kl.item() == pytest.approx(0.0, abs=1e-12)


def test_causal_kl_obs_no_group_big_enough_is_zero_with_graph():
    pred = torch.randn(5, 2, requires_grad=True)
    t = torch.tensor([0, 0, 1, 1, 1])
    kl = M.causal_kl_obs(pred, t, "continuous", sigma2=torch.ones(2), min_group=4)
    assert kl.item() == 0.0
    kl.backward()
    assert torch.all(pred.grad == 0)


def test_residual_variance():
    pred = torch.randn(7, 3, requires_grad=True)
    t = torch.tensor([0, 0, 1, 1, 1, 0, 0])
    y = torch.randn(7)
    rv = L.residual_variance(pred, y, t, 3)
    assert not rv.requires_grad
    for g in range(2):
        m = t == g
        ref = ((y[m] - pred.detach()[m, g]) ** 2).mean()
        torch.testing.assert_close(rv[g], ref)
    assert torch.isnan(rv[2])


def test_laplacian_matches_pairwise_loop_and_a_gets_no_grad():
    B, k, d = 3, 5, 4
    H = torch.randn(B, k, d, requires_grad=True)
    A = torch.rand(k, k, requires_grad=True)
    got = L.laplacian_smoothness(H, A)
    A_sym = 0.5 * (A.detach() + A.detach().T)
    refs = []
    for b in range(B):
        num = 0.5 * sum(
            A_sym[i, j] * ((H[b, i] - H[b, j]) ** 2).sum() for i in range(k) for j in range(k)
        )
        refs.append(num / (H[b] ** 2).sum())
    torch.testing.assert_close(got, torch.stack(refs).mean())
    got.backward()
    assert A.grad is None
    assert H.grad is not None
    # Without detaching, A does receive a gradient.
    A2 = A.detach().clone().requires_grad_(True)
    L.laplacian_smoothness(H.detach(), A2, detach_graph=False).backward()
    assert A2.grad is not None and A2.grad.abs().sum() > 0


def test_laplacian_guards_zero_h():
    H = torch.zeros(2, 3, 2)
    H[1] = torch.randn(3, 2)
    v = L.laplacian_smoothness(H, torch.ones(3, 3))
    assert torch.isfinite(v)


def test_dag_penalty_zero_on_dags_positive_on_cycles():
    gen = np.random.default_rng(0)
    k = 6
    for _ in range(5):
        upper = np.triu(gen.uniform(0.1, 1.0, (k, k)), 1)
        perm = gen.permutation(k)
        A = torch.tensor(upper[np.ix_(perm, perm)])
        assert L.dag_penalty(A).item() == pytest.approx(0.0, abs=1e-10)
    A = torch.zeros(k, k)
    A[0, 1] = A[1, 2] = A[2, 0] = 0.5
    assert L.dag_penalty(A).item() > 0


def test_dag_penalty_matches_expm_and_series():
    A = torch.rand(4, 4)
    ref = np.trace(scipy.linalg.expm((A * A).numpy())) - 4
    assert L.dag_penalty(A).item() == pytest.approx(ref, rel=1e-10)
    M = (A * A).numpy()
    series = sum(np.trace(np.linalg.matrix_power(M, n)) / math.factorial(n) for n in range(1, 30))
    assert L.dag_penalty(A).item() == pytest.approx(series, rel=1e-10)


def test_discrepancy():
    r = torch.randn(12, 3)
    t2 = torch.tensor([0] * 6 + [1] * 6)
    torch.testing.assert_close(L.discrepancy(r, t2, 2), B.mmd2_rbf(r[6:], r[:6]))
    t3 = torch.tensor([0] * 4 + [1] * 4 + [2] * 3 + [1])
    ref = torch.stack([B.mmd2_rbf(r[t3 == g], r[t3 != g]) for g in range(3)]).mean()
    torch.testing.assert_close(L.discrepancy(r, t3, 3), ref)
    r.requires_grad_(True)
    z = L.discrepancy(r, torch.zeros(12, dtype=torch.long), 2)
    assert z.item() == 0.0
    z.backward()


def test_discrepancy_wasserstein_is_the_sinkhorn_distance_between_groups():
    torch.manual_seed(4)
    r = torch.randn(16, 3)
    t = torch.tensor([0, 1] * 8)
    r_shift = r + 2.0 * t[:, None]  # the treated group moved by 2 along every axis
    got = L.discrepancy(r_shift, t, 2, "wasserstein")
    torch.testing.assert_close(got, B.wasserstein_sinkhorn(r_shift[t == 1], r_shift[t == 0]))
    assert got > L.discrepancy(r, t, 2, "wasserstein")  # separating the groups raises it
    with pytest.raises(ValueError, match="unknown discrepancy"):
        L.discrepancy(r, t, 2, "kl")


def test_jacobian_penalty_linear_map_frobenius():
    W = torch.randn(5, 3)
    lin = torch.nn.Linear(3, 5, bias=True)
    with torch.no_grad():
        lin.weight.copy_(W)
    x = torch.randn(8, 3)
    gen = torch.Generator().manual_seed(1)
    est = L.jacobian_penalty(lin, x, n_proj=4000, generator=gen)
    assert est.item() == pytest.approx((W**2).sum().item(), rel=0.03)


def test_jacobian_penalty_is_trainable_and_reshapes_outputs():
    lin = torch.nn.Linear(3, 6)
    f = lambda x: torch.tanh(lin(x)).reshape(-1, 2, 3)  # noqa: E731
    pen = L.jacobian_penalty(f, torch.randn(4, 3), n_proj=2)
    pen.backward()
    assert lin.weight.grad is not None and lin.weight.grad.abs().sum() > 0


def test_total_loss_arithmetic():
    values = dict(task=1.0, causal=2.0, geometric=3.0, dc=4.0, dis=5.0, stable=6.0)
    parts = {k: torch.tensor(v) for k, v in values.items()}
    lam = dict(causal=0.5, geometric=0.2, dc=0.2, dis=0.5, stable=0.3)
    tot, reg = L.total_loss(parts, lam)
    assert reg.item() == pytest.approx(0.2 * 4 + 0.5 * 5 + 0.3 * 6)
    assert tot.item() == pytest.approx(1 + 0.5 * 2 + 0.2 * 3 + reg.item())
    # Missing parts and zero weights count as 0; a NaN in an unweighted part does not leak.
    tot, reg = L.total_loss(
        {"task": torch.tensor(1.5), "dis": torch.tensor(float("nan"))}, {"causal": 0.5, "dis": 0.0}
    )
    assert tot.item() == 1.5 and reg.item() == 0.0
    with pytest.raises(ValueError, match="valid"):
        L.total_loss({"tsk": torch.tensor(1.0)}, {})


def test_float32_inputs():
    pred = torch.randn(16, 2, dtype=torch.float32, requires_grad=True)
    t = torch.tensor([0, 1] * 8)
    kl = M.causal_kl_obs(pred, t, "continuous", sigma2=torch.ones(2, dtype=torch.float32))
    assert kl.dtype == torch.float32
    kl.backward()
