"""Engines that run an artifact's ONNX model on the CPU: ONNX Runtime, or OpenVINO.

Both take the same ONNX bytes and return the graph's outputs (logits, cam, ood) as numpy
arrays. OpenVINO is an optional extra (``pip install 'hematovision[openvino]'``); on CPUs with
bf16 or VNNI instructions it measured 1.4-2.7x faster than ONNX Runtime (benchmarks/RESULTS.md),
so ``auto`` picks it there. It computes in bf16 on such CPUs, so a Classifier checks its top-1
agreement with ONNX Runtime before using it (``Classifier.load``).
"""

from __future__ import annotations

import importlib.util
import threading
from functools import cache
from pathlib import Path

import numpy as np

from ..errors import HematoVisionError

ENGINES = ("onnxruntime", "openvino")
# instructions that make OpenVINO's bf16 / int8 kernels pay (Linux /proc/cpuinfo names)
FAST_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "avx512_vnni", "avx_vnni"})


@cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo is not there)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return frozenset(line.partition(":")[2].split())


def openvino_installed() -> bool:
    return importlib.util.find_spec("openvino") is not None


def resolve_engine(name: str = "auto") -> str:
    """The engine ``name`` stands for: ``auto`` is OpenVINO where it is installed and the CPU
    has bf16 or VNNI, else ONNX Runtime."""
    if name == "auto":
        fast = openvino_installed() and bool(cpu_flags() & FAST_CPU_FLAGS)
        return "openvino" if fast else "onnxruntime"
    if name not in ENGINES:
        raise HematoVisionError(f"unknown engine {name!r}: auto, {' or '.join(ENGINES)}")
    if name == "openvino" and not openvino_installed():
        raise HematoVisionError(
            "the openvino engine is not installed: pip install 'hematovision[openvino]'"
        )
    return name


class OnnxRuntimeEngine:
    """ONNX Runtime's CPU provider; ``session.run`` may be called from several threads."""

    name = "onnxruntime"

    def __init__(self, model: bytes, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {"input": batch})


class OpenVinoEngine:
    """OpenVINO on the CPU at its default precision (bf16 where the CPU has it), tuned for
    latency; one infer request per thread, as a request must not be shared between threads.
    ``precision``: "f32" or "bf16" to choose instead (benchmarks compare them)."""

    name = "openvino"

    def __init__(self, model: bytes, threads: int | None = None, precision: str | None = None):
        import openvino as ov

        core = ov.Core()
        config = {"PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        if precision:
            config["INFERENCE_PRECISION_HINT"] = precision
        self.compiled = core.compile_model(core.read_model(model), "CPU", config)
        # the precision it computes in: bf16 on CPUs that have it, whatever the model's
        self.compute_precision = self.compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        self._local = threading.local()

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        request.infer({0: batch})
        # copies: the request reuses its output buffers on the next call
        return [request.get_output_tensor(i).data.copy() for i in range(3)]


def open_engine(name: str, model: bytes, threads: int | None = None):
    """An engine (``resolve_engine`` names) for ONNX bytes; HematoVisionError if it fails."""
    name = resolve_engine(name)
    engine_type = OpenVinoEngine if name == "openvino" else OnnxRuntimeEngine
    try:
        return engine_type(model, threads)
    except Exception as exc:  # noqa: BLE001 - each engine raises its own types
        raise HematoVisionError(
            f"{name} cannot load the model: {str(exc).splitlines()[0]}"
        ) from None
