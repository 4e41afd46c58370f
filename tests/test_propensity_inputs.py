"""The two ways the outcome pathway can read what predicts treatment (both options, off by
default): ``model.propensity_feature`` (BCF: the encoder reads the propensity head's log-odds)
and ``model.propensity_rep`` (DragonNet: a propensity head on the pooled representation trains it).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from csna.config import ModelConfig, load_config
from csna.ensemble import train_run
from csna.model import CSNAModel


def make(K: int = 2, **kw) -> CSNAModel:
    torch.manual_seed(0)
    return CSNAModel(5, K, 0, ModelConfig(k=4, d=8, heads=2, hidden=16, head_hidden=8, **kw)).eval()


@pytest.mark.parametrize("K", [2, 3])
def test_the_encoder_reads_the_propensity_heads_log_odds_against_arm_0(K):
    m = make(K, propensity_feature=True)
    x = torch.randn(6, 5)
    logits = m.heads["propensity"](x)  # (6, K)
    ref = m.encoder(torch.cat([x, logits[:, 1:] - logits[:, :1]], dim=1))  # written out: K − 1 log-odds
    torch.testing.assert_close(m.encode(x), ref)
    torch.testing.assert_close(m(x).z, ref)
    with torch.no_grad():  # another propensity moves the nodes …
        m.heads["propensity"].net[-1].bias.add_(torch.arange(K, dtype=torch.float32))
    assert not torch.allclose(m.encode(x), ref)
    m.train()  # … but the outcome pathway never trains the propensity head (detached)
    m(x).pred.sum().backward()
    assert all(p.grad is None or not p.grad.any() for p in m.heads["propensity"].parameters())
    assert m.encoder.parameters().__next__().grad.abs().sum() > 0


def test_without_the_feature_the_propensity_head_does_not_reach_the_nodes():
    m = make()
    x = torch.randn(6, 5)
    before = m.encode(x)
    with torch.no_grad():
        m.heads["propensity"].net[-1].bias.add_(torch.tensor([0.0, 3.0]))
    torch.testing.assert_close(m.encode(x), before)
    assert m(x).rep_prop_logits is None and "rep_propensity" not in m.heads


def test_the_representation_head_reads_the_pooled_representation_and_trains_the_encoder():
    m = make(propensity_rep=1.0).train()
    x, t = torch.randn(16, 5), torch.tensor([0, 1] * 8)
    out = m(x)
    torch.testing.assert_close(out.rep_prop_logits, m.heads["rep_propensity"](out.rep))
    F.cross_entropy(out.rep_prop_logits, t).backward()
    assert next(m.encoder.parameters()).grad.abs().sum() > 0
    assert all(p.grad is None for p in m.heads["propensity"].parameters())  # ê on x is not involved


def _table(tmp_path) -> str:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4))
    t = (rng.random(300) < 1 / (1 + np.exp(-2 * x[:, 0]))).astype(int)
    y = x[:, 0] + x[:, 1] + t + rng.normal(size=300)
    path = tmp_path / "t.csv"
    pd.DataFrame({**{f"x{i}": x[:, i] for i in range(4)}, "treatment": t, "outcome": y}).to_csv(path, index=False)
    return str(path)


def test_the_representation_heads_loss_trains_the_representation_and_not_the_covariate_propensity(tmp_path):
    """Same seed, same batches: the weight moves the encoder and leaves ê(x)'s head, which reads
    the covariates and only its own cross-entropy, where it was."""
    path = _table(tmp_path)
    runs = []
    for w in (0.0, 5.0):
        cfg = load_config(None, [f"data.source={path}", "train.ensemble=1", "train.max_steps=6",
                                 "phase2.epochs=0", "phase3.epochs=0", "phase4.epochs=0", "train.progress=false",
                                 f"model.propensity_rep={w}", "train.effect_shrink=none"])
        runs.append(train_run(cfg).model.state_dict())
    a, b = runs
    gap = lambda prefix: max(float((a[k] - b[k]).abs().max()) for k in a if k.startswith(prefix))  # noqa: E731
    assert gap("encoder.") > 2e-3
    # Only through the shared gradient-norm clip (train.grad_clip) does the extra loss reach ê's head.
    assert gap("heads.propensity.") < 0.05 * gap("encoder.")
    assert "heads.rep_propensity.weight" in b and "heads.rep_propensity.weight" not in a


@pytest.mark.parametrize("sets, where", [
    (["model.propensity_feature=true", "model.nodes=variables", "phase2.skeleton=none"], "model.propensity_feature"),
    (["model.propensity_rep=-1"], "model.propensity_rep"),
    (["train.effect_smoothing=-0.1"], "train.effect_smoothing"),
])
def test_settings_the_options_cannot_honour_are_refused_by_name(sets, where):
    from csna.config import ConfigError

    with pytest.raises(ConfigError, match=where.replace(".", r"\.")):
        load_config(None, sets)
