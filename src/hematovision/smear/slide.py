"""Whole slides and scans larger than one field: tiles with overlap, every cell counted once.

A slide is read one tile at a time (pyramidal TIFF/SVS and the other formats tiffslide reads,
level 0; or an ordinary image up to ``MAX_PLAIN_PIXELS``), so memory follows the tile, not the
slide. Tiles overlap by ``margin`` pixels (more than a white cell is wide): each tile is
analysed whole, so a cell on a tile's border is seen entire in some tile, and a tile keeps only
what is centred in its core (the tiles' cores cover the slide once, without gaps), so that
cell is counted once. The result is one ``SmearField`` for the whole slide, in its coordinates.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator
from pathlib import Path

from PIL import Image

from ..errors import HematoVisionError
from ..preprocess import median_colour
from ..progress import progress_bar
from . import (
    MAX_FIELD_PIXELS,
    SmearField,
    WhiteCell,
    analyze_smear,
    classify_cells,
    crop_cell,
    crop_params,
    crop_square,
    load_smear_classifier,
)
from .annotate import annotate

SLIDE_SUFFIXES = {".svs", ".tif", ".tiff", ".ndpi", ".scn", ".bif", ".qptiff"}
MAX_PLAIN_PIXELS = 200_000_000  # a JPEG/PNG is decoded whole: above this, a tiled TIFF please
CORE, MARGIN = 2048, 256  # px: a tile's own square, and what it reads around it
THUMBNAIL_LEVEL = 4  # a pyramid level at most this x a thumbnail's side is reduced whole


class PlainImage:
    """An ordinary image file read as a slide (decoded once, whole)."""

    def __init__(self, path: Path):
        Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, MAX_PLAIN_PIXELS)
        with Image.open(path) as probe:
            if probe.width * probe.height > MAX_PLAIN_PIXELS:
                raise HematoVisionError(
                    f"{path}: {probe.width}x{probe.height} is too large to decode at once; "
                    "save it as a tiled (pyramidal) TIFF, which is read tile by tile"
                )
        self.image = Image.open(path).convert("RGB")
        self.dimensions = self.image.size

    def region(self, x: int, y: int, w: int, h: int) -> Image.Image:
        return self.image.crop((x, y, x + w, y + h))

    def thumbnail(self, side: int) -> Image.Image:
        small = self.image.copy()
        small.thumbnail((side, side))
        return small


class TiffSlideImage:
    """A whole-slide file through tiffslide: regions of level 0, read on demand."""

    def __init__(self, path: Path):
        import tiffslide

        try:
            self.slide = tiffslide.TiffSlide(str(path))
        except Exception as exc:  # noqa: BLE001 - tiffslide raises many kinds for a bad file
            raise HematoVisionError(f"{path}: not a readable slide ({exc})") from None
        self.dimensions = self.slide.dimensions

    def region(self, x: int, y: int, w: int, h: int) -> Image.Image:
        return self.slide.read_region((x, y), 0, (w, h)).convert("RGB")

    def thumbnail(self, side: int) -> Image.Image:
        """The slide within ``side`` pixels: from its pyramid where a level is small enough,
        else region by region (a slide without a pyramid would be decoded whole)."""
        level = self.slide.get_best_level_for_downsample(max(self.dimensions) / side)
        if max(self.slide.level_dimensions[level]) <= THUMBNAIL_LEVEL * side:
            return self.slide.get_thumbnail((side, side)).convert("RGB")
        return thumbnail_by_regions(self, side)


def thumbnail_by_regions(slide, side: int, step: int = CORE) -> Image.Image:
    """The slide within ``side`` pixels, reduced about ``step`` source pixels at a time
    (memory of one region): each block of the thumbnail is resized from exactly the part of
    the slide it covers (PIL's ``box``, in fractions of a pixel), as a resize of the whole."""
    width, height = slide.dimensions
    scale = side / max(width, height)
    out_w, out_h = max(1, int(width * scale)), max(1, int(height * scale))
    fx, fy = width / out_w, height / out_h  # slide pixels per thumbnail pixel
    block = max(1, int(step / max(fx, fy)))
    small = Image.new("RGB", (out_w, out_h))
    for oy in range(0, out_h, block):
        for ox in range(0, out_w, block):
            ow, oh = min(block, out_w - ox), min(block, out_h - oy)
            x0, y0, x1, y1 = ox * fx, oy * fy, (ox + ow) * fx, (oy + oh) * fy
            rx, ry = int(x0), int(y0)
            region = slide.region(
                rx, ry, min(width, math.ceil(x1)) - rx, min(height, math.ceil(y1)) - ry
            )
            box = (x0 - rx, y0 - ry, x1 - rx, y1 - ry)
            small.paste(region.resize((ow, oh), Image.BOX, box=box), (ox, oy))
    return small


TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # TIFF and BigTIFF


def open_slide(path: str | Path):
    """A reader of regions: tiffslide for TIFF-based slides (by content, or a slide suffix),
    Pillow for any other image."""
    path = Path(path)
    if not path.is_file():
        raise HematoVisionError(f"{path}: no such file")
    with open(path, "rb") as fh:
        tiff = fh.read(4) in TIFF_MAGIC
    if tiff or path.suffix.lower() in SLIDE_SUFFIXES:
        return TiffSlideImage(path)
    return PlainImage(path)


def is_slide(path: str | Path) -> bool:
    """A slide file, a pyramid (several pages), or an image with more pixels than one field."""
    path = Path(path)
    if path.suffix.lower() in SLIDE_SUFFIXES - {".tif", ".tiff"}:
        return True
    if _tiled_tiff(path):
        return True
    Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, MAX_PLAIN_PIXELS)
    try:
        with Image.open(path) as probe:
            pages = getattr(probe, "n_frames", 1)
            return probe.width * probe.height > MAX_FIELD_PIXELS or pages > 1
    except (OSError, Image.DecompressionBombError, ValueError):
        return path.suffix.lower() in SLIDE_SUFFIXES


