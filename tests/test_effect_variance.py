"""L_effect (``train.effect_smoothing``): the batch variance of τ̂(x), against loops written out
with numpy, and the way ``compute_parts`` and ``total_loss`` switch it on."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from csna import losses as L
from csna.config import ModelConfig, load_config
from csna.ensemble import train_run
from csna.model import CSNAModel
from csna.sources import Split


def test_continuous_is_the_mean_over_arms_of_each_effects_population_variance():
    pred = torch.randn(9, 3, dtype=torch.float64)
    p = pred.numpy()
    ref = np.mean([np.var(p[:, k] - p[:, 0]) for k in (1, 2)])  # ddof 0, a plain loop
    assert float(L.effect_variance(pred, "continuous")) == pytest.approx(ref, rel=1e-12)


def test_classification_reads_every_classs_log_probability():
    logits = torch.randn(7, 2, 3, dtype=torch.float64)
    lp = torch.log_softmax(logits, -1).numpy()
    ref = np.mean([np.var(lp[:, 1, c] - lp[:, 0, c]) for c in range(3)])
    assert float(L.effect_variance(logits, "multiclass")) == pytest.approx(ref, rel=1e-12)


def test_a_constant_effect_costs_nothing_and_a_shift_of_one_arm_changes_nothing():
    base = torch.randn(20, 1)
    pred = torch.cat([base, base + 2.5], dim=1)  # τ̂ = 2.5 everywhere
    assert float(L.effect_variance(pred, "continuous")) == pytest.approx(0.0, abs=1e-12)
    noisy = torch.randn(20, 2)
    shifted = noisy + torch.tensor([0.0, 4.0])
    assert float(L.effect_variance(shifted, "continuous")) == pytest.approx(
        float(L.effect_variance(noisy, "continuous")), rel=1e-6)


def test_compute_parts_adds_it_only_with_a_weight_and_total_loss_weighs_it():
    torch.manual_seed(0)
    model = CSNAModel(4, 2, 0, ModelConfig(k=3, d=8, heads=2, hidden=16, head_hidden=8))
    x, t = torch.randn(16, 4), torch.tensor([0, 1] * 8)
    batch = Split(x=x, t=t, y=torch.randn(16), w=torch.ones(16))
    out = model(x, depth=1)
    off = L.compute_parts(model, out, batch, 1, {}, 0, 1)
    assert "effect" not in off
    on = L.compute_parts(model, out, batch, 1, {"effect": 0.3}, 0, 1)
    torch.testing.assert_close(on["effect"], L.effect_variance(out.pred, "continuous"))
    total, _ = L.total_loss(on, {"effect": 0.3})
    torch.testing.assert_close(total, on["task"] + 0.3 * on["effect"])
    # The gradient pulls the arms' predictions together: a step against it lowers the variance.
    on["effect"].backward()
    with torch.no_grad():
        for prm in model.heads["outcome"].parameters():
            if prm.grad is not None:
                prm -= 0.05 * prm.grad
    assert float(L.effect_variance(model(x, depth=1).pred.detach(), "continuous")) < float(on["effect"].detach())


def test_training_with_the_weight_flattens_the_effects_it_learns(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 4))
    t = (rng.random(400) < 0.5).astype(int)
    y = x[:, 0] + t * (1.0 + x[:, 1]) + 0.5 * rng.normal(size=400)
    path = tmp_path / "t.csv"
    pd.DataFrame({**{f"x{i}": x[:, i] for i in range(4)}, "treatment": t, "outcome": y}).to_csv(path, index=False)
    spread = {}
    for w in (0.0, 3.0):
        cfg = load_config(None, [f"data.source={path}", "train.ensemble=1", "phase1.steps=200", "phase2.epochs=0",
                                 "phase3.epochs=0", "phase4.epochs=0", "train.progress=false",
                                 "train.effect_smoothing=" + str(w), "train.effect_shrink=none"])
        run = train_run(cfg)
        with torch.no_grad():
            pred = run.model(torch.as_tensor(run.prep.features(run.data.X), dtype=torch.float32), depth=1).pred
        spread[w] = float((pred[:, 1] - pred[:, 0]).std())
    assert spread[3.0] < 0.5 * spread[0.0]
