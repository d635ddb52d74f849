"""What is not a white cell must come out flagged (issue 11): the bundled model on debris.

Issue 11 asks that blasts, smudge cells and debris never come out as a confident normal cell.
Blasts and smudge cells are not in the shared data (bench_unknown_class.py is the proxy for an
untaught cell type); what is not a cell at all can be made from it:

* **red cells**: squares cut from BCCD's fields (the model was taught the white cells of the
  even ones, nothing else of them) round an annotated red cell, 1.5x the side of the field's
  white cells, inside the field and at least 20 px clear of every annotated white cell: a
  picture of no white cell;
* **empty field**: the same squares round random points;
* **platelets**: the same round BCCD's annotated platelets (a class of the model, but the
  square holds red cells too);
* **tissue**: tiles of scikit-image's immunohistochemistry image
  (``skimage.data.immunohistochemistry``), the wrong slide uploaded;
* **photographs**: scikit-image's pictures (astronaut, cat, coffee, rocket, the Hubble deep
  field, a retina), whole and in tiles.

Each cut, per category: the share flagged (to review), passed as a confident white cell, and
passed as any class; the bundled model as served, without and with TTA.

    python benchmarks/bench_non_cells.py
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from skimage import data as skdata

from hematovision.data.bccd import annotation, fields
from hematovision.differential import WHITE_CELL_CLASSES
from hematovision.inference import Classifier

from _common import DEFAULT_PBC, machine, table_head, table_row, write_section

BCCD = DEFAULT_PBC.parent / "bccd"
CLEAR = 20  # px between a cut's centre box and every annotated white cell
PER_FIELD = 2  # cuts of each kind per field
CUT = 1.5  # a cut's side, in the field's white cells' sides
PHOTOGRAPHS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina")


def _clear_of(box, white_cells) -> bool:
    return all(
        box[2] + CLEAR < w[0]
        or w[2] + CLEAR < box[0]
        or box[3] + CLEAR < w[1]
        or w[3] + CLEAR < box[1]
        for w in white_cells
    )


def bccd_cuts(rng) -> dict[str, list[Image.Image]]:
    """Squares CUT x the field's white-cell size round red cells, random points and platelets,
    inside the field and clear of every annotated white cell: single-cell images of debris."""
    cuts = {"red cells": [], "empty field": [], "platelets": []}
    for image in fields(BCCD, "all"):  # no debris was trained on
        truth = annotation(BCCD, image)
        if not truth["WBC"]:
            continue
        picture = Image.open(image).convert("RGB")
        side = CUT * float(np.median([max(b[2] - b[0], b[3] - b[1]) for b in truth["WBC"]]))

        def usable(x, y, side=side, truth=truth, picture=picture):
            box = [x - side / 2, y - side / 2, x + side / 2, y + side / 2]
            inside = box[0] >= 0 and box[1] >= 0 and box[2] <= picture.width
            return (
                box
                if inside and box[3] <= picture.height and _clear_of(box, truth["WBC"])
                else None
            )

        centres = {
            "red cells": [((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) for b in truth["RBC"]],
            "empty field": rng.uniform((0, 0), picture.size, size=(50, 2)).tolist(),
            "platelets": [
                ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) for b in truth.get("Platelets", [])
            ],
        }
        for name, points in centres.items():
            boxes = [b for b in (usable(x, y) for x, y in points) if b]
            for i in rng.permutation(len(boxes))[:PER_FIELD]:
                cuts[name].append(picture.crop(tuple(int(v) for v in boxes[i])))
    return cuts


def tiles(rgb: np.ndarray, side: int) -> list[Image.Image]:
    h, w = rgb.shape[:2]
    return [
        Image.fromarray(rgb[y : y + side, x : x + side])
        for y in range(0, h - side + 1, side)
        for x in range(0, w - side + 1, side)
    ]


def other_pictures() -> dict[str, list[Image.Image]]:
    photos = []
    for name in PHOTOGRAPHS:
        rgb = getattr(skdata, name)()
        rgb = rgb if rgb.ndim == 3 else np.stack([rgb] * 3, -1)
        photos += [Image.fromarray(rgb[..., :3])] + tiles(rgb[..., :3], 256)
    return {"tissue (IHC)": tiles(skdata.immunohistochemistry(), 128), "photographs": photos}


def passed(clf: Classifier, pictures: list[Image.Image]) -> dict:
    preds = clf.predict(pictures)
    flagged = np.array([p.uncertain for p in preds])
    white = np.array([p.label in WHITE_CELL_CLASSES for p in preds])
    labels = [p.label for p in preds if not p.uncertain]
    return {
        "n": len(preds),
        "flagged": float(flagged.mean()),
        "white_cell": float((~flagged & white).mean()),
        "any_class": float((~flagged).mean()),
        "labels": {c: labels.count(c) for c in sorted(set(labels))},
    }


def main() -> None:
    print(machine())
    plain, tta = Classifier.load(tta=False), Classifier.load(tta=True)
    rng = np.random.default_rng(0)
    sets = bccd_cuts(rng) | other_pictures()
    rows = {name: (passed(plain, p), passed(tta, p)) for name, p in sets.items()}
    for name, (a, b) in rows.items():
        print(name, a, b)
    lines = [
        "## What is not a white cell: debris, tissue, photographs (issue 11)",
        "",
        f"Machine: {machine()}. The bundled model as served (canonical framing, its confidence "
        "and distance rule), without / with TTA. Flagged: to review; passed: not flagged, as a "
        "white-cell class / as any class (what passed was called, without TTA, in brackets).",
        "",
        *table_head(["cut", "n", "flagged", "passed as a white cell", "passed as any class"]),
    ]
    for name, (a, b) in rows.items():
        called = ", ".join(f"{c} {n}" for c, n in a["labels"].items())
        lines.append(
            table_row(
                [
                    name,
                    a["n"],
                    f"{a['flagged']:.1%} / {b['flagged']:.1%}",
                    f"{a['white_cell']:.1%} / {b['white_cell']:.1%}",
                    f"{a['any_class']:.1%} / {b['any_class']:.1%}"
                    + (f" ({called})" if called else ""),
                ]
            )
        )
    write_section("non_cells", "\n".join(lines))


if __name__ == "__main__":
    main()
