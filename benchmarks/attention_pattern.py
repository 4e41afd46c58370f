"""Does csna's trained model use the pattern of its attention? Issue 19 (attention by causal
distance is flat): train the default on IHDP tuning replications, then predict the test rows
three ways with the same weights:

* ``trained``: as trained;
* ``uniform``: every attention weight replaced by 1/k (the scores set to 0 before the softmax),
  so each node reads the plain mean of the values: the pattern is gone, the values stay;
* ``no-attention``: each block's attention output set to 0 (the residual and the MLP stay).

If ``uniform`` scores like ``trained``, the task gives the attention nothing to gain from
a pattern, which is why it stays flat. √PEHE_out is of the ensemble's τ̂ before the effect
shrinkage (``shrink=False``), so the network alone is compared; the attention's entropy is the
mean over heads, queries and test rows, in nats (uniform: log k).

    python benchmarks/attention_pattern.py --reps 1020,1021,1022,1023,1024,1025 [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import contextlib
import math

import numpy as np
import torch


@contextlib.contextmanager
def patched(mode: str):
    """Within the block, every ``CausalAttention`` attends as ``mode`` says."""
    from csna.nn.attention import CausalAttention

    scores, forward = CausalAttention.scores, CausalAttention.forward

    def flat_scores(self, q, k, dist, unrelated):
        return torch.zeros(q.shape[:-1] + (k.shape[-2],), dtype=q.dtype, device=q.device)  # (B, h, k, k)

    def silent(self, x, dist=None, unrelated=None):
        out, attn = forward(self, x, dist, unrelated)
        return torch.zeros_like(out), attn

    if mode == "uniform":
        CausalAttention.scores = flat_scores
    elif mode == "no-attention":
        CausalAttention.forward = silent
    try:
        yield
    finally:
        CausalAttention.scores, CausalAttention.forward = scores, forward


def entropy(run, x: np.ndarray) -> float:
    """Mean entropy (nats) of the last attention block's rows over the members, heads and rows."""
    from csna.predict import member_predictions

    values = []
    for m in run.all_members():
        member_predictions(m, x, gates=False)  # fills each block's last_attn
        a = m.model.attention[-1].last_attn.clamp_min(1e-12)  # (B, h, k, k)
        values.append(float(-(a * a.log()).sum(-1).mean()))
    return float(np.mean(values))


def main() -> None:
    from csna.bench.run import BenchSpec, csna_config, draw_splits, load_data
    from csna.ensemble import train_run
    from csna.predict import predict_features

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", default="1020,1021,1022,1023,1024,1025")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    torch.set_num_threads(1)
    modes = ("trained", "uniform", "no-attention")
    rows = []
    for rep in (int(r) for r in args.reps.split(",")):
        spec = BenchSpec(dataset="ihdp", replications=(rep,), cores=1, overrides=tuple(args.set))
        data = load_data(spec, rep)
        sp = {k: np.asarray(v, dtype=np.int64) for k, v in draw_splits(spec, rep).items()}
        run = train_run(csna_config(spec, rep), data=data, splits=sp)
        test = sp["test"]
        x = run.prep.features(data.X.iloc[test])
        tau = data.mu[test, 1] - data.mu[test, 0]
        pehe, tau_hat = {}, {}
        for mode in modes:
            with patched(mode):
                mu = predict_features(run, x, gates=False, shrink=False)["mu"]
            tau_hat[mode] = mu[:, 1] - mu[:, 0]
            pehe[mode] = float(np.sqrt(np.mean((tau_hat[mode] - tau) ** 2)))
        moved = float(np.sqrt(np.mean((tau_hat["uniform"] - tau_hat["trained"]) ** 2)))
        k = run.model.k
        rows.append((rep, pehe, entropy(run, x), math.log(k), moved))
        print(f"{rep}: " + ", ".join(f"{m} {pehe[m]:.3f}" for m in modes), flush=True)
    print("\n| replication | " + " | ".join(f"√PEHE_out {m}" for m in modes)
          + " | RMS of τ̂ uniform − trained | entropy (nats) | log k |")
    print("|---:|" + "---:|" * (len(modes) + 3))
    for rep, pehe, ent, logk, moved in rows:
        cells = [f"{pehe[m]:.3f}" for m in modes] + [f"{moved:.4f}", f"{ent:.3f}", f"{logk:.3f}"]
        print(f"| {rep} | " + " | ".join(cells) + " |")
    for m in modes[1:]:
        r = np.log([p[m] / p["trained"] for _, p, *_ in rows])
        se = r.std(ddof=1) / math.sqrt(len(r)) if len(r) > 1 else float("nan")
        print(f"{m} / trained: geometric mean {math.exp(r.mean()):.3f} (s.e. of the mean log ratio {se:.3f})")


if __name__ == "__main__":
    main()
