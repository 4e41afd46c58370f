"""Signed confounding bias of csna's plug-in level on saved fits (``benchmarks/effect_shrink.py``
dumps): c = the mean of the ensemble's τ̂ over the non-test rows, against the true mean τ and
the naive difference of means over the same rows; √PEHE_out of the raw ensemble τ̂.

    python benchmarks/results/plugin_bias_s21/plugin_bias.py DIR [DIR ...]
"""
import sys
from pathlib import Path

import numpy as np

for d in sys.argv[1:]:
    bias, pehe = [], []
    for p in sorted(Path(d).glob("*.npz")):
        z = np.load(p)
        n, test, T, Y = len(z["T"]), z["test"], z["T"], z["Y"]
        rows = np.setdiff1d(np.arange(n), test)
        ens = z["mus"].mean(0)
        tau_hat, tau = ens[:, 1] - ens[:, 0], z["mu"][:, 1] - z["mu"][:, 0]
        naive = Y[rows][T[rows] == 1].mean() - Y[rows][T[rows] == 0].mean()
        c, truth = tau_hat[rows].mean(), tau[rows].mean()
        bias.append(c - truth)
        pehe.append(float(np.sqrt(np.mean((tau_hat[test] - tau[test]) ** 2))))
        print(f"| {Path(d).name} | {p.stem} | {c:.3f} | {truth:.3f} | {naive:.3f} | {c - truth:+.3f} "
              f"| {(c - truth) / (naive - truth):+.2f} | {pehe[-1]:.3f} |")
    print(f"| {Path(d).name} | mean | | | | {np.mean(bias):+.3f} | | {np.exp(np.mean(np.log(pehe))):.3f} (geometric) |")
