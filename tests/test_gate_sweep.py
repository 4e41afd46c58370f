"""The one-pass sweep over hard-gate thresholds against the plain model, one threshold at a time."""

import pytest
import torch

from csna.config import ModelConfig
from csna.gate_sweep import GatePaths, hard_gate_sweep, sweep_rows
from csna.meta import GATE_THRESHOLDS
from csna.model import CSNAModel


def _model(n_classes=0, K=2, p=5, readout="mean"):
    torch.manual_seed(0)
    cfg = ModelConfig(k=6, d=16, heads=2, hidden=32, head_hidden=16, readout=readout)
    m = CSNAModel(p, K, n_classes, cfg).eval()
    with torch.no_grad():  # a controller whose utilities spread over (0, 1), so the thresholds disagree
        for q in m.utility.actor.parameters():
            q.normal_(0.0, 1.5)
    return m


def _one_by_one(m, x, z):
    preds, gates = [], []
    for t in GATE_THRESHOLDS:
        m.gate_threshold.fill_(t)
        out = m(x, depth=3, gate_mode="hard", z=z)
        preds.append(out.pred)
        gates.append(out.gates)
    return torch.stack(preds), torch.stack(gates)


@pytest.mark.parametrize("n_classes, K, readout", [(0, 2, "mean"), (3, 3, "mean"), (0, 2, "nodes")])
def test_sweep_equals_one_pass_per_threshold(n_classes, K, readout):
    m = _model(n_classes, K, readout=readout)
    x = torch.randn(300, 5)
    with torch.no_grad():
        z = m.encoder(x)
        ref_pred, ref_gates = _one_by_one(m, x, z)
        pred, gates = hard_gate_sweep(m, z, GATE_THRESHOLDS)
    assert gates.shape == (len(GATE_THRESHOLDS), 300, m.n_blocks) and pred.shape == ref_pred.shape
    assert torch.equal(gates, ref_gates)
    torch.testing.assert_close(pred, ref_pred, rtol=1e-5, atol=1e-6)
    # the test means something: rows take several paths, and thresholds differ in what they run
    paths = {tuple(map(tuple, ref_gates[:, b].int().tolist())) for b in range(300)}
    assert len(paths) > 5 and 0 < float(ref_gates.mean()) < 1


def test_chunks_do_not_change_the_sweep():
    m = _model()
    x = torch.randn(130, 5)
    with torch.no_grad():
        z = m.encoder(x)
        whole = hard_gate_sweep(m, z, GATE_THRESHOLDS)
        chunked = sweep_rows(m, z, GATE_THRESHOLDS, 3, batch=32)
    assert torch.equal(whole[1], chunked[1])
    torch.testing.assert_close(whole[0], chunked[0], rtol=1e-5, atol=1e-6)


def test_threshold_zero_runs_every_block_and_one_above_every_utility_runs_none():
    m = _model()
    x = torch.randn(40, 5)
    with torch.no_grad():
        z = m.encoder(x)
        pred, gates = hard_gate_sweep(m, z, [0.0, 1.01])
        full = m(x, depth=3, gate_mode="off", z=z).pred
        none = m.heads["outcome"](z.mean(dim=1))
    assert torch.all(gates[0] == 1) and torch.all(gates[1] == 0)
    torch.testing.assert_close(pred[0], full, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(pred[1], none, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n_classes, K, readout", [(0, 2, "mean"), (3, 3, "mean"), (0, 2, "nodes")])
def test_paths_built_once_follow_a_controller_that_keeps_training(n_classes, K, readout):
    """GatePaths holds every path of a frozen backbone; its sweep must equal hard_gate_sweep
    with the controller as it is at the time of the sweep, not as it was when the paths were built."""
    m = _model(n_classes, K, readout=readout)
    x = torch.randn(200, 5)
    with torch.no_grad():
        z = m.encoder(x)
        paths = GatePaths(m, z, batch=64)  # chunks of another size than the sweep's
        assert paths.leaves.shape[0] == 2 ** m.n_blocks
        seen = []
        for _ in range(3):
            ref_pred, ref_gates = _one_by_one(m, x, z)
            pred, gates = paths.sweep(m, GATE_THRESHOLDS)
            assert torch.equal(gates, ref_gates)
            torch.testing.assert_close(pred, ref_pred, rtol=1e-5, atol=1e-6)
            seen.append(ref_gates)
            for q in m.utility.actor.parameters():  # the controller moves; the backbone does not
                q.add_(0.5 * torch.randn_like(q))
    assert not torch.equal(seen[0], seen[-1])  # the controller's moves changed the gates, so the test can fail
