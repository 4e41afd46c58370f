"""train.balance_arms: the factual loss weighs every treatment arm the same in total, whatever
its share of the training rows (TARNet's and CFR's weighting)."""

from __future__ import annotations

import torch

from csna.bench.throughput import table
from csna.config import Config
from csna.model import CSNAModel
from csna.losses import compute_parts
from csna.sources import Split
from csna.train import Trainer


def _trainer(balance: bool, treated_every: int = 4) -> Trainer:
    train, val = table(400, 6, 0, torch.device("cpu"))
    train.t.copy_((torch.arange(len(train)) % treated_every == 0).long())  # a 1-in-4 treated arm
    cfg = Config()
    cfg.train.balance_arms, cfg.train.progress = balance, False
    return Trainer(CSNAModel(train.x.shape[1], 2, 0, cfg.model), cfg, train, val)


def test_each_arm_weighs_the_same_in_total_and_the_mean_weight_is_one():
    tr = _trainer(True)
    t = tr.source.split.t
    w = tr.arm_weight[t]  # (n,)
    assert torch.isclose(w[t == 0].sum(), w[t == 1].sum())
    assert torch.isclose(w.mean(), torch.tensor(1.0))
    assert tr.arm_weight[1] > tr.arm_weight[0]  # the small arm counts more per row
    assert _trainer(False).arm_weight is None


def test_weighted_task_loss_matches_a_row_loop():
    tr = _trainer(True)
    batch = tr.source.split.rows(torch.arange(64))
    with torch.no_grad():
        out = tr.model(batch.x, depth=1)
    got = compute_parts(tr.model, out, batch, 1, {}, 0, 1, arm_weight=tr.arm_weight)["task"]
    ref = sum(float(tr.arm_weight[int(batch.t[b])]) * float(out.pred[b, int(batch.t[b])] - batch.y[b]) ** 2
              for b in range(64)) / 64
    assert abs(float(got) - ref) < 1e-5
    plain = compute_parts(tr.model, out, batch, 1, {}, 0, 1)["task"]
    assert abs(float(plain) - float(((out.pred.gather(1, batch.t[:, None]).squeeze(1) - batch.y) ** 2).mean())) < 1e-6


def test_ipw_task_loss_weighs_each_row_by_its_inverse_propensity_weight():
    """train.factual_weights: ipw multiplies each row's factual loss by its stabilised weight
    (batch.w, the Trainer's cross-fitted P(T = t)/ê_t(x)), and by the arm weight when both are on."""
    for balance in (False, True):
        train, val = table(400, 6, 0, torch.device("cpu"))
        g = torch.Generator().manual_seed(0)
        t = (train.x[:, 0] + 0.5 * torch.randn(len(train), generator=g) > 0.5).long()  # confounded by x0
        cfg = Config()
        cfg.train.balance_arms, cfg.train.progress = balance, False
        tr = Trainer(CSNAModel(train.x.shape[1], 2, 0, cfg.model), cfg, Split(train.x, t, train.y), val)
        batch = tr.source.split.rows(torch.arange(64))
        assert batch.w is not None and float(batch.w.std()) > 0  # the Trainer set real, varying weights
        with torch.no_grad():
            out = tr.model(batch.x, depth=1)
        got = compute_parts(tr.model, out, batch, 1, {}, 0, 1, arm_weight=tr.arm_weight, ipw_task=True)["task"]
        ref = 0.0
        for b in range(64):
            tb = int(batch.t[b])
            arm = float(tr.arm_weight[tb]) if balance else 1.0
            ref += arm * float(batch.w[b]) * float(out.pred[b, tb] - batch.y[b]) ** 2
        assert abs(float(got) - ref / 64) < 1e-5


def test_factual_weights_is_checked_when_the_config_loads():
    import pytest

    from csna.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="factual_weights"):
        load_config(None, ["train.factual_weights=odds"])
    assert load_config(None, ["train.factual_weights=ipw"]).train.factual_weights == "ipw"
