"""L_causal against an identified reference (issue 18, design §4 and §8.3).

The reference of arm t is the observed outcomes of the units that received t, reweighted to the
whole population by stabilised inverse-propensity weights. Checked against a loop and a closed
form, and on a strongly confounded linear-Gaussian SCM: the new term is near zero at the true
model and pulls a constant effect to the truth; the seed's literal formula (``causal_kl_obs``)
penalises the true model and is exactly zero for a model that ignores confounding.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from csna import losses as L
from csna import metrics as M
from csna.propensity import crossfit_weights


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _gauss_kl(m1, v1, m2, v2):
    return 0.5 * (np.log(v2 / v1) + (v1 + (m1 - m2) ** 2) / v2 - 1.0)


def _batch(seed: int):
    """A batch of 40 rows, a third treated, with random predictions, outcomes and weights."""
    g = torch.Generator().manual_seed(seed)
    B = 40
    pred = torch.randn(B, 2, generator=g)
    t = (torch.arange(B) % 3 == 0).long()
    y = torch.randn(B, generator=g)
    w = torch.rand(B, generator=g) * 3 + 0.1
    return g, B, pred, t, y, w, torch.tensor([0.7, 1.3])


def test_continuous_reference_is_the_weighted_moments_of_the_arm():
    g, B, pred, t, y, w, sigma2 = _batch(0)
    kls = []
    for arm in (0, 1):  # a slow obvious reference, one unit at a time
        idx = [b for b in range(B) if int(t[b]) == arm]
        ws = np.array([float(w[b]) for b in idx])
        ys = np.array([float(y[b]) for b in idx])
        m_ref = float((ws * ys).sum() / ws.sum())
        v_ref = float((ws * (ys - m_ref) ** 2).sum() / ws.sum())
        mu = pred[:, arm].numpy()
        kls.append(_gauss_kl(mu.mean(), float(sigma2[arm]) + mu.var(), m_ref, v_ref))
    got = L.causal_kl(pred, t, "continuous", y, w, sigma2)
    assert float(got) == pytest.approx(np.mean(kls), rel=1e-10)


def test_classification_reference_is_the_weighted_class_frequencies():
    g = torch.Generator().manual_seed(1)
    B, C = 30, 3
    pred = torch.randn(B, 2, C, generator=g)
    t = (torch.arange(B) % 2).long()
    y = torch.randint(0, C, (B,), generator=g)
    w = torch.rand(B, generator=g) + 0.5
    kls = []
    for arm in (0, 1):
        p_do = torch.softmax(pred[:, arm], -1).mean(0).numpy()  # (C,)
        q = np.zeros(C)
        for b in range(B):
            if int(t[b]) == arm:
                q[int(y[b])] += float(w[b])
        q = (q / q.sum() + 1e-3) / (1 + C * 1e-3)
        kls.append(float((p_do * np.log(p_do / q)).sum()))
    assert float(L.causal_kl(pred, t, "multiclass", y, w)) == pytest.approx(np.mean(kls), rel=1e-9)


def test_unit_weights_reduce_to_the_plain_moments_of_the_arm():
    """A property: with every weight 1 the reference is the arm's own empirical moments."""
    g = torch.Generator().manual_seed(2)
    pred, y = torch.randn(50, 2, generator=g), torch.randn(50, generator=g) * 2 + 1
    t = (torch.arange(50) % 2).long()
    got = L.causal_kl(pred, t, "continuous", y, torch.ones(50), torch.ones(2))
    ref = np.mean([_gauss_kl(pred[:, a].mean().item(), 1 + pred[:, a].var(unbiased=False).item(),
                             y[t == a].mean().item(), y[t == a].var(unbiased=False).item()) for a in (0, 1)])
    assert float(got) == pytest.approx(ref, rel=1e-10)


