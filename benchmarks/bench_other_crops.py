"""White cells cut by another tool (issue 11): the bundled model on BCCD's held-out cells cut
from their annotated boxes at other framings, as a lab's own software might cut them.

The white-cell boxes of BCCD's odd-numbered fields (never trained on) whose labels.csv row
names one type, each cut as a square of 1x to 3x its box's longer side round its centre;
where the square reaches beyond the field, filled black (what PIL's ``crop`` and many tools
do) or with the field's median colour. For each: accuracy, wrong and not flagged, flagged.

    python benchmarks/bench_other_crops.py
"""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from bench_crosslab import score
from hematovision.data.bccd import WBC_TYPES, annotation, field_labels, fields
from hematovision.inference import Classifier
from hematovision.preprocess import median_colour

from _common import DEFAULT_PBC, machine, table_head, table_row, write_section

BCCD = DEFAULT_PBC.parent / "bccd"
FACTORS = (1.0, 1.5, 2.0, 3.0)


def cut(image: Image.Image, box, factor: float, fill: str) -> Image.Image:
    """A square of ``factor`` x the box's longer side round its centre, beyond the image
    ``fill``: "black" or "field colour"."""
    x0, y0, x1, y1 = box
    half = factor * max(x1 - x0, y1 - y0) / 2
    left, top = round((x0 + x1) / 2 - half), round((y0 + y1) / 2 - half)
    square = (left, top, left + round(2 * half), top + round(2 * half))
    if fill == "black":
        return image.crop(square)
    out = Image.new("RGB", (square[2] - left, square[3] - top), median_colour(image))
    inside = (max(0, left), max(0, top), min(image.width, square[2]), min(image.height, square[3]))
    out.paste(image.crop(inside), (inside[0] - left, inside[1] - top))
    return out


def cells(classes: list[str]) -> tuple[list[tuple[Image.Image, tuple]], np.ndarray]:
    labels = field_labels(BCCD / "labels.csv")
    found, truth = [], []
    for field in fields(BCCD, "odd"):
        kind = labels.get(field.stem)
        if kind not in WBC_TYPES:
            continue
        image = Image.open(field).convert("RGB")
        for box in annotation(BCCD, field)["WBC"]:
            found.append((image, box))
            truth.append(classes.index(kind))
    return found, np.array(truth)


def main() -> None:
    clf = Classifier.load()
    found, truth = cells(clf.classes)
    rows = {}
    for fill in ("black", "field colour"):
        for factor in FACTORS:
            crops = [cut(image, box, factor, fill) for image, box in found]
            rows[(fill, factor)] = score(clf, crops, truth)
            print(fill, factor, json.dumps(rows[(fill, factor)]), flush=True)
    lines = [
        "## White cells cut by another tool (issue 11)\n",
        f"`benchmarks/bench_other_crops.py`; {machine()}. The bundled model "
        f"({clf.name} {clf.version}) on the {len(truth)} annotated white cells of BCCD's "
        "held-out odd fields with one labelled type, cut as squares of 1-3x their box; beyond "
        "the field filled black or with the field's median colour. Accuracy / wrong and not "
        "flagged / flagged.\n",
        *table_head(["beyond the field", *(f"{f:g}x the box" for f in FACTORS)]),
    ]
    for fill in ("black", "field colour"):
        lines.append(
            table_row(
                [fill]
                + [
                    f"{r['accuracy']:.1%} / {r['wrong_unflagged']:.1%} / {r['flagged']:.0%}"
                    for r in (rows[(fill, f)] for f in FACTORS)
                ]
            )
        )
    write_section("other_crops", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
