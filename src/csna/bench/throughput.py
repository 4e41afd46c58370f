"""``csna bench throughput``: training and prediction speed on a large synthetic table, and
how much of the machine it uses (issue 6).

Every figure comes from the real training loop (``Trainer.run_phase`` with ``train.max_steps``),
timed between its own per-step callbacks, so set-up and validation are left out and data
batching, losses, backward and the optimizer are in. FLOPs are counted with
``torch.utils.flop_counter.FlopCounterMode`` (matmuls; elementwise work is not counted), and
the machine's peak is a large fp32 matmul timed in the same run, so MFU = model FLOPs per second
over that peak.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from ..config import Config
from ..data import synthetic
from ..model import CSNAModel
from ..perf import tune_malloc
from .. import meta
from ..losses import compute_parts
from ..sources import Split
from ..train import Trainer
from .. import losses as L

WARM_STEPS = 10  # steps left out of each timing (allocator and kernel warm-up)


def matmul_peak_gflops(device: torch.device, n: int = 2048, repeats: int = 5) -> float:
    """Best fp32 GFLOP/s of an (n × n) @ (n × n) matmul on ``device`` with the current threads."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    best = float("inf")
    for _ in range(repeats + 1):
        _sync(device)
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class _StepClock:
    """A Trainer progress callback that timestamps every step."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, total: int, desc: str):
        def update(loss):
            if loss is not None:
                self.times.append(time.perf_counter())
        return update

    def rate(self, batch_size: int) -> float:
        """Samples per second over the steps after the warm-up."""
        t = self.times[WARM_STEPS:]
        if len(t) < 2:
            raise RuntimeError(f"too few timed steps ({len(self.times)}); raise --steps")
        return (len(t) - 1) * batch_size / (t[-1] - t[0])


def table(rows: int, cols: int, seed: int, device: torch.device) -> tuple[Split, Split]:
    """The synthetic table as standardised tensors: training rows and 2,048 validation rows."""
    data = synthetic(rows, cols, seed)
    x = data.X.to_numpy(dtype=np.float32, copy=True)
    x -= x.mean(0)
    x /= x.std(0) + 1e-8
    y = data.Y.astype(np.float32)
    y = (y - y.mean()) / (y.std() + 1e-8)
    X, T, Y = torch.from_numpy(x), torch.from_numpy(data.T), torch.from_numpy(y)
    n_val = min(2048, rows // 10)
    val = Split(X[:n_val].to(device), T[:n_val].to(device), Y[:n_val].to(device))
    # L_causal's inverse-propensity weights: ones here. The weights' values do not change what a
    # step costs, and cross-fitting a propensity on a million rows would only slow the set-up.
    ones = torch.ones(len(T) - n_val)
    train = Split(X[n_val:].to(device), T[n_val:].to(device), Y[n_val:].to(device), ones.to(device))
    return train, val


def train_rate(model: CSNAModel, cfg: Config, train, val: Split, phase: int, batch_size: int, steps: int
               ) -> float:
    """Samples per second of ``steps`` training steps of ``phase`` at ``batch_size``."""
    cfg.train.batch_size = batch_size
    cfg.train.max_steps = steps + WARM_STEPS
    clock = _StepClock()
    trainer = Trainer(model, cfg, train, val, progress=clock)
    if phase < 4:
        trainer.run_phase(phase)
    else:
        meta.run_meta_phase(trainer)
    return clock.rate(batch_size)


def train_flops_per_sample(model: CSNAModel, cfg: Config, batch: Split) -> float:
    """Matmul FLOPs of one phase-3 training step (forward, the L_total parts, backward) per
    sample, counted on the real pass. L_Stable's double backward is left out (FlopCounterMode
    cannot run inside ``torch.autograd.grad``), so MFU comes out a little low, never high."""
    model.train()
    lam = {k: getattr(cfg.phase3, f"lambda_{k}") for k in ("causal", "geometric", "dc", "dis")}
    lam["stable"] = 0.0
    with FlopCounterMode(display=False) as fc:
        out = model(batch.x, depth=3)
        parts = compute_parts(model, out, batch, 3, lam, 0, 1)
        total, _ = L.total_loss(parts, lam)
        total.backward()
    model.zero_grad(set_to_none=True)
    return fc.get_total_flops() / len(batch)


@torch.inference_mode()
def predict_rate(model: CSNAModel, x: torch.Tensor, batch_size: int = 4096, gate_mode: str = "off"
                 ) -> tuple[float, float]:
    """(rows per second, matmul FLOPs per row) of prediction in batches of ``batch_size``:
    the forward pass and the conversion to outcome units, every block run unless gated."""
    model.eval()
    dev = x.device
    for i in range(0, min(len(x), 4 * batch_size), batch_size):  # warm-up
        model(x[i:i + batch_size], depth=3, gate_mode=gate_mode)
    _sync(dev)
    t0 = time.perf_counter()
    for i in range(0, len(x), batch_size):
        out = model(x[i:i + batch_size], depth=3, gate_mode=gate_mode)
        model.to_outcome_units(out.pred)
    _sync(dev)
    rate = len(x) / (time.perf_counter() - t0)
    with FlopCounterMode(display=False) as fc:
        model(x[:batch_size], depth=3, gate_mode=gate_mode)
    return rate, fc.get_total_flops() / min(batch_size, len(x))


def run(rows: int, cols: int, out: Path, *, seed: int = 0, threads: int = 1, steps: int = 200,
        device: str = "auto", source=None, val: Split | None = None, note: str = "",
        precision: str = "fp32") -> dict[str, Any]:
    """Measure and write ``out/throughput.json``; returns the figures.

    Args:
        source: a training batch source (e.g. a stream over a Parquet file) to use instead of
            the in-memory synthetic table of ``rows`` × ``cols``; then ``val`` is required.
    """
    from ..prepare import select_device

    tune_malloc()
    torch.set_num_threads(threads)
    dev = select_device(device)
    torch.manual_seed(seed)
    if source is None:
        train, val = table(rows, cols, seed, dev)
        p = train.x.shape[1]
    else:
        train, p = source, val.x.shape[1]
    cfg = Config()
    cfg.train.threads = threads
    cfg.train.precision = precision
    cfg.train.progress = False
    model = CSNAModel(p, 2, 0, cfg.model).to(dev)

    by_phase = {}
    for n in (1, 2, 3, 4):
        by_phase[str(n)] = train_rate(model, cfg, train, val, n, 128, steps)
    b128 = by_phase["3"]
    b1024 = train_rate(model, cfg, train, val, 3, 1024, max(20, steps // 4))
    probe = train.probe(1024) if source is not None else train.rows(torch.arange(1024, device=dev))
    flops_train = train_flops_per_sample(model, cfg, probe)
    x_pred = (source.probe(200_000).x if source is not None else train.x[:200_000])
    pred_rate, flops_pred = predict_rate(model, x_pred)
    peak = matmul_peak_gflops(dev)
    res = {
        "rows": rows, "cols": p, "device": str(dev), "threads": threads, "seed": seed,
        "precision": precision, "device_name": (torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"),
        "train_samples_per_s_b128": b128,
        "train_samples_per_s_b1024": b1024,
        "train_samples_per_s_by_phase": by_phase,
        "predict_rows_per_s": pred_rate,
        "peak_rss_mb": peak_rss_mb(),
        "matmul_peak_gflops": peak,
        "flops_per_sample_train": flops_train,
        "flops_per_row_predict": flops_pred,
        "mfu_train": flops_train * b1024 / (peak * 1e9),
        "mfu_predict": flops_pred * pred_rate / (peak * 1e9),
        "torch": torch.__version__,
        "note": note,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "throughput.json").write_text(json.dumps(res, indent=2))
    return res


def print_table(res: dict[str, Any], file=sys.stdout) -> None:
    rows = [("train samples/s, phase 3, batch 128", res["train_samples_per_s_b128"]),
            ("train samples/s, phase 3, batch 1024", res["train_samples_per_s_b1024"])]
    rows += [(f"train samples/s, phase {k}, batch 128", v) for k, v in res["train_samples_per_s_by_phase"].items()]
    rows += [("predict rows/s, batch 4096", res["predict_rows_per_s"]),
             ("peak RSS, MB", res["peak_rss_mb"]),
             ("matmul peak, GFLOP/s", res["matmul_peak_gflops"]),
             ("MFU train (batch 1024)", res["mfu_train"]),
             ("MFU predict", res["mfu_predict"])]
    w = max(len(k) for k, _ in rows)
    print(f"| {'what':<{w}} | {'value':>12} |", file=file)
    print(f"|{'-' * (w + 2)}|{'-' * 13}:|", file=file)
    for k, v in rows:
        print(f"| {k:<{w}} | {v:>12.4g} |", file=file)
