"""White cells cut from labelled smear fields, as a class-per-folder set of another lab's cells."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from ..data.bccd import WBC_TYPES, annotation, check_folder, field_labels, fields, match
from ..files import FAST_PNG, output_folder
from ..preprocess import to_rgb
from ..progress import progress_bar
from . import DEFAULT_PARAMS, FRAMED_CROP_FACTOR, crop_cell, locate_cells


def bccd_white_cells(
    bccd: str | Path,
    out: str | Path,
    parity: str = "even",
    show_progress: bool = True,
    crop_factor: float = FRAMED_CROP_FACTOR,
) -> dict[str, int]:
    """Cut each white cell the detector finds (and an annotated WBC box confirms, IoU >= 0.5)
    in the BCCD fields whose labels.csv row names one type, as ``analyze_smear`` cuts it for a
    classifier that frames cells itself (``crop_factor``: 1.8 for one that does not); full
    resolution, PNG. ``parity``: even (the fields the
    detector was tuned on; the odd ones stay held out), odd or all. Returns counts per class."""
    bccd, out = check_folder(bccd), output_folder(out)
    labels = field_labels(bccd / "labels.csv")
    params = replace(DEFAULT_PARAMS, crop_factor=crop_factor)
    chosen = [f for f in fields(bccd, parity) if labels.get(f.stem) in WBC_TYPES]
    counts: dict[str, int] = {}
    with progress_bar("cutting white cells", len(chosen), enabled=show_progress) as bar:
        for image in chosen:
            kind = labels[image.stem]
            picture = to_rgb(image)
            boxes = locate_cells(np.asarray(picture)).white_cells
            for i, _ in match(boxes, annotation(bccd, image)["WBC"]):
                (out / kind).mkdir(parents=True, exist_ok=True)
                crop = crop_cell(picture, boxes[i], params)
                crop.save(out / kind / f"{image.stem}_{i}.png", **FAST_PNG)
                counts[kind] = counts.get(kind, 0) + 1
            bar.advance()
    return counts
