"""The ONNX graph cache: a reload of the same checkpoint skips the export; a cached graph that is
unreadable, corrupt or of another model is refused, dropped and exported again; a cache that
cannot be written costs only the export."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inspector.engine.backends import onnx as onnx_backend
from inspector.model.checkpoint import manifest_sha256
from inspector.engine.backends.plan import ExecutionPlan
from inspector.engine.capabilities import onnx_available
from inspector.engine.engine import EngineOptions, load_engine
from inspector.engine.backends.onnx_cache import OnnxCache, cache_key
from inspector.runtime.settings import Settings
from trainer.synthetic import make_image

pytestmark = pytest.mark.skipif(not onnx_available(), reason="onnxruntime/onnx/onnxscript not installed")
REFERENCE = ExecutionPlan(backend="torch", precision="fp32", channels_last=False, fuse=False)


def _images() -> list[np.ndarray]:
    return [make_image(k, size=96, seed=0, index=900 + i)[0] for i, k in enumerate([None, "spot", "scratch"])]


@pytest.fixture(scope="module")
def reference(tiny_checkpoint) -> np.ndarray:
    return load_engine(tiny_checkpoint, "cpu", EngineOptions(plan=REFERENCE)).maps(_images())[0].numpy()


def _no_export(*_a, **_k):
    raise AssertionError("exported although the graph was cached")


def test_a_second_load_reads_the_cached_graph_and_gives_the_same_maps(tiny_checkpoint, tmp_path, reference,
                                                                       monkeypatch):
    first = load_engine(tiny_checkpoint, "cpu", EngineOptions(backend="onnx", onnx_cache_dir=tmp_path))
    cached = list(tmp_path.glob("*.onnx"))
    assert len(cached) == 1 and cached[0].stat().st_size > 1000
    assert not list(tmp_path.glob("*.tmp"))  # the write was atomic: no leftovers
    monkeypatch.setattr(onnx_backend, "export_onnx", _no_export)
    second = load_engine(tiny_checkpoint, "cpu", EngineOptions(backend="onnx", onnx_cache_dir=tmp_path))
    assert second.plan.backend == "onnx"
    np.testing.assert_allclose(second.maps(_images())[0].numpy(), reference, atol=1e-4)
    np.testing.assert_allclose(first.maps(_images())[0].numpy(), reference, atol=1e-4)


def test_a_bad_cache_entry_is_refused_dropped_and_exported_again(tiny_checkpoint, tmp_path, reference):
    engine = load_engine(tiny_checkpoint, "cpu", EngineOptions(plan=REFERENCE))
    key = cache_key(manifest_sha256(tiny_checkpoint), engine.image_size)
    cache = OnnxCache(tmp_path)
    with torch.no_grad():  # a well-formed graph of a different model, filed under this key
        next(engine.model.student.parameters()).add_(0.5)
    wrong = onnx_backend.export_onnx(engine.model, engine.image_size)
    for bad in (b"\x00garbage, not a graph", wrong):
        assert cache.put(key, bad)
        loaded = load_engine(tiny_checkpoint, "cpu", EngineOptions(backend="onnx", onnx_cache_dir=tmp_path))
        assert loaded.plan.backend == "onnx"
        np.testing.assert_allclose(loaded.maps(_images())[0].numpy(), reference, atol=1e-4)
        replaced = cache.get(key)
        assert replaced is not None and replaced != bad  # the fresh export took its place


def test_an_unwritable_cache_costs_only_the_export(tiny_checkpoint, tmp_path, reference):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache folder should be")
    engine = load_engine(tiny_checkpoint, "cpu", EngineOptions(backend="onnx", onnx_cache_dir=blocker / "onnx"))
    assert engine.plan.backend == "onnx"
    np.testing.assert_allclose(engine.maps(_images())[0].numpy(), reference, atol=1e-4)


def test_the_key_changes_with_the_checkpoint_and_the_input_size():
    a, b = "a" * 64, "b" * 64
    assert cache_key(a, 256) == cache_key(a, 256)
    assert len({cache_key(a, 256), cache_key(b, 256), cache_key(a, 128)}) == 3


def test_settings_default_to_a_user_cache_and_empty_disables(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert Settings().onnx_cache_dir == tmp_path / "inspector" / "onnx"
    monkeypatch.setenv("INSPECTOR_ONNX_CACHE_DIR", "")
    assert Settings().onnx_cache_dir is None
