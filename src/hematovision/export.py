"""Export a training run to the model artifact: ``model.onnx`` (+ ``model.int8.onnx``) and
``model.json``. The export checks itself against PyTorch and fits what serving needs:

* a temperature (scaling the logits) fitted on the validation split, for honest confidences;
* a confidence threshold chosen on validation, below which predictions are "uncertain";
* an out-of-distribution score inside the graph: the distance of the image's pooled features to
  the nearest class centre (PCA-whitened, fitted on training images), with a threshold at the
  99th percentile of validation images; images that are not blood cells land far away;
* class-activation maps (CAM) as a second output, so heatmaps need no torch at serving time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import __version__
from .data import DecodeCache, SplitManifest, decode_folder, scan_folder
from .data.fetch import SOURCES
from .errors import HematoVisionError
from .evaluation import classification_metrics, expected_calibration_error
from .models import load_trained
from .preprocess import PreprocessSpec, normalize

log = logging.getLogger("hematovision")

ARTIFACT_FORMAT = "hematovision-model/1"
OUTPUTS = ("logits", "cam", "ood")
FP32_TOLERANCE = 1e-4
INT8_MIN_AGREEMENT = 0.995


class ServingGraph(nn.Module):
    """The network plus what serving needs: CAM maps and the out-of-distribution distance."""

    def __init__(self, model: nn.Module, pca_mean, projection, centres):
        super().__init__()
        self.model = model
        self.register_buffer("pca_mean", torch.as_tensor(pca_mean, dtype=torch.float32))
        self.register_buffer("projection", torch.as_tensor(projection, dtype=torch.float32))
        self.register_buffer("centres", torch.as_tensor(centres, dtype=torch.float32))

    def features(self, x):
        """(feature map N x C x h x w, logits)."""
        if hasattr(self.model, "forward_features"):  # timm
            fmap = self.model.forward_features(x)
            return fmap, self.model.forward_head(fmap)
        fmap = self.model[0](x)  # seed-cnn: convolutional block, then the dense head
        return fmap, self.model[1:](fmap)

    def forward(self, x):
        fmap, logits = self.features(x)
        head = self.model.get_classifier() if hasattr(self.model, "get_classifier") else None
        if isinstance(head, nn.Linear) and head.in_features == fmap.shape[1]:
            cam = torch.einsum("kc,nchw->nkhw", head.weight, fmap)  # class-activation maps
        else:  # no global-pool + linear head: the mean activation, the same for every class
            cam = fmap.mean(1, keepdim=True).expand(-1, logits.shape[1], -1, -1)
        z = (fmap.mean((2, 3)) - self.pca_mean) @ self.projection
        ood = torch.cdist(z, self.centres).min(dim=1).values
        return logits, cam, ood


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@torch.no_grad()
def _run(graph: nn.Module, images: np.ndarray, spec: PreprocessSpec, batch: int = 128):
    outs = [[], [], []]
    for i in range(0, len(images), batch):
        for store, value in zip(outs, graph(torch.from_numpy(normalize(images[i:i + batch], spec)))):
            store.append(value.numpy())
    return [np.concatenate(o) for o in outs]


def _onnx_logits(session, images: np.ndarray, spec: PreprocessSpec, batch: int = 64) -> np.ndarray:
    return np.concatenate([session.run(["logits"], {"input": normalize(images[i:i + batch], spec)})[0]
                           for i in range(0, len(images), batch)])


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T minimising the NLL of softmax(logits / T) (Guo et al., 2017)."""
    from scipy.optimize import minimize_scalar
    from scipy.special import log_softmax

    def nll(log_t):
        return -log_softmax(logits / np.exp(log_t), axis=1)[np.arange(len(labels)), labels].mean()

    return float(np.exp(minimize_scalar(nll, bounds=(-3, 3), method="bounded").x))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Class probabilities of ``logits`` scaled by ``temperature``, as the Classifier computes them."""
    from scipy.special import softmax as scipy_softmax
    return scipy_softmax(logits / temperature, axis=1)


def choose_confidence_threshold(probs: np.ndarray, labels: np.ndarray,
                                target_accuracy: float = 0.995) -> float:
    """The lowest confidence above which validation predictions are ``target_accuracy`` right."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    for t in np.arange(0.30, 0.96, 0.01):
        kept = confidence >= t
        if kept.sum() and correct[kept].mean() >= target_accuracy:
            return float(round(t, 2))
    return 0.95


def _fit_ood(features: np.ndarray, labels: np.ndarray, n_classes: int, dims: int = 64):
    from sklearn.decomposition import PCA

    pca = PCA(n_components=min(dims, features.shape[1], len(features) - 1), whiten=True,
              random_state=0).fit(features)
    projection = pca.components_.T / np.sqrt(pca.explained_variance_)
    z = (features - pca.mean_) @ projection
    centres = np.stack([z[labels == k].mean(0) for k in range(n_classes)])
    return pca.mean_, projection, centres


