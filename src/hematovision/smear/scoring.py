"""Score the smear analysis on BCCD: detection against the VOC boxes, counts, white-cell type."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from ..data.bccd import WBC_TYPES, annotation, field_labels, fields, match
from . import analyze_smear

HALVES = {"even": "tuning (even fields)", "odd": "held out (odd fields)"}


def score_fields(data: Path, classifier) -> dict:
    """Per half (even: tuning, odd: held out): white-cell recall and precision at IoU >= 0.5,
    red-cell and platelet count errors per field, seconds per field, and the classifier's
    accuracy (and share wrong and not flagged) on the white cells found in fields with one
    labelled type."""
    labels = field_labels(Path(data) / "labels.csv")
    out = {}
    for parity, name in HALVES.items():
        h = dict(
            tp=0,
            fp=0,
            fn=0,
            rbc_err=[],
            plt_err=[],
            seconds=[],
            correct=0,
            wrong_unflagged=0,
            classified=0,
            confusion={},
        )
        for image in fields(data, parity):
            _score_field(h, image, annotation(data, image), labels.get(image.stem), classifier)
        out[name] = {
            "fields": len(h["seconds"]),
            "recall": h["tp"] / max(1, h["tp"] + h["fn"]),
            "precision": h["tp"] / max(1, h["tp"] + h["fp"]),
            "red_cell_mae": float(np.mean(np.abs(h["rbc_err"]))),
            "red_cell_bias": float(np.mean(h["rbc_err"])),
            "platelet_mae": float(np.mean(np.abs(h["plt_err"]))),
            "seconds_per_field": float(np.median(h["seconds"])),
            "white_cell_accuracy": h["correct"] / max(1, h["classified"]),
            "white_cells_classified": h["classified"],
            "white_cells_wrong_unflagged": h["wrong_unflagged"] / max(1, h["classified"]),
            "confusion": h["confusion"],
        }
    return out


def _score_field(h: dict, image: Path, truth: dict, kind: str | None, classifier) -> None:
    start = time.perf_counter()
    result = analyze_smear(image, classifier)
    h["seconds"].append(time.perf_counter() - start)
    found = [c.box for c in result.white_cells]
    pairs = match(found, truth["WBC"])
    h["tp"] += len(pairs)
    h["fp"] += len(found) - len(pairs)
    h["fn"] += len(truth["WBC"]) - len(pairs)
    h["rbc_err"].append(result.red_cells - len(truth["RBC"]))
    h["plt_err"].append(result.platelets - len(truth.get("Platelets", [])))
    if kind in WBC_TYPES:
        for i, _ in pairs:
            predicted = result.white_cells[i].label
            h["classified"] += 1
            h["correct"] += predicted == kind
            h["wrong_unflagged"] += predicted != kind and not result.white_cells[i].uncertain
            h["confusion"].setdefault(kind, {}).setdefault(predicted, 0)
            h["confusion"][kind][predicted] += 1


def _scaled(z: float):
    def shift(img):
        return img.resize((round(img.width * z), round(img.height * z)), Image.BILINEAR), z

    return shift


def colour_cast(gains):
    """A shift (image -> (image, scale 1)) that scales each channel by ``gains``."""

    def shift(img):
        arr = np.asarray(img, np.float32) * np.asarray(gains, np.float32)
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)), 1.0

    return shift


def _pale(img):
    return Image.blend(img, Image.new("RGB", img.size, (250, 250, 250)), 0.35), 1.0


def _blur(img):
    return img.filter(ImageFilter.GaussianBlur(1.5)), 1.0


def _jpeg(img):
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=30)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"), 1.0


# how other labs' fields differ from BCCD's: magnification, stain colour, focus, compression
SHIFTS = {
    "as recorded": lambda img: (img, 1.0),
    "0.5x": _scaled(0.5),
    "0.75x": _scaled(0.75),
    "1.5x": _scaled(1.5),
    "bluish cast": colour_cast((0.88, 0.95, 1.1)),
    "yellowish cast": colour_cast((1.08, 1.04, 0.82)),
    "pale stain": _pale,
    "blur": _blur,
    "JPEG quality 30": _jpeg,
}


def detection_under_shifts(data: Path, parity: str = "odd", params=None, detector=None) -> dict:
    """White-cell recall and precision (IoU >= 0.5) and the red-cell count's ratio to the
    annotated one, on BCCD fields shifted as ``SHIFTS`` (the boxes scaled with them).
    ``params``: fixed detector parameters (None: each field's own, ``field_params``);
    ``detector``: another one, H x W x 3 array -> ``Detections`` (default ``locate_cells``)."""
    from .detect import locate_cells

    detector = detector or (lambda rgb: locate_cells(rgb, params))
    out = {}
    for name, shift in SHIFTS.items():
        tp = fp = fn = 0
        ratios = []
        for image in fields(data, parity):
            picture, z = shift(Image.open(image).convert("RGB"))
            truth = annotation(data, image)
            found = detector(np.asarray(picture))
            wbc = [[v * z for v in box] for box in truth["WBC"]]
            pairs = match(found.white_cells, wbc)
            tp, fp, fn = (
                tp + len(pairs),
                fp + len(found.white_cells) - len(pairs),
                fn + len(wbc) - len(pairs),
            )
            if truth["RBC"] and found.red_cells is not None:
                ratios.append(len(found.red_cells) / len(truth["RBC"]))
        out[name] = {
            "recall": tp / max(1, tp + fn),
            "precision": tp / max(1, tp + fp),
            "red_cells_found_per_annotated": float(np.median(ratios)) if ratios else None,
        }
    return out


def centred_cell(image: Path, params=None, detector=None) -> tuple[bool, int]:
    """A single-cell image (PBC, LISC) read as a field: whether exactly one white-cell box holds
    the image's centre (the cell it was cut around), and how many boxes were found.
    ``params``: a function of the field giving the detector's parameters (None: its own);
    ``detector``: another one, as ``detection_under_shifts`` takes."""
    from .detect import locate_cells

    rgb = np.asarray(Image.open(image).convert("RGB"))
    height, width = rgb.shape[:2]
    if detector is None:
        boxes = locate_cells(rgb, params(rgb) if params else None).white_cells
    else:
        boxes = detector(rgb).white_cells
    centred = [b for b in boxes if b[0] <= width / 2 <= b[2] and b[1] <= height / 2 <= b[3]]
    return len(centred) == 1, len(boxes)


def empty_quarters(data: Path, parity: str, params) -> tuple[int, int]:
    """BCCD's field quarters at least 20 px from every annotated white cell: how many, and the
    white cells found in them (false, but for the cells BCCD's boxes missed)."""
    from .detect import locate_cells

    quarters = found = 0
    for image in fields(data, parity):
        rgb = np.asarray(Image.open(image).convert("RGB"))
        h, w = rgb.shape[0] // 2, rgb.shape[1] // 2
        boxes = annotation(data, image)["WBC"]
        for y0, x0 in ((0, 0), (0, w), (h, 0), (h, w)):
            if any(
                b[0] < x0 + w + 20 and b[2] > x0 - 20 and b[1] < y0 + h + 20 and b[3] > y0 - 20
                for b in boxes
            ):
                continue
            quarters += 1
            found += len(locate_cells(rgb[y0 : y0 + h, x0 : x0 + w], params).white_cells)
    return quarters, found