def _tiled_tiff(path: Path) -> bool:
    """A tiled or pyramidal TIFF: a slide, read tile by tile, whatever its size."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            return tif.pages[0].is_tiled or len(tif.series[0].levels) > 1
    except (tifffile.TiffFileError, OSError, IndexError):
        return False


def analyze_any(
    image: str | Path | bytes, classifier=None, params=None, show_progress: bool = False
) -> tuple[SmearField, bool]:
    """(the analysis, whether it was tiled): one field as ``analyze_smear`` does it, or,
    larger than a field or a tiled TIFF, the whole slide tile by tile."""
    if isinstance(image, bytes):
        with tempfile.NamedTemporaryFile(suffix=".img") as tmp:
            tmp.write(image)
            tmp.flush()
            found, tiled = analyze_any(tmp.name, classifier, params, show_progress)
            found.path = None  # a temporary file's name means nothing later
            return found, tiled
    if is_slide(image):
        return analyze_slide(image, classifier, show_progress=show_progress, params=params), True
    return analyze_smear(image, classifier, params), False


def tiles(width: int, height: int, core: int = CORE, margin: int = MARGIN) -> Iterator[tuple]:
    """(read box, core box) per tile, in slide coordinates; the cores cover the slide once."""
    for y in range(0, height, core):
        for x in range(0, width, core):
            inner = (x, y, min(x + core, width), min(y + core, height))
            outer = (
                max(0, x - margin),
                max(0, y - margin),
                min(width, x + core + margin),
                min(height, y + core + margin),
            )
            yield outer, inner


def analyze_slide(
    path: str | Path,
    classifier=None,
    core: int = CORE,
    margin: int = MARGIN,
    show_progress: bool = True,
    params=None,
) -> SmearField:
    """Every white cell of a slide (classified), its red cells and platelets, counted once."""
    slide = open_slide(path)
    classifier = classifier or load_smear_classifier()
    width, height = slide.dimensions
    grid = list(tiles(width, height, core, margin))
    fill = _background(slide)  # beyond the slide's edge, whatever the tiling
    crop = crop_params(classifier, params)
    whole = SmearField(str(Path(path).resolve()), width, height, [])
    with progress_bar(f"tiles of {Path(path).name}", len(grid), enabled=show_progress) as bar:
        for (x0, y0, x1, y1), (cx0, cy0, cx1, cy1) in grid:
            tile = slide.region(x0, y0, x1 - x0, y1 - y0)
            within = (cx0 - x0, cy0 - y0, cx1 - x0, cy1 - y0)
            part = analyze_smear(tile, params=params, classify=False, within=within)
            _add(whole, part, x0, y0)
            _classify(slide, part.white_cells, classifier, crop, fill)
            bar.advance(status=f"{len(whole.white_cells)} white cells")
    return whole


def _background(slide, side: int = 1024) -> tuple[int, int, int]:
    """The median colour of the slide's central square (a thumbnail may decode the whole
    slide where it has no small pyramid level)."""
    width, height = slide.dimensions
    x, y = max(0, (width - side) // 2), max(0, (height - side) // 2)
    return median_colour(slide.region(x, y, min(side, width), min(side, height)))


def _classify(slide, cells: list[WhiteCell], classifier, crop, fill) -> None:
    """Cells cut from the slide, not from their tile: a crop reaches further than a tile's
    margin (3x the cell for a model that frames cells), and a crop cut by a tile's edge would
    make a cell's class depend on the tiling."""
    if not cells:
        return
    width, height = slide.dimensions
    crops = []
    for cell in cells:
        x1, y1, x2, y2 = cell.box
        left, top, side = crop_square(cell.box, crop)
        x0, y0 = max(0, left), max(0, top)
        region = slide.region(x0, y0, min(width, left + side) - x0, min(height, top + side) - y0)
        crops.append(crop_cell(region, (x1 - x0, y1 - y0, x2 - x0, y2 - y0), crop, fill))
    classify_cells(cells, crops, classifier)


def _add(whole: SmearField, part: SmearField, dx: int, dy: int) -> None:
    """A tile's findings, moved into slide coordinates."""
    for cell in part.white_cells:
        x1, y1, x2, y2 = cell.box
        cell.box = (x1 + dx, y1 + dy, x2 + dx, y2 + dy)
        whole.white_cells.append(cell)
    whole.red_cell_positions += [(x + dx, y + dy) for x, y in part.red_cell_positions]
    whole.platelet_positions += [(x + dx, y + dy) for x, y in part.platelet_positions]
    whole.warnings += [w for w in part.warnings if w not in whole.warnings]


def overview(path: str | Path, field: dict, side: int = 2048) -> Image.Image:
    """The slide reduced to ``side`` pixels at most, its white cells boxed and numbered."""
    slide = open_slide(path)
    small = slide.thumbnail(side)
    scale = small.width / slide.dimensions[0]
    scaled = {
        **field,
        "white_cells": [
            {**c, "box": [round(v * scale) for v in c["box"]]} for c in field["white_cells"]
        ],
        "red_cell_positions": [],
        "platelet_positions": [],
    }
    return annotate(small, scaled)
