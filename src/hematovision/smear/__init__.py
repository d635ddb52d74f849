"""Smear fields: find the white cells, count red cells and platelets, classify each white cell,
and add up the differential count.

Method (classical, no training; see README): white-cell nuclei and platelets are the only
strongly blue-violet objects in a Wright/Giemsa-stained field, so a "stain score"
``B - (R + G) / 2`` thresholded, cleaned and closed (to join the lobes of one nucleus) gives one
component per white cell; small components are platelets. Each white cell's box is its nucleus
box grown to the cell. Red cells are counted as peaks of the distance transform of the pink
(red > blue) mask. Parameters were chosen on even-numbered BCCD fields and checked on the odd
ones (benchmarks/bench_smear.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage as ndi

from ..errors import HematoVisionError
from ..preprocess import ImageInput, to_rgb

MAX_FIELD_PIXELS = 4096 * 4096
BCCD_CELL_PX = 200  # a white cell's width in BCCD fields, for which SmearParams are tuned
MIN_CELL_PX = 20  # below this, a white cell is a few pixels of stain: nothing to classify
SMEAR_MODEL = Path(__file__).resolve().parents[1] / "assets" / "smear_model"


class FieldTooLarge(HematoVisionError):
    """A field with more pixels than the detector analyses at once."""

    code = "field_too_large"


def load_smear_classifier(path: str | Path | None = None, precision: str | None = None):
    """The classifier for cells cropped from fields: the bundled smear model (the default model
    fine-tuned with white cells cropped from BCCD fields; int8 only, to keep the package
    small), or the artifact at ``path``."""
    from ..inference import Classifier

    return Classifier.load(path or SMEAR_MODEL, precision=precision)


@dataclass(frozen=True)
class SmearParams:
    """Tuned on BCCD fields (640x480, 100x objective): a white cell is about 200 px across."""

    stain_threshold: float = 45.0  # B - (R+G)/2 above this: nucleus or platelet
    merge_iterations: int = 12  # closing that joins the lobes of one nucleus
    min_nucleus_area: int = 2000  # px; smaller blue-violet objects are platelets
    min_platelet_area: int = 40  # px; smaller ones are stain debris
    box_growth: float = 1.35  # cell box side / nucleus box side
    red_margin: float = 15.0  # R - B above this: red-cell pixel
    red_min_radius: float = 15.0  # px, distance-transform peak height of one red cell
    red_peak_window: int = 61  # px, one peak per window
    crop_factor: float = 1.8  # classifier crop side / cell box side (PBC framing)

    @classmethod
    def for_cell_size(cls, cell_px: float) -> SmearParams:
        """Parameters for fields where a white cell is about ``cell_px`` pixels across
        (other magnifications or scan resolutions); lengths scale with it, areas with its square."""
        if not cell_px >= MIN_CELL_PX:  # also refuses NaN
            raise HematoVisionError(f"--cell-size must be at least {MIN_CELL_PX} pixels")
        base = cls()
        k = cell_px / BCCD_CELL_PX
        return cls(
            stain_threshold=base.stain_threshold,
            merge_iterations=max(1, round(base.merge_iterations * k)),
            min_nucleus_area=max(1, round(base.min_nucleus_area * k * k)),
            min_platelet_area=max(1, round(base.min_platelet_area * k * k)),
            box_growth=base.box_growth,
            red_margin=base.red_margin,
            red_min_radius=base.red_min_radius * k,
            red_peak_window=max(3, round(base.red_peak_window * k) | 1),
            crop_factor=base.crop_factor,
        )


@dataclass
class WhiteCell:
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 in pixels of the original image
    label: str | None = None
    confidence: float | None = None
    uncertain: bool | None = None
    probabilities: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "box": list(self.box),
            "label": self.label,
            "confidence": self.confidence,
            "uncertain": self.uncertain,
        }


@dataclass
class SmearField:
    path: str | None
    width: int
    height: int
    white_cells: list[WhiteCell]
    red_cells: int
    platelets: int
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "white_cells": [c.to_dict() for c in self.white_cells],
            "red_cells": self.red_cells,
            "platelets": self.platelets,
            "warnings": self.warnings,
        }


def _stain_score(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., 2] - (rgb[..., 0] + rgb[..., 1]) / 2


def locate_cells(rgb: np.ndarray, params: SmearParams = SmearParams()):
    """(white-cell boxes, red-cell count, platelet count) for an H x W x 3 array."""
    rgb = rgb.astype(np.float32)
    height, width = rgb.shape[:2]
    score = _stain_score(rgb)
    blue = ndi.binary_opening(score > params.stain_threshold)
    blue = ndi.binary_closing(blue, structure=np.ones((3, 3)), iterations=params.merge_iterations)
    blue = ndi.binary_fill_holes(blue)
    labels, _ = ndi.label(blue)
    boxes, platelets = [], 0
    for i, region in enumerate(ndi.find_objects(labels), start=1):
        area = int((labels[region] == i).sum())
        if area < params.min_nucleus_area:
            platelets += area >= params.min_platelet_area
            continue
        y0, y1, x0, x1 = region[0].start, region[0].stop, region[1].start, region[1].stop
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        half = max(x1 - x0, y1 - y0) * params.box_growth / 2
        boxes.append(
            (
                int(max(0, cx - half)),
                int(max(0, cy - half)),
                int(min(width, cx + half)),
                int(min(height, cy + half)),
            )
        )
    red = ((rgb[..., 0] - rgb[..., 2]) > params.red_margin) & (score < params.stain_threshold)
    red = ndi.binary_fill_holes(ndi.binary_opening(red, iterations=2))
    distance = ndi.distance_transform_edt(red)
    peaks = (distance == ndi.maximum_filter(distance, size=params.red_peak_window)) & (
        distance > params.red_min_radius
    )
    red_cells = int(ndi.label(peaks)[1])
    return boxes, red_cells, platelets


def background_colour(picture: Image.Image) -> tuple[int, int, int]:
    """The field's median colour: mostly the bright background between cells."""
    return tuple(int(v) for v in np.median(np.asarray(picture).reshape(-1, 3), axis=0))


