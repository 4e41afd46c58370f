"""Neural reference estimators: TARNet, CFR (MMD / Wasserstein) and DragonNet.

These are csna's own small PyTorch implementations of the published architectures, written for
the benchmark (not the authors' code, not CATENets):

* TARNet (Shalit et al. 2017): a shared representation Φ(x) and one outcome head per arm,
  the factual loss reweighted by the treated share so both arms count equally.
* CFR: TARNet plus α · IPM(Φ treated, Φ control), MMD² (Gaussian kernel) or a Sinkhorn
  estimate of the Wasserstein distance (``csna.bench.balance``).
* DragonNet (Shi et al. 2019): the representation also feeds a propensity head, loss
  factual + α · BCE(t, g) + β · targeted regularisation with a learned ε.

Every model is trained on the training split with AdamW on the standardised outcome, stopped
early on the validation factual loss, and the best of a small grid of configurations (chosen
by that same validation loss — never by the true effects) is kept. A fit also reports its cost
in FLOPs (``step_flops``: one counted step times the steps taken). Seed ensembles of these
peers, built with csna's member recipe, are in ``neural_ens.py``.

Shape alphabet: n rows, B batch, p features, r representation width, w head width.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .balance import IPMS


@dataclass(frozen=True)
class NeuralConfig:
    """One configuration of a neural peer."""

    kind: str = "tarnet"  # tarnet | cfr | dragonnet
    ipm: str = "wass"  # cfr: mmd | wass
    alpha: float = 1.0  # cfr: IPM weight; dragonnet: propensity loss weight
    beta: float = 1.0  # dragonnet: targeted regularisation weight
    rep_width: int = 200
    rep_layers: int = 3
    head_width: int = 100
    head_layers: int = 2
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 64
    max_epochs: int = 300
    patience: int = 30


def _mlp(d_in: int, width: int, layers: int) -> nn.Sequential:
    mods: list[nn.Module] = []
    for i in range(layers):
        mods += [nn.Linear(d_in if i == 0 else width, width), nn.ELU()]
    return nn.Sequential(*mods)


class TwoHeadNet(nn.Module):
    """Φ(x) → (q_0, q_1), plus a propensity head and ε for DragonNet."""

    def __init__(self, p: int, cfg: NeuralConfig) -> None:
        super().__init__()
        self.rep = _mlp(p, cfg.rep_width, cfg.rep_layers)
        self.heads = nn.ModuleList(
            nn.Sequential(_mlp(cfg.rep_width, cfg.head_width, cfg.head_layers), nn.Linear(cfg.head_width, 1))
            for _ in range(2))
        self.prop = nn.Linear(cfg.rep_width, 1) if cfg.kind == "dragonnet" else None
        self.eps = nn.Parameter(torch.zeros(1)) if cfg.kind == "dragonnet" else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """x (B, p) → Φ (B, r), q (B, 2) outcome (or logit) per arm, propensity logit (B,) or None."""
        phi = self.rep(x)  # (B, r)
        q = torch.cat([h(phi) for h in self.heads], dim=1)  # (B, 2)
        g = self.prop(phi).squeeze(1) if self.prop is not None else None  # (B,)
        return phi, q, g


def _factual(q: torch.Tensor, t: torch.Tensor, y: torch.Tensor, binary: bool) -> torch.Tensor:
    """(B,) per-row factual loss: squared error, or BCE on the logit of the received arm."""
    qt = q.gather(1, t[:, None]).squeeze(1)  # (B,)
    if binary:
        return F.binary_cross_entropy_with_logits(qt, y, reduction="none")
    return (qt - y) ** 2


def batch_loss(net: TwoHeadNet, cfg: NeuralConfig, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor,
               treated_share: float, binary: bool) -> torch.Tensor:
    """The training objective of ``cfg.kind`` on one batch. x (B, p), t (B,) int64, y (B,)."""
    phi, q, g = net(x)
    fact = _factual(q, t, y, binary)  # (B,)
    if cfg.kind == "dragonnet":
        loss = fact.mean() + cfg.alpha * F.binary_cross_entropy_with_logits(g, t.float())
        prob = (torch.sigmoid(g) + 0.01) / 1.02  # kept off 0 and 1, as Shi et al. do
        tf = t.float()
        h = tf / prob - (1.0 - tf) / (1.0 - prob)  # (B,) clever covariate
        qt = q.gather(1, t[:, None]).squeeze(1) + net.eps * h  # (B,) targeted prediction
        tr = F.binary_cross_entropy_with_logits(qt, y) if binary else ((y - qt) ** 2).mean()
        return loss + cfg.beta * tr
    # TARNet / CFR: each arm weighs half, whatever its share of the data.
    w = torch.where(t == 1, 0.5 / treated_share, 0.5 / (1.0 - treated_share))  # (B,)
    loss = (w * fact).mean()
    if cfg.kind == "cfr" and cfg.alpha > 0:
        on, off = phi[t == 1], phi[t == 0]
        if len(on) >= 2 and len(off) >= 2:
            loss = loss + cfg.alpha * IPMS[cfg.ipm](on, off)
    return loss


def step_flops(net: TwoHeadNet, cfg: NeuralConfig, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor,
               treated_share: float, binary: bool) -> float:
    """FLOPs of one training step on this batch (forward, loss, backward), as ``FlopCounterMode``
    counts them: matmuls and other counted kernels; elementwise work (activations, the Sinkhorn
    iterations' exp/log) and the AdamW update are not counted. Counted on a copy, so ``net``'s
    gradients and every RNG are left as they were. x (B, p), t (B,), y (B,)."""
    probe = copy.deepcopy(net)
    with FlopCounterMode(display=False) as fc:
        batch_loss(probe, cfg, x, t, y, treated_share, binary).backward()
    return float(fc.get_total_flops())


@torch.no_grad()
def _val_loss(net: TwoHeadNet, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, binary: bool) -> float:
    net.eval()
    _, q, _ = net(x)
    net.train()
    return float(_factual(q, t, y, binary).mean())


def fit_one(cfg: NeuralConfig, x_tr: np.ndarray, t_tr: np.ndarray, y_tr: np.ndarray, x_va: np.ndarray,
            t_va: np.ndarray, y_va: np.ndarray, binary: bool, seed: int) -> tuple[TwoHeadNet, float, float]:
    """Train one configuration with early stopping.

    Args:
        x_tr: (n, p) float features; t_tr: (n,) 0/1; y_tr: (n,) standardised outcome or 0/1.

    Returns:
        The best-epoch net, its validation loss, and the FLOPs the training cost: one step's
        count (``step_flops``, on the first ``batch_size`` rows) times the steps taken, plus one
        validation pass's count per epoch. An estimate: the CFR penalty's cost varies a little
        with each batch's treated share.
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    xt, tt, yt = (torch.as_tensor(x_tr, dtype=torch.float32), torch.as_tensor(t_tr, dtype=torch.int64),
                  torch.as_tensor(y_tr, dtype=torch.float32))
    xv, tv, yv = (torch.as_tensor(x_va, dtype=torch.float32), torch.as_tensor(t_va, dtype=torch.int64),
                  torch.as_tensor(y_va, dtype=torch.float32))
    share = float(tt.float().mean().clamp(0.05, 0.95))
    net = TwoHeadNet(xt.shape[1], cfg)
    # torch's fused AdamW kernel, as csna's own training uses (csna.train): the same formula as
    # the default single-tensor loop on CPU, in about three quarters of the fit time for
    # TARNet and DragonNet on IHDP (the numbers agree to 5-6 digits; benchmarks/RESULTS.md).
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    best, best_state, bad = float("inf"), copy.deepcopy(net.state_dict()), 0
    bs = min(cfg.batch_size, len(xt))
    per_step = step_flops(net, cfg, xt[:bs], tt[:bs], yt[:bs], share, binary)
    with FlopCounterMode(display=False) as fc:
        _val_loss(net, xv, tv, yv, binary)
    per_val = float(fc.get_total_flops())
    epochs = 0
    for _ in range(cfg.max_epochs):
        epochs += 1
        order = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt) - bs + 1, bs):  # drop the ragged last batch: a 1-row batch has no balance term
            b = order[i:i + bs]
            loss = batch_loss(net, cfg, xt[b], tt[b], yt[b], share, binary)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        v = _val_loss(net, xv, tv, yv, binary)
        if v < best - 1e-6:
            best, best_state, bad = v, copy.deepcopy(net.state_dict()), 0
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    net.load_state_dict(best_state)
    net.eval()
    return net, best, epochs * ((len(xt) // bs) * per_step + per_val)


def grid(kind: str, ipm: str = "wass") -> list[NeuralConfig]:
    """The tuning budget of each peer, the published default first."""
    base = NeuralConfig(kind=kind, ipm=ipm)
    if kind == "cfr":
        return [replace(base, alpha=a, weight_decay=wd) for wd in (1e-4, 1e-2) for a in (1.0, 0.1)]
    return [replace(base, rep_width=w, weight_decay=wd) for w in (200, 100) for wd in (1e-4, 1e-2)]


@dataclass
class NeuralFit:
    """A fitted peer's predictions and what the fit cost."""

    mu: np.ndarray  # (n, 2) E[Y(0) | x], E[Y(1) | x] in outcome units (probabilities when binary)
    flops: float  # FLOPs of the whole fit, every configuration of the grid (see fit_one)


def fit_predict(kind: str, x: np.ndarray, t: np.ndarray, y: np.ndarray, train: np.ndarray, val: np.ndarray,
                binary: bool, seed: int = 0, ipm: str = "wass", max_epochs: int | None = None,
                n_configs: int | None = None) -> NeuralFit:
    """Tune on ``val``, train on ``train``, predict both potential outcomes for every row.

    Args:
        x: (n, p) preprocessed features; t: (n,) 0/1; y: (n,) outcome (continuous or 0/1).
        train, val: row indices.
        max_epochs, n_configs: a smaller budget (tests, quick looks).

    Returns:
        ``NeuralFit``: mu (n, 2) in outcome units (probabilities when ``binary``), and the FLOPs
        of training every configuration tried.
    """
    y = np.asarray(y, dtype=np.float64)
    mean, std = (0.0, 1.0) if binary else (float(y[train].mean()), float(y[train].std()) or 1.0)
    ys = (y - mean) / std
    best_net, best_loss, flops = None, float("inf"), 0.0
    for i, cfg in enumerate(grid(kind, ipm)[:n_configs]):
        if max_epochs is not None:
            cfg = replace(cfg, max_epochs=max_epochs)
        net, loss, cost = fit_one(cfg, x[train], t[train], ys[train], x[val], t[val], ys[val], binary,
                                  seed + 1000 * i)
        flops += cost
        if best_net is None or loss < best_loss:
            best_net, best_loss = net, loss
    with torch.no_grad():
        _, q, _ = best_net(torch.as_tensor(x, dtype=torch.float32))  # (n, 2)
    q = q.double().numpy()
    return NeuralFit(1.0 / (1.0 + np.exp(-q)) if binary else q * std + mean, flops)
