"""White-cell crops from BCCD smear fields, as a class-per-folder data set for training.

Each white cell the smear detector finds (and that matches an annotated WBC box at IoU >= 0.5)
in a field whose labels.csv row names one type is cropped exactly as `analyze_smear` crops it
for the classifier. Only the even-numbered fields are used by default: the odd ones stay held
out for benchmarks/bench_smear.py.

    python scripts/make_bccd_crops.py OUT [--data ../shared/data/bccd] [--size 128] [--parity even]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from hematovision.data.bccd import WBC_TYPES, annotation, field_labels, fields, match
from hematovision.smear import crop_cell, locate_cells

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "bccd")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--parity", choices=["even", "odd", "all"], default="even")
    args = ap.parse_args()
    labels = field_labels(args.data / "labels.csv")
    counts: dict[str, int] = {}
    for image in fields(args.data, args.parity):
        kind = labels.get(image.stem)
        if kind not in WBC_TYPES:
            continue
        picture = Image.open(image).convert("RGB")
        boxes = locate_cells(np.asarray(picture)).white_cells
        truth = annotation(args.data, image)["WBC"]
        for i, _ in match(boxes, truth):
            folder = args.out / kind
            folder.mkdir(parents=True, exist_ok=True)
            crop = crop_cell(picture, boxes[i]).resize((args.size, args.size), Image.BILINEAR)
            crop.save(folder / f"bccd_{image.stem}_{i}.png")
            counts[kind] = counts.get(kind, 0) + 1
    print(counts)


if __name__ == "__main__":
    main()
