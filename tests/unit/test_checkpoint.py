"""Checkpoint round trip and every way a checkpoint must be refused."""

import json
import pickle

import numpy as np
import pytest
import torch

from inspector.model.checkpoint import MANIFEST_FILE, WEIGHTS_FILE, CheckpointError, manifest_sha256, read_manifest
from inspector.engine.engine import load_engine
from inspector.model.nets.teachers import sha256_file
from trainer.synthetic import make_image


def _images():
    return [make_image(None, size=128, seed=0, index=900)[0], make_image("spot", size=128, seed=0, index=901)[0]]


def test_round_trip_gives_identical_scores(tiny_checkpoint):
    a = load_engine(tiny_checkpoint, "cpu").infer(_images())
    b = load_engine(tiny_checkpoint, "cpu").infer(_images())
    assert [r.score for r in a] == [r.score for r in b]
    m = read_manifest(tiny_checkpoint)
    assert m.method == "rd" and m.teacher == "efficientnet_lite0" and m.image_size == 64
    assert m.weights_sha256 == sha256_file(tiny_checkpoint / WEIGHTS_FILE)
    for key in ("name", "version", "created_at", "teacher_sha256", "mean", "std", "threshold", "score_stats",
                "metrics", "data_fingerprint"):
        assert getattr(m, key) not in (None, "", {}), key


def test_manifest_pinned_by_hash(tiny_checkpoint):
    load_engine(tiny_checkpoint, "cpu", expected_manifest_sha256=manifest_sha256(tiny_checkpoint))
    with pytest.raises(CheckpointError, match="manifest sha256"):
        load_engine(tiny_checkpoint, "cpu", expected_manifest_sha256="0" * 64)


def _flip(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_flipped_byte_in_weights_is_refused(checkpoint_copy):
    _flip(checkpoint_copy / WEIGHTS_FILE, -10)
    with pytest.raises(CheckpointError, match="does not match"):
        load_engine(checkpoint_copy, "cpu")


def test_truncated_weights_are_refused(checkpoint_copy):
    w = checkpoint_copy / WEIGHTS_FILE
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    with pytest.raises(CheckpointError):
        load_engine(checkpoint_copy, "cpu")


def _rewrite_manifest(ckpt, **changes):
    m = json.loads((ckpt / MANIFEST_FILE).read_text())
    m.update(changes)
    (ckpt / MANIFEST_FILE).write_text(json.dumps(m))


class _Boom:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickle_payload_named_as_weights_is_refused_without_running_it(checkpoint_copy, capsys):
    w = checkpoint_copy / WEIGHTS_FILE
    w.write_bytes(pickle.dumps({"w": _Boom()}))
    _rewrite_manifest(checkpoint_copy, weights_sha256=sha256_file(w))  # even with a matching hash
    with pytest.raises(CheckpointError, match="safetensors"):
        load_engine(checkpoint_copy, "cpu")
    assert "pwned" not in capsys.readouterr().out


def test_torch_save_file_is_refused(checkpoint_copy):
    w = checkpoint_copy / WEIGHTS_FILE
    torch.save({"a": torch.zeros(3)}, w)
    _rewrite_manifest(checkpoint_copy, weights_sha256=sha256_file(w))
    with pytest.raises(CheckpointError):
        load_engine(checkpoint_copy, "cpu")


@pytest.mark.parametrize("changes, match", [
    ({"teacher": "alexnet"}, "teacher 'alexnet' unavailable"),
    ({"teacher_sha256": "ab" * 32}, "teacher weights sha256"),
    ({"method": "dskd", "variant": "dual"}, "do not fit"),
    ({"weights_sha256": "00" * 32}, "does not match"),
    ({"unexpected": 1}, "invalid manifest"),
    ({"image_size": -5}, "invalid manifest"),
])
def test_bad_manifests_are_refused(checkpoint_copy, changes, match):
    _rewrite_manifest(checkpoint_copy, **changes)
    with pytest.raises(CheckpointError, match=match):
        load_engine(checkpoint_copy, "cpu")


def test_garbage_and_missing_manifest(checkpoint_copy, tmp_path):
    (checkpoint_copy / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="invalid manifest"):
        load_engine(checkpoint_copy, "cpu")
    with pytest.raises(CheckpointError, match="no manifest.json"):
        load_engine(tmp_path / "nothing-here", "cpu")


def test_save_is_atomic_and_replaces_an_old_checkpoint(tiny_checkpoint, tmp_path):
    from inspector.model.checkpoint import read_weights, save_checkpoint

    m = read_manifest(tiny_checkpoint)
    state = read_weights(tiny_checkpoint, m)
    out = tmp_path / "model"
    save_checkpoint(out, state, m.model_copy(update={"version": "v1"}))
    save_checkpoint(out, state, m.model_copy(update={"version": "v2"}))
    assert read_manifest(out).version == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary or old directories left
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST_FILE, WEIGHTS_FILE]
    np.testing.assert_array_equal(read_weights(out, read_manifest(out))["bottleneck.fusion.down2.0.weight"],
                                  state["bottleneck.fusion.down2.0.weight"])
