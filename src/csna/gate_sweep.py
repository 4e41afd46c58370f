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
        pred = model.heads["outcome"](state.mean(dim=1))  # (m, K) or (m, K, C)
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