def _confounded_scm(n: int = 20000, seed: int = 0):
    """Linear-Gaussian SCM with strong confounding: x ~ N(0, I_6), P(T=1|x) = σ(x·a),
    Y = x·b + 2T + N(0, 1) with b along a. True ATE 2; the naive difference is far larger."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6))
    a = np.array([1.0, 0.8, -0.6, 0.0, 0.0, 0.0])
    b = np.array([2.0, 1.5, -1.0, 0.5, 0.0, 0.0])
    t = (rng.random(n) < 1 / (1 + np.exp(-x @ a))).astype(np.int64)
    y = x @ b + 2.0 * t + rng.normal(size=n)
    return x, t, y, b


def test_the_true_model_scores_near_zero_and_the_seeds_formula_prefers_ignoring_confounding():
    x, t, y, b = _confounded_scm()
    naive = y[t == 1].mean() - y[t == 0].mean()
    assert naive > 4.0  # strongly confounded: the association is more than twice the effect
    w = torch.from_numpy(crossfit_weights(x, t, 2, seed=0))  # cross-fitted logistic ê
    T, Y = torch.from_numpy(t), torch.from_numpy(y)
    true_model = torch.from_numpy(np.stack([x @ b, x @ b + 2.0], 1))  # (n, 2) μ_0(x), μ_1(x)
    ignores_x = torch.from_numpy(np.stack([np.full(len(t), y[t == 0].mean()),
                                           np.full(len(t), y[t == 1].mean())], 1))
    s2 = torch.ones(2)
    new_true = float(L.causal_kl(true_model, T, "continuous", Y, w, s2))
    new_naive = float(L.causal_kl(ignores_x, T, "continuous", Y, w, s2))
    old_true = float(M.causal_kl_obs(true_model, T, "continuous", s2))
    old_naive = float(M.causal_kl_obs(ignores_x, T, "continuous", s2))
    assert new_true < 0.01 < 0.5 < new_naive  # identified: the truth is (near) the minimum
    assert old_naive == pytest.approx(0.0, abs=1e-12) and old_true > 0.1  # the old bias, shown


def test_minimising_the_new_term_recovers_the_effect_the_old_one_cannot_see():
    """Fit only the two arm offsets c_t of μ̂_t(x) = x·b + c_t by minimising L_causal: the new
    term puts c_1 − c_0 within 10% of the true effect 2; the old term does not depend on c."""
    x, t, y, b = _confounded_scm(seed=1)
    w = torch.from_numpy(crossfit_weights(x, t, 2, seed=1))
    T, Y = torch.from_numpy(t), torch.from_numpy(y)
    base = torch.from_numpy(x @ b)[:, None]  # (n, 1)
    c = torch.zeros(2, requires_grad=True)
    opt = torch.optim.Adam([c], lr=0.05)
    for _ in range(600):
        opt.zero_grad()
        L.causal_kl(base + c, T, "continuous", Y, w, torch.ones(2)).backward()
        opt.step()
    assert float((c[1] - c[0]).detach()) == pytest.approx(2.0, rel=0.10)
    c_old = torch.tensor([0.0, 5.0], requires_grad=True)
    M.causal_kl_obs(base + c_old, T, "continuous", torch.ones(2)).backward()
    assert torch.allclose(c_old.grad, torch.zeros(2), atol=1e-9)  # blind to the effect itself


def test_aipw_reference_is_the_models_moments_plus_the_weighted_residuals():
    """The doubly robust reference against a slow obvious one, unit by unit (continuous and
    classification)."""
    g, B, pred, t, y, w, sigma2 = _batch(3)
    kls = []
    for arm in (0, 1):
        mu = pred[:, arm].numpy()
        idx = [b for b in range(B) if int(t[b]) == arm]
        ws = np.array([float(w[b]) for b in idx]) / sum(float(w[b]) for b in idx)
        r1 = np.array([float(y[b]) - mu[b] for b in idx])
        r2 = np.array([float(y[b]) ** 2 - mu[b] ** 2 - float(sigma2[arm]) for b in idx])
        m_ref = mu.mean() + (ws * r1).sum()
        v_ref = (mu ** 2).mean() + float(sigma2[arm]) + (ws * r2).sum() - m_ref ** 2
        kls.append(_gauss_kl(mu.mean(), float(sigma2[arm]) + mu.var(), m_ref, v_ref))
    got = L.causal_kl(pred, t, "continuous", y, w, sigma2, reference="aipw")
    assert float(got) == pytest.approx(np.mean(kls), rel=1e-10)

    C = 3
    logits = torch.randn(B, 2, C, generator=g)
    yc = torch.randint(0, C, (B,), generator=g)
    kls = []
    for arm in (0, 1):
        p = torch.softmax(logits[:, arm], -1).numpy()  # (B, C)
        idx = [b for b in range(B) if int(t[b]) == arm]
        ws = np.array([float(w[b]) for b in idx]) / sum(float(w[b]) for b in idx)
        q = p.mean(0) + sum(ws[i] * (np.eye(C)[int(yc[b])] - p[b]) for i, b in enumerate(idx))
        q = np.clip(q, 0, None) / np.clip(q, 0, None).sum()
        q = (q + 1e-3) / (1 + C * 1e-3)
        p_do = p.mean(0)
        kls.append(float((p_do * np.log(p_do / q)).sum()))
    got = L.causal_kl(logits, t, "multiclass", yc, w, reference="aipw")
    assert float(got) == pytest.approx(np.mean(kls), rel=1e-9)


def test_aipw_reference_is_doubly_robust():
    """Right outcome model, wrong propensity (unit weights: the naive association): the AIPW
    reference still puts the true model at (near) zero where the IPW one does not. Right
    propensity, outcome model that ignores x: the AIPW reference's mean is the IPW one."""
    x, t, y, b = _confounded_scm(seed=2)
    T, Y = torch.from_numpy(t), torch.from_numpy(y)
    true_model = torch.from_numpy(np.stack([x @ b, x @ b + 2.0], 1))
    ones, s2 = torch.ones(len(t)), torch.ones(2)
    assert float(L.causal_kl(true_model, T, "continuous", Y, ones, s2, reference="aipw")) < 0.01
    assert float(L.causal_kl(true_model, T, "continuous", Y, ones, s2, reference="ipw")) > 0.1

    w = torch.from_numpy(crossfit_weights(x, t, 2, seed=2))
    arm_means = torch.from_numpy(np.stack([np.full(len(t), y[t == 0].mean()), np.full(len(t), y[t == 1].mean())], 1))
    for arm in (0, 1):  # the mean part of the KL: (m − m_ref)² / (2 v_ref), m the model's mean
        wa = w[T == arm] / w[T == arm].sum()
        hajek = float((wa * Y[T == arm]).sum())
        m_model = float(arm_means[0, arm])
        mu_g = arm_means[T == arm, arm]
        m_aipw = m_model + float((wa * (Y[T == arm] - mu_g)).sum())
        assert m_aipw == pytest.approx(hajek, rel=1e-12)


