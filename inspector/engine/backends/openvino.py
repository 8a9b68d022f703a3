"""The OpenVINO backend for CPU workers: the exported graph in bf16 on CPUs that do bf16 natively.

The graph is the same fp32 ONNX export the ONNX Runtime backend runs (and shares its cache).
OpenVINO compiles it for the CPU in under a second; with ``bf16`` its kernels run the
convolutions on the CPU's bf16 units (AVX512-BF16 dot products, AMX tiles where present) and
keep the rest in fp32. Measured on a 2-core AVX512-BF16 EPYC (``bench/perf_matrix.py``): about
1.5× ONNX Runtime fp32 on the magnetic_tile model, image AUROC within 0.005 of fp32
(``bench/perf_parity.py``). bf16 is not exact, so the check against torch is relative: a graph
whose maps or scores move by more than ``BF16_TOLERANCE`` of their largest torch value on a
random probe batch is refused (and ``auto`` falls back to ONNX Runtime fp32).
"""

from __future__ import annotations

import ctypes
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from inspector.engine.backends.onnx import (INPUT, TOLERANCE, GraphRun, OnnxBackendError, graph_runner)
from inspector.engine.backends.onnx_cache import OnnxCache
from inspector.engine.backends.plan import Runner
from inspector.model.nets.model import DiscrepancyModel

#: Largest map/score difference from torch fp32 on the probe, as a share of torch's largest value.
#: bf16 keeps 8 bits of mantissa (0.4 % per value); measured on trained models: 0.9 % on random
#: probes, 3.8 % on magnetic_tile test images at the map's peak.
BF16_TOLERANCE = 0.05
PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16"}


class CompiledGraph:
    """The graph compiled twice: for latency (one stream, all threads: small batches) and for
    throughput (the streams OpenVINO picks for this CPU, each with its share of the threads).
    A batch of at least ``split_from`` images is cut into one part per stream, run at once:
    measured on 2 cores, 3-16 % more images/s at batch 8-32 than one stream, while a single
    image on one stream of one thread would take twice as long (so small batches use the first)."""

    def __init__(self, core, model, precision: str, threads: int):
        common = {"INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision], "INFERENCE_NUM_THREADS": threads}
        self.latency = core.compile_model(model, "CPU", {**common, "PERFORMANCE_HINT": "LATENCY"})
        self.throughput = core.compile_model(model, "CPU", {**common, "PERFORMANCE_HINT": "THROUGHPUT"})
        self.streams = int(self.throughput.get_property("NUM_STREAMS"))
        self.split_from = 4 * self.streams if self.streams > 1 else None
        self._one = self.latency.create_infer_request()
        self._many = [self.throughput.create_infer_request() for _ in range(self.streams)]
        self._lock = threading.Lock()

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:  # requests are reused: their outputs are copied before the next call
            if self.split_from is None or len(x) < self.split_from:
                out = self._one.infer({INPUT: x})
                return tuple(np.array(out[o], copy=True) for o in self.latency.outputs)  # type: ignore[return-value]
            parts = np.array_split(x, self.streams)
            for request, part in zip(self._many, parts):
                request.start_async({INPUT: part})
            for request in self._many:
                request.wait()
            return tuple(np.concatenate([np.array(r.get_output_tensor(i).data, copy=True) for r in self._many])
                         for i in range(2))  # type: ignore[return-value]


class _AltStack(ctypes.Structure):  # stack_t of sigaltstack(2)
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


@contextmanager
def keep_signal_stack():
    """Put the calling thread's alternate signal stack back as it was once the block is done.

    Compiling a model, OpenVINO's CPU plugin installs an alternate signal stack (11.5 KB here)
    on the compiling thread, and that memory goes when the model does. CPython installs its signal
    handlers with SA_ONSTACK, so a worker's SIGTERM, handled on its main thread after a model swap
    had freed that stack, killed the process with SIGSEGV instead of draining it. Found by
    tests/integration/test_signed_updates.py."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        before = _AltStack()
        saved = libc.sigaltstack(None, ctypes.byref(before)) == 0
    except (OSError, AttributeError):  # no sigaltstack (not POSIX): nothing to keep
        saved = False
    try:
        yield
    finally:
        if saved:
            if before.ss_flags & 2:  # SS_DISABLE: there was none
                before = _AltStack(None, 2, 0)
            libc.sigaltstack(ctypes.byref(before), None)


def open_compiled(graph: bytes, precision: str, threads: int | None = None) -> GraphRun:
    """The graph compiled by OpenVINO for the CPU at ``precision`` (``fp32`` or ``bf16``), as a
    thread-safe (B,3,H,W) → (maps, scores) call (``CompiledGraph``). Raises ``OnnxBackendError``
    if OpenVINO refuses it."""
    try:
        import openvino as ov
    except ImportError as exc:
        raise OnnxBackendError(f"the openvino backend needs the openvino package: {exc}") from exc
    core = ov.Core()
    try:
        with tempfile.TemporaryDirectory() as tmp:  # the ONNX frontend reads files
            path = Path(tmp) / "graph.onnx"
            path.write_bytes(graph)
            model = core.read_model(str(path))
        names = [i.get_any_name() for i in model.inputs]
        if names != [INPUT] or len(model.outputs) != 2:
            raise OnnxBackendError(f"exported graph has inputs {names} and {len(model.outputs)} outputs")
        with keep_signal_stack():
            return CompiledGraph(core, model, precision, threads or torch.get_num_threads())
    except OnnxBackendError:
        raise
    except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses of its own
        raise OnnxBackendError(f"openvino refused the exported graph: {str(exc)[:300]}") from exc


def openvino_runner(model: DiscrepancyModel, image_size: int | tuple[int, int], precision: str = "bf16",
                    model_bytes: bytes | None = None, cache: OnnxCache | None = None,
                    key: str | None = None) -> Runner:
    """OpenVINO on the exported graph (``graph_runner``): fp32 is held to the ONNX backend's
    absolute ``TOLERANCE``, bf16 to ``BF16_TOLERANCE`` relative."""
    if precision not in PRECISION_HINTS:
        raise ValueError(f"openvino precision must be one of {sorted(PRECISION_HINTS)}, got {precision!r}")
    bf16 = precision == "bf16"
    return graph_runner(model, image_size, lambda graph: open_compiled(graph, precision),
                        model_bytes=model_bytes, cache=cache, key=key,
                        tolerance=BF16_TOLERANCE if bf16 else TOLERANCE, relative=bf16, event="openvino_graph")
