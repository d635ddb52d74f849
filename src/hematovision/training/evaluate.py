"""Score a training run's best weights on a split of a data folder (needs torch)."""

from __future__ import annotations

import json
from pathlib import Path

from ..artifact import RunDir
from ..data import decode_folder, scan_folder
from ..errors import HematoVisionError
from ..evaluation import classification_metrics, write_report
from ..models import load_trained, predict_proba

SPLIT_CHOICES = ("train", "val", "test", "all")


def evaluate_run(
    run_dir: str | Path | RunDir,
    data_dir: str | Path,
    split: str = "test",
    out_dir: str | Path | None = None,
    show_progress: bool = True,
) -> dict:
    """Score a run's best weights on ``split`` (train, val, test or all) of ``data_dir``.

    ``all`` takes every image of the folder (e.g. another lab's cells); the other splits are the
    run's own. Writes ``eval-<split>.json`` and ``eval-<split>.html`` (with plots) into
    ``out_dir`` (default: the run folder) and returns the metrics.
    """
    run, data_dir = RunDir(run_dir), Path(data_dir)
    if split not in SPLIT_CHOICES:
        raise HematoVisionError(f"--split must be one of {', '.join(SPLIT_CHOICES)}")
    model, info = load_trained(run)
    folder = scan_folder(data_dir).relabel(info.classes)
    if split != "all":
        manifest = run.manifest()
        if not manifest.entries(split):
            raise HematoVisionError(
                f"the run has no {split!r} split; use --split val or --split all"
            )
        folder = manifest.select(folder, split)
    decoded = decode_folder(folder, info.preprocess, show_progress=show_progress)
    probs = predict_proba(model, decoded.arrays, info.preprocess)
    metrics = classification_metrics(decoded.folder.labels, probs, info.classes)
    metrics.update(
        {
            "split": split,
            "data": str(data_dir.resolve()),
            "run": str(run.path.resolve()),
            "skipped_files": [str(p) for p, _ in decoded.folder.skipped],
        }
    )
    out_dir = Path(out_dir) if out_dir else run.path
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"eval-{split}.json").write_text(json.dumps(metrics, indent=1))
    report = write_report(
        out_dir,
        f"HematoVision evaluation: {info.architecture} on {data_dir.name} ({split})",
        metrics,
        decoded.folder.labels,
        probs,
        details={"run": run, "data": data_dir, "split": split},
        name=f"eval-{split}.html",
    )
    metrics["report"] = str(report)
    return metrics
