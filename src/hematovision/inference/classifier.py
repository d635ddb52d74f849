"""The Classifier: model artifact (model.onnx + model.json) -> Prediction per image."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.special import softmax

from ..errors import HematoVisionError
from ..preprocess import ImageInput, PreprocessSpec, normalize, resize, to_rgb

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "assets" / "default_model"


@dataclass
class Prediction:
    """One image's result; ``to_dict`` is the one JSON form used by the CLI and the APIs."""

    label: str
    confidence: float
    probabilities: dict[str, float]
    uncertain: bool
    reasons: list[str] = field(default_factory=list)
    heatmap: np.ndarray | None = None  # H x W in [0, 1], the image's own size

    def top(self, k: int) -> list[tuple[str, float]]:
        return sorted(self.probabilities.items(), key=lambda kv: -kv[1])[:k]

    def to_dict(self) -> dict:
        return {"label": self.label, "confidence": self.confidence, "uncertain": self.uncertain,
                "reasons": self.reasons, "probabilities": self.probabilities}


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

    def __init__(self, path: Path, meta: dict, session, precision: str):
        self.path, self.meta, self.session, self.precision = path, meta, session, precision
        self.classes: list[str] = meta["classes"]
        self.spec = PreprocessSpec.from_dict(meta["preprocess"])
        self.temperature = float(meta.get("temperature", 1.0))
        self.confidence_threshold = float(meta.get("confidence_threshold", 0.0))
        self.ood_threshold = meta.get("ood_threshold")

    @classmethod
    def load(cls, path: str | Path | None = None, precision: str = "fp32",
             threads: int | None = None, verify: bool = True) -> "Classifier":
        """Load an artifact folder (default: the bundled model); ``precision`` fp32 or int8."""
        import onnxruntime as ort

        path = Path(path) if path else DEFAULT_MODEL
        meta_path = path / "model.json"
        if not meta_path.is_file():
            raise HematoVisionError(f"{path} is not a model artifact (model.json not found); "
                                    f"make one with 'hematovision export'")
        try:
            meta = json.loads(meta_path.read_text())
        except ValueError as exc:
            raise HematoVisionError(f"{meta_path} is not valid JSON: {exc}") from None
        key = {"fp32": "onnx", "int8": "int8"}.get(precision)
        if key is None or key not in meta.get("files", {}):
            raise HematoVisionError(f"{path} has no {precision} model")
        onnx_file = path / meta["files"][key]["path"]
        data = onnx_file.read_bytes()
        if verify and hashlib.sha256(data).hexdigest() != meta["files"][key]["sha256"]:
            raise HematoVisionError(f"{onnx_file} does not match the hash in model.json")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        return cls(path, meta, session, precision)

    @property
    def name(self) -> str:
        return self.meta.get("name", self.path.name)

    @property
    def version(self) -> str:
        return str(self.meta.get("version", "0"))

    def predict_arrays(self, images_uint8: np.ndarray):
        """Raw outputs for resized NHWC uint8 images: (calibrated probabilities, cam, ood)."""
        logits, cam, ood = self.session.run(None, {"input": normalize(images_uint8, self.spec)})
        return softmax(logits / self.temperature, axis=1), cam, ood

    def predict(self, images: ImageInput | list[ImageInput], heatmaps: bool = False,
                batch_size: int = 32) -> list[Prediction]:
        """Classify paths, bytes, PIL images or arrays; one Prediction per image, in order.

        Raises HematoVisionError naming the first image that cannot be read."""
        if not isinstance(images, (list, tuple)):
            images = [images]
        out: list[Prediction] = []
        for start in range(0, len(images), batch_size):
            pictures = [to_rgb(im) for im in images[start:start + batch_size]]
            batch = np.stack([resize(p, self.spec) for p in pictures])
            probs, cams, oods = self.predict_arrays(batch)
            for picture, p, cam, ood in zip(pictures, probs, cams, oods):
                out.append(self._prediction(picture, p, cam, float(ood), heatmaps))
        return out

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
        return Prediction(self.classes[k], float(p[k]),
                          {c: float(v) for c, v in zip(self.classes, p)}, bool(reasons),
                          reasons, heat)
