"""Smear fields: find the white cells, count red cells and platelets, classify each white cell,
and count the differential (``differential.count_differential``'s rule).

``detect``: the classical detector (``locate_cells``, ``SmearParams``); ``annotate``: the
annotated field; ``scoring``: the benchmark on BCCD's boxes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

from ..differential import Differential, ReferenceIntervals, count_differential
from ..errors import HematoVisionError
from ..preprocess import ImageInput, median_colour, to_rgb
from .annotate import PALETTE, annotate
from .detect import (
    BCCD_CELL_PX,
    DEFAULT_PARAMS,
    Box,
    Detections,
    Point,
    SmearParams,
    field_params,
    locate_cells,
)

__all__ = [
    "BCCD_CELL_PX",
    "Detections",
    "FieldTooLarge",
    "PALETTE",
    "SmearField",
    "SmearParams",
    "WhiteCell",
    "analyze_smear",
    "annotate",
    "crop_cell",
    "field_differential",
    "field_params",
    "fields_notice",
    "load_smear_classifier",
    "locate_cells",
]

MAX_FIELD_PIXELS = 4096 * 4096
# a classifier that frames cells itself (spec framing "cell") gets a wider crop to frame from
FRAMED_CROP_FACTOR = 3.0


class FieldTooLarge(HematoVisionError):
    """A field with more pixels than the detector analyses at once."""

    code = "field_too_large"


def load_smear_classifier(path: str | Path | None = None, **options):
    """The classifier for cells cropped from fields: the artifact at ``path``, else the bundled
    default model (trained on single cells and on white cells of smear fields alike; a separate
    smear model was dropped: on a lab it never saw it let 14.5% of the cells through wrong and
    unflagged, benchmarks/bench_smear.py). ``options``: Classifier.load's."""
    from ..inference import Classifier

    return Classifier.load(path, **options)


@dataclass
class WhiteCell:
    box: Box  # x1, y1, x2, y2 in pixels of the original image
    label: str | None = None
    confidence: float | None = None
    uncertain: bool | None = None
    probabilities: dict[str, float] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)  # why it is uncertain

    def to_dict(self) -> dict:
        return {
            "box": list(self.box),
            "label": self.label,
            "confidence": self.confidence,
            "uncertain": self.uncertain,
            "reasons": list(self.reasons),
        }


@dataclass
class SmearField:
    """One analysed field; ``to_dict`` is its one JSON form (CLI, API, storage)."""

    path: str | None
    width: int
    height: int
    white_cells: list[WhiteCell]
    red_cell_positions: list[Point] = field(default_factory=list)
    platelet_positions: list[Point] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def red_cells(self) -> int:
        return len(self.red_cell_positions)

    @property
    def platelets(self) -> int:
        return len(self.platelet_positions)

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "width": self.width,
            "height": self.height,
            "white_cells": [c.to_dict() for c in self.white_cells],
            "red_cells": self.red_cells,
            "platelets": self.platelets,
            "red_cell_positions": [list(p) for p in self.red_cell_positions],
            "platelet_positions": [list(p) for p in self.platelet_positions],
            "warnings": self.warnings,
        }


def crop_cell(
    picture: Image.Image,
    box,
    params: SmearParams = DEFAULT_PARAMS,
    fill: tuple[int, int, int] | None = None,
) -> Image.Image:
    """A square crop centred on the cell, framed like the PBC images the classifier knows;
    beyond the field's edge it is filled with ``fill`` (default: the field's background colour)."""
    left, top, side = crop_square(box, params)
    crop = Image.new("RGB", (side, side), fill or median_colour(picture))
    inside = (
        max(0, left),
        max(0, top),
        min(picture.width, left + side),
        min(picture.height, top + side),
    )
    crop.paste(picture.crop(inside), (max(0, -left), max(0, -top)))
    return crop


