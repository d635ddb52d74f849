"""Export a training run to the model artifact (``model.onnx`` + ``model.int8.onnx`` +
``model.json``), checked against PyTorch and fitted with what serving needs:

* ``graph``: the network plus class-activation maps and an out-of-distribution distance (to
  the nearest "anchors", training images whose lengths ``anchors.npz`` keeps for ``adapt``);
* ``calibration``: a temperature and a confidence threshold fitted on the validation split,
  and the distance threshold (from the distances of the images the model knows);
* ``onnx_export``: the ONNX files, the fp32 parity check and the int8 agreement check.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from .._version import __version__
from ..artifact import ArtifactFile, ModelArtifact, Provenance, RunDir, RunInfo
from ..data import decode_folder, decode_labelled, scan_folder
from ..data.fetch import CITATIONS
from ..errors import HematoVisionError
from ..evaluation import classification_metrics, expected_calibration_error, plot_confusion
from ..files import output_folder, sha256_file
from ..models import load_trained
from ..models.ensemble import run_list
from .calibration import calibrate, choose_confidence_threshold, fit_temperature, softmax
from .graph import ServingGraph, pooled_features, run_graph, with_static_padding
from .onnx_export import (
    FP16_WEIGHTS_TOLERANCE,
    check_parity,
    export_fp32,
    export_int8,
    onnx_logits,
    store_weights_in_half,
)

__all__ = [
    "ANCHORS",
    "ServingGraph",
    "choose_confidence_threshold",
    "export_run",
    "fit_temperature",
    "softmax",
]

log = logging.getLogger("hematovision")
OOD_FIT_IMAGES = 3000  # training images (at most) the anchors are drawn from
# training features kept in the artifact, the distance score's neighbours and what lab
# adaptation keeps the model's answers on: 1,200 kept PBC's validation accuracy after adapting
# to LISC better than 400 at the same cost, and find untaught cells as well as 3,000 do
# (benchmarks/RESULTS.md)
ANCHORS = 1200


@dataclass
class ExportImages:
    """The run's images by split (NHWC uint8 and labels), found again in its data folder."""

    root: Path
    train: tuple[np.ndarray, np.ndarray]  # a sample, plus the images known from --extra-train
    val: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray] | None
    known_extra: np.ndarray
    test_labs: np.ndarray | None = None  # each test image's lab


def export_run(
    run_dir: str | Path | RunDir,
    out_dir: str | Path | None = None,
    int8: bool = False,
    half_weights: bool = False,
    data_dir: str | Path | None = None,
    overwrite: bool = False,
    provenance: str | None = None,
    show_progress: bool = True,
) -> ModelArtifact:
    """Write the model artifact of a training run (default folder: RUN/artifact), or of
    several runs of one split as one ensemble (``FeatureEnsemble``; ``out_dir`` needed).

    ``half_weights``: store the convolutions' weights in float16 (about half the file;
    arithmetic in float32). ``provenance``: a free-text note on how the run was made, kept in
    model.json."""
    runs = run_list(run_dir)
    if len(runs) > 1 and out_dir is None:
        raise HematoVisionError("an ensemble of runs needs an artifact folder of its own: --out")
    model, info = load_trained(runs)  # checks the runs before anything is replaced
    run = runs[0]
    out = _prepare_out(Path(out_dir) if out_dir else run.artifact, overwrite)
    classes = info.classes
    # the exported graph takes uint8 pixels and normalises them itself
    spec = replace(info.preprocess, input="uint8")
    images = _export_images(run, info, data_dir, show_progress)
    train_x, train_y = images.train
    anchors, anchor_labels = anchor_sample(
        pooled_features(model, train_x, info.preprocess), train_y
    )
    graph = ServingGraph(with_static_padding(model, spec.input_size), anchors, spec).eval()
    val_x, val_y = images.val
    calibration, val_logits, val_ood = calibrate(graph, val_x, val_y, images.known_extra)
    files, checks = _write_onnx(graph, out, val_x, spec, val_logits, int8, half_weights)
    files["anchors"] = write_anchors(out / "anchors.npz", anchors, anchor_labels)
    artifact = ModelArtifact(
        name=f"hematovision-{info.architecture}",
        version=datetime.now(UTC).strftime("%Y.%m.%d"),
        classes=classes,
        architecture=info.architecture,
        preprocess=spec,
        calibration=calibration,
        files=files,
        checks=checks,
        metrics=_metrics(graph, images, calibration, (val_logits, val_ood), info, out, int8),
        provenance=_provenance(info, images.root, run.manifest(), provenance),
        path=out,
    )
    _add_confusion_plot(artifact)
    artifact.save()
    log.info(
        "exported %s: T=%.3f, confidence threshold %.2f, ECE %.4f -> %.4f (val)",
        out,
        calibration.temperature,
        calibration.confidence_threshold,
        artifact.metrics["val"]["ece_before"],
        artifact.metrics["val"]["ece_after"],
    )
    return artifact


