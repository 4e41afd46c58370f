from pathlib import Path

import pytest

from csna.config import Config, ConfigError, config_from_dict, default_yaml, load_config

ROOT = Path(__file__).resolve().parents[1]


def test_default_yaml_matches_dataclass_defaults():
    shipped = default_yaml()
    shipped.pop("presets")
    assert shipped == Config().to_dict()
    assert not (ROOT / "configs").exists()  # the package's file is the only copy


def test_seed_values_are_the_defaults():
    c = Config()
    assert c.train.batch_size == 64 and c.train.grad_clip == 1.0 and c.train.weight_decay == 0.01
    assert (c.train.beta1, c.train.beta2) == (0.9, 0.999)
    assert c.phase1.lr == c.phase2.lr == 1e-4 and c.phase3.lr == c.phase4.lr == 5e-5
    assert 0.3 <= c.phase1.lambda_causal <= 0.7 and 0.1 <= c.phase2.lambda_geometric <= 0.4
    assert (c.phase3.lambda_dc, c.phase3.lambda_dis, c.phase3.lambda_stable) == (0.2, 0.5, 0.3)
    assert 500 <= c.phase1.warmup_steps <= 1000


def test_preset_applies_by_source_and_overrides_win():
    ihdp = load_config(None)
    plain = load_config(None, ["preset=none"])
    assert ihdp.phase1.epochs != plain.phase1.epochs
    assert plain.phase1.epochs == Config().phase1.epochs
    c = load_config(None, ["phase1.epochs=7", "model.k=6"])
    assert c.phase1.epochs == 7 and c.model.k == 6


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
