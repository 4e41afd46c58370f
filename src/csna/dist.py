"""Data-parallel training across processes with the standard PyTorch stack.

``torchrun --nproc_per_node=N -m csna train ...`` starts N processes; each calls
:func:`init_from_env`, which joins the process group torchrun describes in the environment
(gloo on CPU, NCCL on CUDA). The model is wrapped in ``DistributedDataParallel``.

How a global batch is shared, so that N processes train the same model as one process with
the same global batch:

- every rank draws the same global batch (same seeded order) and keeps its own contiguous
  slice of rows (:meth:`DistContext.local_rows`);
- per-sample losses (task, propensity, L_geometric, L_Stable, the actor-critic terms) are
  local means scaled by ``W · n_local / N_global``: DDP averages gradients over the W ranks, so
  the result is the gradient of the global mean even when slices differ in size;
- batch-level losses (L_causal, L_Dis) are computed on the global batch, gathered with the
  differentiable ``torch.distributed.nn.functional.all_gather``; its backward sums every rank's
  gradient for a rank's rows (W identical copies of the loss), and DDP's average divides by W;
- random draws that belong to a sample (gate draws, stochastic depth, L_Stable's projection)
  are made for the whole global batch from a generator every rank seeds alike, and sliced, so
  they depend on the sample and not on the rank.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistContext:
    """Rank and world size of this process (a single process is rank 0 of 1)."""

    rank: int = 0
    world: int = 1

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def local_rows(self, n: int, device: torch.device | None = None) -> torch.Tensor:
        """Indices of this rank's rows of a global batch of ``n`` rows: a contiguous slice,
        sizes differing by at most one. (n_local,)"""
        return torch.tensor_split(torch.arange(n, device=device), self.world)[self.rank]

    def scale(self, n_local: int, n_global: int) -> float:
        """Factor for a local per-sample mean so that DDP's gradient average gives the
        gradient of the global mean."""
        return self.world * n_local / max(n_global, 1)

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """Rows of every rank, in rank order: (N_global, ...). Differentiable; rows may differ
        in number between ranks (padded for the collective, trimmed after)."""
        if not self.enabled:
            return x
        from torch.distributed.nn.functional import all_gather

        n = torch.tensor([x.shape[0]], device=x.device)
        sizes = [torch.zeros_like(n) for _ in range(self.world)]
        dist.all_gather(sizes, n)
        sizes_ = [int(s) for s in sizes]
        top = max(sizes_)
        if x.shape[0] < top:
            pad = x.new_zeros((top - x.shape[0],) + tuple(x.shape[1:]))
            x = torch.cat([x, pad], dim=0)
        parts = all_gather(x.contiguous())
        return torch.cat([p[:s] for p, s in zip(parts, sizes_)], dim=0)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def init_from_env() -> DistContext:
    """Join the process group that torchrun describes (``WORLD_SIZE``, ``RANK``,
    ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``); a plain run is rank 0 of 1.

    On CUDA each process takes ``cuda:LOCAL_RANK`` and NCCL; on CPU, gloo.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size())


def current() -> DistContext:
    """The context of the already-initialised process group, or a single process."""
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size())
    return DistContext()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
