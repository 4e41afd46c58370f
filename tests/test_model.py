import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from csna.config import ModelConfig
from csna.model import CSNAModel, gated
from csna.nn.lattice import LatticeLayer, LearnedAdjacency, in_degree_normalised, soft_threshold_st


def make(k=6, d=16, heads=2, n_classes=0, K=2, p=5, **kw):
    torch.manual_seed(0)
    cfg = ModelConfig(k=k, d=d, heads=heads, hidden=32, head_hidden=16, **kw)
    return CSNAModel(p, K, n_classes, cfg).eval()


def test_shapes_per_depth_and_outcome_kind():
    x = torch.randn(7, 5)
    m = make()
    for depth in (1, 2, 3):
        out = m(x, depth=depth)
        assert out.pred.shape == (7, 2) and out.prop_logits.shape == (7, 2) and out.z.shape == (7, 6, 16)
        assert (out.h is None) == (depth < 2) and (out.r is None) == (depth < 3)
    mc = make(n_classes=3, K=3)
    assert mc(x).pred.shape == (7, 3, 3)
    probs = mc.to_outcome_units(mc(x).pred)
    assert torch.allclose(probs.sum(-1), torch.ones(7, 3))


def test_soft_threshold_exact_zeros_and_straight_through_gradient():
    a = torch.tensor([0.05, 0.1, 0.3], requires_grad=True)
    out = soft_threshold_st(a, 0.1)
    assert out.tolist() == pytest.approx([0.0, 0.0, 0.2])
    out.sum().backward()
    # the entry below τ still gets a gradient, so it can come back
    assert a.grad.tolist() == [1.0, 1.0, 1.0]


def test_adjacency_mask_and_every_allowed_edge_gets_gradient():
    forbidden = torch.zeros(5, 5, dtype=torch.bool)
    forbidden[0, 1] = True
    adj = LearnedAdjacency(5, tau=0.1, forbidden=forbidden)
    A = adj()
    assert torch.all(A.diagonal() == 0) and A[0, 1] == 0 and torch.all(A >= 0)
    A.sum().backward()
    allowed = ~torch.eye(5, dtype=torch.bool) & ~forbidden
    # straight-through: alive or below τ, every allowed edge can move; masked ones never
    assert torch.all(adj.W.grad[allowed] != 0) and torch.all(adj.W.grad[~allowed] == 0)


def test_distance_reads_the_dominant_orientation():
    from csna.model import dominant_edges
    from csna.nn.distance import causal_distance
    A = torch.tensor([[0.0, 0.6, 0.0], [0.4, 0.0, 0.5], [0.0, 0.1, 0.0]])
    D = dominant_edges(A)
    assert torch.equal(D, torch.tensor([[0.0, 0.6, 0.0], [0.0, 0.0, 0.5], [0.0, 0.0, 0.0]]))
    d, _ = causal_distance(D, 0.25)
    assert d.tolist() == [[0, -1, -2], [1, 0, -1], [2, 1, 0]]  # the chain 0 → 1 → 2


def test_lattice_layer_matches_parent_loop():
    torch.manual_seed(1)
    layer = LatticeLayer(4).eval()
    A = torch.rand(5, 5) * (1 - torch.eye(5))
    A[A < 0.4] = 0
    h = torch.randn(3, 5, 4)
    got = layer(h, in_degree_normalised(A))
    ref = torch.empty_like(h)
    for b in range(3):
        for j in range(5):
            w = A[:, j]
            agg = sum(w[i] * layer.msg(h[b, i]) for i in range(5)) / (w.sum() + 1e-6)
            pre = h[b, j] + layer.act(agg + layer.self_(h[b, j]))
            ref[b, j] = layer.norm(pre)
    assert torch.allclose(got, ref, atol=1e-5)


def test_gate_zero_is_exact_identity_and_rows_with_all_gates_on_match_full():
    m = make()
    x = torch.randn(9, 5)
    g = torch.ones(9, m.n_blocks)
    g[::2] = 0  # even rows skip every block
    g[1, 2] = 0  # row 1 skips one attention block
    full = m(x, gate_mode="off")
    part = m(x, gate_mode="given", gates=g)
    on = g.all(dim=1)
    assert torch.allclose(part.pred[on], full.pred[on], atol=1e-6)
    # rows that skip every block read the heads straight from z
    assert torch.allclose(part.rep[::2], full.z[::2].mean(1), atol=1e-6)


def test_gated_helper_identity():
    s = torch.randn(4, 3, 2)
    g = torch.tensor([1.0, 0.0, 1.0, 0.0])
    out = gated(lambda v: v * 2, s, g)
    assert torch.equal(out[1], s[1]) and torch.equal(out[3], s[3])
    assert torch.equal(out[0], 2 * s[0])


def _flops(fn):
    with FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops()


def test_skipped_block_costs_zero_flops():
    m = make()
    x = torch.randn(16, 5)
    all_on = torch.ones(16, m.n_blocks)
    one_off = all_on.clone()
    one_off[:, 3] = 0  # the last attention block skipped by every row
    f_on = _flops(lambda: m(x, gate_mode="given", gates=all_on))
    f_off = _flops(lambda: m(x, gate_mode="given", gates=one_off))
    blk = m.attention[1]
    from csna.model import dominant_edges
    from csna.nn.distance import causal_distance
    d, u = causal_distance(dominant_edges(m.lattice.adjacency()), m.cfg.edge_eps)
    f_blk = _flops(lambda: blk(torch.randn(16, 6, 16), d, u))
    assert f_on - f_off == f_blk > 0


