"""Figures and report.md of a run (csna.report, csna.figures) and `csna evaluate` end to end."""

import dataclasses
import json
import re

import numpy as np
import pytest
import torch
from matplotlib import image

from csna import figures as F
from csna.cli import main
from csna.config import load_config
from csna.ensemble import train_run
from csna.report import evaluate_and_report, shrink_note

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY = ["train.ensemble=1", "data.source=synthetic", "data.synthetic_n=400", "model.k=4", "model.d=16",
        "model.hidden=32", "phase1.epochs=2", "phase1.min_epochs=1", "phase2.epochs=1", "phase3.epochs=1",
        "phase4.epochs=1", "train.progress=false"]
FIGURES = ["loss_curves.png", "adjacency.png", "graph.png", "attention_heads.png", "attention_vs_distance.png",
           "theta_curve.png", "utility.png", "tau_scatter.png", "propensity_overlap.png"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_run(load_config(None, TINY), run_dir=tmp_path_factory.mktemp("run"))


def _valid_png(path):
    assert path.read_bytes()[:8] == PNG_MAGIC, path
    img = image.imread(path)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 200, path
    assert img[..., :3].std() > 0.01, path  # not a blank canvas


def test_figures_and_report(run):
    m = evaluate_and_report(run, run.data)
    rd = run.run_dir
    for name in FIGURES:
        _valid_png(rd / "figures" / name)
    report = (rd / "report.md").read_text()
    linked = re.findall(r"!\[[^\]]*\]\((figures/[^)]+\.png)\)", report)
    assert sorted(linked) == sorted(f"figures/{n}" for n in FIGURES)
    for section in ("## Final axes", "### Effects", "### Task", "### Causal stability", "### Structure", "### Compute"):
        assert section in report, section
    assert len(re.findall(r"\*\*(PASS|FAIL)\*\*", report)) == 3  # the truth is known: all three axes decide
    assert f"| `sqrt_pehe_out` | {m['sqrt_pehe_out']:.4g} |" in report
    # every table row has as many cells as its header (a stray | would break the table)
    for block in re.findall(r"((?:^\|.*\|\n)+)", report, flags=re.M):
        rows = [r for r in block.splitlines()]
        widths = {len(re.split(r"(?<!\\)\|", r)) for r in rows}
        assert len(widths) == 1, rows[0]


def test_ungated_run_says_so_and_saves_nothing(run, tmp_path):
    ungated = dataclasses.replace(run, phases_trained=(1, 2, 3), run_dir=tmp_path, trainer=None)
    m = evaluate_and_report(ungated, run.data)
    assert m["flops_gated"] == m["flops_full"] and m["flops_reduction"] == 0.0
    assert m["utility_entropy"] == 0.0 and m["axis_compute_pass"] is False
    assert all(m[f"gate_rate_{n.replace('.', '_')}"] == 1.0 for n, _ in run.model.blocks())
    _valid_png(tmp_path / "figures" / "utility.png")  # u is drawn anyway, from hard gates
    report = (tmp_path / "report.md").read_text()
    assert "Meta Utility gating: off" in report and "phase 4 was not trained" in report
    assert "| metric | value | meaning |" in report  # no "all blocks" column without gates
    quiet = dataclasses.replace(run, run_dir=tmp_path / "q")
    evaluate_and_report(quiet, run.data, figures=False)
    assert not (tmp_path / "q").exists()


def test_cli_evaluate_rewrites_the_run_directory(run):
    rd = run.run_dir
    (rd / "metrics.json").unlink(missing_ok=True)
    assert main(["evaluate", str(rd)]) == 0
    m = json.loads((rd / "metrics.json").read_text())
    for k in ("pearson_ite", "kl_do_obs", "kl_do_true", "z_stability", "flops_reduction", "ate_lo",
              "axis_compute_pass", "time_fit_s"):
        assert k in m, k
    assert (rd / "report.md").is_file() and (rd / "figures" / "loss_curves.png").is_file()


def test_attention_by_distance_figure_groups_pairs(tmp_path):
    from csna.evaluate import attention_by_distance
    from csna.nn.distance import causal_distance

    A = torch.zeros(4, 4)
    A[0, 1] = A[1, 2] = 0.5  # chain 0 → 1 → 2, node 3 unrelated to all
    dist, unrel = causal_distance(A)
    attn = np.zeros((2, 4, 4))
    attn[:, np.arange(4), np.arange(4)] = 1.0  # every query attends to itself only
    g = attention_by_distance(attn, dist.numpy(), unrel.numpy())
    assert g["attn_weight_self"] == 1.0
    assert g["attn_weight_near"] == g["attn_weight_far"] == g["attn_weight_unrelated"] == 0.0
    _valid_png(F.attention_vs_distance(attn, dist.numpy(), unrel.numpy(), tmp_path / "a.png"))


def test_an_ensemble_report_says_which_metrics_describe_member_0_only(run, tmp_path):
    member = dataclasses.replace(run, members=[], run_dir=None, trainer=None)
    ensemble = dataclasses.replace(run, members=[member], run_dir=tmp_path)
    m = evaluate_and_report(ensemble, run.data)
    assert m["ensemble_members"] == 2 and m["structure_members"] == 1
    report = (tmp_path / "report.md").read_text()
    for section in ("### Causal stability", "### Structure", "### Gate rates"):
        body = report.split(section, 1)[1].split("###", 1)[0]
        assert "member 0 only" in body and "`structure_members` = 1 of 2 members" in body, section
    assert "member 0" not in report.split("### Effects", 1)[1].split("###", 1)[0]


def test_the_report_says_what_the_effect_shrinkage_did():
    kept, moved = shrink_note({"method": "rloss", "centre": [2.5, 1.0], "level": [2.5, 0.4], "level_se": [0.1, 0.2],
                               "scale": [0.8, 0.0], "scale_se": [0.1, None], "rows": [100, 100]})
    assert "arm 1" in kept and "level kept at the plug-in mean 2.5" in kept and "λ = 0.8" in kept
    assert "arm 2" in moved and "from the plug-in 1 to the R-loss level 0.4 ± 0.2" in moved and "λ = 0" in moved
    old = shrink_note({"method": "rloss", "centre": [1.5], "scale": [1.0], "rows": [10]})  # Session 9's file
    assert len(old) == 1 and "level kept" in old[0]
    assert "none" in shrink_note(None)[0] and "m̂" not in old[0]
    direct, arms = shrink_note({"method": "rloss", "centre": [1.0, 1.0], "scale": [1.0, 1.0], "rows": [50, 50],
                                "outcome": ["direct", "ensemble"]})
    assert "LightGBM regression of y on x" in direct and "members' held-out arms" in arms
