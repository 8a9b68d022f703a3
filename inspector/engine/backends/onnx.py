"""The ONNX Runtime backend for CPU workers: export the whole fp32 model, check it, run it.

The exported graph is the complete ``maps_and_scores`` (teacher, students, cosine maps,
upsampling, blur, scores) with a dynamic batch axis and the model's fixed input size, built in
memory at load time (a few seconds; off the serving path, like the rest of a rollout) or read
from an ``OnnxCache`` (a restarted worker). Before it is used, the session's output on a fresh
random probe batch is compared with the torch model's: a graph that disagrees (or has the wrong
inputs/outputs) is refused with ``OnnxBackendError``; a cached one is dropped and exported again.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable
from contextlib import redirect_stdout

import numpy as np
import structlog
import torch
from torch import nn

from inspector.model.geometry import as_hw
from inspector.model.nets.model import DiscrepancyModel
from inspector.engine.backends.onnx_cache import OnnxCache
from inspector.engine.backends.plan import Runner

INPUT, OUTPUTS = "images", ("maps", "scores")
TOLERANCE = 1e-3  # max abs difference of maps allowed between the graph and torch (fp32 both)


class OnnxBackendError(RuntimeError):
    """The ONNX export is unavailable, malformed or does not reproduce the torch model."""


class _MapsAndScores(nn.Module):
    def __init__(self, model: DiscrepancyModel):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.maps_and_scores(images)


def export_onnx(model: DiscrepancyModel, image_size: int | tuple[int, int]) -> bytes:
    """Serialized ONNX model of ``model.maps_and_scores`` for (B,3,H,W) float32 input."""
    example = torch.zeros(2, 3, *as_hw(image_size))
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings(), redirect_stdout(io.StringIO()), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(_MapsAndScores(model.eval()), (example,), dynamo=True, verbose=False,
                                    input_names=[INPUT], output_names=list(OUTPUTS),
                                    dynamic_shapes={"images": {0: batch}}, optimize=True)
    return program.model_proto.SerializeToString()


def open_session(model_bytes: bytes, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise OnnxBackendError(f"onnxruntime refused the exported graph: {exc}") from exc


GraphRun = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # (B,3,H,W) → maps, scores (numpy)


def check_graph(run: GraphRun, model: DiscrepancyModel, image_size: int | tuple[int, int],
                tolerance: float = TOLERANCE, relative: bool = False) -> float:
    """Max map difference of ``run`` against torch fp32 on a fresh random probe batch (absolute,
    or as a share of the largest torch map value when ``relative``); raises ``OnnxBackendError``
    when it exceeds ``tolerance`` (with ``relative``, the scores' difference too) or the shapes are wrong.
    A run that cuts batches of ``split_from`` or more images differently is probed at that size."""
    # a fresh seed each time: a graph cannot be made to pass by matching one known probe
    seed = int.from_bytes(os.urandom(8), "little") >> 1
    size = max(2, getattr(run, "split_from", None) or 0)
    probe = torch.randn(size, 3, *as_hw(image_size), generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        ref_maps, ref_scores = (t.numpy() for t in model.maps_and_scores(probe))
    try:
        maps, scores = run(probe.numpy())
    except Exception as exc:  # noqa: BLE001
        raise OnnxBackendError(f"exported graph failed on a probe batch: {exc}") from exc
    if maps.shape != ref_maps.shape or scores.shape != ref_scores.shape:
        raise OnnxBackendError(f"exported graph gives shapes {maps.shape}, {scores.shape}; "
                               f"torch gives {ref_maps.shape}, {ref_scores.shape}")
    def off(out: np.ndarray, ref: np.ndarray) -> float:
        return float(np.abs(out - ref).max()) / (max(float(np.abs(ref).max()), 1e-12) if relative else 1.0)

    if not (np.isfinite(maps).all() and np.isfinite(scores).all()):
        diff = float("inf")
    else:
        diff = max(off(maps, ref_maps), off(scores, ref_scores) if relative else 0.0)
    if not diff <= tolerance:
        what = "relative" if relative else "max map"
        raise OnnxBackendError(f"exported graph disagrees with torch: {what} difference {diff:.3g} > {tolerance}")
    return diff


def graph_runner(model: DiscrepancyModel, image_size: int | tuple[int, int], open_graph: Callable[[bytes], GraphRun],
                 *, model_bytes: bytes | None = None, cache: OnnxCache | None = None, key: str | None = None,
                 tolerance: float = TOLERANCE, relative: bool = False, event: str = "onnx_graph") -> Runner:
    """A runner on the exported graph, opened by ``open_graph``: on ``model_bytes``, else on the
    graph cached under ``key``, else on a fresh export (stored under ``key``). Every opened graph is
    checked against torch (``check_graph``) before use; a cached one that fails is dropped."""
    log = structlog.get_logger("inspector.onnx")
    if model_bytes is None and cache is not None and key:
        cached = cache.get(key)
        if cached is not None:
            try:
                run = open_graph(cached)
                diff = check_graph(run, model, image_size, tolerance, relative)
                log.info(event, source="cache", key=key[:12], max_diff=diff)
                return _tensor_runner(run)
            except OnnxBackendError as exc:
                log.warning("onnx_cache_entry_refused", key=key[:12], error=str(exc)[:300])
                cache.discard(key)
    exported = model_bytes is None
    try:
        if model_bytes is None:
            model_bytes = export_onnx(model, image_size)
    except ImportError as exc:
        raise OnnxBackendError(f"onnx export needs onnx, onnxscript and onnxruntime: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - exporter failures are many and varied
        raise OnnxBackendError(f"onnx export failed: {type(exc).__name__}: {exc}") from exc
    run = open_graph(model_bytes)
    diff = check_graph(run, model, image_size, tolerance, relative)
    if exported and cache is not None and key:
        cache.put(key, model_bytes)
    log.info(event, source="export" if exported else "given", key=(key or "")[:12], max_diff=diff)
    return _tensor_runner(run)


def onnx_runner(model: DiscrepancyModel, image_size: int | tuple[int, int], model_bytes: bytes | None = None,
                cache: OnnxCache | None = None, key: str | None = None) -> Runner:
    """ONNX Runtime on the fp32 graph (``graph_runner``), held to ``TOLERANCE`` absolute."""
    def open_graph(graph: bytes) -> GraphRun:
        session = open_session(graph)
        inputs = [i.name for i in session.get_inputs()]
        outputs = [o.name for o in session.get_outputs()]
        if inputs != [INPUT] or outputs != list(OUTPUTS):
            raise OnnxBackendError(f"exported graph has inputs {inputs} and outputs {outputs}")
        return _session_run(session)

    return graph_runner(model, image_size, open_graph, model_bytes=model_bytes, cache=cache, key=key)


def _session_run(session) -> GraphRun:
    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        maps, scores = session.run(list(OUTPUTS), {INPUT: x})
        return maps, scores

    return run


def _tensor_runner(run: GraphRun) -> Runner:
    def tensor_run(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps, scores = run(batch.detach().to("cpu", torch.float32).contiguous().numpy())
        return torch.from_numpy(maps), torch.from_numpy(scores)

    return tensor_run