def crop_cell(
    picture: Image.Image,
    box,
    params: SmearParams = SmearParams(),
    fill: tuple[int, int, int] | None = None,
) -> Image.Image:
    """A square crop centred on the cell, framed like the PBC images the classifier knows;
    beyond the field's edge it is filled with ``fill`` (default: the field's background colour)."""
    x1, y1, x2, y2 = box
    side = int(max(x2 - x1, y2 - y1) * params.crop_factor)
    cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
    fill = fill or background_colour(picture)
    crop = Image.new("RGB", (side, side), fill)
    left, top = cx - side // 2, cy - side // 2
    crop.paste(
        picture.crop(
            (
                max(0, left),
                max(0, top),
                min(picture.width, left + side),
                min(picture.height, top + side),
            )
        ),
        (max(0, -left), max(0, -top)),
    )
    return crop


def analyze_smear(
    image: ImageInput, classifier=None, params: SmearParams = SmearParams(), classify: bool = True
) -> SmearField:
    """Find and classify every white cell in one smear field; count red cells and platelets.

    ``classifier``: an ``inference.Classifier`` (default: the bundled smear model)."""
    picture = to_rgb(image)
    if picture.width * picture.height > MAX_FIELD_PIXELS:
        raise FieldTooLarge(
            f"{image if isinstance(image, (str, Path)) else 'image'}: {picture.width}x"
            f"{picture.height} is larger than a smear field ({MAX_FIELD_PIXELS:,} pixels at most); "
            f"split the scan into fields"
        )
    rgb = np.asarray(picture)
    warnings = []
    if np.ptp(rgb.astype(np.int16)[..., [0, 2]] - rgb[..., 1:2].astype(np.int16)) < 8:
        warnings.append("grayscale image: cells are found by their stain colour, so none can be")
    boxes, red_cells, platelets = locate_cells(rgb, params)
    cells = [WhiteCell(box) for box in boxes]
    if classify and cells:
        if classifier is None:
            classifier = load_smear_classifier()
        fill = background_colour(picture)  # once per field, not once per cell
        crops = [crop_cell(picture, c.box, params, fill) for c in cells]
        for cell, pred in zip(cells, classifier.predict(crops)):
            cell.label, cell.confidence = pred.label, pred.confidence
            cell.uncertain, cell.probabilities = pred.uncertain, pred.probabilities
    path = str(Path(image).resolve()) if isinstance(image, (str, Path)) else None
    return SmearField(path, picture.width, picture.height, cells, red_cells, platelets, warnings)


def cell_labels(fields: list[SmearField]) -> list[str]:
    """The class of every white cell found in ``fields``, for the differential count."""
    return [c.label for f in fields for c in f.white_cells if c.label]


PALETTE = {
    "neutrophil": (31, 119, 180),
    "lymphocyte": (255, 127, 14),
    "monocyte": (44, 160, 44),
    "eosinophil": (214, 39, 40),
    "basophil": (148, 103, 189),
    "ig": (140, 86, 75),
    "erythroblast": (227, 119, 194),
    "platelet": (127, 127, 127),
}


def annotate(image: ImageInput, result: SmearField) -> Image.Image:
    """The field with each white cell's box, coloured and labelled by class."""
    picture = to_rgb(image).copy()
    draw = ImageDraw.Draw(picture)
    width = max(2, picture.width // 320)
    for cell in result.white_cells:
        colour = PALETTE.get(cell.label or "", (0, 0, 0))
        draw.rectangle(cell.box, outline=colour, width=width)
        text = (
            "white cell"
            if cell.label is None
            else f"{cell.label} {100 * cell.confidence:.0f}%{'?' if cell.uncertain else ''}"
        )
        x, y = cell.box[0], max(0, cell.box[1] - 14)
        draw.rectangle(draw.textbbox((x, y), text), fill=colour)
        draw.text((x, y), text, fill=(255, 255, 255))
    return picture