def anchor_sample(features: np.ndarray, labels: np.ndarray, n: int = ANCHORS):
    """A class-balanced sample of training features and their labels: (features, labels)."""
    rng = np.random.default_rng(0)
    per_class = max(1, n // max(1, len(np.unique(labels))))
    keep = np.concatenate(
        [rng.permutation(np.flatnonzero(labels == k))[:per_class] for k in np.unique(labels)]
    )
    return features[keep], labels[keep]


def write_anchors(path: Path, features: np.ndarray, labels: np.ndarray) -> ArtifactFile:
    """The anchors' lengths and classes: with their directions, which the graph holds for its
    distance score, the features ``hematovision adapt`` keeps the model's answers on while it
    learns a new lab's cells (``adapt.anchor_features``). Stored once, not twice: 1.3 MB less
    for EfficientNet-Lite0's 1,200 anchors."""
    norms = np.linalg.norm(np.asarray(features, np.float32), axis=1)
    np.savez_compressed(path, norms=norms, labels=labels)
    return ArtifactFile(path.name, sha256_file(path))


def _write_onnx(graph, out: Path, val_x, spec, val_logits, int8: bool, half_weights: bool):
    """model.onnx (+ model.int8.onnx), each checked on the validation images: (files, checks).
    ``half_weights``: model.onnx keeps its convolutions' weights in float16 (int8 is made
    from the full float32 weights first)."""
    checks = {
        "fp32_max_abs_probability_difference": export_fp32(
            graph, out / "model.onnx", val_x, spec, val_logits
        ),
        "images": len(val_x),
    }
    if int8:
        checks["int8_top1_agreement"] = export_int8(
            out / "model.onnx", out / "model.int8.onnx", val_x, spec, val_logits
        )
    if half_weights:
        store_weights_in_half(out / "model.onnx")
        checks["fp16_weights_max_abs_probability_difference"] = check_parity(
            out / "model.onnx", val_x, spec, val_logits, FP16_WEIGHTS_TOLERANCE
        )
    files = {
        key: ArtifactFile(name, sha256_file(out / name))
        for key, name in (("onnx", "model.onnx"), ("int8", "model.int8.onnx"))
        if (out / name).is_file()
    }
    return files, checks


def _prepare_out(out: Path, overwrite: bool) -> Path:
    output_folder(out, make=False)  # not a file
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise HematoVisionError(f"{out} exists; pass --overwrite to replace it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _export_images(run: RunDir, info: RunInfo, data_dir, show_progress: bool) -> ExportImages:
    manifest = run.manifest()
    root = Path(data_dir) if data_dir else Path(manifest.data_root)
    if not root.is_dir():
        raise HematoVisionError(f"training data not found at {root}; pass --data")
    folder = scan_folder(root)  # once: the three splits are subsets of it

    def decode(split: str, limit: int | None = None):
        chosen = manifest.select(folder, split)
        if limit and len(chosen) > limit:
            chosen = chosen.subset(
                np.random.default_rng(0).choice(len(chosen), limit, replace=False)
            )
        decoded = decode_folder(chosen, info.preprocess, show_progress=show_progress)
        return decoded.arrays, decoded.folder.labels, decoded.folder.lab_names()

    train_x, train_y, _ = decode("train", OOD_FIT_IMAGES)
    extra_x, extra_y = _known_extra(info, show_progress)
    test = decode("test") if manifest.entries("test") else None
    return ExportImages(
        root,
        (np.concatenate([train_x, extra_x]), np.concatenate([train_y, extra_y])),
        decode("val")[:2],
        test[:2] if test else None,
        extra_x,
        test[2] if test else None,
    )


def _known_extra(info: RunInfo, show_progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """The run's --extra-train images, if they are still where training found them."""
    size = info.preprocess.input_size
    none = (np.zeros((0, size, size, 3), np.uint8), np.zeros(0, np.int64))
    root = (info.provenance.data.get("extra_train") or {}).get("root")
    if not root:
        return none
    if not Path(root).is_dir():
        log.warning("extra training images not found at %s: the OOD score ignores them", root)
        return none
    decoded = decode_labelled(root, info.classes, info.preprocess, show_progress=show_progress)
    return decoded.arrays, decoded.folder.labels


def _metrics(
    graph, images: ExportImages, calibration, val_outputs, info: RunInfo, out: Path, int8: bool
) -> dict:
    """Calibration on val; accuracy, ECE and flagged share on test (and int8's accuracy).
    ``val_outputs``: the validation images' (logits, distances)."""
    t = calibration.temperature
    val_logits, val_ood = val_outputs
    val_y = images.val[1]
    val_probs = softmax(val_logits, t)
    metrics = {
        "val": {
            "ece_before": expected_calibration_error(val_y, softmax(val_logits)),
            "ece_after": expected_calibration_error(val_y, val_probs),
            "flagged_uncertain": float(flagged_uncertain(val_probs, val_ood, calibration).mean()),
        }
    }
    if images.test is None:
        return metrics
    test_x, test_y = images.test
    logits, _, ood = run_graph(graph, test_x)
    probs = softmax(logits, t)
    m = classification_metrics(test_y, probs, info.classes)
    flagged = flagged_uncertain(probs, ood, calibration)
    metrics["test"] = {
        key: m[key] for key in ("n", "accuracy", "f1_macro", "per_class", "confusion_matrix")
    }
    metrics["test"].update(
        ece_before=expected_calibration_error(test_y, softmax(logits)),
        ece_after=m["ece"],
        flagged_uncertain=float(flagged.mean()),
    )
    if len(set(images.test_labs)) > 1:  # each lab's own figures, as a lab reads them
        correct = probs.argmax(1) == test_y
        metrics["test"]["per_lab"] = {
            str(lab): {
                "n": int((images.test_labs == lab).sum()),
                "accuracy": float(correct[images.test_labs == lab].mean()),
                "flagged_uncertain": float(flagged[images.test_labs == lab].mean()),
            }
            for lab in sorted(set(images.test_labs))
        }
    if int8:
        q = onnx_logits(out / "model.int8.onnx", test_x, graph.spec).argmax(1)
        metrics["test_int8"] = {
            "accuracy": float((q == test_y).mean()),
            "top1_agreement_with_fp32": float((q == logits.argmax(1)).mean()),
        }
    return metrics


def flagged_uncertain(probs: np.ndarray, ood: np.ndarray, calibration) -> np.ndarray:
    """Which images the Classifier flags (without TTA): low confidence or far from training."""
    flagged = probs.max(1) < calibration.confidence_threshold
    if calibration.ood_threshold is None:
        return flagged
    return flagged | (ood > calibration.ood_threshold)


def _provenance(info: RunInfo, root: Path, manifest, note: str | None) -> Provenance:
    """The run's provenance, with the licence and citation of every data set it learnt from
    (the labs its split names, or the one its data folder's name shows)."""
    names = {f["lab"] for f in manifest.files if f.get("lab") in CITATIONS}
    names = names or {n for n in CITATIONS if n in str(root).lower()}
    known = [CITATIONS[n] for n in sorted(names)]
    p = info.provenance
    return Provenance(
        p.training,
        {
            **p.data,
            "root": str(root),
            "citation": "; ".join(c for _, c in known) or None,
            "licence": "; ".join(lic for lic, _ in known) or None,
        },
        p.licence,
        datetime.now(UTC).isoformat(timespec="seconds"),
        {**p.software, "hematovision_export": __version__},
        note,
    )


def _add_confusion_plot(artifact: ModelArtifact) -> None:
    """The test confusion matrix as a PNG in the artifact, for the model card."""
    test = artifact.metrics.get("test")
    if test and "confusion_matrix" in test:
        plot_confusion(
            {"confusion_matrix": test["confusion_matrix"], "classes": artifact.classes},
            artifact.path / "confusion_matrix.png",
        )
        artifact.add_file("confusion_matrix", "confusion_matrix.png")