def test_minimising_the_aipw_term_recovers_the_effect_with_a_wrong_propensity():
    """The offsets of ``test_minimising_the_new_term…`` with unit weights (a propensity that sees
    no confounding): against the AIPW reference c_1 − c_0 still lands within 10% of the effect 2;
    against the IPW reference it lands on the confounded association."""
    x, t, y, b = _confounded_scm(seed=1)
    T, Y = torch.from_numpy(t), torch.from_numpy(y)
    base = torch.from_numpy(x @ b)[:, None]
    naive = y[t == 1].mean() - y[t == 0].mean()
    found = {}
    for ref in ("aipw", "ipw"):
        c = torch.zeros(2, requires_grad=True)
        opt = torch.optim.Adam([c], lr=0.05)
        for _ in range(600):
            opt.zero_grad()
            L.causal_kl(base + c, T, "continuous", Y, torch.ones(len(t)), torch.ones(2), reference=ref).backward()
            opt.step()
        found[ref] = float((c[1] - c[0]).detach())
    assert found["aipw"] == pytest.approx(2.0, rel=0.10)
    assert abs(found["ipw"] - 2.0) > 0.5 * abs(naive - 2.0)  # pulled most of the way to the confounded value


def test_a_zero_weight_still_logs_l_causal_without_a_gradient():
    """λ_causal = 0: the trainer still weights its rows and compute_parts still returns L_causal
    (for the seed's L_causal curve) with the value the term has at λ > 0, but no gradient, and
    L_total leaves it out."""
    from csna.bench.throughput import table
    from csna.config import Config
    from csna.model import CSNAModel
    from csna.train import Trainer

    torch.set_default_dtype(torch.float32)
    train, val = table(300, 5, 0, torch.device("cpu"))
    cfg = Config()
    cfg.train.progress = False
    for n in (1, 2, 3, 4):
        cfg.phase(n).lambda_causal = 0.0
    tr = Trainer(CSNAModel(train.x.shape[1], 2, 0, cfg.model), cfg, train, val)
    batch = tr.source.split.rows(torch.arange(64))
    assert batch.w is not None
    out = tr.model(batch.x, depth=1)
    off = L.compute_parts(tr.model, out, batch, 1, {"causal": 0.0}, 0, 1)
    on = L.compute_parts(tr.model, out, batch, 1, {"causal": 0.5}, 0, 1)
    assert not off["causal"].requires_grad and on["causal"].requires_grad
    value = float(on["causal"].detach())
    assert float(off["causal"]) == pytest.approx(value, rel=1e-6) and value > 0
    total, _ = L.total_loss(off, {"causal": 0.0})
    assert float(total.detach()) == pytest.approx(float(off["task"].detach()), rel=1e-6)
