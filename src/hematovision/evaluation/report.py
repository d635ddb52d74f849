"""Plots (matplotlib, PNG) and a self-contained HTML report of a model's metrics."""

from __future__ import annotations

import html
from datetime import UTC, datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.calibration import calibration_curve  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from .metrics import SUMMARY_METRICS, format_metric  # noqa: E402


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def plot_history(history: list[dict], path: Path) -> str:
    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax1.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax1.plot(epochs, [h["val_loss"] for h in history], "o-", label="validation")
    ax1.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax2.plot(epochs, [h["train_accuracy"] for h in history], "o-", label="train accuracy")
    ax2.plot(epochs, [h["val_accuracy"] for h in history], "o-", label="val accuracy")
    ax2.plot(epochs, [h["val_f1_macro"] for h in history], "s--", label="val macro-F1")
    ax2.set(xlabel="epoch", ylim=(0, 1.02), title="Accuracy and F1")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, path)


def plot_confusion(metrics: dict, path: Path) -> str:
    title = "Confusion matrix (counts; colour = row %)"
    return plot_confusions({title: metrics["confusion_matrix"]}, metrics["classes"], path)


def plot_confusions(
    matrices: dict[str, np.ndarray], classes: list[str], path: Path, title: str = ""
) -> str:
    """Confusion matrices of the same cells side by side (e.g. before and after adapting),
    titled by the keys of ``matrices``; colour = row %, one scale for all."""
    size = 2.5 + 0.6 * len(classes)
    fig, axes = plt.subplots(
        1, len(matrices), figsize=(size * len(matrices) + 1, size), layout="constrained"
    )
    axes = np.atleast_1d(axes)
    for ax, (name, cm) in zip(axes, matrices.items()):
        im = _confusion_axes(ax, np.asarray(cm), classes, name)
    for ax in axes[1:]:  # the rows are the same classes: named once, on the left
        ax.set_ylabel("")
        ax.tick_params(labelleft=False)
    fig.colorbar(im, ax=axes, fraction=0.046 / len(matrices))
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def _confusion_axes(ax, cm: np.ndarray, classes: list[str], title: str):
    """One confusion matrix drawn into ``ax``: counts written, colour = share of the row."""
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(
                j,
                i,
                str(cm[i, j]),
                ha="center",
                va="center",
                color="white" if norm[i, j] > 0.5 else "black",
                fontsize=8,
            )
    ax.set(xlabel="predicted", ylabel="true", title=title)
    return im


def plot_per_class(metrics: dict, path: Path) -> str:
    classes = metrics["classes"]
    x = np.arange(len(classes))
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(classes)), 3.8))
    for k, name in enumerate(("precision", "recall", "f1")):
        ax.bar(
            x + (k - 1) * 0.27, [metrics["per_class"][c][name] for c in classes], 0.27, label=name
        )
    ax.set_xticks(x, classes, rotation=30, ha="right")
    ax.set(ylim=(0, 1.05), title="Per-class precision, recall and F1")
    ax.legend(loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_roc(y_true, probs, classes, path: Path) -> str:
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for i, c in enumerate(classes):
        positives = np.asarray(y_true) == i
        if positives.any() and (~positives).any():
            fpr, tpr, _ = roc_curve(positives, probs[:, i])
            ax.plot(fpr, tpr, label=c)
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (one vs rest)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_reliability(y_true, probs, path: Path, n_bins: int = 10) -> str:
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(y_true)
    fig, ax = plt.subplots(figsize=(5, 5))
    if correct.all() or not correct.any():
        ax.text(
            0.5, 0.5, "all predictions " + ("correct" if correct.all() else "wrong"), ha="center"
        )
    else:
        frac, mean_conf = calibration_curve(correct, confidence, n_bins=n_bins, strategy="uniform")
        ax.plot(mean_conf, frac, "o-", label="model")
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="perfect calibration")
    ax.set(
        xlabel="confidence",
        ylabel="accuracy",
        title="Reliability diagram",
        xlim=(0, 1),
        ylim=(0, 1.02),
    )
    ax.legend()
    return _save(fig, path)


def _metric_rows(metrics: dict) -> str:
    return "\n".join(
        f"<tr><th>{html.escape(k)}</th><td>{format_metric(metrics.get(k))}</td></tr>"
        for k in SUMMARY_METRICS
    )


def _class_rows(metrics: dict) -> str:
    rows = []
    for c, m in metrics["per_class"].items():
        auc = metrics["roc_auc_per_class"].get(c)
        rows.append(
            f"<tr><td>{html.escape(c)}</td><td>{m['precision']:.3f}</td>"
            f"<td>{m['recall']:.3f}</td><td>{m['f1']:.3f}</td><td>{m['support']}</td>"
            f"<td>{'—' if auc is None else f'{auc:.4f}'}</td></tr>"
        )
    return "\n".join(rows)


def write_report(
    out_dir: Path,
    title: str,
    metrics: dict,
    y_true,
    probs,
    history: list[dict] | None = None,
    details: dict | None = None,
    name: str = "report.html",
) -> Path:
    """Write PNG plots and ``name`` (HTML) into ``out_dir``; returns the HTML path."""
    out_dir = Path(out_dir)
    plots = out_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    stem = Path(name).stem
    figures = []
    if history:
        figures.append(("Training curves", plot_history(history, plots / "training_curves.png")))
    probs = np.asarray(probs)
    figures += [
        ("Confusion matrix", plot_confusion(metrics, plots / f"{stem}_confusion_matrix.png")),
        ("Per-class metrics", plot_per_class(metrics, plots / f"{stem}_per_class.png")),
        ("ROC curves", plot_roc(y_true, probs, metrics["classes"], plots / f"{stem}_roc.png")),
        ("Calibration", plot_reliability(y_true, probs, plots / f"{stem}_reliability.png")),
    ]
    detail_rows = "\n".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in (details or {}).items()
    )
    images = "\n".join(
        f'<figure><img src="plots/{html.escape(f)}" alt="{html.escape(t)}"><figcaption>'
        f"{html.escape(t)}</figcaption></figure>"
        for t, f in figures
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; margin: 1rem 0; }}
th, td {{ border: 1px solid #ccc; padding: .3rem .7rem; text-align: left; }}
th {{ background: #f4f4f8; }}
figure {{ display: inline-block; margin: .5rem; vertical-align: top; }}
img {{ max-width: 520px; border: 1px solid #ddd; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Generated {datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")} by HematoVision.</p>
<h2>Summary</h2><table>{_metric_rows(metrics)}</table>
<h2>Per class</h2>
<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th><th>ROC-AUC</th></tr>
{_class_rows(metrics)}</table>
<h2>Plots</h2>{images}
<h2>Details</h2><table>{detail_rows}</table>
</body></html>
"""
    path = out_dir / name
    path.write_text(page)
    return path
