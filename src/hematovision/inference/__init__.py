"""Inference on ONNX Runtime: no torch. ``Classifier.load()`` gives the bundled default model."""

from .classifier import (
    DEFAULT_MODEL,
    Classifier,
    Prediction,
    flag_reasons,
    heatmap_overlay,
    new_lab_notice,
)

__all__ = [
    "Classifier",
    "DEFAULT_MODEL",
    "Prediction",
    "flag_reasons",
    "heatmap_overlay",
    "new_lab_notice",
]
