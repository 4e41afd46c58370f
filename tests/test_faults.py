"""Faults while training: a non-finite batch is skipped, counted and logged; a full disk
during a checkpoint write keeps the previous checkpoint and ends in one line, exit 2."""

import errno
import os

import numpy as np
import pytest
import torch

from csna import checkpoint as ckpt
from csna.cli import main
from csna.config import load_config
from csna.prepare import build_model, fit_preparation, load_data, split_data, to_split
from csna import meta
from csna.sources import batch_order
from csna.train import Trainer, TrainingError

TINY = ["train.ensemble=1", "phase1.epochs=2", "phase1.min_epochs=1", "phase2.epochs=1", "phase3.epochs=1",
        "phase4.epochs=1", "train.threads=1", "log.tensorboard=false"]


class Recorder:
    """A RunLogger stand-in that keeps every scalar."""

    def __init__(self):
        self.scalars_ = []

    def scalar(self, tag, value, step):
        self.scalars_.append((tag, float(value), step))

    def scalars(self, values, step):
        for k, v in values.items():
            self.scalar(k, v, step)

    step_scalars = scalars

    def histogram(self, *a):
        pass

    def text(self, *a):
        pass

    def close(self):
        pass


def _trainer(overrides, poison_rows=()):
    cfg = load_config(None, TINY + overrides)
    torch.set_num_threads(cfg.train.threads)  # as train_run does
    data = load_data(cfg)
    splits = split_data(cfg, data)
    prep = fit_preparation(cfg, data, splits["train"])
    torch.manual_seed(cfg.train.seed)
    model = build_model(prep, cfg, torch.device("cpu"))
    train = to_split(prep, data, splits["train"], torch.device("cpu"))
    train.x[list(poison_rows), 0] = float("nan")  # a corrupted feature in these training rows
    val = to_split(prep, data, splits["val"], torch.device("cpu"))
    log = Recorder()
    return Trainer(model, cfg, train, val, logger=log), log, cfg


def _batches_hit(cfg, n, phase, epoch, rows):
    order = batch_order(n, cfg.train.batch_size, cfg.train.seed * 1000 + phase * 100 + epoch, torch.device("cpu"))
    return sum(bool(np.isin(b.numpy(), rows).any()) for b in order)


def test_nan_batches_are_skipped_counted_and_logged():
    rows = [300]  # outside phase 1's z-stability probe (the first 256 rows)
    trainer, log, cfg = _trainer([], poison_rows=rows)
    results = trainer.fit()
    n = len(trainer.source)
    for phase, res in results.items():
        epochs = cfg.phase(phase).epochs
        expected = sum(_batches_hit(cfg, n, phase if phase < 4 else 4, e, rows) for e in range(epochs))
        assert res.skipped == expected == epochs, phase  # one poisoned batch per epoch
        assert res.history[-1]["skipped"] == expected
        assert np.isfinite(res.best_val)
    skips = [v for tag, v, _ in log.scalars_ if tag == "train/skipped_batches"]
    assert skips and max(skips) == 2  # phase 1 has two epochs
    assert all(bool(torch.isfinite(p).all()) for p in trainer.model.parameters())  # NaN never reached a weight


def test_too_many_bad_batches_in_a_row_stop_with_a_clear_error():
    trainer, _, _ = _trainer(["train.max_bad_batches=3"], poison_rows=range(470))
    with pytest.raises(TrainingError, match="3 non-finite batches in a row"):
        trainer.fit((1,))


