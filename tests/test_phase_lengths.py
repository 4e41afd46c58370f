"""csna.schedule: phase lengths as a rule of the training rows, against the written formula."""

import math

import pytest

from csna.config import load_config
from csna.schedule import MAX_SCALE, REFERENCE_ROWS, phase_epochs, resolve_schedule, step_scale


def test_ihdp_size_gets_the_lengths_chosen_on_ihdp():
    # 747 rows, 63% for training: 8 batches of 64 an epoch, 480 / 320 steps.
    cfg = resolve_schedule(load_config(None), 470)
    assert [cfg.phase(n).epochs for n in (1, 2, 3, 4)] == [60, 40, 40, 40]
    assert cfg.phase1.min_epochs == 30


@pytest.mark.parametrize("n", [2, 64, 499, 500, 2000, 31_500, 10**6])
def test_steps_follow_the_square_root_rule(n):
    scale = step_scale(n)
    assert scale == min(MAX_SCALE, max(1.0, math.sqrt(n / REFERENCE_ROWS)))
    epochs = phase_epochs(480, n, 64)
    per_epoch = math.ceil(n / 64)
    # the fewest whole epochs that give at least the rule's steps
    assert epochs * per_epoch >= round(480 * scale) > (epochs - 1) * per_epoch


def test_larger_tables_get_more_steps_and_fewer_epochs():
    sizes = [300, 1000, 3000, 10_000, 30_000, 100_000]
    steps = [phase_epochs(480, n, 64) * math.ceil(n / 64) for n in sizes]
    epochs = [phase_epochs(480, n, 64) for n in sizes]
    assert steps == sorted(steps) and epochs == sorted(epochs, reverse=True)


def test_set_epochs_win_and_zero_skips():
    cfg = resolve_schedule(load_config(None, ["phase1.epochs=3", "phase4.epochs=0", "phase2.steps=0"]), 5000)
    assert (cfg.phase1.epochs, cfg.phase2.epochs, cfg.phase4.epochs) == (3, 0, 0)
    assert cfg.phase1.min_epochs == 30  # as set: not capped when epochs are given
    assert cfg.phase3.epochs == phase_epochs(320, 5000, 64)


def test_a_run_trains_the_resolved_epochs(tmp_path):
    from csna.data import synthetic
    from csna.ensemble import train_run
    from csna.rundir import load_run

    data = synthetic(n=120, p=4, seed=0)
    over = ["phase1.steps=6", "phase2.steps=4", "phase3.steps=4", "phase4.steps=2", "train.ensemble=1",
            "model.hidden=16", "model.head_hidden=16", "model.d=8", "model.k=3", "log.tensorboard=false",
            "train.progress=false", "phase1.min_epochs=1", "train.batch_size=16"]
    run = train_run(load_config(None, over), data, tmp_path / "run")
    n_train = len(run.splits["train"])
    want = [phase_epochs(s, n_train, 16) for s in (6, 4, 4, 2)]
    assert [run.trainer.results[n].epochs for n in (1, 2, 3, 4)] == want
    saved = load_run(tmp_path / "run").cfg
    assert [saved.phase(n).epochs for n in (1, 2, 3, 4)] == want  # config.yaml records the lengths
