"""Locate the cells of a smear field, classically (no training).

White-cell nuclei and platelets are the only strongly blue-violet objects in a Wright/Giemsa
field, so a "stain score" ``B - (R + G) / 2`` thresholded, cleaned and closed (to join the
lobes of one nucleus) gives one component per white cell; small components are platelets.
Each white cell's box is its nucleus box grown to the cell. Red cells are the peaks of the
distance transform of the pink (red > blue) mask. Parameters were chosen on even-numbered BCCD
fields and checked on the odd ones (benchmarks/bench_smear.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from ..errors import HematoVisionError

BCCD_CELL_PX = 200  # a white cell's width in BCCD fields, for which SmearParams are tuned
MIN_CELL_PX = 20  # below this, a white cell is a few pixels of stain: nothing to classify

Box = tuple[int, int, int, int]  # x1, y1, x2, y2 in pixels of the field
Point = tuple[int, int]  # x, y


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


DEFAULT_PARAMS = SmearParams()


@dataclass
class Detections:
    """What the detector found in one field."""

    white_cells: list[Box] = field(default_factory=list)
    red_cells: list[Point] = field(default_factory=list)  # centres
    platelets: list[Point] = field(default_factory=list)  # centres


def stain_score(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., 2] - (rgb[..., 0] + rgb[..., 1]) / 2


def locate_cells(rgb: np.ndarray, params: SmearParams = DEFAULT_PARAMS) -> Detections:
    """White-cell boxes and red-cell and platelet centres in an H x W x 3 array."""
    rgb = rgb.astype(np.float32)
    score = stain_score(rgb)
    found = Detections()
    _violet_objects(score, params, rgb.shape[:2], found)
    found.red_cells = _red_cells(rgb, score, params)
    return found


def _violet_objects(score, params: SmearParams, shape, found: Detections) -> None:
    height, width = shape
    blue = ndi.binary_opening(score > params.stain_threshold)
    blue = ndi.binary_closing(blue, structure=np.ones((3, 3)), iterations=params.merge_iterations)
    labels, _ = ndi.label(ndi.binary_fill_holes(blue))
    for i, region in enumerate(ndi.find_objects(labels), start=1):
        area = int((labels[region] == i).sum())
        y0, y1, x0, x1 = region[0].start, region[0].stop, region[1].start, region[1].stop
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        if area < params.min_nucleus_area:
            if area >= params.min_platelet_area:
                found.platelets.append((int(cx), int(cy)))
            continue
        half = max(x1 - x0, y1 - y0) * params.box_growth / 2
        found.white_cells.append(
            (
                int(max(0, cx - half)),
                int(max(0, cy - half)),
                int(min(width, cx + half)),
                int(min(height, cy + half)),
            )
        )


def _red_cells(rgb, score, params: SmearParams) -> list[Point]:
    red = ((rgb[..., 0] - rgb[..., 2]) > params.red_margin) & (score < params.stain_threshold)
    red = ndi.binary_fill_holes(ndi.binary_opening(red, iterations=2))
    distance = ndi.distance_transform_edt(red)
    peaks = (distance == ndi.maximum_filter(distance, size=params.red_peak_window)) & (
        distance > params.red_min_radius
    )
    labels, n = ndi.label(peaks)
    centres = ndi.center_of_mass(peaks, labels, range(1, n + 1)) if n else []
    return [(int(round(x)), int(round(y))) for y, x in centres]
