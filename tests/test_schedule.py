"""The learning-rate schedule is one pure function of the step (warm-up × cosine × plateau
factor) that the training loop assigns before every step: checked against torch's own
schedulers, and in a real phase, where a plateau must lower the rate."""

from __future__ import annotations

import random

import pytest
import torch

from csna.bench.throughput import table
from csna.config import Config
from csna.logger import RunLogger
from csna.model import CSNAModel
from csna.phases import learning_rate, lr_factor, plateau_factor
from csna.train import Trainer


@pytest.mark.parametrize("trial", range(40))
def test_plateau_factor_matches_torch_reduce_on_plateau(trial):
    rng = random.Random(trial)
    history, v = [], 1.0
    for _ in range(rng.randint(0, 20)):
        v *= rng.choice([0.9, 0.99999, 1.0, 1.05, 0.5])  # improvements, stalls and setbacks
        history.append(v)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=2)
    for h in history:
        ref.step(h)
    assert plateau_factor(history) == pytest.approx(opt.param_groups[0]["lr"], abs=1e-15)


def test_learning_rate_is_torch_lambda_lr_for_warmup_and_cosine():
    base, warm, total = 3e-4, 7, 50
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=base)
    ref = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, warm, total, "cosine"))
    for step in range(total):
        assert learning_rate(base, step, warm, total, "cosine") == opt.param_groups[0]["lr"]  # bit for bit
        opt.step()
        ref.step()
    assert learning_rate(base, total, warm, total, "cosine") == pytest.approx(0.0, abs=1e-20)
    assert learning_rate(base, 20, warm, total, "plateau", 0.25) == base * 0.25


class _Rates(RunLogger):
    """Keeps the learning rate of every logged step."""

    def __init__(self):
        super().__init__(None)
        self.lr: list[float] = []

    def scalars(self, values, step):
        if "lr" in values:
            self.lr.append(values["lr"])


def test_a_plateau_lowers_the_rate_in_a_real_phase():
    """With a rate too small to improve the validation loss, every epoch is a plateau: after
    patience + 1 = 3 epochs without improvement the rate halves, and three later it halves
    again. (Before, LambdaLR rewrote the rate at the next step and the cut was lost.)"""
    train, val = table(256, 5, 0, torch.device("cpu"))
    cfg = Config()
    cfg.train.batch_size = 64
    pc = cfg.phase1
    pc.lr, pc.scheduler, pc.epochs, pc.min_epochs, pc.warmup_steps = 1e-12, "plateau", 8, 8, 0
    pc.early_stopping_patience = 0
    pc.lambda_causal = pc.lambda_dis = 0.0
    log = _Rates()
    tr = Trainer(CSNAModel(train.x.shape[1], 2, 0, cfg.model), cfg, train, val, logger=log)
    tr.run_phase(1)
    per_epoch = tr.source.num_batches(cfg.train.batch_size)
    rates = [log.lr[e * per_epoch] for e in range(8)]
    # epoch 1 sets the best; epochs 2-4 stall, so the cut applies from epoch 5 (index 4) on
    assert rates[:4] == [1e-12] * 4
    assert rates[4] == pytest.approx(0.5e-12) and rates[6] == pytest.approx(0.5e-12)
    assert rates[7] == pytest.approx(0.25e-12)
