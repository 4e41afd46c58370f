"""Where training batches come from: rows held in memory (``TensorSource``) cut into seeded
global batches. A streamed table (``csna.streaming.StreamSource``) offers the same methods.

Shape alphabet: n rows, p features.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

EVAL_BATCH = 8192  # rows per forward pass of the validation-type passes (bounded memory)


@dataclass
class Split:
    """One part of the data as tensors on the training device."""

    x: torch.Tensor  # (n, p) float32
    t: torch.Tensor  # (n,) int64
    y: torch.Tensor  # (n,) float32 (standardised) or int64
    # (n,) float32 stabilised inverse-propensity weight of the received arm, P(T = t_i) / ê(x_i)
    # clipped: L_causal's identified reference. Rows held in memory: ê cross-fitted
    # (csna.propensity); a streamed batch: ê fitted on the stream's probe rows (Trainer.weighted).
    # Training rows only; None elsewhere.
    w: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.x.shape[0]

    def rows(self, idx: torch.Tensor) -> "Split":
        return Split(self.x[idx], self.t[idx], self.y[idx], None if self.w is None else self.w[idx])


def batch_order(n: int, batch_size: int, seed: int, device: torch.device) -> list[torch.Tensor]:
    """A seeded permutation cut into batches; a final batch of one row is dropped (batch-level
    losses need at least two rows)."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g).to(device)
    out = [perm[i:i + batch_size] for i in range(0, n, batch_size)]
    if len(out) > 1 and len(out[-1]) < 2:
        out = out[:-1]
    return out


class TensorSource:
    """Training rows held in memory; each epoch a seeded permutation cut into global batches."""

    def __init__(self, split: Split):
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    @property
    def device(self) -> torch.device:
        return self.split.x.device

    def num_batches(self, batch_size: int) -> int:
        n = len(self.split)
        full, rest = divmod(n, batch_size)
        return full + (1 if rest >= 2 or (rest and full == 0) else 0)

    def batches(self, batch_size: int, seed: int, start: int = 0):
        """Yields (batch number, global batch) from batch ``start`` on."""
        order = batch_order(len(self.split), batch_size, seed, self.device)
        for b in range(start, len(order)):
            yield b, self.split.rows(order[b])

    def probe(self, n: int) -> Split:
        """The first ``n`` training rows (a fixed sample for statistics)."""
        return self.split.rows(torch.arange(min(n, len(self.split)), device=self.device))