def test_full_disk_during_training_keeps_the_last_checkpoint(tmp_path, capsys, monkeypatch):
    real_fsync, calls = os.fsync, []

    def fsync(fd):  # the disk fills up after two checkpoint writes (a file and a directory fsync each)
        calls.append(fd)
        if len(calls) > 4:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    rd = tmp_path / "run"
    argv = ["train", "--out", str(rd), "--quiet", "--no-figures", "--set", "train.checkpoint_every=3"]
    code = main(argv + [a for s in TINY for a in ("--set", s)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "No space left on device" in err and "latest.pt" in err and "unchanged" in err
    state = ckpt.load(rd / ckpt.LATEST)  # the previous state: whole and readable
    assert state["phase"] == 1 and state["progress"]["step"] == 6
    assert not list(rd.glob(".*.tmp"))
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert main(["train", "--resume", str(rd), "--quiet", "--no-figures"]) == 0  # and it resumes


@pytest.mark.parametrize("unit", ["train", "val"])
def test_phase4_prices_eta_in_the_chosen_loss_unit(unit):
    trainer, _, _ = _trainer([f"phase4.loss_unit={unit}"])
    trainer.fit((1, 2, 3))
    full_val = trainer.validation_loss(3)
    full_train = meta.mean_finite_loss(trainer, trainer.source.probe(10**6))
    meta.run_meta_phase(trainer)
    assert trainer.loss_scale == pytest.approx(full_val if unit == "val" else full_train, rel=1e-6)
    assert full_val != pytest.approx(full_train, rel=1e-3)  # the two units differ, so the test can fail


def test_ate_drift_is_the_shift_of_the_average_effect_under_the_gates():
    trainer, _, _ = _trainer([])
    trainer.fit((1, 2, 3))
    model, val = trainer.model, trainer.val
    last = model.utility.actor[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(20.0)  # every block runs: the gated model is the full model
    assert meta.ate_drift(trainer) == 0.0
    with torch.no_grad():
        last.bias.fill_(-20.0)  # every block skipped
        model.eval()
        full = model(val.x, depth=3).pred
        none = model(val.x, depth=3, gate_mode="given", gates=torch.zeros(len(val), model.n_blocks)).pred
    expected = abs(float((none[:, 1] - none[:, 0]).mean() - (full[:, 1] - full[:, 0]).mean()))
    assert expected > 1e-4  # skipping every block does move the ATE here, so the test can fail
    assert meta.ate_drift(trainer) == pytest.approx(expected, rel=1e-5)


def _reference_check(trainer, costs, eta, t):
    """Slow, separate reference for one threshold: the gates written out from u, then the
    model run with those gates (gate_mode="given"), block by block as the forward does."""
    model, val, w = trainer.model, trainer.val, trainer.cfg.phase4.cf_weight
    model.eval()
    with torch.no_grad():
        full = model(val.x, depth=3).pred
        model.gate_threshold.fill_(t)
        hard = model(val.x, depth=3, gate_mode="hard")
        given = model(val.x, depth=3, gate_mode="given", gates=(hard.u >= t).float())
    torch.testing.assert_close(given.pred, hard.pred)
    per = ((given.pred.gather(1, val.t[:, None]).squeeze(1) - val.y) ** 2)
    cf = 1 - torch.nn.functional.one_hot(val.t, 2).float()
    per = per + w * (((given.pred - full) ** 2) * cf).sum(1)
    ate = float(((given.pred[:, 1] - given.pred[:, 0]).mean() - (full[:, 1] - full[:, 0]).mean()).abs())
    reward = float((-per / trainer.loss_scale - eta * (given.gates * costs).sum(1)).mean())
    # Effect drift: τ̂ gated minus full, over validation and training rows, row by row, over the
    # full model's validation RMSE.
    xs = torch.cat([val.x, trainer.source.probe(meta.CATE_ROWS).x])
    sq = []
    with torch.no_grad():
        for i in range(len(xs)):
            f = model(xs[i:i + 1], depth=3).pred[0]
            g = model(xs[i:i + 1], depth=3, gate_mode="hard").pred[0]
            sq.append(float((g[1] - g[0]) - (f[1] - f[0])) ** 2)
    rmse = float(((full.gather(1, val.t[:, None]).squeeze(1) - val.y) ** 2).mean().sqrt())
    cate = (sum(sq) / len(sq)) ** 0.5 / rmse
    return float(per.mean()), ate, reward, cate


def test_gate_calibration_picks_the_best_threshold_within_the_guards():

    trainer, _, _ = _trainer(["phase4.epochs=2", "phase4.eta=0.5"])
    trainer.fit((1, 2, 3, 4))
    model = trainer.model
    costs = model.block_costs.clone()
    # Phase 4's rows, built once before the controller moves (CalibrationRows with frozen paths):
    # they must choose as the rows computed afresh do, with the controller as it is now.
    frozen = {c: meta.CalibrationRows(trainer, c, frozen=True) for c in (0.0, 1.0)}
    assert all(r.paths is not None for r in frozen.values())
    with torch.no_grad():  # utilities spread over (0, 1), so thresholds give different gates
        model.utility.actor[-1].bias.fill_(0.0)
        model.utility.actor[-1].weight.mul_(4.0)
    full_loss = trainer.validation_loss(3)
    checks = {t: _reference_check(trainer, costs, 0.5, t) for t in meta.GATE_THRESHOLDS}
    assert len({round(c[2], 9) for c in checks.values()}) > 3  # thresholds matter here
    picks = []
    cates = sorted(c[3] for c in checks.values())
    assert cates[-1] > 2 * cates[0] + 1e-3  # thresholds move τ̂ by different amounts
    # A bar just under the drift of the unconstrained pick (and above the next smaller drift),
    # so the effect-drift guard alone must change the choice.
    free = max(checks, key=lambda s: checks[s][2])
    assert checks[free][3] > 1e-4  # the best-reward bar does move τ̂ here
    lower = max(c[3] for c in checks.values() if c[3] < checks[free][3] * 0.99 - 1e-6)
    mid = 0.5 * (lower + checks[free][3])
    for limit, tol, ctol in [(full_loss + 1e-3, 1e-3, 0.0), (full_loss + 0.2, 0.05, 0.0), (1e9, 1e9, 0.0),
                             (1e9, 1e9, mid)]:
        ok = {t: c for t, c in checks.items() if c[0] <= limit and c[1] <= tol and (ctol == 0 or c[3] <= ctol)}
        cached = meta.calibrate_gates(trainer, costs, 0.5, limit, tol, ctol, frozen[1.0 if ctol else 0.0])
        cal = meta.calibrate_gates(trainer, costs, 0.5, limit, tol, ctol)
        assert cached.threshold == cal.threshold and cached.passed == cal.passed
        assert cached[:1] + cached[2:5] == pytest.approx(cal[:1] + cal[2:5], rel=1e-5, abs=1e-7)
        t = cal.threshold
        picks.append(t)
        assert cal.passed == bool(ok)
        if ok:
            best = max(ok, key=lambda s: ok[s][2])
            assert t == best and cal.reward == pytest.approx(ok[best][2], rel=1e-5)
            assert (cal.loss, cal.ate_drift) == pytest.approx(ok[best][:2], rel=1e-5, abs=1e-7)
            if ctol:
                assert cal.cate_drift == pytest.approx(ok[best][3], rel=1e-4, abs=1e-6)
        else:
            assert t == 0.5 and (cal.loss > limit or cal.ate_drift > tol)
        assert float(model.gate_threshold) == pytest.approx(t)
    assert len(set(picks)) >= 2  # the guards bind: tight ones choose another threshold
    assert picks[-1] != picks[-2]  # the effect-drift guard alone changes the choice
