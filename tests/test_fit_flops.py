"""csna.fit_flops: the FLOPs of a fit, counted after it as csna bench counts its neural peers'.
The reference is FlopCounterMode wrapped around the whole real fit."""

import pytest
from torch.utils.flop_counter import FlopCounterMode

from csna.config import load_config
from csna.ensemble import train_member, train_run
from csna.fit_flops import fit_flops, member_flops

TINY = ["phase1.epochs=2", "phase1.min_epochs=1", "phase2.epochs=1", "phase3.epochs=1", "phase4.epochs=1",
        "train.progress=false", "log.tensorboard=false", "train.effect_shrink=none"]
# L_Stable's double backward cannot run under FlopCounterMode, so the reference fit goes without it.
NO_STABLE = [f"phase{n}.lambda_stable=0" for n in (1, 2, 3, 4)]


@pytest.mark.parametrize("extra", [[], ["phase3.epochs=3", "train.batch_size=100"]])
def test_the_count_matches_flopcountermode_around_the_whole_fit(extra, one_torch_thread):
    cfg = load_config(None, TINY + NO_STABLE + ["train.ensemble=1"] + extra)
    with FlopCounterMode(display=False) as fc:
        run = train_member(cfg)
    ref = fc.get_total_flops()
    assert run.phase_counts[3][1] == (3 if extra else 1)
    # What differs: phase 4's sampled gates send fewer rows through the blocks than the count's
    # batch does, and the propensities and block costs are counted only in the reference.
    assert fit_flops(run) == pytest.approx(ref, rel=0.02)


def test_an_ensemble_counts_every_member_on_its_own_rows(one_torch_thread):
    run = train_run(load_config(None, TINY + ["train.ensemble=2", "train.ensemble_workers=1"]))
    each = [member_flops(m, run.data) for m in run.all_members()]
    assert fit_flops(run) == pytest.approx(sum(each), rel=1e-12)
    assert all(f > 0 for f in each)
    # The member that trained longer costs more: FLOPs follow its steps, phase by phase.
    counts = [sum(s for s, _ in m.phase_counts.values()) for m in run.all_members()]
    if counts[0] != counts[1]:
        assert (each[0] > each[1]) == (counts[0] > counts[1])


def test_a_run_without_step_counts_is_refused(one_torch_thread):
    run = train_member(load_config(None, TINY + ["train.ensemble=1"]))
    run.phase_counts = {}
    with pytest.raises(ValueError, match="phase_counts"):
        fit_flops(run)
