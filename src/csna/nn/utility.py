"""Meta Utility Layer: the actor that scores each block's utility per sample and the critic
that predicts the reward (design §3.5).

Shape alphabet: B batch, k nodes, d width, n blocks.
"""

from __future__ import annotations

import torch
from torch import nn


class MetaUtility(nn.Module):
    """Actor ``u_i = sigmoid(MLP([mean_k(state_i); embed(i)]))`` and critic ``V(s)``.

    The actor is called once per block, on the state just before that block, so a sample's
    decision for block i can depend on what the earlier blocks did to it.
    """

    def __init__(self, d: int, n_blocks: int, hidden: int = 32, init_bias: float = 2.0):
        super().__init__()
        self.n_blocks = n_blocks
        self.embed = nn.Embedding(n_blocks, d)
        self.actor = nn.Sequential(nn.Linear(2 * d, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        self.critic = nn.Sequential(nn.Linear(d, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        # Start by running every block (u ≈ 0.88): the backbone was trained with all of them.
        with torch.no_grad():
            self.actor[-1].bias.fill_(init_bias)

    def utility(self, state: torch.Tensor, block: int) -> torch.Tensor:
        """Args: state (B, k, d) before block ``block``. Returns u (B,) in (0, 1)."""
        return self.utility_pooled(state.mean(dim=1), block)

    def utility_pooled(self, pooled: torch.Tensor, block: int) -> torch.Tensor:
        """``utility`` from the state's mean over nodes, pooled (B, d). Returns u (B,)."""
        emb = self.embed.weight[block].expand_as(pooled)  # (B, d)
        return torch.sigmoid(self.actor(torch.cat([pooled, emb], dim=-1)).squeeze(-1))  # (B,)

    def value(self, state: torch.Tensor) -> torch.Tensor:
        """Args: state (B, k, d), the sample's input state z. Returns V (B,)."""
        return self.critic(state.mean(dim=1)).squeeze(-1)  # (B,)