def _decode_split(manifest: SplitManifest, folder, split: str, spec, classes,
                  limit: int | None = None, show_progress: bool = True):
    entries = manifest.entries(split)
    if limit and len(entries) > limit:
        entries = [entries[i] for i in np.random.default_rng(0).choice(len(entries), limit, replace=False)]
    wanted = {e["path"] for e in entries}
    keep = np.array([folder.relative(p) in wanted for p in folder.paths])
    if keep.sum() != len(wanted):
        raise HematoVisionError(f"the {split} images of this run are not all in {folder.root}; "
                                f"pass --data with the folder the run was trained on")
    decoded = decode_folder(folder.subset(keep), spec, DecodeCache.default(),
                            show_progress=show_progress)
    labels = np.array([classes.index(decoded.folder.classes[y]) for y in decoded.folder.labels])
    return decoded.arrays, labels


def _quantize_int8(fp32: Path, out: Path, calibration: np.ndarray, spec: PreprocessSpec) -> None:
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"input": normalize(calibration[i:i + 16], spec)}
                                 for i in range(0, len(calibration), 16)])

        def get_next(self):
            return next(self.batches, None)

    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        convs = [n for n in onnx.load(str(prepared)).graph.node if n.op_type == "Conv"]
        # Depthwise convolutions and the first and last convolution lose the most in int8
        # (measured on EfficientNet-Lite0/PBC: 94.9% top-1 agreement with them, 99.5% without):
        # they stay in float, like the CAM and distance maths.
        keep_float = [n.name for n in convs
                      if any(a.name == "group" and a.i > 1 for a in n.attribute)]
        keep_float += [convs[0].name, convs[-1].name] if convs else []
        quantize_static(str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, op_types_to_quantize=["Conv", "Gemm"],
                        nodes_to_exclude=keep_float)