def crop_square(box, params: SmearParams = DEFAULT_PARAMS) -> tuple[int, int, int]:
    """(left, top, side) of the square ``crop_cell`` cuts round a cell's box."""
    x1, y1, x2, y2 = box
    side = int(max(x2 - x1, y2 - y1) * params.crop_factor)
    return (x1 + x2) // 2 - side // 2, (y1 + y2) // 2 - side // 2, side


def analyze_smear(
    image: ImageInput,
    classifier=None,
    params: SmearParams | None = None,
    classify: bool = True,
    within: tuple[int, int, int, int] | None = None,
) -> SmearField:
    """Find and classify every white cell in one smear field; count red cells and platelets.

    ``classifier``: an ``inference.Classifier`` (default: the bundled default model);
    ``params``: the detector's (default: the field's own, from the size of its red cells);
    ``within``: (x0, y0, x1, y1): keep only what is centred there (a tile of a whole slide:
    its margins belong to the neighbouring tiles)."""
    picture = to_rgb(image)
    name = image if isinstance(image, (str, Path)) else "image"
    if picture.width * picture.height > MAX_FIELD_PIXELS:
        raise FieldTooLarge(
            f"{name}: {picture.width}x{picture.height} is larger than a smear field "
            f"({MAX_FIELD_PIXELS:,} pixels at most); split the scan into fields"
        )
    rgb = np.asarray(picture)
    warnings = []
    if np.ptp(rgb.astype(np.int16)[..., [0, 2]] - rgb[..., 1:2].astype(np.int16)) < 8:
        warnings.append("grayscale image: cells are found by their stain colour, so none can be")
    found = locate_cells(rgb, params)  # params None: the field's own scale
    if within is not None:
        found = found.inside(*within)
    cells = [WhiteCell(box) for box in found.white_cells]
    if classify and cells:
        classifier = classifier or load_smear_classifier()
        fill = median_colour(picture)  # once per field, not once per cell
        crop = crop_params(classifier, params)
        classify_cells(cells, [crop_cell(picture, c.box, crop, fill) for c in cells], classifier)
    path = str(Path(image).resolve()) if isinstance(image, (str, Path)) else None
    return SmearField(
        path, picture.width, picture.height, cells, found.red_cells, found.platelets, warnings
    )


def crop_params(classifier, params: SmearParams | None = None) -> SmearParams:
    """How wide a classifier wants its cells cut (``params``' crop factor, the same at every
    scale): wider for one that frames the cell itself."""
    crop = params or DEFAULT_PARAMS
    if classifier.spec.framing == "cell":
        return replace(crop, crop_factor=FRAMED_CROP_FACTOR)
    return crop


def classify_cells(cells: list[WhiteCell], crops: list[Image.Image], classifier) -> None:
    """Each cell's label, confidence, flag and probabilities, from its crop."""
    for cell, pred in zip(cells, classifier.predict(crops)):
        cell.label, cell.confidence = pred.label, pred.confidence
        cell.uncertain, cell.probabilities = pred.uncertain, pred.probabilities
        cell.reasons = pred.reasons


def fields_notice(fields: Iterable[dict]) -> str | None:
    """``inference.new_lab_notice`` over the white cells of analysed fields (stored before
    cells kept their reasons: "uncertain" stands for them)."""
    from ..inference import flag_reasons, new_lab_notice

    return new_lab_notice(
        flag_reasons(c.get("reasons"), c["uncertain"]) for f in fields for c in f["white_cells"]
    )


def field_differential(
    fields: Iterable[dict],
    classes: Iterable[str] | None = None,
    intervals: ReferenceIntervals | None = None,
) -> Differential:
    """The differential over analysed fields (``SmearField.to_dict()`` or stored fields):
    their white cells, and the platelets the detector counted."""
    fields = list(fields)
    cells = ((c["label"], bool(c["uncertain"])) for f in fields for c in f["white_cells"])
    platelets = sum(f["platelets"] for f in fields)
    return count_differential(cells, classes, platelets, intervals)
