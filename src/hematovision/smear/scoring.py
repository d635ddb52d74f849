"""Score the smear analysis on BCCD: detection against the VOC boxes, counts, white-cell type."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..data.bccd import WBC_TYPES, annotation, field_labels, fields, match
from . import analyze_smear

HALVES = {"even": "tuning (even fields)", "odd": "held out (odd fields)"}


def score_fields(data: Path, classifier) -> dict:
    """Per half (even: tuning, odd: held out): white-cell recall and precision at IoU >= 0.5,
    red-cell and platelet count errors per field, seconds per field, and the classifier's
    accuracy on the white cells found in fields with one labelled type."""
    labels = field_labels(Path(data) / "labels.csv")
    out = {}
    for parity, name in HALVES.items():
        h = dict(
            tp=0,
            fp=0,
            fn=0,
            rbc_err=[],
            plt_err=[],
            seconds=[],
            correct=0,
            classified=0,
            confusion={},
        )
        for image in fields(data, parity):
            _score_field(h, image, annotation(data, image), labels.get(image.stem), classifier)
        out[name] = {
            "fields": len(h["seconds"]),
            "recall": h["tp"] / max(1, h["tp"] + h["fn"]),
            "precision": h["tp"] / max(1, h["tp"] + h["fp"]),
            "red_cell_mae": float(np.mean(np.abs(h["rbc_err"]))),
            "red_cell_bias": float(np.mean(h["rbc_err"])),
            "platelet_mae": float(np.mean(np.abs(h["plt_err"]))),
            "seconds_per_field": float(np.median(h["seconds"])),
            "white_cell_accuracy": h["correct"] / max(1, h["classified"]),
            "white_cells_classified": h["classified"],
            "confusion": h["confusion"],
        }
    return out


def _score_field(h: dict, image: Path, truth: dict, kind: str | None, classifier) -> None:
    start = time.perf_counter()
    result = analyze_smear(image, classifier)
    h["seconds"].append(time.perf_counter() - start)
    found = [c.box for c in result.white_cells]
    pairs = match(found, truth["WBC"])
    h["tp"] += len(pairs)
    h["fp"] += len(found) - len(pairs)
    h["fn"] += len(truth["WBC"]) - len(pairs)
    h["rbc_err"].append(result.red_cells - len(truth["RBC"]))
    h["plt_err"].append(result.platelets - len(truth.get("Platelets", [])))
    if kind in WBC_TYPES:
        for i, _ in pairs:
            predicted = result.white_cells[i].label
            h["classified"] += 1
            h["correct"] += predicted == kind
            h["confusion"].setdefault(kind, {}).setdefault(predicted, 0)
            h["confusion"][kind][predicted] += 1
