"""Dump csna fits (``effect_shrink.dump``) of two binary DGPs that are not suite cells, for the
rule in rule.md: randomised-binary and binary-ihdp-cov.

    python benchmarks/results/binary_level_s21/dump_extra.py --out DIR --reps 1016,1017,1018,1019
"""
import argparse
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from effect_shrink import dump  # noqa: E402

from csna.bench.suite import BASE, Cell  # noqa: E402

EXTRA = (Cell("randomised-binary", replace(BASE, confounding="randomised", outcome="binary"),
              "randomised treatment, binary outcome"),
         Cell("binary-ihdp-cov", replace(BASE, covariates="ihdp", outcome="binary"), "IHDP covariates, binary outcome"))

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--reps", default="1016,1017,1018,1019")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for rep in (int(r) for r in a.reps.split(",")):
        for cell in EXTRA:
            path = out / f"{cell.name}-{rep}.npz"
            if not path.exists():
                dump(cell, rep, path)
