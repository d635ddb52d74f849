"""Classification metrics from predicted probabilities (scikit-learn), calibration (ECE)."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

# the summary a report or the CLI shows, in this order
SUMMARY_METRICS = (
    "n",
    "accuracy",
    "loss",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "precision_weighted",
    "recall_weighted",
    "f1_weighted",
    "roc_auc_macro",
    "ece",
)


def format_metric(value) -> str:
    """A metric as text: counts as integers, rates with four decimals, missing as a dash."""
    if value is None:
        return "—"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> float:
    """Top-label ECE: the share-weighted gap between confidence and accuracy, in equal bins."""
    y_true = np.asarray(y_true)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        in_bin = bins == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def classification_metrics(y_true, probs, classes: list[str]) -> dict:
    """Accuracy, log loss, macro/weighted P/R/F1, per-class table, confusion matrix,
    one-vs-rest ROC-AUC and expected calibration error, as a JSON-ready dict."""
    y_true = np.asarray(y_true, dtype=int)
    probs = np.asarray(probs, dtype=np.float64)
    probs = probs / probs.sum(axis=1, keepdims=True)  # float32 softmax sums drift from 1
    labels = np.arange(len(classes))
    y_pred = probs.argmax(axis=1)
    p, r, f, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    out = {
        "n": int(len(y_true)),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "loss": float(skm.log_loss(y_true, np.clip(probs, 1e-12, 1), labels=labels)),
        "ece": expected_calibration_error(y_true, probs),
        "per_class": {
            c: {
                "precision": float(p[i]),
                "recall": float(r[i]),
                "f1": float(f[i]),
                "support": int(support[i]),
            }
            for i, c in enumerate(classes)
        },
        "confusion_matrix": skm.confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "classes": list(classes),
    }
    for avg in ("macro", "weighted"):
        ap, ar, af, _ = skm.precision_recall_fscore_support(
            y_true, y_pred, labels=labels, average=avg, zero_division=0
        )
        out[f"precision_{avg}"], out[f"recall_{avg}"], out[f"f1_{avg}"] = map(float, (ap, ar, af))
    present = np.unique(y_true)
    auc = {}
    for i, c in enumerate(classes):
        if i in present and len(present) > 1:
            auc[c] = float(skm.roc_auc_score(y_true == i, probs[:, i]))
    out["roc_auc_per_class"] = auc
    out["roc_auc_macro"] = float(np.mean(list(auc.values()))) if auc else None
    return out
