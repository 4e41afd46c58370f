"""Checkpoints: atomic writes that survive a full disk, safe loading that never runs a
pickle's payload, and RNG states that survive ``weights_only=True``."""

import errno
import json
import os
import random

import numpy as np
import pytest
import torch
import yaml

from csna import checkpoint as ckpt
from csna.cli import main
from csna.config import Config


class _Payload:
    """Unpickling this runs ``exec``: it creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def _plant(path, marker):
    torch.save({"format": ckpt.FORMAT, "model_state": {}, "evil": _Payload(marker)}, path)


def _run_dir_with(tmp_path, name, marker):
    rd = tmp_path / "run"
    rd.mkdir()
    (rd / "config.yaml").write_text(yaml.safe_dump(Config().to_dict()))
    (rd / "preprocess.json").write_text(json.dumps({}))
    _plant(rd / name, marker)
    return rd


def test_the_planted_pickle_would_run_if_loaded_unsafely(tmp_path):
    # The control: the file really carries a live payload.
    marker = tmp_path / "pwned"
    _plant(tmp_path / "x.pt", marker)
    torch.load(tmp_path / "x.pt", weights_only=False)
    assert marker.exists()


def test_crafted_pickle_is_refused_by_load_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    _plant(tmp_path / "attention_model.pt", marker)
    with pytest.raises(ckpt.CheckpointError, match="refused to load") as info:
        ckpt.load(tmp_path / "attention_model.pt")
    assert isinstance(info.value, ValueError) and len(str(info.value).splitlines()) == 1
    assert not marker.exists()


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_crafted_pickle_is_refused_by_the_cli(tmp_path, capsys, command):
    marker = tmp_path / "pwned"
    rd = _run_dir_with(tmp_path, "attention_model.pt", marker)
    argv = [command, str(rd)] + (["--data", str(tmp_path / "x.csv"), "--out", str(tmp_path / "o.csv")]
                                 if command == "predict" else ["--no-figures"])
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "attention_model.pt" in err and "refused" in err
    assert "Traceback" not in err
    assert not marker.exists()


def test_crafted_latest_state_is_refused_on_resume(tmp_path, capsys):
    marker = tmp_path / "pwned"
    rd = _run_dir_with(tmp_path, ckpt.LATEST, marker)
    before = (rd / ckpt.LATEST).read_bytes()
    assert main(["train", "--resume", str(rd), "--quiet", "--no-figures"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "latest.pt" in err and "refused" in err
    assert not marker.exists()
    assert (rd / ckpt.LATEST).read_bytes() == before


def test_truncated_and_foreign_files_are_refused(tmp_path):
    good = tmp_path / "good.pt"
    ckpt.atomic_save({"format": ckpt.FORMAT, "x": torch.ones(3)}, good)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:100])
    with pytest.raises(ckpt.CheckpointError, match="cannot read"):
        ckpt.load(cut)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.ones(2)}, foreign)
    with pytest.raises(ckpt.CheckpointError, match="not a csna checkpoint"):
        ckpt.load(foreign)
    with pytest.raises(ckpt.CheckpointError, match="not found"):
        ckpt.load(tmp_path / "missing.pt")


def test_full_disk_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "latest.pt"
    ckpt.atomic_save({"format": ckpt.FORMAT, "step": 1, "w": torch.arange(10.0)}, path)
    before = path.read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(ckpt.CheckpointWriteError) as info:
        ckpt.atomic_save({"format": ckpt.FORMAT, "step": 2, "w": torch.zeros(10)}, path)
    assert info.value.errno == errno.ENOSPC and isinstance(info.value, OSError)
    assert "No space left on device" in str(info.value) and str(path) in str(info.value)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt"]  # no temporary file left


def test_full_disk_inside_torch_save_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "a.pt"
    ckpt.atomic_save({"format": ckpt.FORMAT, "v": 1}, path)
    before = path.read_bytes()

    def save(obj, fh):
        fh.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc] . PytorchStreamWriter failed writing file")

    monkeypatch.setattr(ckpt.torch, "save", save)
    with pytest.raises(ckpt.CheckpointWriteError, match="cannot write checkpoint"):
        ckpt.atomic_save({"format": ckpt.FORMAT, "v": 2}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.pt"]


def test_stale_temporaries_of_a_killed_write_are_removed(tmp_path):
    (tmp_path / ".latest.pt.abc123.tmp").write_bytes(b"half")
    (tmp_path / "keep.txt").write_text("x")
    gone = ckpt.remove_stale_temporaries(tmp_path)
    assert [p.name for p in gone] == [".latest.pt.abc123.tmp"]
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_rng_state_round_trips_through_safe_loading(tmp_path):
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    torch.rand(5), np.random.rand(5), random.random()
    np.random.randn()  # leaves a cached gaussian in numpy's state
    ckpt.atomic_save({"format": ckpt.FORMAT, "rng": ckpt.rng_state()}, tmp_path / "r.pt")
    expected = (torch.rand(4), np.random.rand(4), np.random.randn(2), [random.random() for _ in range(3)])
    torch.rand(100), np.random.rand(100), random.random()
    ckpt.set_rng_state(ckpt.load(tmp_path / "r.pt")["rng"])
    got = (torch.rand(4), np.random.rand(4), np.random.randn(2), [random.random() for _ in range(3)])
    assert torch.equal(expected[0], got[0])
    assert np.array_equal(expected[1], got[1]) and np.array_equal(expected[2], got[2])
    assert expected[3] == got[3]
