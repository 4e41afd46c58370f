from pathlib import Path

import pytest

from csna.config import Config, ConfigError, config_from_dict, default_yaml, load_config

ROOT = Path(__file__).resolve().parents[1]


def test_default_yaml_matches_dataclass_defaults():
    assert default_yaml() == Config().to_dict()
    assert not (ROOT / "configs").exists()  # the package's file is the only copy


def test_seed_values_kept_and_changed():
    c = Config()
    assert c.train.batch_size == 64 and c.train.grad_clip == 1.0 and c.train.weight_decay == 0.01
    assert (c.train.beta1, c.train.beta2) == (0.9, 0.999)
    assert 0.1 <= c.phase2.lambda_geometric <= 0.4
    assert (c.phase3.lambda_dc, c.phase3.lambda_stable) == (0.2, 0.3)
    # Changed (issue 18, Session 13): λ1 (L_causal) 0 in every phase, its reference AIPW.
    assert all(c.phase(n).lambda_causal == 0 for n in (1, 2, 3, 4)) and c.train.causal_reference == "aipw"
    # Changed from seed §IV, for every table (issue 17): rates and warm-up for a few hundred steps.
    assert (c.phase1.lr, c.phase2.lr, c.phase3.lr, c.phase4.lr) == (1e-3, 5e-4, 2.5e-4, 1e-3)
    assert all(c.phase(n).epochs == -1 for n in (1, 2, 3, 4))


def test_one_config_for_every_source_and_overrides_win():
    ihdp = load_config(None)
    table = load_config(None, data_source="table.csv")
    ihdp.data.source = table.data.source
    assert ihdp.to_dict() == table.to_dict()  # no data-set preset
    c = load_config(None, ["phase1.epochs=7", "model.k=6"])
    assert c.phase1.epochs == 7 and c.model.k == 6
    for bad in (["preset=ihdp"],):
        with pytest.raises(ConfigError, match="'preset' is gone"):
            load_config(None, bad)


def test_old_run_configs_with_a_preset_key_still_load():
    old = Config().to_dict() | {"preset": "auto"}
    assert config_from_dict(old).to_dict() == Config().to_dict()


def test_file_then_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("phase3:\n  lr: 0.001\ntrain:\n  seed: 3\n")
    c = load_config(f, ["train.seed=5"])
    assert c.phase3.lr == 0.001 and c.train.seed == 5


@pytest.mark.parametrize("override,needle", [
    (["phase1.lrr=1"], "phase1.lrr"),
    (["modle.k=3"], "modle"),
    (["phase1.lr=abc"], "phase1.lr"),
    (["phase1.lr=-1"], "phase1.lr"),
    (["phase3.lambda_dis=-0.1"], "lambda_dis"),
    (["model.positional=xyz"], "model.positional"),
    (["train.batch_size=1.5"], "train.batch_size"),
    (["data.clip_sd=-2"], "data.clip_sd"),
])
def test_bad_keys_and_values_name_the_key(override, needle):
    with pytest.raises(ConfigError) as e:
        load_config(None, override)
    assert needle in str(e.value)


def test_nearest_key_is_suggested():
    with pytest.raises(ConfigError, match="did you mean 'lr'"):
        load_config(None, ["phase1.lrr=1"])


def test_round_trip_through_dict():
    c = load_config(None, ["phase2.epochs=3"])
    assert config_from_dict(c.to_dict()) == c


def test_exponent_without_dot_is_a_float():
    # PyYAML reads 1e-4 as a string; --set phase1.lr=1e-4 must still work
    assert load_config(None, ["phase1.lr=1e-4"]).phase1.lr == 1e-4
