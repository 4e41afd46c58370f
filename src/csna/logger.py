"""Run logging: TensorBoard by default, Weights & Biases as an optional second logger (seed §VII)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


class RunLogger:
    """Writes scalars and histograms to TensorBoard (``run_dir/tb``) and, when asked, to W&B.

    With ``run_dir=None`` nothing is written (library use, tests).
    """

    def __init__(self, run_dir: str | Path | None, tensorboard: bool = True, wandb: bool = False,
                 wandb_project: str = "csna", wandb_mode: str = "offline", config: dict | None = None,
                 every_steps: int = 1):
        self.tb = None
        self.wb = None
        self.every_steps = max(int(every_steps), 1)
        if run_dir is None:
            return
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(log_dir=str(Path(run_dir) / "tb"))
        if wandb:
            try:
                import wandb as _wandb
            except ImportError:
                raise ImportError("log.wandb is true but wandb is not installed: pip install 'csna[wandb]'") from None
            os.environ.setdefault("WANDB_SILENT", "true")
            self.wb = _wandb.init(project=wandb_project, mode=wandb_mode, dir=str(run_dir), config=config or {},
                                  reinit=True)

    def scalar(self, tag: str, value: float, step: int) -> None:
        if self.tb is not None:
            self.tb.add_scalar(tag, value, step)
        if self.wb is not None:
            self.wb.log({tag: value}, step=step)

    def scalars(self, values: dict[str, float], step: int) -> None:
        for k, v in values.items():
            self.scalar(k, v, step)

    def step_scalars(self, values: dict[str, float], step: int) -> None:
        """One training step's scalars, written on every ``every_steps``-th global step only
        (``log.every_steps``): TensorBoard's event writer checksums each event in pure Python
        (tensorboard's CRC-32C stand-in without TensorFlow), and at every step it took 5 s of a
        39 s fit. The epoch means are in ``history.json`` and the epoch-level scalars either way."""
        if step % self.every_steps == 0:
            self.scalars(values, step)

    def histogram(self, tag: str, values: torch.Tensor, step: int) -> None:
        if self.tb is not None:
            self.tb.add_histogram(tag, values.detach().float().cpu(), step)
        if self.wb is not None:
            import wandb as _wandb

            self.wb.log({tag: _wandb.Histogram(values.detach().float().cpu().numpy())}, step=step)

    def text(self, tag: str, value: Any, step: int = 0) -> None:
        if self.tb is not None:
            self.tb.add_text(tag, str(value), step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.flush()
            self.tb.close()
        if self.wb is not None:
            self.wb.finish()
