"""A synthetic structural causal model with a known latent DAG and known effects.

Shape alphabet: n units, p covariates, k latent nodes, K treatments.

Everything that defines the truth (graph, weights, mixing, effects) is drawn from
`seed` alone, and each per-unit noise source is its own stream filled row by row, so
one seed gives the same model at any n and the first m rows of a larger draw equal a
draw of m rows; `synthetic_chunks` yields a large draw in consecutive pieces.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd

from csna.data.tables import CausalData

_LATENT_NOISE = 0.5  # non-root latents: tanh(parents) + 0.5 N(0,1); roots are N(0,1)
_OVERLAP = 0.05  # every propensity stays in [0.05, 0.95] (binary) or >= 0.05 (K-way)
_CHUNK = 1 << 15  # rows per block when building X, to keep temporaries in cache


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # no overflow warnings for large |z|


def _lincomb(U: np.ndarray, w: np.ndarray) -> np.ndarray:
    """U (n, k) @ w (k,) or (k, m), summed term by term.

    A fixed summation order makes each row's value independent of n, which BLAS does not
    promise (its blocking depends on the matrix sizes); with k small it is as fast.
    """
    w2 = w.reshape(len(w), -1)  # (k, m)
    out = U[:, :1] * w2[0]  # (n, m)
    for i in range(1, len(w2)):
        out += U[:, i:i + 1] * w2[i]
    return out.reshape((len(U),) + w.shape[1:])


def sample_params(seed: int, p: int, k: int, n_treatments: int, edge_prob: float) -> dict:
    """The model's truth, a function of its arguments only (never of n).

    Returns:
        dict with graph (k, k) int64 A[i, j] = 1 meaning i -> j, order (k,) a topological
        order, W (k, k) edge weights, mix (k, p), and the treatment and outcome weights.
    """
    rng = np.random.default_rng([seed, 0])
    upper = np.triu(rng.random((k, k)) < edge_prob, 1)
    order = rng.permutation(k)  # node order[i] sits at position i of the triangle
    graph = np.zeros((k, k), dtype=np.int64)
    graph[np.ix_(order, order)] = upper
    signs = rng.choice([-1.0, 1.0], size=(k, k))
    W = graph * signs * rng.uniform(0.5, 1.5, size=(k, k))

    n_conf = max(1, k // 2)  # treatment sees only some latents, outcome sees all
    conf = rng.choice(k, size=n_conf, replace=False)
    g = np.zeros((k, n_treatments))
    g[conf] = rng.standard_normal((n_conf, n_treatments)) / np.sqrt(n_conf)
    return {
        "graph": graph,
        "order": order,
        "W": W,
        "mix": (rng.standard_normal((k, p)) * 1.5 / np.sqrt(k)).astype(np.float32),
        "g": g,  # propensity logits, (k, K); only column 1 is used when K = 2
        "g0": rng.normal(0.0, 0.25, size=n_treatments),
        "b": rng.standard_normal(k) / np.sqrt(k),  # baseline, linear part
        "c": rng.standard_normal(k) / np.sqrt(k),  # baseline, sinusoidal part
        "a": np.concatenate([[0.0], rng.uniform(0.5, 1.5, size=n_treatments - 1)]),  # mean effects
        "h": np.concatenate([np.zeros((k, 1)),
                             rng.standard_normal((k, n_treatments - 1)) * 1.5 / np.sqrt(k)], axis=1),
    }


def _latents(params: dict, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, k) float32 latents, generated in topological order."""
    W, graph = params["W"].astype(np.float32), params["graph"]
    U = rng.standard_normal((n, len(W)), dtype=np.float32)  # (n, k) exogenous noise
    for j in params["order"]:
        parents = np.flatnonzero(graph[:, j])
        if len(parents):
            U[:, j] = np.tanh(_lincomb(U[:, parents], W[parents, j])) + _LATENT_NOISE * U[:, j]
    return U


def _covariates(U: np.ndarray, mix: np.ndarray, noise: float, rng: np.random.Generator,
                dtype) -> np.ndarray:
    """(n, p) X = Z + 0.5 sin(Z) + noise, Z = U mix; O(n k p), built in row blocks."""
    n, p = len(U), mix.shape[1]
    X = np.empty((n, p), dtype=dtype)
    for s in range(0, n, _CHUNK):
        Z = _lincomb(U[s:s + _CHUNK], mix)  # (b, p)
        eps = rng.standard_normal(Z.shape, dtype=np.float32)  # (b, p)
        eps *= noise
        eps += Z
        np.sin(Z, out=Z)
        Z *= 0.5
        Z += eps
        X[s:s + _CHUNK] = Z
    return X


def _treatment(U: np.ndarray, params: dict, confounding: float, rng: np.random.Generator
               ) -> tuple[np.ndarray, np.ndarray]:
    """T (n,) int64 and propensities (n, K) float32."""
    logits = confounding * _lincomb(U.astype(np.float64), params["g"]) + params["g0"]  # (n, K)
    u = rng.random(len(U))
    K = logits.shape[1]
    if K == 2:
        e1 = np.clip(_sigmoid(logits[:, 1] - logits[:, 0]), _OVERLAP, 1 - _OVERLAP)
        prop = np.stack([1 - e1, e1], axis=1)
    else:
        logits -= logits.max(1, keepdims=True)
        soft = np.exp(logits)
        soft /= soft.sum(1, keepdims=True)
        # Mixing with the uniform keeps every arm at >= _OVERLAP, and rows still sum to 1.
        prop = (1 - K * _OVERLAP) * soft + _OVERLAP
    T = (u[:, None] > np.cumsum(prop, axis=1)[:, :-1]).sum(1).astype(np.int64)
    return T, prop.astype(np.float32)


