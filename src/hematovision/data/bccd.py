"""The BCCD smear-field data set: Pascal VOC boxes, the white-cell labels, box matching.

BCCD (Shenggan/BCCD_Dataset, MIT): 640x480 fields in ``JPEGImages/``, boxes labelled WBC, RBC
and Platelets in ``Annotations/*.xml``; ``labels.csv`` names the white-cell type of each field.
Fields are split by number: even-numbered ones tune the smear detector, odd ones are held out.
"""

from __future__ import annotations

import csv
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

from ..errors import HematoVisionError

# the white-cell types labels.csv names (one per field; a few fields hold two and are left out)
WBC_TYPES = ("neutrophil", "eosinophil", "lymphocyte", "monocyte")


def voc_boxes(path: Path) -> dict[str, list[list[float]]]:
    """Boxes [xmin, ymin, xmax, ymax] by object name (WBC, RBC, Platelets) of one VOC file."""
    out: dict[str, list] = {"WBC": [], "RBC": [], "Platelets": []}
    for obj in ET.parse(path).getroot().iter("object"):
        b = obj.find("bndbox")
        out.setdefault(obj.find("name").text.strip(), []).append(
            [float(b.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax")]
        )
    return out


def check_folder(root: Path) -> Path:
    """``root`` if it is laid out as BCCD is, else one clear error naming what is missing."""
    root = Path(root)
    missing = [n for n in ("labels.csv", "JPEGImages", "Annotations") if not (root / n).exists()]
    if missing:
        raise HematoVisionError(f"{root} is not a BCCD folder: no {', '.join(missing)} in it")
    return root


def field_labels(path: Path) -> dict[str, str]:
    """Field name (``BloodImage_00001``) -> its one white-cell type, from labels.csv."""
    out = {}
    with open(path) as fh:
        reader = csv.DictReader(fh)
        if not {"image", "category"} <= set(reader.fieldnames or ()):
            raise HematoVisionError(f"{path} needs the columns 'image' and 'category'")
        for row in reader:
            kinds = [k.strip().lower() for k in row["category"].split(",") if k.strip()]
            if len(kinds) == 1:
                out[
                    f"BloodImage_{int(row['image']):05d}"
                    if row["image"].isdigit()
                    else row["image"]
                ] = kinds[0]
    return out


def fields(root: Path, parity: str = "all") -> Iterator[Path]:
    """The field images, in order: ``even`` (tuning), ``odd`` (held out) or ``all``."""
    for image in sorted((Path(root) / "JPEGImages").glob("*.jpg")):
        number = int(image.stem.split("_")[-1])
        if parity == "all" or number % 2 == (parity == "odd"):
            yield image


def annotation(root: Path, image: Path) -> dict[str, list[list[float]]]:
    """The VOC boxes of a field image."""
    return voc_boxes(Path(root) / "Annotations" / f"{image.stem}.xml")


def iou(a, b) -> float:
    """Intersection over union of two boxes [x1, y1, x2, y2]."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def match(found, truth, threshold: float = 0.5) -> list[tuple[int, int]]:
    """Greedy one-to-one matching by IoU; returns [(found index, truth index)]."""
    pairs = sorted(
        ((iou(f, t), i, j) for i, f in enumerate(found) for j, t in enumerate(truth)), reverse=True
    )
    used_f, used_t, matched = set(), set(), []
    for score, i, j in pairs:
        if score >= threshold and i not in used_f and j not in used_t:
            used_f.add(i)
            used_t.add(j)
            matched.append((i, j))
    return matched
