"""Tests of the phase-4 policy-gradient terms and guards of csna.meta against hand computations."""

import math

import pytest
import torch

from csna import meta as L


pytestmark = pytest.mark.usefixtures("float64_and_seed")


def test_reward_advantage_actor_critic_by_hand():
    loss = torch.tensor([0.5, 1.0])
    gates = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    costs = torch.tensor([0.25, 0.75])
    R = L.reward(loss, gates, costs, eta=2.0)
    torch.testing.assert_close(R, torch.tensor([-0.5 - 0.5, -1.0 - 2.0]))
    V = torch.tensor([-1.5, -2.0], requires_grad=True)
    adv = L.advantage(R, V)
    torch.testing.assert_close(adv, torch.tensor([0.5, -1.0]))
    assert not adv.requires_grad
    u = torch.tensor([[0.8, 0.4], [0.5, 0.9]])
    beta = 0.1
    logpi = torch.tensor([[math.log(0.8), math.log(0.6)], [math.log(0.5), math.log(0.9)]])
    pg = -(0.5 * logpi[0].sum() - 1.0 * logpi[1].sum()) / 2
    H = lambda p: -(p * math.log(p) + (1 - p) * math.log(1 - p))  # noqa: E731
    ent = (H(0.8) + H(0.4) + H(0.5) + H(0.9)) / 4
    assert L.actor_loss(u, gates, adv, beta).item() == pytest.approx(pg.item() - beta * ent)
    c = L.critic_loss(V, R)
    assert c.item() == pytest.approx((0.5**2 + 1.0**2) / 2)
    c.backward()
    torch.testing.assert_close(V.grad, torch.tensor([-0.5, 1.0]))


def test_actor_loss_clamps_u():
    u = torch.tensor([[0.0, 1.0]])
    v = L.actor_loss(u, torch.tensor([[1.0, 0.0]]), torch.tensor([1.0]), 0.1)
    assert torch.isfinite(v)


def test_reinforce_sign_lowers_u_when_skipping_pays():
    logit = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([logit], lr=0.5)
    gen = torch.Generator().manual_seed(0)
    u0 = torch.sigmoid(logit).item()
    for _ in range(20):
        u = torch.sigmoid(logit).expand(64, 1)
        gates = torch.bernoulli(u.detach(), generator=gen)
        R = 1.0 - gates[:, 0]  # +1 for skipping the block
        adv = L.advantage(R, R.mean().expand(64))
        opt.zero_grad()
        L.actor_loss(u, gates, adv, beta=0.0).backward()
        opt.step()
    assert torch.sigmoid(logit).item() < u0 - 0.2


def test_counterfactual_drift_reads_only_the_arms_not_received():
    ref = torch.tensor([[0.0, 1.0, 2.0], [0.0, 0.0, 0.0]])
    pred = torch.tensor([[5.0, 1.5, 2.0], [1.0, 2.0, 3.0]])
    t = torch.tensor([0, 2])
    # row 0 received arm 0 (its change of 5 is ignored): (0.5² + 0²) / 2; row 1 received arm 2: (1 + 4) / 2
    torch.testing.assert_close(L.counterfactual_drift(pred, ref, t, "continuous"), torch.tensor([0.125, 2.5]))


def test_counterfactual_drift_of_class_probabilities():
    ref = torch.zeros(1, 2, 2)  # uniform probabilities in both arms
    pred = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0]]])  # arm 1: p = (0.75, 0.25)
    d = L.counterfactual_drift(pred, ref, torch.tensor([0]), "binary")
    assert d.item() == pytest.approx(2 * 0.25**2)
    assert L.counterfactual_drift(pred, ref, torch.tensor([1]), "binary").item() == pytest.approx(0.0)