def _potential_outcomes(U: np.ndarray, params: dict, heterogeneity: float) -> np.ndarray:
    """(n, K) float64 mean (continuous) or logit (binary) of each potential outcome."""
    U64 = U.astype(np.float64)
    base = _lincomb(U64, params["b"]) + 0.5 * np.sin(_lincomb(U64, params["c"]))  # (n,)
    effect = params["a"] + heterogeneity * np.tanh(_lincomb(U64, params["h"]))  # (n, K), column 0 is 0
    return base[:, None] + effect


def _check_args(n: int, p: int, k_latent: int, n_treatments: int, outcome: str) -> None:
    if outcome not in ("continuous", "binary"):
        raise ValueError(f"outcome must be 'continuous' or 'binary', got '{outcome}'")
    if n < 1 or p < 1 or k_latent < 1 or n_treatments < 2:
        raise ValueError(f"need n, p, k_latent >= 1 and n_treatments >= 2, got {n}, {p}, {k_latent}, {n_treatments}")


def _sample_rows(params: dict, streams: list[np.random.Generator], n: int, *, outcome: str, noise: float,
                 confounding: float, effect_heterogeneity: float, dtype) -> CausalData:
    """n rows drawn from the streams, which advance; successive calls continue one draw."""
    n_treatments = len(params["a"])
    U = _latents(params, n, streams[0])  # (n, k)
    X = _covariates(U, params["mix"], noise, streams[1], dtype)  # (n, p)
    T, prop = _treatment(U, params, confounding, streams[2])
    f = _potential_outcomes(U, params, effect_heterogeneity)  # (n, K)
    f_T = f[np.arange(n), T]
    if outcome == "continuous":
        mu = f
        Y = (f_T + noise * streams[3].standard_normal(n)).astype(np.float32)
    else:
        mu = _sigmoid(f)
        Y = (streams[3].random(n) < _sigmoid(f_T)).astype(np.int64)

    columns = [f"x{i}" for i in range(X.shape[1])]
    return CausalData(
        X=pd.DataFrame(X, columns=columns, copy=False), T=T, Y=Y, mu=mu, outcome_type=outcome,
        n_treatments=n_treatments, name="synthetic", graph=params["graph"],
        extra={"params": params, "order": params["order"], "latents": U, "propensity": prop,
               **({"noise_var": noise**2} if outcome == "continuous" else {})},
    )


def synthetic(n: int = 2000, p: int = 25, seed: int = 0, *, k_latent: int = 8,
              outcome: str = "continuous", n_treatments: int = 2, edge_prob: float = 0.3,
              noise: float = 0.5, confounding: float = 1.0, effect_heterogeneity: float = 1.0,
              dtype=np.float32) -> CausalData:
    """Samples n units from a latent SCM: latents -> covariates, latents -> treatment, outcome.

    Args:
        n: units.
        p: covariates, named x0..x{p-1}.
        seed: fixes the model (graph, weights, effects) and the sample.
        k_latent: latent nodes k.
        outcome: "continuous" (Y = mu_T + noise N(0,1)) or "binary" (Y ~ Bernoulli(mu_T)).
        n_treatments: K >= 2.
        edge_prob: probability of each edge of the latent DAG.
        noise: standard deviation of covariate noise and of continuous outcome noise.
        confounding: scale of the latent propensity logits (0 gives a randomised trial).
        effect_heterogeneity: scale of the latent-dependent part of the effects.
        dtype: dtype of X.

    Returns:
        CausalData with X (n, p), T (n,) int64, Y (n,) float32 or int64, mu (n, K) float64,
        graph (k, k), and extra: params, order, latents (n, k) float32, propensity (n, K).
    """
    data = next(synthetic_chunks(n, p, seed, n, k_latent=k_latent, outcome=outcome, n_treatments=n_treatments,
                                 edge_prob=edge_prob, noise=noise, confounding=confounding,
                                 effect_heterogeneity=effect_heterogeneity, dtype=dtype))
    del data.extra["start"]
    return data


def synthetic_chunks(n: int, p: int, seed: int, chunk_rows: int, *, k_latent: int = 8,
                     outcome: str = "continuous", n_treatments: int = 2, edge_prob: float = 0.3,
                     noise: float = 0.5, confounding: float = 1.0, effect_heterogeneity: float = 1.0,
                     dtype=np.float32) -> Iterator[CausalData]:
    """The rows of `synthetic(n, p, seed, ...)` in consecutive chunks, memory O(chunk_rows p).

    The noise streams live across chunks, so the chunks concatenated equal the one big
    draw exactly, whatever `chunk_rows` is. Arguments as in `synthetic`.

    Yields:
        CausalData of min(chunk_rows, rows left) rows each, in order; extra["start"] is the
        global index of the chunk's first row.
    """
    _check_args(n, p, k_latent, n_treatments, outcome)
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    params = sample_params(seed, p, k_latent, n_treatments, edge_prob)
    streams = [np.random.default_rng([seed, 1, i]) for i in range(4)]
    for start in range(0, n, chunk_rows):
        chunk = _sample_rows(params, streams, min(chunk_rows, n - start), outcome=outcome, noise=noise,
                             confounding=confounding, effect_heterogeneity=effect_heterogeneity, dtype=dtype)
        chunk.extra["start"] = start
        yield chunk
        del chunk  # not alive while the next one is drawn
