"""Evaluation: metrics (scikit-learn), calibration, HTML report with plots.

``metrics`` and ``report`` work on predicted probabilities and need no torch;
``evaluate_run`` scores a training run's best weights on a split of a data folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import HematoVisionError
from .metrics import classification_metrics, expected_calibration_error
from .report import write_report

__all__ = ["classification_metrics", "evaluate_run", "expected_calibration_error", "write_report"]


def _select(run_dir: Path, data_dir: Path, split: str, classes: list[str]):
    """The (folder, labels) to evaluate: the run's own split, or every image for 'all'."""
    from ..data import SplitManifest, scan_folder

    folder = scan_folder(data_dir)
    unknown = sorted(set(folder.classes) - set(classes))
    if unknown:
        raise HematoVisionError(f"{data_dir} has class(es) the model does not know: "
                                f"{', '.join(unknown)} (model classes: {', '.join(classes)})")
    remap = np.array([classes.index(c) for c in folder.classes])
    folder.labels = remap[folder.labels]
    folder.classes = list(classes)
    if split == "all":
        return folder
    manifest = SplitManifest.load(run_dir / "split.json")
    wanted = {f["path"]: f["label"] for f in manifest.entries(split)}
    if not wanted:
        raise HematoVisionError(f"the run has no {split!r} split; use --split val or --split all")
    keep = np.array([folder.relative(p) in wanted for p in folder.paths])
    missing = len(wanted) - int(keep.sum())
    if missing:
        raise HematoVisionError(
            f"{missing} of the {len(wanted)} {split} images of this run are not in {data_dir}; "
            f"pass the folder the run was trained on, or --split all for a new data set")
    return folder.subset(keep)


def evaluate_run(run_dir: str | Path, data_dir: str | Path, split: str = "test",
                 out_dir: str | Path | None = None, show_progress: bool = True) -> dict:
    """Score a run's best weights on ``split`` (train, val, test or all) of ``data_dir``.

    Writes ``eval-<split>.json`` and ``eval-<split>.html`` (with plots) into ``out_dir``
    (default: the run folder) and returns the metrics.
    """
    from ..data import DecodeCache, decode_folder
    from ..models import load_trained, predict_proba
    from ..preprocess import PreprocessSpec

    run_dir, data_dir = Path(run_dir), Path(data_dir)
    if split not in ("train", "val", "test", "all"):
        raise HematoVisionError("--split must be train, val, test or all")
    model, meta = load_trained(run_dir)
    spec = PreprocessSpec.from_dict(meta["preprocess"])
    folder = _select(run_dir, data_dir, split, meta["classes"])
    decoded = decode_folder(folder, spec, DecodeCache.default(), show_progress=show_progress)
    probs = predict_proba(model, decoded.arrays, spec)
    metrics = classification_metrics(decoded.folder.labels, probs, meta["classes"])
    metrics.update({"split": split, "data": str(data_dir.resolve()), "run": str(run_dir.resolve()),
                    "skipped_files": [str(p) for p, _ in decoded.folder.skipped]})
    out_dir = Path(out_dir) if out_dir else run_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"eval-{split}.json").write_text(json.dumps(metrics, indent=1))
    report = write_report(out_dir, f"HematoVision evaluation: {meta['architecture']} on "
                          f"{data_dir.name} ({split})", metrics, decoded.folder.labels, probs,
                          details={"run": run_dir, "data": data_dir, "split": split},
                          name=f"eval-{split}.html")
    metrics["report"] = str(report)
    return metrics