def export_run(run_dir: str | Path, out_dir: str | Path | None = None, int8: bool = False,
               data_dir: str | Path | None = None, overwrite: bool = False,
               provenance: str | None = None, show_progress: bool = True) -> Path:
    """Write the model artifact for a training run; returns its folder (default RUN/artifact).

    ``provenance``: a free-text note on how the run was made, kept in model.json."""
    import onnxruntime as ort

    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir else run_dir / "artifact"
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise HematoVisionError(f"{out} exists; pass --overwrite to replace it")
        shutil.rmtree(out)
    model, meta = load_trained(run_dir)
    spec = PreprocessSpec.from_dict(meta["preprocess"])
    classes = meta["classes"]
    manifest = SplitManifest.load(run_dir / "split.json")
    root = Path(data_dir) if data_dir else Path(manifest.data_root)
    if not root.is_dir():
        raise HematoVisionError(f"training data not found at {root}; pass --data")
    folder = scan_folder(root)  # once: the three splits are subsets of it
    val_x, val_y = _decode_split(manifest, folder, "val", spec, classes, show_progress=show_progress)
    train_x, train_y = _decode_split(manifest, folder, "train", spec, classes, limit=3000,
                                     show_progress=show_progress)
    has_test = bool(manifest.entries("test"))
    test_x, test_y = (_decode_split(manifest, folder, "test", spec, classes,
                                    show_progress=show_progress) if has_test else (None, None))

    # features for the out-of-distribution score come from the plain network
    plain = ServingGraph(model, np.zeros(1), np.zeros((1, 1)), np.zeros((1, 1))).eval()

    @torch.no_grad()
    def pooled(images):
        return np.concatenate([plain.features(torch.from_numpy(normalize(images[i:i + 128], spec)))[0]
                               .mean((2, 3)).numpy() for i in range(0, len(images), 128)])

    # Images added to the training split only (--extra-train, e.g. cells from another lab's
    # smears) are part of what the model knows: the distance score must not call them strange.
    extra = (meta["data"].get("extra_train") or {}).get("root")
    extra_x = np.zeros((0, *train_x.shape[1:]), np.uint8)
    if extra and Path(extra).is_dir():
        decoded_extra = decode_folder(scan_folder(extra), spec, DecodeCache.default(),
                                      show_progress=show_progress)
        extra_x = decoded_extra.arrays
        extra_y = np.array([classes.index(decoded_extra.folder.classes[y])
                            for y in decoded_extra.folder.labels])
        train_x, train_y = np.concatenate([train_x, extra_x]), np.concatenate([train_y, extra_y])
    elif extra:
        log.warning("extra training images not found at %s: the OOD score ignores them", extra)
    graph = ServingGraph(model, *_fit_ood(pooled(train_x), train_y, len(classes))).eval()
    val_logits, _, val_ood = _run(graph, val_x, spec)
    temperature = fit_temperature(val_logits, val_y)
    val_probs = softmax(val_logits, temperature)
    threshold = choose_confidence_threshold(val_probs, val_y)
    extra_ood = _run(graph, extra_x, spec)[2] if len(extra_x) else np.zeros(0)
    ood_threshold = float(np.percentile(np.concatenate([val_ood, extra_ood]), 99))

    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / "model.onnx"
    dummy = torch.from_numpy(normalize(val_x[:2], spec))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, (dummy,), str(onnx_path), input_names=["input"],
                          output_names=list(OUTPUTS), opset_version=17, dynamo=False,
                          dynamic_axes={n: {0: "batch"} for n in ("input", *OUTPUTS)})

    # parity: ONNX Runtime against PyTorch on the validation images
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ort_logits = _onnx_logits(session, val_x, spec)
    fp32_diff = float(np.abs(softmax(ort_logits) - softmax(val_logits)).max())
    if fp32_diff >= FP32_TOLERANCE:
        raise HematoVisionError(f"export check failed: ONNX Runtime differs from PyTorch by "
                                f"{fp32_diff:.2e} in probability (limit {FP32_TOLERANCE})")
    files = {"onnx": {"path": "model.onnx", "sha256": _sha256(onnx_path)}}
    checks = {"fp32_max_abs_probability_difference": fp32_diff, "images": len(val_x)}
    if int8:
        int8_path = out / "model.int8.onnx"
        _quantize_int8(onnx_path, int8_path, val_x[: min(len(val_x), 256)], spec)
        q = ort.InferenceSession(str(int8_path), providers=["CPUExecutionProvider"])
        q_logits = _onnx_logits(q, val_x, spec)
        agreement = float((q_logits.argmax(1) == val_logits.argmax(1)).mean())
        if agreement < INT8_MIN_AGREEMENT:
            raise HematoVisionError(f"int8 check failed: top-1 agreement with fp32 is "
                                    f"{agreement:.4f} (at least {INT8_MIN_AGREEMENT} needed)")
        checks["int8_top1_agreement"] = agreement
        files["int8"] = {"path": "model.int8.onnx", "sha256": _sha256(int8_path)}

    metrics = {"val": {"ece_before": expected_calibration_error(val_y, softmax(val_logits)),
                       "ece_after": expected_calibration_error(val_y, val_probs),
                       "flagged_uncertain": float((val_probs.max(1) < threshold).mean())}}
    if has_test:
        test_logits, _, test_ood = _run(graph, test_x, spec)
        test_probs = softmax(test_logits, temperature)
        m = classification_metrics(test_y, test_probs, classes)
        metrics["test"] = {
            "n": m["n"], "accuracy": m["accuracy"], "f1_macro": m["f1_macro"],
            "per_class": m["per_class"], "confusion_matrix": m["confusion_matrix"],
            "ece_before": expected_calibration_error(test_y, softmax(test_logits)),
            "ece_after": m["ece"],
            "flagged_uncertain": float(((test_probs.max(1) < threshold) |
                                        (test_ood > ood_threshold)).mean())}
        if int8:
            q_test = _onnx_logits(q, test_x, spec)
            metrics["test_int8"] = {"accuracy": float((q_test.argmax(1) == test_y).mean()),
                                    "top1_agreement_with_fp32":
                                        float((q_test.argmax(1) == test_logits.argmax(1)).mean())}
    source = next((s for s in SOURCES.values() if s.name in str(root).lower()), None)
    artifact = {
        "format": ARTIFACT_FORMAT,
        "name": f"hematovision-{meta['architecture']}",
        "version": datetime.now(timezone.utc).strftime("%Y.%m.%d"),
        "classes": classes,
        "architecture": meta["architecture"],
        "input_size": spec.input_size,
        "preprocess": spec.to_dict(),
        "outputs": list(OUTPUTS),
        "temperature": temperature,
        "confidence_threshold": threshold,
        "ood_threshold": ood_threshold,
        "files": files,
        "checks": checks,
        "metrics": metrics,
        "training": meta["training"],
        "provenance": provenance,
        "data": {**meta["data"], "root": str(root), "citation": source.citation if source else None,
                 "licence": source.licence if source else None},
        "licence": meta.get("licence"),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "software": {**meta.get("software", {}), "hematovision_export": __version__},
    }
    (out / "model.json").write_text(json.dumps(artifact, indent=1))
    log.info("exported %s: T=%.3f, confidence threshold %.2f, ECE %.4f -> %.4f (val)", out,
             temperature, threshold, metrics["val"]["ece_before"], metrics["val"]["ece_after"])
    return out
