"""Every hard-gate threshold in one pass: phase 4's gate calibration without recomputing what
the thresholds share.

Calibration (``meta.calibrate_gates``) scores the model with hard gates at each threshold of
``GATE_THRESHOLDS`` on the validation rows and on training rows, every epoch of phase 4. Run
threshold by threshold, that is eleven forward passes over the same rows, a quarter of a
member's fit on IHDP. Yet a row's path through the blocks depends only on its own gates: two
thresholds that make the same decisions at the first j blocks give that row the same state
after them. On IHDP a row takes 4.4 distinct paths across the 11 thresholds on average, and
the block computations that differ are a fifth of those the threshold-by-threshold passes run.

So the sweep follows *lanes*: rows that share a state, each with the set of thresholds that
brought it there. Before block i a lane reads its utilities u once, and splits into the rows
and thresholds that run the block (u ≥ t) and those that skip it. The blocks, the utility and
the heads act row by row, so the gates are those of the plain passes and the predictions equal
theirs up to rounding: a row computed in a batch of another size can differ in the last bits
(``tests/test_gate_sweep.py`` checks both against the plain passes; on IHDP the trained model
and `metrics.json` came out identical, and one calibration figure of the history differed in
its eighth digit).

Shape alphabet: B rows, k nodes, d width, nT thresholds, nb gated blocks, K treatments,
C classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:  # annotations only
    from .model import CSNAModel


@torch.no_grad()
def hard_gate_sweep(model: CSNAModel, z: Tensor, thresholds: Sequence[float],
                    depth: int = 3) -> tuple[Tensor, Tensor]:
    """The outcome predictions and gates of ``model(x, depth, gate_mode="hard", z=z)`` with
    ``gate_threshold`` set to each of ``thresholds`` in turn.

    Args:
        model: in evaluation mode.
        z: (B, k, d) the encoder's output for the rows.
        thresholds: nT hard-gate thresholds; a block runs on a row where u ≥ t.
        depth: the depth of the forward pass (3: lattice and attention).

    Returns:
        preds (nT, B, K) or (nT, B, K, C), and gates (nT, B, nb) as 0/1 in z's dtype.
    """
    _, lattice_fns, attention_fns = model.block_fns(depth)
    fns = lattice_fns + attention_fns
    n_rows, n_t = z.shape[0], len(thresholds)
    # The same float as ``gate_threshold.fill_(t)`` holds, compared with the same dtype.
    thr = torch.tensor(list(thresholds), dtype=model.gate_threshold.dtype, device=z.device)  # (nT,)
    gates = torch.zeros(n_t, n_rows, len(fns), dtype=z.dtype, device=z.device)  # (nT, B, nb)
    everyone = torch.ones(n_rows, n_t, dtype=torch.bool, device=z.device)
    lanes = [(z, torch.arange(n_rows, device=z.device), everyone)]  # (state (m, k, d), rows (m,), member (m, nT))
    for i, fn in enumerate(fns):
        nxt = []
        for state, rows, member in lanes:
            u = model.utility.utility(state, i)  # (m,)
            on = u.unsqueeze(1) >= thr.unsqueeze(0)  # (m, nT)
            run, skip = member & on, member & ~on
            ti, ri = torch.nonzero(run.t(), as_tuple=True)
            gates[ti, rows[ri], i] = 1.0
            idx = torch.nonzero(run.any(1), as_tuple=False).squeeze(1)
            if idx.numel():
                nxt.append((fn(state.index_select(0, idx)), rows[idx], run[idx]))
            idx = torch.nonzero(skip.any(1), as_tuple=False).squeeze(1)
            if idx.numel():
                nxt.append((state.index_select(0, idx), rows[idx], skip[idx]))
        lanes = nxt
    preds = None
    for state, rows, member in lanes:
        pred = model.heads["outcome"](model.readout(state))  # (m, K) or (m, K, C)
        if preds is None:
            preds = pred.new_zeros((n_t, n_rows) + tuple(pred.shape[1:]))
        ti, ri = torch.nonzero(member.t(), as_tuple=True)
        preds[ti, rows[ri]] = pred[ri]
    return preds, gates


@torch.no_grad()
def sweep_rows(model: CSNAModel, z: Tensor, thresholds: Sequence[float], depth: int,
               batch: int) -> tuple[Tensor, Tensor]:
    """``hard_gate_sweep`` over ``batch`` rows at a time (the evaluation passes' chunks), so a
    large validation sample never becomes one huge batch. Returns preds (nT, B, …), gates (nT, B, nb)."""
    parts = [hard_gate_sweep(model, z[i:i + batch], thresholds, depth) for i in range(0, z.shape[0], batch)]
    return torch.cat([p for p, _ in parts], dim=1), torch.cat([g for _, g in parts], dim=1)


class GatePaths:
    """Every hard-gate path of some rows through a frozen backbone, computed once, so that
    each later sweep over thresholds only re-reads the controller.

    In phase 4 only the controller trains (unless ``phase4.finetune_backbone``): the blocks,
    the graph and the heads are fixed, so the state of a row after any set of run and skipped
    blocks is fixed too. With nb gated blocks a row has 2^nb paths, and the states before block i
    are the 2^i ways the earlier blocks went. This holds, for every row, each of those states
    pooled over nodes (what the utility reads) and each path's prediction: 2^(nb+1) − 1 block
    computations per row, once per phase, where every calibration's ``hard_gate_sweep`` ran
    about nb × 2 of them (and the encoder) again after each of phase 4's epochs. ``sweep`` then
    computes only the utilities and follows each threshold's path, so it gives
    ``hard_gate_sweep``'s gates and predictions of the current controller (up to the last bits of
    a row computed in a batch of another size; ``tests/test_gate_sweep.py``).

    Memory: (2^nb − 1) pooled states (n, d) and 2^nb predictions (n, K[, C]), computed
    ``batch`` rows at a time; nb is 4 by default.
    """

    def __init__(self, model: CSNAModel, z: Tensor, depth: int = 3, batch: int = 8192):
        _, lattice_fns, attention_fns = model.block_fns(depth)
        self.n_blocks = len(lattice_fns) + len(attention_fns)
        fns = lattice_fns + attention_fns
        pooled: list[list[Tensor]] = [[] for _ in fns]  # per block, per chunk: (2^i, b, d)
        leaves: list[Tensor] = []  # per chunk: (2^nb, b, K[, C])
        with torch.no_grad():
            for start in range(0, z.shape[0], batch):
                states = [z[start:start + batch]]  # node j of level i: bit m of j (from the top) = block m ran
                for i, fn in enumerate(fns):
                    pooled[i].append(torch.stack([s.mean(dim=1) for s in states]))
                    states = [nxt for s in states for nxt in (s, fn(s))]  # child 2j skips, 2j + 1 runs
                leaves.append(torch.stack([model.heads["outcome"](model.readout(s)) for s in states]))
        self.pooled = [torch.cat(p, dim=1) for p in pooled]  # block i: (2^i, n, d)
        self.leaves = torch.cat(leaves, dim=1)  # (2^nb, n, K) or (2^nb, n, K, C)

    @torch.no_grad()
    def sweep(self, model: CSNAModel, thresholds: Sequence[float]) -> tuple[Tensor, Tensor]:
        """``hard_gate_sweep(model, z, thresholds)`` for the rows this was built on, with the
        model's current controller. Returns preds (nT, n, …), gates (nT, n, nb)."""
        n_rows = self.leaves.shape[1]
        thr = torch.tensor(list(thresholds), dtype=model.gate_threshold.dtype, device=self.leaves.device)  # (nT,)
        node = torch.zeros(len(thr), n_rows, dtype=torch.long, device=self.leaves.device)  # (nT, n)
        gates = []
        for i, p in enumerate(self.pooled):
            u = model.utility.utility_pooled(p.reshape(-1, p.shape[-1]), i).view(p.shape[0], n_rows)  # (2^i, n)
            run = u.gather(0, node) >= thr.unsqueeze(1)  # (nT, n)
            gates.append(run.to(self.leaves.dtype))
            node = 2 * node + run.long()
        rows = torch.arange(n_rows, device=self.leaves.device)
        return self.leaves[node, rows.unsqueeze(0)], torch.stack(gates, dim=-1)
