"""The Classifier: a model artifact (ONNX + model.json) on ONNX Runtime -> Prediction per image."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.special import softmax

from ..artifact import ModelArtifact
from ..errors import HematoVisionError
from ..preprocess import ImageInput, normalize, resize, to_rgb

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "assets" / "default_model"


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
    """Classify blood-cell images with a model artifact on ONNX Runtime (CPU)."""

    def __init__(self, artifact: ModelArtifact, session, precision: str):
        self.artifact, self.session, self.precision = artifact, session, precision
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
    ) -> Classifier:
        """Load an artifact folder (default: the bundled model); ``precision`` fp32 or int8
        (default: fp32 where the artifact has it)."""
        import onnxruntime as ort

        artifact = ModelArtifact.load(path or DEFAULT_MODEL)
        precision = artifact.choose_precision(precision)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        model = artifact.model_bytes(precision, verify)
        try:
            session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises its own types
            raise HematoVisionError(
                f"{artifact.path}: ONNX Runtime cannot load the "
                f"{precision} model: {str(exc).splitlines()[0]}"
            ) from None
        return cls(artifact, session, precision)

    name = property(lambda self: self.artifact.name)
    version = property(lambda self: self.artifact.version)
    path = property(lambda self: self.artifact.path)
    temperature = property(lambda self: self.calibration.temperature)
    confidence_threshold = property(lambda self: self.calibration.confidence_threshold)
    ood_threshold = property(lambda self: self.calibration.ood_threshold)

    def predict_arrays(self, images_uint8: np.ndarray):
        """Raw outputs for resized NHWC uint8 images: (calibrated probabilities, cam, ood)."""
        logits, cam, ood = self.session.run(None, {"input": normalize(images_uint8, self.spec)})
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
        have the reduced size."""
        if errors not in ("raise", "report"):
            raise ValueError("errors must be 'raise' or 'report'")
        if not isinstance(images, (list, tuple)):
            images = [images]
        for start in range(0, len(images), batch_size):
            chunk = [
                self._decode(im, errors, max_side) for im in images[start : start + batch_size]
            ]
            pictures = [p for p in chunk if isinstance(p, Image.Image)]
            done = iter(self._classify(pictures, heatmaps) if pictures else [])
            yield from (next(done) if isinstance(p, Image.Image) else p for p in chunk)

    @staticmethod
    def _decode(image: ImageInput, errors: str, max_side: int | None) -> Image.Image | Prediction:
        try:
            return to_rgb(image, max_side)
        except HematoVisionError as exc:
            if errors == "raise":
                raise
            return Prediction.failed(exc)

    def _classify(self, pictures: list[Image.Image], heatmaps: bool) -> list[Prediction]:
        probs, cams, oods = self.predict_arrays(np.stack([resize(p, self.spec) for p in pictures]))
        return [
            self._prediction(picture, p, cam, float(ood), heatmaps)
            for picture, p, cam, ood in zip(pictures, probs, cams, oods)
        ]

    def _prediction(self, picture, p, cam, ood, want_heatmap) -> Prediction:
        k = int(p.argmax())
        reasons = []
        if p[k] < self.confidence_threshold:
            reasons.append(f"confidence below {self.confidence_threshold:.2f}")
        if self.ood_threshold is not None and ood > self.ood_threshold:
            reasons.append("unlike the training images (may not be a blood cell)")
        heat = None
        if want_heatmap:
            m = np.maximum(cam[k], 0)
            m = m / m.max() if m.max() > 0 else m
            heat = np.asarray(Image.fromarray(np.float32(m)).resize(picture.size, Image.BILINEAR))
        return Prediction(
            self.classes[k],
            float(p[k]),
            {c: float(v) for c, v in zip(self.classes, p)},
            bool(reasons),
            reasons,
            heat,
            picture.size,
        )
