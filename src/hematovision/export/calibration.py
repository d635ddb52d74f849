"""Calibration fitted on held-out images: temperature scaling (Guo et al., 2017), the
confidence threshold of "uncertain", and the out-of-distribution score and its threshold."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax
from scipy.special import softmax as scipy_softmax

from ..artifact import Calibration, ood_threshold_of
from .graph import ServingGraph, run_graph


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Probabilities of ``logits`` scaled by ``temperature``, as the Classifier computes them."""
    return scipy_softmax(logits / temperature, axis=1)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T minimising the NLL of softmax(logits / T)."""

    def nll(log_t):
        return -log_softmax(logits / np.exp(log_t), axis=1)[np.arange(len(labels)), labels].mean()

    return float(np.exp(minimize_scalar(nll, bounds=(-3, 3), method="bounded").x))


# A lab the model never saw is wrong more often at a given confidence than the training labs'
# validation images say: below this, a prediction is "uncertain" whatever validation allows.
# Chosen leaving one lab out (benchmarks/bench_uncertainty.py, the bundled model's recipe, 4
# folds): 0.95 let 6.2% of a left-out lab's cells through wrong and unflagged (target 3%),
# 0.97 2.2% at most (flagged 85% -> 91% of those cells); on the bundled model's own PBC test
# split it flags 12.1% instead of 11.0%.
CONFIDENCE_FLOOR = 0.97


def choose_confidence_threshold(
    probs: np.ndarray, labels: np.ndarray, target_accuracy: float = 0.995
) -> float:
    """The lowest confidence above which validation predictions are ``target_accuracy`` right,
    at least ``CONFIDENCE_FLOOR``; 0.99 when none is."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    for t in np.arange(0.30, 0.995, 0.01):
        kept = confidence >= t
        if kept.sum() and correct[kept].mean() >= target_accuracy:
            return max(CONFIDENCE_FLOOR, float(round(t, 2)))
    return 0.99


def calibrate(
    graph: ServingGraph,
    val_x: np.ndarray,
    val_y: np.ndarray,
    known_x: np.ndarray,
) -> tuple[Calibration, np.ndarray, np.ndarray]:
    """Fit the calibration on the validation images; returns it and their logits and
    distances.

    ``known_x``: images added to the training split only (--extra-train, e.g. cells from
    another lab's smears) are part of what the model knows: the distance score must not
    call them strange."""
    val_logits, _, val_ood = run_graph(graph, val_x)
    temperature = fit_temperature(val_logits, val_y)
    threshold = choose_confidence_threshold(softmax(val_logits, temperature), val_y)
    known_ood = run_graph(graph, known_x)[2] if len(known_x) else np.zeros(0)
    known = np.concatenate([val_ood, known_ood])
    ood_threshold = ood_threshold_of(known)
    return Calibration(temperature, threshold, ood_threshold), val_logits, val_ood
