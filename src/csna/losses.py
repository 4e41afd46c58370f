"""Losses of csna as pure functions of tensors (design §4), and ``compute_parts``, which
assembles the parts of L_total a phase switches on from one forward pass.

Shape alphabet:
    B  batch
    K  treatments
    C  outcome classes (binary: C = 2)
    k  latent nodes of the lattice
    d  node / representation width
    p  covariates

``pred`` is the model's outcome prediction for every treatment: ``(B, K)`` means for a
continuous outcome, ``(B, K, C)`` logits for a binary or multiclass one.

    L_total = L_task + λ1·L_causal + λ2·L_geometric + L_reg
    L_reg   = λ_DC·L_DC + λ_Dis·L_Dis + λ_Stable·L_Stable
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from .balance import DISCREPANCIES
from .dist import DistContext
from .phases import get_phase

if TYPE_CHECKING:  # annotations only
    from .model import CSNAModel
    from .sources import Split

__all__ = [
    "OUTCOME_TYPES",
    "factual",
    "task_loss",
    "causal_kl",
    "residual_variance",
    "laplacian_smoothness",
    "dag_penalty",
    "discrepancy",
    "jacobian_penalty",
    "total_loss",
    "compute_parts",
]

OUTCOME_TYPES = ("continuous", "binary", "multiclass")
PART_KEYS = ("task", "causal", "geometric", "dc", "dis", "stable", "structure", "sparse", "effect")
LAMBDA_KEYS = ("causal", "geometric", "dc", "dis", "stable", "structure", "sparse", "effect")

CAUSAL_REFERENCES = ("ipw", "aipw")  # L_causal's reference distribution (``causal_kl``)

# A variance floor: a group fitted perfectly would otherwise divide by zero in the KL.
VAR_FLOOR = 1e-6


def check_outcome_type(outcome_type: str) -> None:
    if outcome_type not in OUTCOME_TYPES:
        raise ValueError(f"unknown outcome_type {outcome_type!r}; valid: {OUTCOME_TYPES}")


def zero_like(like: Tensor) -> Tensor:
    # A zero that stays in the graph, so `.backward()` on a sum of losses never fails.
    return like.sum() * 0.0


def factual(pred: Tensor, t: Tensor) -> Tensor:
    """Prediction for the treatment each unit actually received.

    Args:
        pred: ``(B, K)`` or ``(B, K, C)``.
        t: ``(B,)`` int64 treatment indices.

    Returns:
        ``(B,)`` or ``(B, C)``: ``pred[b, t_b]``.
    """
    return pred[torch.arange(pred.shape[0], device=pred.device), t]


def task_loss(
    pred: Tensor, y: Tensor, t: Tensor, outcome_type: str, reduction: str = "mean"
) -> Tensor:
    """Factual loss: MSE (continuous) or cross-entropy (binary, multiclass).

    Args:
        pred: ``(B, K)`` means or ``(B, K, C)`` logits.
        y: ``(B,)`` float outcome or int64 class index.
        t: ``(B,)`` int64.
        outcome_type: "continuous", "binary" or "multiclass".
        reduction: "mean" (scalar) or "none" (``(B,)``, the per-sample loss of the reward).
    """
    check_outcome_type(outcome_type)
    if reduction not in ("mean", "none"):
        raise ValueError(f"unknown reduction {reduction!r}; valid: ('mean', 'none')")
    f = factual(pred, t)
    if outcome_type == "continuous":
        return F.mse_loss(f, y.to(f.dtype), reduction=reduction)
    return F.cross_entropy(f, y.long(), reduction=reduction)


def effect_variance(pred: Tensor, outcome_type: str) -> Tensor:
    """L_effect: the batch variance of the model's individual effects, mean over arms k ≥ 1
    (``train.effect_smoothing``): τ̂_k(x) = μ̂_k(x) − μ̂_0(x) in standardised units, or the
    difference of every class's log-probability for a classification outcome.

    The prior that the effect is simpler than the outcome (Curth & van der Schaar 2021), as a
    penalty: where a unit's arm has data its factual prediction resists, and where it has none
    (the counterfactual arm of a unit deep in one arm's region) the prediction follows the other
    arm's trend instead of shrinking towards its own arm's mean.

    Args: pred ``(B, K)`` means or ``(B, K, C)`` logits. Returns a scalar.
    """
    if outcome_type != "continuous":
        pred = torch.log_softmax(pred, dim=-1)  # (B, K, C)
    tau = pred[:, 1:] - pred[:, :1]  # (B, K − 1) or (B, K − 1, C)
    return tau.var(dim=0, unbiased=False).mean()


def gaussian_kl(m1: Tensor, v1: Tensor, m2: Tensor, v2: Tensor) -> Tensor:
    # KL(N(m1, v1) || N(m2, v2)) in nats.
    return 0.5 * (torch.log(v2 / v1) + (v1 + (m1 - m2) ** 2) / v2 - 1.0)


def causal_kl(
    pred: Tensor,
    t: Tensor,
    outcome_type: str,
    y: Tensor,
    weights: Tensor,
    sigma2: Tensor | None = None,
    min_group: int = 4,
    reference: str = "ipw",
) -> Tensor:
    """L_causal: mean over treatments t of KL(P̂(Y|do(t)) ‖ P_ref(Y|do(t))) in nats (design §4).

    P̂(Y|do(t)) is the model's predictive p(y|x_b, t) averaged over **every** x_b of the batch
    (back-door adjustment). P_IPW(Y|do(t)) is the distribution of the observed outcomes of the
    units with T_b = t, reweighted to the whole population by their stabilised
    inverse-propensity ``weights`` P(T = t)/ê_t(x_b) (``csna.propensity``: cross-fitted, never
    read from the balanced representation). Without unmeasured confounding P_IPW is an
    estimate of P(Y|do(t)), so the loss is near zero at the true model and pulls towards
    identification, not towards the naive association (the seed's literal formula,
    ``metrics.causal_kl_obs``, did the latter). Treatments with fewer than ``min_group`` units in the
    batch are skipped.

    ``reference="aipw"`` (``train.causal_reference``) makes the reference doubly robust: each
    moment of P_ref is the model's own batch moment (detached) plus the weighted mean of the
    factual residuals of that moment over the units with T_b = t, the augmented IPW estimate
    (Robins et al. 1994). Its error is the product of the propensity's and the outcome model's
    errors, where the IPW reference's is the propensity's alone: clipped weights or a
    misspecified logistic ê leave part of the confounding in P_IPW, and the loss then pulls
    towards it. Against the AIPW reference the loss is zero when the weighted factual residuals
    average zero, the moment condition of DragonNet's targeted regularisation (Shi et al. 2019).

    Classification: the model side is a categorical mixture, the reference the weighted class
    frequencies (smoothed by 1e-3 so an unseen class has a finite log), exact KL. Continuous:
    both are moment-matched Gaussians — model N(mean_b μ_t(x_b), σ_t² + Var_b μ_t(x_b)),
    reference N(weighted mean of y, weighted variance of y) — and the KL is closed-form. σ_t²
    (the trainer's running residual variance) is detached: a learnable variance would grow
    without bound (design §8.6).

    Args:
        pred: ``(B, K)`` means or ``(B, K, C)`` logits.
        t: ``(B,)`` int64.
        outcome_type: "continuous", "binary" or "multiclass".
        y: ``(B,)`` observed outcomes (standardised, or class indices).
        weights: ``(B,)`` stabilised inverse-propensity weights of the received arm.
        sigma2: ``(K,)`` predictive variances; continuous only. If None, the batch's factual
            residual variance of each group.
        min_group: fewest units of a treatment in the batch for it to count.
        reference: "ipw" (the reweighted outcomes) or "aipw" (the model's moments plus the
            reweighted factual residuals).

    Returns:
        Scalar; a zero still attached to the graph when no treatment qualifies.
    """
    check_outcome_type(outcome_type)
    if reference not in CAUSAL_REFERENCES:
        raise ValueError(f"L_causal reference must be one of {CAUSAL_REFERENCES}, got {reference!r}")
    aipw = reference == "aipw"
    K = pred.shape[1]
    counts = torch.bincount(t, minlength=K)
    present = [g for g in range(K) if int(counts[g]) >= min_group]
    if not present:
        return zero_like(pred)
    w_all = weights.detach().to(pred.dtype)
    if outcome_type == "continuous":
        if sigma2 is None:
            sigma2 = residual_variance(pred, y, t, K)
        var_t = sigma2.detach().to(pred.dtype).clamp_min(VAR_FLOOR)
        yf = y.detach().to(pred.dtype)
        kls = []
        for g in present:
            mu_all = pred[:, g]  # (B,)
            w = w_all[t == g] / w_all[t == g].sum()  # (n_g,) sums to 1
            v_do = var_t[g] + mu_all.var(unbiased=False)
            if aipw:  # first and second moments: the model's, plus the weighted factual residuals
                mu_d, mu_g = mu_all.detach(), mu_all[t == g].detach()  # (B,), (n_g,)
                m_ref = mu_d.mean() + (w * (yf[t == g] - mu_g)).sum()
                second = (mu_d ** 2).mean() + var_t[g] + (w * (yf[t == g] ** 2 - mu_g ** 2 - var_t[g])).sum()
                v_ref = (second - m_ref ** 2).clamp_min(VAR_FLOOR)
            else:
                m_ref = (w * yf[t == g]).sum()
                v_ref = (w * (yf[t == g] - m_ref) ** 2).sum().clamp_min(VAR_FLOOR)
            kls.append(gaussian_kl(mu_all.mean(), v_do, m_ref, v_ref))
        return torch.stack(kls).mean()

    B, C = pred.shape[0], pred.shape[-1]
    kls = []
    for g in present:
        logp = F.log_softmax(pred[:, g], dim=-1)  # (B, C)
        # log of a mean of probabilities, in log space so tiny probabilities do not underflow.
        log_do = torch.logsumexp(logp, dim=0) - math.log(B)  # (C,)
        w = w_all[t == g] / w_all[t == g].sum()  # (n_g,)
        q = torch.zeros(C, dtype=pred.dtype, device=pred.device).index_add_(0, y[t == g].long(), w)  # (C,)
        if aipw:  # the model's class frequencies plus the weighted factual residuals, kept ≥ 0
            p_d = logp.detach().exp()  # (B, C)
            q = (p_d.mean(0) + q - (w[:, None] * p_d[t == g]).sum(0)).clamp_min(0.0)
            q = q / q.sum().clamp_min(1e-12)
        q = (q + 1e-3) / (1.0 + C * 1e-3)
        kls.append((log_do.exp() * (log_do - q.log())).sum())
    return torch.stack(kls).mean()


@torch.no_grad()
def residual_variance(pred: Tensor, y: Tensor, t: Tensor, K: int) -> Tensor:
    """Per-treatment factual residual variance of the batch, mean of (y - μ_t(x))².

    It is the maximum-likelihood σ_t² of the Gaussian predictive N(μ_t(x), σ_t²), so it
    includes any bias of μ_t, not only the spread of the residuals.

    Args:
        pred: ``(B, K)`` continuous predictions.
        y: ``(B,)`` float outcome.
        t: ``(B,)`` int64.
        K: number of treatments.

    Returns:
        ``(K,)`` without grad; NaN for a treatment absent from the batch (the trainer's
        running average should update only the finite entries).
    """
    r2 = (y.to(pred.dtype) - factual(pred, t)) ** 2  # (B,)
    sums = torch.zeros(K, dtype=pred.dtype, device=pred.device).index_add_(0, t, r2)
    counts = torch.bincount(t, minlength=K).to(pred.dtype)
    return sums / counts  # 0/0 = NaN for an absent treatment


def laplacian_smoothness(H: Tensor, A: Tensor, detach_graph: bool = True) -> Tensor:
    """L_geometric: batch mean of Tr(Hᵀ L H) / Tr(Hᵀ H).

    L = D - A_sym, A_sym = (A + Aᵀ)/2, D = diag(row sums of A_sym), so
    Tr(Hᵀ L H) = ½ Σ_ij A_sym,ij ‖h_i - h_j‖².

    Args:
        H: ``(B, k, d)`` node embeddings.
        A: ``(k, k)`` non-negative adjacency.
        detach_graph: detach A (design §4): the gradient of this term in A is never negative,
            so it would only push every edge to zero.

    Returns:
        Scalar; a sample with Tr(HᵀH) = 0 contributes 0.
    """
    if detach_graph:
        A = A.detach()
    A_sym = 0.5 * (A + A.transpose(0, 1))  # (k, k)
    L = torch.diag(A_sym.sum(dim=1)) - A_sym  # (k, k)
    num = torch.einsum("bid,ij,bjd->b", H, L.to(H.dtype), H)  # (B,)
    den = H.pow(2).sum(dim=(1, 2))  # (B,)
    nonzero = den > 0
    ratio = torch.where(nonzero, num / torch.where(nonzero, den, torch.ones_like(den)), 0.0)
    return ratio.mean()


def dag_penalty(A: Tensor) -> Tensor:
    """L_DC: h(A) = tr(exp(A ⊙ A)) - k, zero iff the graph of A is acyclic (NOTEARS).

    Args:
        A: ``(k, k)`` adjacency.
    """
    return torch.linalg.matrix_exp(A * A).diagonal().sum() - A.shape[0]


def discrepancy(r: Tensor, t: Tensor, K: int, metric: str = "mmd") -> Tensor:
    """L_Dis: mean over treatments g with ≥ 2 units of D(r[t == g], r[t != g]), where D is
    multi-bandwidth MMD² (``metric="mmd"``) or the Sinkhorn estimate of the Wasserstein
    distance (``"wasserstein"``, the balance of CFR-Wass).

    For K = 2 this is D(group 1, group 0) whenever both are present (the two one-vs-rest
    terms are the same quantity).

    Args:
        r: ``(B, d)`` pooled representation.
        t: ``(B,)`` int64.
        K: number of treatments.
        metric: a key of ``DISCREPANCIES``.

    Returns:
        Scalar; a zero attached to the graph if fewer than two treatments are present.
    """
    if metric not in DISCREPANCIES:
        raise ValueError(f"unknown discrepancy {metric!r}; valid: {tuple(DISCREPANCIES)}")
    dist = DISCREPANCIES[metric]
    counts = torch.bincount(t, minlength=K)
    if int((counts > 0).sum()) < 2:
        return zero_like(r)
    if K == 2:
        # Both one-vs-rest terms are the same quantity; compute it once.
        return dist(r[t == 1], r[t == 0])
    groups = [g for g in range(K) if int(counts[g]) >= 2]
    if not groups:
        return zero_like(r)
    return torch.stack([dist(r[t == g], r[t != g]) for g in groups]).mean()


def jacobian_penalty(
    f: Callable[[Tensor], Tensor],
    x: Tensor,
    n_proj: int = 1,
    generator: torch.Generator | None = None,
    projections: Tensor | None = None,
) -> Tensor:
    """L_Stable: unbiased estimate of mean_b ‖∂f(x_b)/∂x_b‖_F² by random projection.

    For v ~ N(0, I), E‖vᵀJ‖² = ‖J‖_F², and vᵀJ is one vector-Jacobian product, so the cost
    is one extra backward pass per projection instead of one per output.

    Args:
        f: maps ``(B, p)`` to ``(B, ...)`` row by row (no batch statistics, e.g. BatchNorm in
            training mode, or the estimate mixes samples).
        x: ``(B, p)`` inputs; detached here, the penalty trains the parameters of f.
        n_proj: projections averaged.
        generator: RNG for the projections.
        projections: ``(n_proj, B, m)`` projection vectors to use instead of drawing them (a
            data-parallel run draws them for the global batch and passes each rank its rows).

    Returns:
        Scalar with a graph (``create_graph=True``) so it can be minimised.
    """
    x = x.detach().requires_grad_(True)
    out = f(x).reshape(x.shape[0], -1)  # (B, m)
    total = zero_like(out)
    if projections is not None:
        n_proj = projections.shape[0]
    for i in range(n_proj):
        v = (projections[i].to(out) if projections is not None else
             torch.randn(out.shape, generator=generator, dtype=out.dtype, device=out.device))
        # (B, p): row b is v_bᵀ J_b because f is row-wise; create_graph keeps it trainable
        (vj,) = torch.autograd.grad(out, x, grad_outputs=v, create_graph=True)
        total = total + vj.pow(2).sum(dim=1).mean()
    return total / n_proj


def total_loss(
    parts: Mapping[str, Tensor], lambdas: Mapping[str, float]
) -> tuple[Tensor, Tensor]:
    """Combine the losses: returns (L_total, L_reg).

    Args:
        parts: any of "task", "causal", "geometric", "dc", "dis", "stable" (scalars); a missing
            part counts as 0.
        lambdas: any of "causal", "geometric", "dc", "dis", "stable"; a missing weight is 0.
            A term whose weight is 0 is left out, so a NaN in an unused part cannot leak in.

    Raises:
        ValueError: on an unknown key, naming the valid ones.
    """
    for name, given, valid in (("parts", parts, PART_KEYS), ("lambdas", lambdas, LAMBDA_KEYS)):
        unknown = set(given) - set(valid)
        if unknown:
            raise ValueError(f"unknown {name} keys {sorted(unknown)}; valid: {valid}")
    any_part = next(iter(parts.values()), None)
    zero = zero_like(any_part) if any_part is not None else torch.zeros(())

    def term(key: str) -> Tensor:
        lam = float(lambdas.get(key, 0.0))
        if key not in parts or lam == 0.0:
            return zero
        return lam * parts[key]

    l_reg = term("dc") + term("dis") + term("stable")
    task = parts.get("task", zero)
    # The structure score and its L1 learn the graph among variable nodes (model.nodes = variables).
    l_total = task + term("causal") + term("geometric") + term("structure") + term("sparse") + term("effect") + l_reg
    return l_total, l_reg


def compute_parts(model: CSNAModel, out, batch: Split, phase_n: int, lambdas: dict[str, float],
                  step: int, stable_every: int, ctx: DistContext | None = None,
                  global_batch: Split | None = None, local: torch.Tensor | None = None,
                  metric: str = "mmd", arm_weight: torch.Tensor | None = None,
                  causal_reference: str = "aipw", ipw_task: bool = False) -> dict[str, torch.Tensor]:
    """Every part of L_total that this phase switches on and whose λ is non-zero.

    ``arm_weight`` (K,): weights of the factual loss by received treatment (``train.balance_arms``);
    ``ipw_task``: the factual loss also weighted by the rows' inverse-propensity weights ``batch.w``
    (``train.factual_weights: ipw``);
    ``causal_reference``: L_causal's reference (``causal_kl``, ``train.causal_reference``).

    In a data-parallel run (``ctx``), ``batch`` holds this rank's rows of ``global_batch``
    (indices ``local``): per-sample means are scaled and batch-level terms read the gathered
    global batch, as ``csna.dist`` explains. A single process gets exactly the plain losses.
    """
    ph = get_phase(phase_n)
    ctx = ctx or DistContext()
    gb = global_batch if global_batch is not None else batch
    s = ctx.scale(len(batch), len(gb))
    kind = "multiclass" if model.n_classes > 2 else ("binary" if model.n_classes == 2 else "continuous")
    w = None if arm_weight is None else arm_weight[batch.t]  # (B,) factual-loss weights, if any
    if ipw_task and batch.w is not None:
        w = batch.w if w is None else w * batch.w
    if w is None:
        parts = {"task": task_loss(out.pred, batch.y, batch.t, kind) * s}
    else:
        parts = {"task": (task_loss(out.pred, batch.y, batch.t, kind, reduction="none") * w).mean() * s}
    on = lambda name: name in ph.losses and lambdas.get(name, 0.0) > 0  # noqa: E731
    if on("causal") or ("causal" in ph.losses and gb.w is not None):
        # With λ_causal = 0 the term is still computed, without a gradient, for the logs (the
        # seed's L_causal curve); total_loss leaves a zero-weight part out.
        sigma2 = model.sigma2 if kind == "continuous" else None
        if gb.w is None:
            raise ValueError("L_causal needs the training rows' inverse-propensity weights (Split.w); "
                             "Trainer sets them")
        with torch.set_grad_enabled(torch.is_grad_enabled() and on("causal")):
            parts["causal"] = causal_kl(ctx.gather(out.pred), gb.t, kind, gb.y, gb.w, sigma2,
                                        reference=causal_reference)
    if on("effect"):  # a batch statistic: on the gathered global batch
        parts["effect"] = effect_variance(ctx.gather(out.pred), kind)
    if on("geometric") and out.h is not None and out.adjacency is not None:
        parts["geometric"] = laplacian_smoothness(out.h, out.adjacency) * s
    if model.structure is not None and on("structure"):
        score, a = model.structure_loss(batch.x, batch.t, batch.y)
        parts["structure"] = score * s
        parts["sparse"] = a.sum() / model.k  # mean out-degree weight: the L1 of score-based learners
        if on("dc"):  # on the graph with its gradient (the outcome pathway reads it detached)
            parts["dc"] = dag_penalty(a)
    elif on("dc") and out.adjacency is not None:
        parts["dc"] = dag_penalty(out.adjacency)
    if on("dis"):
        parts["dis"] = discrepancy(ctx.gather(out.rep), gb.t, model.n_treatments, metric)
    if on("stable") and step % max(1, stable_every) == 0:
        # Scaled by N when computed every N steps: same expected contribution, N× cheaper.
        # Per latent coordinate (÷ k·d): the raw ‖∂z/∂x‖_F² sums k·d·p terms and would swamp
        # every other part at the seed's λ_Stable = 0.3.
        n_out = model.k * model.cfg.d
        proj = None
        if ctx.enabled:  # the projection belongs to the sample: drawn for the global batch
            proj = torch.randn(1, len(gb), n_out, device=batch.x.device)[:, local]
        parts["stable"] = (jacobian_penalty(model.encode, batch.x, projections=proj)
                           * (max(1, stable_every) / n_out) * s)
    return parts
