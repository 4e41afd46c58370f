"""train.precision: bf16 autocast runs the training matmuls in bfloat16, keeps fp32 weights,
and trains as well as fp32 on a task both can learn."""

from __future__ import annotations

import pytest
import torch

from csna.bench.throughput import table
from csna.config import Config, ConfigError, load_config
from csna.model import CSNAModel
from csna.train import Trainer, set_seed


def _fit(precision: str, seen: list[torch.dtype] | None = None) -> tuple[Trainer, float]:
    set_seed(0)
    train, val = table(3000, 10, 0, torch.device("cpu"))
    cfg = Config()
    cfg.train.precision, cfg.train.batch_size, cfg.train.progress = precision, 128, False
    for n in (1, 2, 3):
        cfg.phase(n).epochs = 2
    cfg.phase1.min_epochs = 1
    cfg.phase4.epochs = 1
    model = CSNAModel(train.x.shape[1], 2, 0, cfg.model)
    if seen is not None:  # the dtype the first attention block's MLP computes in, while training
        model.attention[0].mlp[0].register_forward_hook(
            lambda m, i, o: seen.append(o.dtype) if m.training else None)
    trainer = Trainer(model, cfg, train, val)
    trainer.fit()
    return trainer, trainer.validation_loss(3)


def test_bf16_trains_in_bf16_with_fp32_weights_and_matches_fp32():
    seen: list[torch.dtype] = []
    trainer, loss_bf16 = _fit("bf16", seen)
    assert seen and set(seen) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    _, loss_fp32 = _fit("fp32")
    # bf16 keeps 8 bits of mantissa; the fitted models should be about as good.
    assert loss_bf16 == pytest.approx(loss_fp32, rel=0.15)
    assert loss_fp32 < 0.9  # both learned something (the outcome is standardised: 1 = nothing)


def test_fp32_training_never_autocasts():
    seen: list[torch.dtype] = []
    _fit("fp32", seen)
    assert seen and set(seen) == {torch.float32}


def test_unknown_precision_is_a_config_error():
    with pytest.raises(ConfigError, match="train.precision"):
        load_config(None, ["train.precision=fp16"])
