"""Every execution plan (folded batch norms, channels-last, bf16, ONNX Runtime, OpenVINO) gives the
fp32 maps (bf16 within its tolerance); the engine resolves ``auto`` by capability and falls back from
a graph backend only when it chose that backend itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from structlog.testing import capture_logs

from inspector.model.checkpoint import CheckpointError
from inspector.engine.backends.plan import ExecutionPlan, resolve_plan
from inspector.engine.capabilities import bf16_supported, onnx_available, openvino_available, openvino_cpu_bf16
from inspector.engine.engine import EngineOptions, load_engine
from inspector.model.nets.fuse import fold_batchnorm, static_same_padding
from inspector.model.nets.model import DiscrepancyModel, ModelConfig, build_student
from inspector.model.nets.teachers import build_teacher
from trainer.synthetic import make_image

REFERENCE = ExecutionPlan(backend="torch", precision="fp32", channels_last=False, fuse=False)
needs_onnx = pytest.mark.skipif(not onnx_available(), reason="onnxruntime/onnx/onnxscript not installed")
needs_openvino = pytest.mark.skipif(not openvino_available(), reason="openvino not installed")
needs_openvino_bf16 = pytest.mark.skipif(not openvino_cpu_bf16(), reason="OpenVINO reports no native bf16 on this CPU")


def _images() -> list[np.ndarray]:
    kinds = [None, "spot", "scratch", None, "spot"]
    imgs = [make_image(k, size=128, seed=0, index=700 + i)[0] for i, k in enumerate(kinds)]
    imgs[3] = np.ascontiguousarray(imgs[3][:100, :90])  # a non-square one, resized on the way in
    return imgs


@pytest.fixture(scope="module")
def reference(tiny_checkpoint):
    maps, scores = load_engine(tiny_checkpoint, "cpu", EngineOptions(plan=REFERENCE)).maps(_images())
    return maps.numpy(), scores.numpy()


@pytest.fixture(scope="module")
def dskd_model():
    torch.manual_seed(0)
    teacher = build_teacher("efficientnet_lite0")
    config = ModelConfig(method="dskd", variant="dual")
    model = DiscrepancyModel(teacher, build_student(config, teacher), config).eval()
    for m in model.modules():  # non-trivial batch-norm statistics, so folding has work to do
        if isinstance(m, torch.nn.BatchNorm2d) and not any(p is m for p in teacher.modules()):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model


def test_exact_rewrites_keep_the_outputs(dskd_model):
    import copy

    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2
    with torch.inference_mode():
        ref_maps, ref_scores = dskd_model.maps_and_scores(x)
    fused = copy.deepcopy(dskd_model)
    assert static_same_padding(fused) > 0
    assert fold_batchnorm(fused) > 0
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())  # every BN had a conv before it
    assert not any(type(m).__name__ == "Conv2dDynamicSamePadding" and tuple(m.stride) == (1, 1)
                   for m in fused.modules())
    with torch.inference_mode():
        maps, scores = fused.maps_and_scores(x)
    torch.testing.assert_close(maps, ref_maps, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(scores, ref_scores, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("plan", [
    ExecutionPlan(backend="torch", precision="fp32", channels_last=False, fuse=True),
    ExecutionPlan(backend="torch", precision="fp32", channels_last=True, fuse=True),
])
def test_fp32_torch_plans_match_the_reference(tiny_checkpoint, reference, plan):
    maps, scores = load_engine(tiny_checkpoint, "cpu", EngineOptions(plan=plan)).maps(_images())
    np.testing.assert_allclose(maps.numpy(), reference[0], atol=1e-4)
    np.testing.assert_allclose(scores.numpy(), reference[1], atol=1e-4)


@pytest.mark.skipif(not bf16_supported(torch.device("cpu")), reason="this CPU has no bf16")
def test_bf16_maps_stay_close_and_float32(tiny_checkpoint, reference):
    engine = load_engine(tiny_checkpoint, "cpu", EngineOptions(precision="bf16", backend="torch"))
    assert engine.plan.precision == "bf16"
    maps, scores = engine.maps(_images())
    assert maps.dtype == torch.float32 and scores.dtype == torch.float32
    ref_maps, ref_scores = reference
    assert np.abs(maps.numpy() - ref_maps).max() <= 0.05 * ref_maps.max()
    assert not np.array_equal(maps.numpy(), ref_maps)  # it really ran in bf16
    assert np.argsort(scores.numpy()).tolist() == np.argsort(ref_scores).tolist()


@needs_onnx
def test_onnx_backend_matches_torch(tiny_checkpoint, reference):
    engine = load_engine(tiny_checkpoint, "cpu", EngineOptions(backend="onnx"))
    assert engine.plan.backend == "onnx"
    maps, scores = engine.maps(_images())
    np.testing.assert_allclose(maps.numpy(), reference[0], atol=1e-4)
    np.testing.assert_allclose(scores.numpy(), reference[1], atol=1e-4)
    (single,) = engine.infer(_images()[:1])  # batch size other than the export's example
    assert single.score == pytest.approx(float(reference[1][0]), abs=1e-4)


@needs_onnx
def test_onnx_refuses_a_bad_export(tiny_checkpoint):
    from inspector.engine.backends.onnx import OnnxBackendError, export_onnx, onnx_runner

    engine = load_engine(tiny_checkpoint, "cpu", EngineOptions(plan=REFERENCE))
    size = engine.image_size
    with pytest.raises(OnnxBackendError, match="refused"):
        onnx_runner(engine.model, size, model_bytes=b"not an onnx graph")
    good = export_onnx(engine.model, size)
    with torch.no_grad():  # the graph no longer matches the model it claims to be: every student weight
        for p in engine.model.student.parameters():  # negated, which moves the maps by 25-35 % of their
            p.neg_()  # largest value, well past bf16's 5 % (one weight + 0.5 moved them 4 %: within it)
    with pytest.raises(OnnxBackendError, match="disagrees"):
        onnx_runner(engine.model, size, model_bytes=good)


@needs_onnx
def test_auto_falls_back_to_torch_but_explicit_onnx_fails(tiny_checkpoint, monkeypatch):
    import inspector.engine.backends.onnx as ob

    def broken(*_a, **_k):
        raise RuntimeError("exporter broke")

    monkeypatch.setattr(ob, "export_onnx", broken)  # no graph: neither OpenVINO nor ONNX Runtime can run
    first = resolve_plan(torch.device("cpu"))
    with capture_logs() as logs:
        engine = load_engine(tiny_checkpoint, "cpu")
    assert engine.plan.backend == "torch" and engine.infer(_images()[:1])[0].heatmap.dtype == np.float32
    # the rule: auto without the backends that failed
    assert engine.plan == resolve_plan(torch.device("cpu"), EngineOptions(), without=("openvino", "onnx"))
    (chosen,) = [e for e in logs if e["event"] == "execution_plan"]  # the choice, logged once
    assert chosen["plan"] == engine.plan.describe() and chosen["fell_back_from"] == first.describe()
    expected = (["openvino_backend_unavailable"] if first.backend == "openvino" else []) + ["onnx_backend_unavailable"]
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == expected
    with pytest.raises(CheckpointError, match="onnx export failed"):
        load_engine(tiny_checkpoint, "cpu", EngineOptions(backend="onnx"))
    with pytest.raises(CheckpointError, match="onnx export failed"):  # an explicit plan is measured as named
        load_engine(tiny_checkpoint, "cpu", EngineOptions(plan=ExecutionPlan("onnx", "fp32", fuse=False)))


@needs_openvino
def test_openvino_fp32_matches_torch(tiny_checkpoint, reference):
    engine = load_engine(tiny_checkpoint, "cpu", EngineOptions(backend="openvino", precision="fp32"))
    assert engine.plan.describe() == "openvino-fp32"
    maps, scores = engine.maps(_images())
    np.testing.assert_allclose(maps.numpy(), reference[0], atol=1e-4)
    np.testing.assert_allclose(scores.numpy(), reference[1], atol=1e-4)
    (single,) = engine.infer(_images()[:1])  # a batch size other than the probe's
    assert single.score == pytest.approx(float(reference[1][0]), abs=1e-4)


@needs_openvino_bf16
def test_openvino_bf16_is_close_to_fp32_and_really_bf16(tiny_checkpoint, reference):
    from inspector.engine.backends.openvino import BF16_TOLERANCE

    engine = load_engine(tiny_checkpoint, "cpu", EngineOptions(backend="openvino"))
    assert engine.plan.describe() == "openvino-bf16"  # auto precision: bf16 where the CPU has it
    maps, scores = engine.maps(_images())
    ref_maps, ref_scores = reference
    assert np.abs(maps.numpy() - ref_maps).max() <= BF16_TOLERANCE * np.abs(ref_maps).max()
    assert np.abs(scores.numpy() - ref_scores).max() <= BF16_TOLERANCE * np.abs(ref_scores).max()
    assert not np.array_equal(maps.numpy(), ref_maps)  # it really ran in bf16
    assert resolve_plan(torch.device("cpu")).describe() == "openvino-bf16"  # and auto picks it here


@needs_openvino
def test_openvino_cuts_big_batches_across_its_streams_and_gives_the_same_maps(tiny_checkpoint):
    from inspector.engine.backends.onnx import export_onnx
    from inspector.engine.backends.openvino import open_compiled

    engine = load_engine(tiny_checkpoint, "cpu", EngineOptions(plan=REFERENCE))
    run = open_compiled(export_onnx(engine.model, engine.image_size), "fp32")
    if run.streams == 1:  # one stream on this CPU: every batch takes the one path
        assert run.split_from is None
        return
    n = run.split_from
    x = torch.randn(n, 3, engine.image_size, engine.image_size, generator=torch.Generator().manual_seed(3)).numpy()
    maps, scores = run(x)  # cut into one part per stream
    small = [run(x[i:i + 1]) for i in range(n)]  # one image at a time: the latency path
    np.testing.assert_allclose(maps, np.concatenate([m for m, _ in small]), atol=1e-4)
    np.testing.assert_allclose(scores, np.concatenate([s for _, s in small]), atol=1e-4)


@needs_openvino
def test_compiling_leaves_the_threads_signal_stack_as_it_was(tiny_checkpoint):
    """OpenVINO installs an alternate signal stack on the compiling thread that dies with the model;
    left there, a later SIGTERM on that thread crashed the worker (SIGSEGV)."""
    import ctypes
    import threading

    from inspector.engine.backends.onnx import export_onnx
    from inspector.engine.backends.openvino import _AltStack, open_compiled

    engine = load_engine(tiny_checkpoint, "cpu", EngineOptions(plan=REFERENCE))
    graph = export_onnx(engine.model, engine.image_size)
    libc = ctypes.CDLL(None, use_errno=True)

    def signal_stack() -> tuple:
        s = _AltStack()
        assert libc.sigaltstack(None, ctypes.byref(s)) == 0
        return s.ss_sp, s.ss_flags, s.ss_size

    seen: dict[str, tuple] = {}

    def compile_here() -> None:  # a fresh thread: no alternate stack to begin with
        seen["before"] = signal_stack()
        run = open_compiled(graph, "fp32")
        run(np.zeros((1, 3, engine.image_size, engine.image_size), np.float32))
        seen["after"] = signal_stack()

    t = threading.Thread(target=compile_here)
    t.start()
    t.join()
    assert seen["before"][1] & 2  # SS_DISABLE
    assert seen["after"] == seen["before"]


@needs_openvino
def test_openvino_refuses_a_bad_graph_and_auto_falls_back_to_onnx(tiny_checkpoint, monkeypatch):
    from inspector.engine.backends.onnx import OnnxBackendError, export_onnx
    from inspector.engine.backends import openvino as ovb

    engine = load_engine(tiny_checkpoint, "cpu", EngineOptions(plan=REFERENCE))
    size = engine.image_size
    with pytest.raises(OnnxBackendError, match="refused"):
        ovb.openvino_runner(engine.model, size, "fp32", model_bytes=b"not an onnx graph")
    good = export_onnx(engine.model, size)
    with torch.no_grad():  # the graph no longer matches the model it claims to be: every student weight
        for p in engine.model.student.parameters():  # negated, which moves the maps by 25-35 % of their
            p.neg_()  # largest value, well past bf16's 5 % (one weight + 0.5 moved them 4 %: within it)
    for precision in ("fp32", "bf16") if openvino_cpu_bf16() else ("fp32",):
        with pytest.raises(OnnxBackendError, match="disagrees"):
            ovb.openvino_runner(engine.model, size, precision, model_bytes=good)

    real = ovb.open_compiled

    def off_by_a_lot(graph, precision, threads=None):  # a compiled graph whose maps are wrong
        run = real(graph, precision, threads)
        return lambda x: tuple(a * 3 + 1 for a in run(x))

    monkeypatch.setattr(ovb, "open_compiled", off_by_a_lot)
    with capture_logs() as logs:
        fallback = load_engine(tiny_checkpoint, "cpu", EngineOptions(backend="auto", precision="auto"))
    if resolve_plan(torch.device("cpu")).backend == "openvino":
        assert fallback.plan.backend == ("onnx" if onnx_available() else "torch")
        assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["openvino_backend_unavailable"]
    with pytest.raises(CheckpointError, match="disagrees"):  # named, it is refused, not swapped
        load_engine(tiny_checkpoint, "cpu", EngineOptions(backend="openvino", precision="fp32"))


def test_the_choice_is_logged_once_with_what_was_asked(tiny_checkpoint):
    with capture_logs() as logs:
        engine = load_engine(tiny_checkpoint, "cpu", EngineOptions(backend="torch", channels_last=False))
    (chosen,) = [e for e in logs if e["event"] == "execution_plan"]
    assert chosen["plan"] == engine.plan.describe() == "torch-fp32-fused"
    assert chosen["device"] == "cpu" and chosen["backend"] == "torch" and chosen["fell_back_from"] is None


def test_resolve_plan_resolves_auto_and_refuses_the_impossible():
    cpu = torch.device("cpu")
    auto = resolve_plan(cpu)
    if openvino_available() and openvino_cpu_bf16():
        assert auto.describe() == "openvino-bf16"
    else:
        assert auto.backend == ("onnx" if onnx_available() else "torch") and auto.precision == "fp32"
    assert resolve_plan(cpu, without=("openvino",)).backend == ("onnx" if onnx_available() else "torch")
    fp32 = resolve_plan(cpu, EngineOptions(precision="fp32"))  # fp32 asked for: the exact backend
    assert fp32.backend == ("onnx" if onnx_available() else "torch") and fp32.precision == "fp32"
    torch_plan = resolve_plan(cpu, EngineOptions(backend="torch"))
    assert torch_plan.channels_last and torch_plan.fuse
    assert resolve_plan(cpu, EngineOptions(backend="torch", channels_last=False)).channels_last is False
    with pytest.raises(ValueError):
        resolve_plan(cpu, EngineOptions(backend="onnx", precision="bf16"))
    with pytest.raises(ValueError):
        resolve_plan(torch.device("cuda"), EngineOptions(backend="onnx"))
    with pytest.raises(ValueError):
        resolve_plan(cpu, EngineOptions(backend="tensorrt"))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        resolve_plan(torch.device("cuda"), EngineOptions(backend="openvino"))
    with pytest.raises(ValueError):
        resolve_plan(cpu, EngineOptions(backend="openvino", compile=True))


def test_compiled_batches_are_padded_to_power_of_two_buckets():
    from inspector.engine.backends.plan import bucket, buckets

    assert [bucket(n) for n in (1, 2, 3, 5, 8, 9)] == [1, 2, 4, 8, 8, 16]
    assert buckets(8) == [1, 2, 4, 8] and buckets(12) == [1, 2, 4, 8, 16]
