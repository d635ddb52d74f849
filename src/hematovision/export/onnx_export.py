"""ONNX: export the serving graph, check it against PyTorch, and quantise it to int8."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from ..artifact import OUTPUTS
from ..errors import HematoVisionError
from ..preprocess import PreprocessSpec, model_input
from .calibration import softmax
from .graph import ServingGraph

FP32_TOLERANCE = 1e-4  # max |probability difference| between ONNX Runtime and PyTorch
# the same with the convolutions' weights stored in float16 (the bundled model: 0.009 at most
# on 320 PBC cells, top-1 unchanged)
FP16_WEIGHTS_TOLERANCE = 0.02
INT8_MIN_AGREEMENT = 0.995  # top-1 agreement of the int8 model with fp32 on validation


def _session(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def onnx_logits(
    path: Path, images: np.ndarray, spec: PreprocessSpec, batch: int = 64
) -> np.ndarray:
    """The logits ONNX Runtime computes for NHWC uint8 images (fed as ``spec`` says)."""
    session = _session(path)
    return np.concatenate(
        [
            session.run(["logits"], {"input": model_input(images[i : i + batch], spec)})[0]
            for i in range(0, len(images), batch)
        ]
    )


def export_fp32(
    graph: ServingGraph,
    path: Path,
    images: np.ndarray,
    spec: PreprocessSpec,
    reference_logits: np.ndarray,
) -> float:
    """Write the graph as ONNX (dynamic batch) and check ONNX Runtime against PyTorch on
    ``images``; returns the largest probability difference, or raises above the tolerance."""
    example = torch.from_numpy(model_input(images[:2], spec))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow
        torch.onnx.export(
            graph,
            (example,),
            str(path),
            input_names=["input"],
            output_names=list(OUTPUTS),
            opset_version=17,
            dynamo=False,
            dynamic_axes={n: {0: "batch"} for n in ("input", *OUTPUTS)},
        )
    _store_anchors_in_half(path, graph.anchors.numpy())
    return check_parity(path, images, spec, reference_logits, FP32_TOLERANCE)


def check_parity(
    path: Path, images: np.ndarray, spec: PreprocessSpec, reference_logits, tolerance: float
) -> float:
    """The largest probability difference between the ONNX file and ``reference_logits`` on
    ``images``; raises at ``tolerance`` or above."""
    diff = float(np.abs(softmax(onnx_logits(path, images, spec)) - softmax(reference_logits)).max())
    if diff >= tolerance:
        raise HematoVisionError(
            f"export check failed: ONNX Runtime ({path.name}) differs from PyTorch by "
            f"{diff:.2e} in probability (limit {tolerance})"
        )
    return diff


def store_weights_in_half(path: Path) -> None:
    """Keep the convolutions' weights as float16 in the file, each behind a Cast that ONNX
    Runtime folds back to float32 when it loads: about half the bytes, float32 arithmetic
    (the bundled model: 16.6 -> 9.9 MB). The head stays float32 for ``adapt`` to refit."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(path)
    initializers = {i.name: i for i in model.graph.initializer}
    names = sorted(
        {n.input[1] for n in model.graph.node if n.op_type == "Conv"} & set(initializers)
    )
    for i, name in enumerate(names):
        weight = numpy_helper.to_array(initializers[name])
        model.graph.initializer.remove(initializers[name])
        model.graph.initializer.append(
            numpy_helper.from_array(weight.astype(np.float16), name + "_fp16")
        )
        model.graph.node.insert(
            i, helper.make_node("Cast", [name + "_fp16"], [name], to=TensorProto.FLOAT)
        )
    onnx.save(model, path)


def _store_anchors_in_half(path: Path, anchors: np.ndarray) -> None:
    """Keep the distance score's anchors as float16 rows named "anchors" in the file.

    The exporter folds the graph's ``anchors.float().T`` into a float32 constant, twice the
    bytes (6 MB of the bundled model's 20 MB budget); the folded constant is replaced by the
    float16 rows, a Cast and a Transpose, which ONNX Runtime folds again when it loads."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(path)
    nodes = model.graph.node
    topk = next(n for n in nodes if n.op_type == "TopK")
    folded = next(n for n in nodes if n.output[0] == topk.input[0]).input[1]
    constant = next(i for i in model.graph.initializer if i.name == folded)
    if not np.array_equal(numpy_helper.to_array(constant), anchors.astype(np.float32).T):
        raise HematoVisionError("export: the distance score's anchors were not found in the graph")
    model.graph.initializer.remove(constant)
    model.graph.initializer.append(numpy_helper.from_array(anchors, "anchors"))
    unpack = [
        helper.make_node("Cast", ["anchors"], ["anchors_float"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["anchors_float"], [folded], perm=[1, 0]),
    ]
    for i, node in enumerate(unpack):
        nodes.insert(i, node)
    onnx.save(model, path)


def export_int8(
    fp32: Path, path: Path, images: np.ndarray, spec: PreprocessSpec, reference_logits: np.ndarray
) -> float:
    """Quantise the fp32 model (calibrated on up to 256 of ``images``) and check its top-1
    agreement with ``reference_logits``; returns it, or raises below the minimum."""
    quantize_int8(fp32, path, images[:256], spec)
    agreement = float(
        (onnx_logits(path, images, spec).argmax(1) == reference_logits.argmax(1)).mean()
    )
    if agreement < INT8_MIN_AGREEMENT:
        raise HematoVisionError(
            f"int8 check failed: top-1 agreement with fp32 is "
            f"{agreement:.4f} (at least {INT8_MIN_AGREEMENT} needed)"
        )
    return agreement


def quantize_int8(fp32: Path, out: Path, calibration: np.ndarray, spec: PreprocessSpec) -> None:
    """Static QDQ quantisation of the convolutions and dense layers (ONNX Runtime)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(
                [
                    {"input": model_input(calibration[i : i + 16], spec)}
                    for i in range(0, len(calibration), 16)
                ]
            )

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        convs = [n for n in onnx.load(str(prepared)).graph.node if n.op_type == "Conv"]
        # Depthwise convolutions and the first and last convolution lose the most in int8
        # (measured on EfficientNet-Lite0/PBC: 94.9% top-1 agreement with them, 99.5% without):
        # they stay in float, like the CAM and distance maths.
        keep_float = [
            n.name for n in convs if any(a.name == "group" and a.i > 1 for a in n.attribute)
        ]
        keep_float += [convs[0].name, convs[-1].name] if convs else []
        quantize_static(
            str(prepared),
            str(out),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["Conv", "Gemm"],
            nodes_to_exclude=keep_float,
        )