def test_block_costs_are_measured_and_normalised():
    m = make()
    c = m.measure_block_costs()
    assert c.shape == (m.n_blocks,) and torch.isclose(c.sum(), torch.tensor(1.0))
    assert c[2] > c[0]  # an attention block costs more than a lattice layer


def test_causal_distance_once_per_forward(monkeypatch):
    import csna.model as model_mod
    calls = []
    real = model_mod.causal_distance
    monkeypatch.setattr(model_mod, "causal_distance", lambda *a, **k: calls.append(1) or real(*a, **k))
    m = make()
    m(torch.randn(3, 5))
    assert len(calls) == 1


def test_hard_gates_use_the_calibrated_threshold_and_old_checkpoints_load():
    torch.manual_seed(0)
    model = CSNAModel(10, 2, 0, ModelConfig()).eval()
    with torch.no_grad():
        model.utility.actor[-1].bias.fill_(0.0)  # utilities spread around 0.5
    x = torch.randn(300, 10)
    with torch.no_grad():
        u = model(x, depth=3, gate_mode="hard").u
        rates = []
        for t in u[:, 0].quantile(torch.tensor([0.25, 0.5, 0.75])).tolist():
            model.gate_threshold.fill_(t)
            g = model(x, depth=3, gate_mode="hard").gates
            # the first block's utility is read before any gate, so its gate is exactly u ≥ t
            assert torch.equal(g[:, 0], (u[:, 0] >= model.gate_threshold).float())
            rates.append(float(g[:, 0].mean()))
    assert rates[0] > rates[1] > rates[2]  # a higher bar runs the block for fewer rows
    old = {k: v for k, v in model.state_dict().items() if k != "gate_threshold"}  # before calibration
    fresh = CSNAModel(10, 2, 0, ModelConfig())
    fresh.gate_threshold.fill_(0.9)
    fresh.load_state_dict(old, strict=True)
    assert float(fresh.gate_threshold) == 0.5


@pytest.mark.parametrize("norm", [True, False])
def test_encoder_nodes_are_layer_normed_only_when_asked(norm):
    from csna.nn.encoder import CausalEncoder

    torch.manual_seed(0)
    enc = CausalEncoder(7, k=3, d=4, hidden=16, norm=norm)
    x = torch.randn(50, 7)
    raw = enc.out(enc.trunk(x)).view(50, 3, 4)  # the trunk's output, reshaped by hand
    z = enc(x)
    if norm:  # per node: zero mean and unit (biased) variance, then the affine of LayerNorm (1, 0)
        expected = (raw - raw.mean(-1, keepdim=True)) / (raw.var(-1, unbiased=False, keepdim=True) + 1e-5).sqrt()
        torch.testing.assert_close(z, expected)
    else:
        torch.testing.assert_close(z, raw)
        assert not torch.allclose(raw.var(-1), torch.ones(50, 3), atol=0.1)  # the scale is kept


def test_shared_outcome_head_adds_one_prognostic_function_to_every_arm():
    from csna.nn.heads import OutcomeHeads

    torch.manual_seed(0)
    heads = OutcomeHeads(6, 3, hidden=8, shared=True)
    rep = torch.randn(5, 6)
    g = heads.shared(rep)  # (5, 1)
    expected = torch.cat([h(rep) for h in heads.heads], dim=1) + g  # a loop over arms, by hand
    assert torch.allclose(heads(rep), expected)
    # A treated row's factual loss trains g, and so moves the control arm's prediction too.
    heads(rep)[:, 1].sum().backward()
    g0 = heads.heads[0][0].weight.grad
    assert heads.shared[0].weight.grad.abs().sum() > 0 and (g0 is None or not g0.any())
    assert OutcomeHeads(6, 3, hidden=8).shared is None  # off by default: TARNet's heads alone


@pytest.mark.parametrize("nodes", ["latent", "variables"])
def test_node_readout_sees_which_node_holds_what_the_mean_cannot(nodes):
    """The mean readout is blind to a permutation of the nodes, which is what a different
    attention pattern routing the same values to other nodes produces; ``readout: nodes`` reads
    each node in its own place (k·d inputs) and is not."""
    torch.manual_seed(0)
    variables = (["a", "b", "c", "t", "y"], [0, 1, 2]) if nodes == "variables" else None
    out = {}
    for readout in ("mean", "nodes"):
        torch.manual_seed(0)
        cfg = ModelConfig(k=6, d=16, heads=2, hidden=32, head_hidden=16, nodes=nodes, readout=readout)
        m = CSNAModel(3, 2, 0, cfg, variables=variables).eval()
        state = torch.randn(9, m.k, 16)
        perm = torch.randperm(m.k)
        assert m.rep_dim == 16 * (m.k if readout == "nodes" else 1)
        assert m.readout(state).shape == (9, m.rep_dim)
        torch.testing.assert_close(m.readout(state)[:, :16] if readout == "nodes" else m.readout(state),
                                   state[:, 0] if readout == "nodes" else state.sum(1) / m.k)
        same = m.heads["outcome"](m.readout(state)), m.heads["outcome"](m.readout(state[:, perm]))
        out[readout] = float((same[0] - same[1]).abs().max().detach())
        assert m(torch.randn(4, 3)).pred.shape == (4, 2)  # the whole forward, every depth's readout
    assert out["mean"] < 1e-6 and out["nodes"] > 1e-3
