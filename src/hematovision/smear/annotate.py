"""The annotated field: each white cell's box, numbered as in the cell list and labelled by
class; optionally red cells and platelets marked, so a person can check the counts."""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

from ..preprocess import ImageInput, to_rgb

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
RED_CELL_MARK, PLATELET_MARK = (220, 20, 60), (75, 0, 130)


def annotate(image: ImageInput, field: dict, marks: bool = False) -> Image.Image:
    """The field (``SmearField.to_dict()`` or a stored field) drawn over its image; with
    ``marks``, a ring on each red cell counted and a dot on each platelet."""
    picture = to_rgb(image).copy()
    draw = ImageDraw.Draw(picture)
    # sizes follow the field, so labels stay readable on a 640 px field and on a large scan
    scale = max(picture.width, picture.height)
    line = max(2, scale // 320)
    font = ImageFont.load_default(size=max(16, scale // 36))
    if marks:
        _marks(draw, field, max(3, scale // 160))
    for number, cell in enumerate(field["white_cells"], start=1):
        colour = PALETTE.get(cell["label"] or "", (0, 0, 0))
        draw.rectangle(cell["box"], outline=colour, width=line)
        _label(draw, picture.size, cell, f"{number} {_text(cell)}", colour, font)
    return picture


def _text(cell: dict) -> str:
    if cell["label"] is None:
        return "white cell"
    return f"{cell['label']} {100 * cell['confidence']:.0f}%{'?' if cell['uncertain'] else ''}"


def label_position(size: tuple[int, int], box, w: int, h: int) -> tuple[int, int]:
    """Where a ``w`` x ``h`` label of ``box`` goes: above the box, or inside its top edge when
    there is no room above; moved left or up as needed so that it is never cut by the image."""
    x1, y1 = box[0], box[1]
    x = min(max(0, x1), max(0, size[0] - w))
    y = y1 - h if y1 - h >= 0 else y1
    return x, min(max(0, y), max(0, size[1] - h))


def _label(draw, size, cell: dict, text: str, colour, font) -> None:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    w, h = right - left + 6, bottom - top + 6
    x, y = label_position(size, cell["box"], w, h)
    draw.rectangle((x, y, x + w, y + h), fill=colour)
    draw.text((x + 3 - left, y + 3 - top), text, fill=(255, 255, 255), font=font)


def _marks(draw, field: dict, r: int) -> None:
    for x, y in field.get("red_cell_positions", []):
        draw.ellipse((x - 2 * r, y - 2 * r, x + 2 * r, y + 2 * r), outline=RED_CELL_MARK, width=2)
    for x, y in field.get("platelet_positions", []):
        draw.ellipse((x - r, y - r, x + r, y + r), fill=PLATELET_MARK, outline=(255, 255, 255))
