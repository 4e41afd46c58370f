"""The CUDA paths (device selection, pinned-memory streaming, bf16 autocast, gated forward)
against the CPU. Skipped without a GPU; run on one with ``python -m pytest -m gpu``."""

from __future__ import annotations

import json

import pytest
import torch

from csna import checkpoint as ckpt
from csna.cli import main
from csna.config import Config
from csna.data.synthetic_parquet import write_synthetic
from csna.model import CSNAModel
from csna.nn.rope import causal_rope_scores
from csna.rundir import load_run

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
CUDA = torch.device("cuda")
TINY = ["--set", "train.ensemble=1", "--set", "phase1.epochs=2", "--set", "phase1.min_epochs=1",
        "--set", "phase2.epochs=1", "--set", "phase3.epochs=1", "--set", "phase4.epochs=1", "--no-figures", "--quiet"]


@pytest.fixture(autouse=True)
def _exact_matmuls():
    # TF32 would make the CUDA side differ from the CPU by ~1e-3 for reasons unrelated to csna.
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = old


def test_causal_rope_scores_match_the_cpu():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(64, 4, 8, 8, generator=g), torch.randn(64, 4, 8, 8, generator=g)
    dist = torch.randint(-4, 5, (8, 8), generator=g).float()
    theta0, w = torch.randn(4, generator=g), torch.rand(4, generator=g) + 0.5
    ref = causal_rope_scores(q, k, dist, theta0, w, d_max=3)
    got = causal_rope_scores(q.to(CUDA), k.to(CUDA), dist.to(CUDA), theta0.to(CUDA), w.to(CUDA), d_max=3)
    torch.testing.assert_close(got.cpu(), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("gate_mode", ["off", "hard"])
def test_model_forward_matches_the_cpu(gate_mode):
    torch.manual_seed(0)
    cpu = CSNAModel(20, 2, 0, Config().model).eval()
    with torch.no_grad():  # a controller that skips some blocks for some rows
        cpu.utility.actor[-1].bias.fill_(0.0)
    gpu = CSNAModel(20, 2, 0, Config().model).to(CUDA).eval()
    gpu.load_state_dict(cpu.state_dict())
    x = torch.randn(500, 20)
    with torch.no_grad():
        a, b = cpu(x, depth=3, gate_mode=gate_mode), gpu(x.to(CUDA), depth=3, gate_mode=gate_mode)
    if gate_mode == "hard":
        assert torch.equal(a.gates, b.gates.cpu()) and 0 < float(a.gates.mean()) < 1
    torch.testing.assert_close(b.pred.cpu(), a.pred, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_train_on_cuda_then_load_on_cpu(tmp_path, precision):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--set", "train.device=cuda",
                 "--set", f"train.precision={precision}"] + TINY) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["sqrt_pehe_out"] == m["sqrt_pehe_out"] and m["sqrt_pehe_out"] < 10
    state = ckpt.load(out / "meta_controller.pt", map_location="cpu")
    assert all(v.device.type == "cpu" for v in state["model_state"].values())
    assert main(["evaluate", str(out)]) == 0
    run = load_run(out, device="cpu")
    assert next(run.model.parameters()).device.type == "cpu"


def test_streamed_training_on_cuda(tmp_path):
    data = tmp_path / "t.parquet"
    write_synthetic(data, rows=6000, cols=12, seed=3, chunk_rows=1000)
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(out), "--set", "train.device=cuda",
                 "--set", "data.stream=true", "--set", "data.stream_fit_rows=1500",
                 "--set", "data.stream_eval_rows=800", "--set", "train.batch_size=256"] + TINY) == 0
    assert json.loads((out / "metrics.json").read_text())["n_train"] > 0


def test_a_run_interrupted_on_cuda_resumes(tmp_path):
    # A checkpoint read with map_location="cuda" carries its RNG states on the GPU; restoring
    # them failed ("RNG state must be a torch.ByteTensor") until they were moved back.
    rd = tmp_path / "run"
    assert main(["train", "--out", str(rd), *TINY]) == 0
    state = ckpt.load(rd / "causal_encoder.pt", map_location=CUDA)
    assert state["rng"]["torch"].device.type == "cuda"
    ckpt.set_rng_state(state["rng"])
    for name in ("lattice_encoder.pt", "attention_model.pt", "meta_controller.pt", ckpt.LATEST):
        (rd / name).unlink(missing_ok=True)  # back to the end of phase 1
    assert main(["train", "--resume", str(rd), "--quiet", "--no-figures"]) == 0
    assert (rd / "meta_controller.pt").is_file()
