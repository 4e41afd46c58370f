"""Outcome and propensity heads (design §3.1, §3.4).

Shape alphabet: B batch, p covariates, r representation width, K treatments, C classes.
"""

from __future__ import annotations

import torch
from torch import nn


def _mlp(a: int, hidden: int, out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(a, hidden), nn.ELU(), nn.Dropout(dropout),
        nn.Linear(hidden, hidden), nn.ELU(), nn.Dropout(dropout),
        nn.Linear(hidden, out),
    )


class OutcomeHeads(nn.Module):
    """TARNet-shaped: one small MLP per treatment, all evaluated on every row, so the
    counterfactual predictions come from the same pass as the factual one.

    With ``shared``, a prognostic MLP g common to every arm is added to each arm's own:
    μ̂_t = g(rep) + h_t(rep). g is fitted on every row, whatever its arm.

    Returns (B, K) means for a continuous outcome, (B, K, C) logits otherwise.
    """

    def __init__(self, r: int, n_treatments: int, n_classes: int = 0, hidden: int = 64, dropout: float = 0.0,
                 shared: bool = False):
        super().__init__()
        self.n_treatments, self.n_classes = n_treatments, n_classes
        out = n_classes if n_classes else 1
        self.heads = nn.ModuleList(_mlp(r, hidden, out, dropout) for _ in range(n_treatments))
        self.shared = _mlp(r, hidden, out, dropout) if shared else None

    def forward(self, rep: torch.Tensor) -> torch.Tensor:
        outs = torch.stack([h(rep) for h in self.heads], dim=1)  # (B, K, C or 1)
        if self.shared is not None:
            outs = outs + self.shared(rep).unsqueeze(1)  # the same g for every arm
        return outs if self.n_classes else outs.squeeze(-1)  # (B, K, C) or (B, K)


class PropensityHead(nn.Module):
    """ê(x) = P(T = t | x) as K logits, read from the covariates x (B, p) themselves.

    Not from the pooled representation: L_Dis balances that representation between the arms,
    removing what predicts treatment, so a propensity read from it is pulled towards the
    marginal and the overlap report looks better than the data (design §8.3). Only its own
    cross-entropy trains it.
    """

    def __init__(self, p: int, n_treatments: int, hidden: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(p, hidden), nn.ELU(), nn.Linear(hidden, n_treatments))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.detach())  # (B, K) logits
