"""Evaluation from predicted probabilities: metrics (scikit-learn), calibration, HTML report
with plots. Torch-free; scoring a trained run is ``training.evaluate_run``."""

from .metrics import classification_metrics, expected_calibration_error
from .report import plot_confusion, plot_confusions, write_report

__all__ = [
    "classification_metrics",
    "expected_calibration_error",
    "plot_confusion",
    "plot_confusions",
    "write_report",
]
