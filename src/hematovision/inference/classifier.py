"""The Classifier: a model artifact (ONNX + model.json) on an engine -> Prediction per image."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.special import softmax

from ..artifact import ModelArtifact
from ..errors import HematoVisionError
from ..preprocess import ImageInput, load_resized, model_input, model_view, resize, to_rgb
from .engines import OnnxRuntimeEngine, open_engine

log = logging.getLogger("hematovision")

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "assets" / "default_model"
SAMPLES = DEFAULT_MODEL.parent / "samples"  # one real image per class and more
# top-1 agreement with ONNX Runtime another engine must reach on the samples
PARITY_MIN_AGREEMENT = 0.995
PREPARE_THREADS = 4  # at most; decoding and framing a batch, one image per thread
TTA_MIN_AGREEMENT = 0.75  # with test-time augmentation: fewer views agreeing is "uncertain"
UNLIKE_TRAINING = "unlike the training images (may not be a blood cell)"  # a flag's reason
# A batch with at least this many cells, at least this share of them flagged, looks like a lab
# the model does not know (PBC's test cells: 11% flagged; a lab left out of training: 61-99%;
# benchmarks/bench_sample_flags.py)
NEW_LAB_MIN_CELLS, NEW_LAB_SHARE = 20, 0.5
# the 8 flips and quarter turns of an NHWC batch (a cell has no orientation)
DIHEDRAL = [
    lambda b, k=k, flip=flip: np.rot90(b[:, :, ::-1] if flip else b, k, axes=(1, 2))
    for flip in (False, True)
    for k in range(4)
]


def flag_reasons(reasons: list[str] | None, uncertain: bool) -> list[str]:
    """A stored cell's flag reasons; a cell stored before they were kept: "uncertain" if the
    model flagged it."""
    return list(reasons) if reasons else (["uncertain"] if uncertain else [])


def new_lab_notice(reasons_of_cells: Iterable[list[str]]) -> str | None:
    """What to tell a lab when most of a batch's cells are flagged (each cell's flag reasons
    given: none for a cell not flagged), or None."""
    reasons = list(reasons_of_cells)
    flagged = sum(bool(r) for r in reasons)
    if len(reasons) < NEW_LAB_MIN_CELLS or flagged < NEW_LAB_SHARE * len(reasons):
        return None
    unlike = sum(UNLIKE_TRAINING in r for r in reasons)
    return (
        f"{flagged} of {len(reasons)} cells are flagged for review ({unlike} unlike the images "
        "the model was trained on): this lab's stain, camera or magnification may differ from "
        "its training labs'. Teach the model this lab's reviewed cells: hematovision adapt."
    )


def average_views(per_view: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Test-time augmentation's answer from each view's probabilities (images, views,
    classes): the mean probabilities, and the share of views whose top class is theirs."""
    probs = per_view.mean(1)
    return probs, (per_view.argmax(2) == probs.argmax(1)[:, None]).mean(1)


@dataclass
class Prediction:
    """One image's result, or (``error`` set) why it could not be classified.

    ``to_dict`` is the one JSON form used by the CLI and the APIs."""

    label: str | None
    confidence: float | None
    probabilities: dict[str, float]
    uncertain: bool
    reasons: list[str] = field(default_factory=list)
    heatmap: np.ndarray | None = None  # H x W in [0, 1], the image's own size
    size: tuple[int, int] | None = None  # the image's (width, height), upright
    error: str | None = None
    error_code: str | None = None  # HematoVisionError.code: unreadable_image, ...

    @classmethod
    def failed(cls, exc: HematoVisionError) -> Prediction:
        return cls(None, None, {}, True, [], error=str(exc), error_code=exc.code)

    @property
    def ok(self) -> bool:
        return self.error is None

    def top(self, k: int) -> list[tuple[str, float]]:
        return sorted(self.probabilities.items(), key=lambda kv: -kv[1])[:k]

    def to_dict(self) -> dict:
        if not self.ok:
            return {"error": self.error, "code": self.error_code}
        return {
            "label": self.label,
            "confidence": self.confidence,
            "uncertain": self.uncertain,
            "reasons": self.reasons,
            "probabilities": self.probabilities,
        }


