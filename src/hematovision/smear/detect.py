"""Locate the cells of a smear field, classically (no training).

White-cell nuclei and platelets are the only strongly blue-violet objects in a Wright/Giemsa
field, so a "stain score" ``B - (R + G) / 2`` thresholded, cleaned and closed (to join the
lobes of one nucleus) gives one component per white cell; small components are platelets.
Each white cell's box is its nucleus box grown to the cell. Red cells are the peaks of the
distance transform of the red-cell mask (darker than the background, not violet, its round
holes, pale centres, filled), and a clump of overlapping ones, which peaks once, counts as
many cells as its area holds. Parameters were chosen on even-numbered BCCD fields and checked
on the odd ones (benchmarks/bench_smear.py, bench_red_counts.py).

Where a stain makes the red cells nearly as blue as the nuclei (LISC's lavender red cells), the
stain score misses the nuclei; a second rule, with every threshold from the field itself, finds
them as what stands out most from the field's red cells in both darkness-and-blueness
(``nucleus_score``, the single-cell framing's) and purple (``purple_score``). Such a stain
also fringes red cells blue, and the red-cell mask keeps pieces of them: the field's scale is
then taken from the red cells whole (``_whole_red_cell_diameter``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from scipy import ndimage as ndi

from ..errors import HematoVisionError
from ..preprocess import (
    centres_and_areas,
    counted_median,
    cross_morphology,
    cross_opening,
    fill_holes,
    nucleus_score,
    otsu_upper,
    padding,
    purple_score,
    stain_score,
)

BCCD_CELL_PX = 200  # a white cell's width in BCCD fields, for which SmearParams are tuned
BCCD_RED_CELL_PX = 93.3  # estimate_red_cell_diameter's median on BCCD's even fields
# red cells counted in clumps (``_red_cell_scale``): the median opening diameter on BCCD's even
# fields; where more than VIOLET_RED_CELLS of the cells outside the white cells is violet, the
# red-cell mask is pieces of cells, not clumps
BCCD_RED_CELL_OPENING_PX = 79.8
VIOLET_RED_CELLS = 0.1
# a hole in the red-cell mask at least this convex (its solidity) is a red cell's pale centre;
# the gaps enclosed between touching cells are concave (about 0.4 between three)
ROUND_HOLE = 0.6
SPECK = 8  # px: a hole this small is filled whatever its shape (noise, a pale speck)
OPENING_BISECTIONS = 7  # the median opening radius to within 1/128 of the deepest red pixel
# one red cell's area over that of the disk of its opening diameter (cells are ovals): chosen
# on four even BCCD fields counted by eye
RED_CELL_AREA = 1.1
CLUMP_SAMPLE = 7  # k-means of a clump's pixels takes every 7th
BCCD_MEDIAN_STAIN = -4.0  # the stain score's median over a BCCD field (thresholds are relative)
VIOLET_ABOVE_MEDIAN = 30.0  # stain score above the field's median: violet (nucleus, platelet)
# background minus cell brightness (Otsu's two classes), median over BCCD's even fields: a paler
# stain or a brighter lamp narrows it, and the stain score's contrast with it
BCCD_CONTRAST = 30.2
CONTRAST_RANGE = (0.5, 1.5)  # how far the stain threshold follows a field's contrast
# the spread of the estimate over one microscope's fields (BCCD: 0.86-1.40 of its median): a field
# inside it is taken at the tuned scale, so the estimate's noise costs nothing there
SAME_SCALE = (0.8, 1.3)
SPLIT_NUCLEUS_DISTANCE = 0.6  # blobs further apart than this x cell size: different nuclei
SPLIT_MIN_AREA = 0.5  # ... each at least this x the smallest nucleus area
MIN_CELL_PX = 20  # below this, a white cell is a few pixels of stain: nothing to classify
# the second rule (contrast with the field's red cells): a nucleus's rise over the red cells'
# median, in their interquartile ranges, summed over nucleus_score and purple_score (chosen on
# BCCD's even fields' quarters without a white cell and on PBC's cells: 4 keeps every PBC cell
# that 3 keeps, with 5 false cells in 204 quarters against 19); and its stain score above the
# field's median at least this (a near-empty field has a tiny interquartile range)
NUCLEUS_RISE = 4.0
NUCLEUS_MIN_VIOLET = 10.0

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
    red_min_radius: float = 15.0  # px, distance-transform peak height of one red cell
    red_peak_window: int = 61  # px, one peak per window
    crop_factor: float = 1.8  # classifier crop side / cell box side (PBC framing)
    cell_px: float = BCCD_CELL_PX  # a white cell's width in the field
    contrast_nuclei: bool = True  # the second rule, for stains the stain score misses

    @property
    def red_cell_opening_px(self) -> float:
        """A red cell's median opening diameter (``_median_opening_radius``) at this
        magnification."""
        return BCCD_RED_CELL_OPENING_PX * self.cell_px / BCCD_CELL_PX

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
            red_min_radius=base.red_min_radius * k,
            red_peak_window=max(3, round(base.red_peak_window * k) | 1),
            crop_factor=base.crop_factor,
            cell_px=cell_px,
        )


DEFAULT_PARAMS = SmearParams()  # BCCD's magnification


@dataclass
class Detections:
    """What the detector found in one field."""

    white_cells: list[Box] = field(default_factory=list)
    red_cells: list[Point] = field(default_factory=list)  # centres
    platelets: list[Point] = field(default_factory=list)  # centres

    def inside(self, x0: int, y0: int, x1: int, y1: int) -> Detections:
        """What is centred in [x0, x1) x [y0, y1): one tile's share of a whole slide."""

        def keep(x, y) -> bool:
            return x0 <= x < x1 and y0 <= y < y1

        return Detections(
            [b for b in self.white_cells if keep((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)],
            [p for p in self.red_cells if keep(*p)],
            [p for p in self.platelets if keep(*p)],
        )


def estimate_red_cell_diameter(rgb: np.ndarray) -> float | None:
    """A field's red-cell diameter in pixels (about 7.5 um in every lab: the field's scale).

    Cells are what is darker than the background (Otsu's threshold on brightness), red cells
    what of them is not violet; in each clump of touching red cells the distance transform
    peaks at about one red cell's radius, so the area-weighted median peak gives the size."""
    stats = _red_cells_of(rgb)
    return _red_cell_diameter(stats.clumps, stats.distance)


class FieldStats(NamedTuple):
    """What one field's detection is computed from, once: its scale and its cells."""

    score: np.ndarray  # the stain score, B - (R + G) / 2
    median: float  # the score's median over the field
    contrast: float  # mean brightness of the background minus that of the cells
    red: np.ndarray  # red-cell mask
    distance: np.ndarray  # the red-cell mask's distance transform
    outside: np.ndarray  # padding or a field stop's dark corners (``preprocess.padding``)
    clumps: np.ndarray  # the red-cell mask's connected components, labelled 1, 2...
    dark: np.ndarray  # darker than the background (the red-cell mask's threshold), violet or not
    violet: np.ndarray  # the stain score above the median by VIOLET_ABOVE_MEDIAN


def _red_cells_of(rgb: np.ndarray) -> FieldStats:
    """A uint8 field's ``FieldStats``.

    The stain score (``preprocess.stain_score``, in halves) and the brightness (R + G + B, in
    thirds) are integers, so their median and histogram are counts, not sorts."""
    outside = padding(rgb)
    field = ~outside
    inside = field if outside.any() else slice(None)  # every pixel, unless there is padding
    doubled = stain_score(rgb)
    median = (counted_median(np.bincount(doubled[inside].ravel() + 510, minlength=1021)) - 510) / 2
    score = doubled.astype(np.float32) / 2
    violet = score > median + VIOLET_ABOVE_MEDIAN
    red, dark, contrast = _red_mask(rgb.sum(-1, dtype=np.int16), violet, field)
    distance, clumps = _distance_inside(red, outside), ndi.label(red)[0]
    return FieldStats(score, median, contrast, red, distance, outside, clumps, dark, violet)


def _distance_inside(mask: np.ndarray, outside: np.ndarray) -> np.ndarray:
    """``mask``'s distance transform, to the nearest other pixel as at the image's edge: a red
    cell cut by the padding keeps the size it has where the image ends."""
    distance = ndi.distance_transform_edt(mask | outside)
    distance[outside] = 0
    return distance


def _without_boxes(mask: np.ndarray, boxes: list[Box]) -> np.ndarray:
    """A copy of ``mask`` cleared inside ``boxes`` (white cells' boxes, within the field)."""
    mask = mask.copy()
    for x0, y0, x1, y1 in boxes:
        mask[y0:y1, x0:x1] = False
    return mask


def _red_cell_diameter(labels: np.ndarray, distance: np.ndarray) -> float | None:
    """From the red-cell mask's labelled clumps and its distance transform."""
    n = int(labels.max())
    if n < 3:
        return None
    # per-clump maximum and area in one pass each (ndi.maximum sorts every pixel: 10x slower)
    peaks = np.zeros(n + 1)
    np.maximum.at(peaks, labels.ravel(), distance.ravel())
    peaks, areas = peaks[1:], np.bincount(labels.ravel(), minlength=n + 1)[1:]
    keep = peaks > 3
    if keep.sum() < 3:
        return None
    order = np.argsort(peaks[keep])
    share = np.cumsum(areas[keep][order]) / areas[keep].sum()
    diameter = 2 * float(peaks[keep][order][np.searchsorted(share, 0.5)])
    # red cells this small would make white cells too small to classify: fragments, not cells
    return diameter if diameter * BCCD_CELL_PX >= MIN_CELL_PX * BCCD_RED_CELL_PX else None


def _median_opening_radius(red: np.ndarray, distance: np.ndarray) -> float:
    """The radius of the disk whose opening removes half the red-cell mask: the area-weighted
    median of its granulometry (its pattern spectrum).

    A clump of overlapping red cells is a union of cell-sized disks: each still fits, so the
    opening keeps the clump until the disk outgrows one cell (a clump's distance-transform peak,
    by contrast, can reach twice a cell's radius). The opening by a disk of radius r is the
    set within r of the pixels deeper than r, one distance transform each; bisection on r. On
    a half-resolution grid where cells are large enough to lose nothing."""
    step = 2 if distance.max() > 16 else 1
    depth = distance[::step, ::step] / step
    total = red[::step, ::step].sum()
    low, high = 0.0, float(depth.max())
    for _ in range(OPENING_BISECTIONS):
        r = (low + high) / 2
        opened = ndi.distance_transform_edt(depth <= r) <= r
        low, high = (r, high) if opened.sum() >= total / 2 else (low, r)
    return step * (low + high) / 2


def field_params(rgb: np.ndarray) -> SmearParams:
    """Parameters for this field's magnification, from the size of its red cells (the
    defaults when it shows too few to tell)."""
    return _params_for(estimate_red_cell_diameter(rgb))


def _params_for(diameter: float | None) -> SmearParams:
    if diameter is None:
        return DEFAULT_PARAMS
    scale = diameter / BCCD_RED_CELL_PX
    if SAME_SCALE[0] <= scale <= SAME_SCALE[1]:  # within one microscope's field-to-field spread
        return DEFAULT_PARAMS
    return SmearParams.for_cell_size(float(np.clip(BCCD_CELL_PX * scale, MIN_CELL_PX, 4000)))


def _red_mask(rgb_sum, stained, field) -> tuple[np.ndarray, np.ndarray, float]:
    """Red-cell pixels: darker than the field's background (Otsu's threshold on the brightness,
    ``R + G + B`` over 3, of the pixels that are not violet), and not violet (nor next to it);
    the darker pixels, violet or not; and the brightness contrast between the background and
    the cells; ``stained``: the violet pixels; ``field``: the pixels in the field (not padding).

    Violet pixels are left out of the threshold because a large dark nucleus (a single-cell
    image, a higher magnification) otherwise takes Otsu's split for itself: nucleus against
    the rest, with pale red cells on the background's side and none counted."""
    from skimage.filters import threshold_otsu

    unstained = np.bincount(rgb_sum[field & ~stained], minlength=766)
    levels = np.arange(766, dtype=np.float32) / np.float32(3)  # each sum's brightness
    present = unstained > 0
    if present.sum() < 2:  # one brightness: nothing stands out
        nothing = np.zeros(rgb_sum.shape, bool)
        return nothing, nothing, BCCD_CONTRAST
    shown = levels[present]  # the same 256 bins as a histogram of every pixel's brightness
    hist, edges = np.histogram(shown, 256, (shown[0], shown[-1]), weights=unstained[present])
    threshold = threshold_otsu(hist=(hist, (edges[:-1] + edges[1:]) / 2))
    darker = levels < threshold
    # every pixel of the field: the violet ones are few, so count them and add
    counts = unstained + np.bincount(rgb_sum[field & stained], minlength=766)
    contrast = np.average(levels[~darker], weights=counts[~darker]) - np.average(
        levels[darker], weights=counts[darker]
    )
    violet = cross_morphology(stained, grow=True, times=2)
    dark = darker[rgb_sum] & field
    return _fill_round_holes(cross_opening(dark & ~violet)), dark, float(contrast)


def _fill_round_holes(mask: np.ndarray) -> np.ndarray:
    """``fill_holes`` for the holes that are round (a red cell's pale centre), not for the
    concave gaps enclosed between touching cells (a dense field's background)."""
    from skimage.measure import regionprops

    holes, n = ndi.label(fill_holes(mask) & ~mask)
    if not n:
        return mask
    area = np.bincount(holes.ravel(), minlength=n + 1)
    keep = area <= SPECK  # a few pixels: filled
    for label, box in enumerate(ndi.find_objects(holes), start=1):
        # the convex hull lies within the box, so filling its box to this share is enough;
        # a hull (skimage's solidity) only for the rest: most pale centres fill theirs
        if keep[label] or area[label] >= ROUND_HOLE * _box_area(box):
            keep[label] = True
        else:
            hole = (holes[box] == label).astype(np.uint8)
            keep[label] = regionprops(hole)[0].solidity >= ROUND_HOLE
    keep[0] = False
    return mask | keep[holes]


def _box_area(box: tuple[slice, slice]) -> int:
    return (box[0].stop - box[0].start) * (box[1].stop - box[1].start)


def locate_cells(rgb: np.ndarray, params: SmearParams | None = None) -> Detections:
    """White-cell boxes and red-cell and platelet centres in an H x W x 3 uint8 array; ``params``
    default to ``field_params`` (the field's own scale), or to the red cells' opening where
    clumps inflated that beyond a field's spread (BCCD's densest fields: their white cells
    were sought at 1.6-2.4x and missed)."""
    stats = _red_cells_of(rgb)
    measured = None if params else _red_cell_diameter(stats.clumps, stats.distance)
    params = params or _params_for(measured)
    found = _white_cells(rgb, stats, params)
    violet = _violet_share(stats, found.white_cells)
    if measured and violet > VIOLET_RED_CELLS:
        whole = _whole_red_cell_diameter(stats, found.white_cells)
        if whole and whole > measured:  # pieces of cells read smaller than cells, never larger
            params = _params_for(whole)
            found = _white_cells(rgb, stats, params)
    red_params, opening = _red_cell_scale(stats, params, measured, violet)
    if opening and measured and measured > SAME_SCALE[1] * _in_estimate_units(opening):
        found = _white_cells(rgb, stats, red_params)
    found.red_cells = _red_cells(stats, red_params, opening)
    return found


def _white_cells(rgb: np.ndarray, stats: FieldStats, params: SmearParams) -> Detections:
    """White-cell boxes and platelet centres at ``params``' magnification."""
    found = Detections()
    cores, labels = _joined(stats.score > _stain_threshold(stats, params), params)
    if params.contrast_nuclei:
        missed = _contrast_nuclei(rgb, stats, params, _cells_found(labels, params))
        if missed.any():
            cores, labels = _joined(cores | missed, params)
    _violet_objects(cores, labels, params, rgb.shape[:2], found)
    return found


def _stain_threshold(stats: FieldStats, params: SmearParams) -> float:
    """The stain score above which a pixel is violet, from the field's own statistics: above
    its median colour (a colour cast moves both) by a margin that narrows with its brightness
    contrast (a paler stain or a brighter lamp fades the nuclei's violet as much)."""
    fade = np.clip(stats.contrast / BCCD_CONTRAST, *CONTRAST_RANGE)
    return float(stats.median) + (params.stain_threshold - BCCD_MEDIAN_STAIN) * float(fade)


def _joined(violet, params: SmearParams) -> tuple[np.ndarray, np.ndarray]:
    """``violet`` opened (its cores) and its components once closed (one per white cell: the
    closing joins a nucleus's lobes), labelled."""
    cores = cross_opening(violet)
    return cores, ndi.label(fill_holes(_close_square(cores, params.merge_iterations)))[0]


def _cells_found(labels, params: SmearParams) -> np.ndarray:
    """The white cells' boxes (each nucleus-sized component's box grown to the cell, as
    ``_violet_objects`` grows it) as a mask: what lies in them is a cell found already."""
    found = np.zeros(labels.shape, bool)
    areas = np.bincount(labels.ravel())
    for i, region in enumerate(ndi.find_objects(labels), start=1):
        if areas[i] >= params.min_nucleus_area:
            x1, y1, x2, y2 = _cell_box(region, (0, 0), labels.shape, params)
            found[y1:y2, x1:x2] = True
    return found


def _contrast_nuclei(rgb, stats: FieldStats, params: SmearParams, found) -> np.ndarray:
    """Nuclei the stain score missed: pixels above the upper of Otsu's three-class thresholds
    of both ``nucleus_score`` and ``purple_score`` (the field's own levels), joined as white
    cells are; a component is kept if it is nucleus-sized, rises ``NUCLEUS_RISE`` above the
    field's red cells and lies in no cell the stain score ``found`` (``_cells_found``)."""
    outside = stats.outside
    scores = [nucleus_score(rgb), purple_score(rgb)]
    candidates = ~outside
    for score in scores:
        if outside.any():
            score[outside] = score[~outside].min(initial=0)
        threshold = otsu_upper(score)
        if threshold is None:
            return np.zeros_like(outside)
        candidates &= score > threshold
    cores, labels = _joined(candidates, params)
    keep = np.bincount(labels.ravel()) >= params.min_nucleus_area
    keep[0] = False
    if keep.any():
        keep[np.unique(labels[found])] = False
    if keep.any():
        keep &= _stands_out(labels, cores, scores, stats, outside)
    return cores & keep[labels]


def _stands_out(labels, cores, scores, stats: FieldStats, outside) -> np.ndarray:
    """Per component: whether its core's median scores rise ``NUCLEUS_RISE`` interquartile
    ranges over the field's red cells' (summed over ``scores``) and its stain score
    ``NUCLEUS_MIN_VIOLET`` over the field's median."""
    n = int(labels.max())
    reference = stats.red & (labels == 0)
    if reference.sum() < 50:  # a field of one large cell: compare with all else
        reference = (labels == 0) & ~outside
    core_labels = labels * cores

    def medians(score):  # per component, with a 0 for the background (label 0)
        return np.r_[0.0, ndi.median(score, core_labels, np.arange(1, n + 1))]

    rise = np.zeros(n + 1)
    for score in scores:
        low, middle, high = np.percentile(score[reference], [25, 50, 75])
        rise += (medians(score) - middle) / max(high - low, 1)
    violet = medians(stats.score) - stats.median
    return (rise >= NUCLEUS_RISE) & (violet >= NUCLEUS_MIN_VIOLET)


def _violet_objects(cores, labels, params: SmearParams, shape, found: Detections) -> None:
    """White cells (with their boxes) and platelets from ``_joined``'s cores and components."""
    for i, region in enumerate(ndi.find_objects(labels), start=1):
        component = labels[region] == i
        area = int(component.sum())
        y0, x0 = region[0].start, region[1].start
        if area < params.min_nucleus_area:
            if area >= params.min_platelet_area:
                ys, xs = np.nonzero(component)
                found.platelets.append((int(x0 + xs.mean()), int(y0 + ys.mean())))
            continue
        for nucleus in _cells_of(component, cores[region] & component, params):
            found.white_cells.append(_cell_box(nucleus, (y0, x0), shape, params))


def _cell_box(nucleus: tuple[slice, slice], offset, shape, params: SmearParams) -> Box:
    """A white cell's box: its nucleus's box (slices, at ``offset`` in the field) grown
    ``box_growth`` times about its centre to a square, within the field."""
    (ys, xs), (y0, x0), (height, width) = nucleus, offset, shape
    cx, cy = x0 + (xs.start + xs.stop) / 2, y0 + (ys.start + ys.stop) / 2
    half = max(xs.stop - xs.start, ys.stop - ys.start) * params.box_growth / 2
    return (
        int(max(0, cx - half)),
        int(max(0, cy - half)),
        int(min(width, cx + half)),
        int(min(height, cy + half)),
    )


def _cells_of(component: np.ndarray, cores: np.ndarray, params: SmearParams):
    """The bounding slices of the white cells in one closed violet component.

    The closing that joins one nucleus's lobes can also join two touching cells. Before it,
    a nucleus is a few blobs close together; blobs further apart than half a cell belong to
    different nuclei. Two or more such nuclei, each large enough: split by watershed."""
    whole = [ndi.find_objects(component.astype(np.int32))[0]]
    blobs, n = ndi.label(cores)
    if n < 2:
        return whole
    centres, areas = centres_and_areas(blobs, n)
    nuclei = _nearby_groups(centres, SPLIT_NUCLEUS_DISTANCE * params.cell_px)
    big = [
        g
        for g in set(nuclei)
        if areas[nuclei == g].sum() >= SPLIT_MIN_AREA * params.min_nucleus_area
    ]
    if len(big) < 2:
        return whole
    from skimage.segmentation import watershed

    markers = np.zeros(component.shape, np.int32)
    for k, g in enumerate(big, start=1):
        markers[np.isin(blobs, np.flatnonzero(nuclei == g) + 1)] = k
    parts = watershed(-ndi.distance_transform_edt(component), markers, mask=component)
    return [s for s in ndi.find_objects(parts) if s is not None]


def _nearby_groups(points: np.ndarray, distance: float) -> np.ndarray:
    """Single-linkage groups of points closer than ``distance`` (scipy)."""
    from scipy.cluster.hierarchy import fcluster, linkage

    if len(points) < 2:
        return np.ones(len(points), dtype=int)
    return fcluster(linkage(points, method="single"), t=distance, criterion="distance")


def _close_square(mask: np.ndarray, k: int) -> np.ndarray:
    """``binary_closing`` with a 3x3 square ``k`` times (the same as one (2k+1) square), as a
    separable maximum then minimum filter: linear in k instead of k x 9 passes."""
    size = 2 * k + 1
    grown = ndi.maximum_filter(mask.view(np.uint8), size=size, mode="constant", cval=0)
    return ndi.minimum_filter(grown, size=size, mode="constant", cval=0).astype(bool)


def _red_cell_scale(
    stats: FieldStats, params: SmearParams, measured: float | None, violet: float
) -> tuple[SmearParams, float | None]:
    """The parameters to find red cells' peaks with, and the red-cell opening diameter to
    count clumps' cells by (None: peaks only).

    A dense field's clumps of overlapping red cells inflate ``estimate_red_cell_diameter``
    (up to twice: too few peaks, and parameters for a higher magnification); the median
    opening does not, so peaks are sought at the smaller of the two (where the opening reads
    larger, as on PBC's images, its wider window and higher minimum peak miss cells cut by the
    image's edge). Where the red-cell mask is fragments, though, the opening measures the
    fragments and the clumps' area would count each cell several times: where much of the
    cells outside the white cells is violet (a stain that leaves red cells lavender or
    fringed blue, as LISC's), peaks only. The white cells keep the estimate's parameters,
    chosen with it on every lab, unless it exceeds the opening's by more than one
    microscope's field-to-field spread (``locate_cells``). ``violet``: ``_violet_share``."""
    if violet > VIOLET_RED_CELLS:
        return params, None
    if measured is None:  # the caller's magnification, or a field of too few red cells
        return params, params.red_cell_opening_px
    opening = 2 * _median_opening_radius(stats.red, stats.distance)
    return _params_for(min(measured, _in_estimate_units(opening))), opening


def _in_estimate_units(opening: float) -> float:
    """An opening diameter as the ``estimate_red_cell_diameter`` of the same cells (BCCD's)."""
    return opening * BCCD_RED_CELL_PX / BCCD_RED_CELL_OPENING_PX


def _violet_share(stats: FieldStats, white_cells: list[Box]) -> float:
    """The share of the cells' pixels outside the white cells' boxes that are violet (kept out
    of the red-cell mask): high where a stain leaves red cells partly violet or fringed blue."""
    outside = _without_boxes(~stats.outside, white_cells)
    violet = stats.violet & outside
    return float(violet.sum() / max(1, (violet | (stats.red & outside)).sum()))


def _whole_red_cell_diameter(stats: FieldStats, white_cells: list[Box]) -> float | None:
    """``estimate_red_cell_diameter`` of the red cells whole, violet fringes included: of the
    darker pixels outside the white cells, every hole filled. Where a stain leaves red cells
    fringed blue (LISC), the red-cell mask keeps pieces of them and reads the field's scale at
    half its size or less, and white cells sought at that scale fall apart into lobes."""
    whole = fill_holes(cross_opening(_without_boxes(stats.dark, white_cells)))
    return _red_cell_diameter(ndi.label(whole)[0], _distance_inside(whole, stats.outside))


def _red_cells(stats: FieldStats, params: SmearParams, diameter: float | None) -> list[Point]:
    """Red-cell centres: the peaks of the red mask's distance transform, except in a clump
    whose area holds more whole red cells of this ``diameter`` than it has peaks (overlapping
    cells peak once between them): there, as many centres as it holds whole cells."""
    distance = stats.distance
    peaks = (distance == ndi.maximum_filter(distance, size=params.red_peak_window)) & (
        distance > params.red_min_radius
    )
    labels, n = ndi.label(peaks)
    centres = np.rint(centres_and_areas(labels, n)[0]).astype(int) if n else np.zeros((0, 2), int)
    if diameter is None:
        return [(int(x), int(y)) for y, x in centres]
    clumps, n_clumps = stats.clumps, int(stats.clumps.max())
    peak_clump = clumps[centres[:, 0], centres[:, 1]]
    cell_area = RED_CELL_AREA * np.pi * diameter**2 / 4
    whole = np.bincount(clumps.ravel(), minlength=n_clumps + 1) // cell_area
    whole[0] = 0  # the background
    split = np.flatnonzero(whole > np.bincount(peak_clump, minlength=n_clumps + 1))
    boxes = ndi.find_objects(clumps)
    more = [_clump_centres(clumps, c, boxes[c - 1], int(whole[c])) for c in split]
    kept = centres[~np.isin(peak_clump, split)]
    return [(int(x), int(y)) for y, x in np.concatenate([kept, *more])]


def _clump_centres(clumps: np.ndarray, clump: int, box, k: int) -> np.ndarray:
    """``k`` (y, x) centres spread over one labelled clump: k-means of every few of its pixels."""
    from scipy.cluster.vq import kmeans2

    points = np.argwhere(clumps[box] == clump)[::CLUMP_SAMPLE].astype(float)
    centres, _ = kmeans2(points, k, seed=0, minit="++")
    return np.rint(centres).astype(int) + [box[0].start, box[1].start]