def heatmap_overlay(image: ImageInput, heatmap: np.ndarray, alpha: float = 0.45) -> Image.Image:
    """The heatmap in a 'jet' colour map, blended over the image (same size)."""
    from matplotlib import colormaps

    base = to_rgb(image)
    heat = Image.fromarray(np.uint8(np.clip(heatmap, 0, 1) * 255)).resize(base.size, Image.BILINEAR)
    coloured = colormaps["jet"](np.asarray(heat) / 255.0)[..., :3]
    blended = (1 - alpha) * np.asarray(base, np.float32) / 255 + alpha * coloured
    return Image.fromarray(np.uint8(np.clip(blended, 0, 1) * 255))


class Classifier:
    """Classify blood-cell images with a model artifact on a CPU engine (``engines``)."""

    def __init__(self, artifact: ModelArtifact, engine, precision: str, tta: bool = False):
        self.artifact, self.engine, self.precision, self.tta = artifact, engine, precision, tta
        self.classes: list[str] = artifact.classes
        self.spec = artifact.preprocess
        self.calibration = artifact.calibration

    @classmethod
    def load(
        cls,
        path: str | Path | None = None,
        precision: str | None = None,
        threads: int | None = None,
        verify: bool = True,
        tta: bool | None = None,
        engine: str = "auto",
    ) -> Classifier:
        """Load an artifact folder (default: the bundled model); ``precision`` fp32 or int8
        (default: fp32 where the artifact has it); ``tta``: average the 8 flips and turns of
        each cell (8x the compute) and flag cells on which they disagree (default: the
        artifact's ``tta``, set by ``adapt`` where it pays); ``engine``:
        onnxruntime, openvino, or auto (``engines.resolve_engine``).

        An engine other than ONNX Runtime must agree with it on the bundled samples (top-1,
        ``PARITY_MIN_AGREEMENT``) or it is refused; ``auto`` then falls back to ONNX Runtime."""
        artifact = ModelArtifact.load(path or DEFAULT_MODEL)
        precision = artifact.choose_precision(precision)
        model = artifact.model_bytes(precision, verify)
        try:
            chosen = open_engine(engine, model, threads)
        except HematoVisionError as exc:
            raise HematoVisionError(f"{artifact.path} ({precision}): {exc}") from None
        classifier = cls(artifact, chosen, precision, artifact.tta if tta is None else tta)
        if chosen.name != "onnxruntime":
            classifier._check_parity(OnnxRuntimeEngine(model, threads), fall_back=engine == "auto")
        return classifier

    def _check_parity(self, reference: OnnxRuntimeEngine, fall_back: bool) -> None:
        """Compare the engine's top-1 with ONNX Runtime's on the bundled samples."""
        batch = np.stack([load_resized(p, self.spec) for p in sorted(SAMPLES.glob("*.jpg"))])
        x = model_input(batch, self.spec)
        ours, theirs = self.engine.run(x)[0], reference.run(x)[0]
        agreement = float((ours.argmax(1) == theirs.argmax(1)).mean())
        if agreement >= PARITY_MIN_AGREEMENT:
            return
        message = (
            f"{self.engine.name} agrees with ONNX Runtime on {agreement:.1%} of "
            f"{len(x)} samples ({PARITY_MIN_AGREEMENT:.1%} needed)"
        )
        if not fall_back:
            raise HematoVisionError(f"{message}: use --engine onnxruntime")
        log.warning("%s: using ONNX Runtime instead", message)
        self.engine = reference

    def engine_info(self) -> dict:
        """Which engine runs the model, and the precision it computes in."""
        precision = getattr(self.engine, "compute_precision", self.precision)
        return {"name": self.engine.name, "precision": precision}

    name = property(lambda self: self.artifact.name)
    version = property(lambda self: self.artifact.version)
    path = property(lambda self: self.artifact.path)
    temperature = property(lambda self: self.calibration.temperature)
    confidence_threshold = property(lambda self: self.calibration.confidence_threshold)
    ood_threshold = property(lambda self: self.calibration.ood_threshold)

    def predict_arrays(self, images_uint8: np.ndarray):
        """Raw outputs for resized NHWC uint8 images: (calibrated probabilities, cam, ood)."""
        logits, cam, ood = self.engine.run(model_input(images_uint8, self.spec))
        return softmax(logits / self.temperature, axis=1), cam, ood

    def predict(self, images: ImageInput | list[ImageInput], **options) -> list[Prediction]:
        """Classify paths, bytes, PIL images or arrays; one Prediction per image, in order.
        ``options``: those of ``iter_predict`` (heatmaps, batch_size, errors, max_side)."""
        return list(self.iter_predict(images, **options))

    def iter_predict(
        self,
        images: ImageInput | list[ImageInput],
        heatmaps: bool = False,
        batch_size: int = 32,
        errors: str = "raise",
        max_side: int | None = None,
    ) -> Iterator[Prediction]:
        """Predictions one batch at a time: memory stays bounded however many images.

        ``errors="raise"`` raises HematoVisionError naming the first image that cannot be
        read; ``errors="report"`` yields a failed Prediction (with ``error``) in its place.
        ``max_side``: decode large files reduced (see ``preprocess.to_rgb``); heatmaps then
        have the reduced size. Several images are decoded and framed at once, in threads (the
        work releases the GIL), and the next batch while the engine runs this one."""
        if errors not in ("raise", "report"):
            raise ValueError("errors must be 'raise' or 'report'")
        if not isinstance(images, (list, tuple)):
            images = [images]
        if len(images) < 2:  # one image: threads would only add their cost
            yield from self._classify(
                [self._prepare(im, errors, max_side) for im in images], heatmaps
            )
            return
        chunks = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
        workers = min(PREPARE_THREADS, os.cpu_count() or 1)
        with ThreadPoolExecutor(workers, thread_name_prefix="hematovision-prepare") as pool:

            def submit(chunk):
                return [pool.submit(self._prepare, im, errors, max_side) for im in chunk]

            pending = submit(chunks[0])
            for following in [*chunks[1:], None]:
                prepared = [future.result() for future in pending]  # raises in image order
                pending = submit(following) if following else []
                yield from self._classify(prepared, heatmaps)

    def _prepare(self, image: ImageInput, errors: str, max_side: int | None):
        """(picture, box in it, model-sized pixels), or a failed Prediction."""
        try:
            picture = to_rgb(image, max_side)
        except HematoVisionError as exc:
            if errors == "raise":
                raise
            return Prediction.failed(exc)
        view, box = model_view(picture, self.spec)
        return picture, box, resize(view, self.spec)

    def _classify(self, prepared: list, heatmaps: bool) -> list[Prediction]:
        """Predictions for ``_prepare``'s output, failures kept in their places."""
        cells = [item for item in prepared if not isinstance(item, Prediction)]
        if not cells:
            return prepared
        probs, cams, oods, agreement = self._outputs(np.stack([pixels for *_, pixels in cells]))
        done = iter(
            self._prediction(picture, box, p, cam, float(ood), a, heatmaps)
            for (picture, box, _), p, cam, ood, a in zip(cells, probs, cams, oods, agreement)
        )
        return [item if isinstance(item, Prediction) else next(done) for item in prepared]

    def _outputs(self, batch: np.ndarray):
        """(probabilities, cam, ood, view agreement); with TTA, over the 8 flips and turns."""
        if not self.tta:
            probs, cams, oods = self.predict_arrays(batch)
            return probs, cams, oods, np.ones(len(batch))
        runs = [self.predict_arrays(np.ascontiguousarray(view(batch))) for view in DIHEDRAL]
        probs, agreement = average_views(np.stack([r[0] for r in runs], axis=1))
        return probs, runs[0][1], np.mean([r[2] for r in runs], axis=0), agreement

    def _prediction(self, picture, box, p, cam, ood, agreement, want_heatmap) -> Prediction:
        k = int(p.argmax())
        reasons = []
        if p[k] < self.confidence_threshold:
            reasons.append(f"confidence below {self.confidence_threshold:.2f}")
        if self.ood_threshold is not None and ood > self.ood_threshold:
            reasons.append(UNLIKE_TRAINING)
        if agreement < TTA_MIN_AGREEMENT:
            reasons.append(f"flipped and turned views disagree ({agreement:.0%} agree)")
        heat = self._heatmap(cam[k], picture, box) if want_heatmap else None
        return Prediction(
            self.classes[k],
            float(p[k]),
            {c: float(v) for c, v in zip(self.classes, p)},
            bool(reasons),
            reasons,
            heat,
            picture.size,
        )

    def _heatmap(self, cam: np.ndarray, picture: Image.Image, box) -> np.ndarray:
        """The class-activation map in [0, 1], placed over the picture where the model looked."""
        m = np.maximum(cam, 0)
        m = np.float32(m / m.max() if m.max() > 0 else m)
        if self.spec.framing == "none":
            return np.asarray(Image.fromarray(m).resize(picture.size, Image.BILINEAR))
        left, top, side = box
        canvas = Image.new("F", picture.size, 0.0)
        canvas.paste(Image.fromarray(m).resize((side, side), Image.BILINEAR), (left, top))
        return np.asarray(canvas)
