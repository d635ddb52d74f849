"""Smear-field benchmark on BCCD (issue: smear analysis).

White-cell detection precision/recall at IoU >= 0.5 against the Pascal VOC boxes, red-cell and
platelet count errors per field, seconds per field, and the classifier's accuracy on the white
cells found, against labels.csv (fields with one labelled type; neutrophil, eosinophil,
lymphocyte, monocyte). Parameters were chosen on the even-numbered fields: the odd-numbered
ones are reported apart as the held-out half.

    python benchmarks/bench_smear.py [--data ../shared/data/bccd] [--model DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from _common import DEFAULT_PBC, machine, write_section

from hematovision.inference import Classifier
from hematovision.smear import analyze_smear, load_smear_classifier

DEFAULT_BCCD = DEFAULT_PBC.parent / "bccd"
FOUR = ("neutrophil", "eosinophil", "lymphocyte", "monocyte")


def voc_boxes(path: Path) -> dict[str, list]:
    out: dict[str, list] = {"WBC": [], "RBC": [], "Platelets": []}
    for obj in ET.parse(path).getroot().iter("object"):
        b = obj.find("bndbox")
        out.setdefault(obj.find("name").text.strip(), []).append(
            [float(b.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax")])
    return out


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def match(found, truth, threshold=0.5):
    """Greedy one-to-one matching by IoU; returns [(found index, truth index)]."""
    pairs = sorted(((iou(f, t), i, j) for i, f in enumerate(found) for j, t in enumerate(truth)),
                   reverse=True)
    used_f, used_t, matched = set(), set(), []
    for score, i, j in pairs:
        if score >= threshold and i not in used_f and j not in used_t:
            used_f.add(i)
            used_t.add(j)
            matched.append((i, j))
    return matched


def field_labels(path: Path) -> dict[str, str]:
    out = {}
    with open(path) as fh:
        for row in csv.DictReader(fh):
            kinds = [k.strip().lower() for k in row["category"].split(",") if k.strip()]
            if len(kinds) == 1:
                out[f"BloodImage_{int(row['image']):05d}" if row["image"].isdigit()
                    else row["image"]] = kinds[0]
    return out


def run(data: Path, classifier: Classifier) -> dict:
    labels = field_labels(data / "labels.csv")
    halves = {"tuning (even fields)": {}, "held out (odd fields)": {}}
    for h in halves.values():
        h.update(tp=0, fp=0, fn=0, rbc_err=[], plt_err=[], seconds=[], correct=0, classified=0,
                 confusion={})
    for image in sorted((data / "JPEGImages").glob("*.jpg")):
        number = int(image.stem.split("_")[-1])
        h = halves["tuning (even fields)" if number % 2 == 0 else "held out (odd fields)"]
        truth = voc_boxes(data / "Annotations" / f"{image.stem}.xml")
        t = time.perf_counter()
        result = analyze_smear(image, classifier)
        h["seconds"].append(time.perf_counter() - t)
        found = [c.box for c in result.white_cells]
        pairs = match(found, truth["WBC"])
        h["tp"] += len(pairs)
        h["fp"] += len(found) - len(pairs)
        h["fn"] += len(truth["WBC"]) - len(pairs)
        h["rbc_err"].append(result.red_cells - len(truth["RBC"]))
        h["plt_err"].append(result.platelets - len(truth.get("Platelets", [])))
        kind = labels.get(image.stem)
        if kind in FOUR:
            for i, _ in pairs:
                predicted = result.white_cells[i].label
                h["classified"] += 1
                h["correct"] += predicted == kind
                h["confusion"].setdefault(kind, {}).setdefault(predicted, 0)
                h["confusion"][kind][predicted] += 1
    out = {}
    for name, h in halves.items():
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
            "confusion": h["confusion"],
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=DEFAULT_BCCD)
    ap.add_argument("--model", type=Path, default=None, help="default: the bundled smear model")
    ap.add_argument("--precision", choices=["fp32", "int8"], default=None)
    args = ap.parse_args()
    smear_model = load_smear_classifier(args.model, args.precision)
    pbc_only = Classifier.load()  # the default single-cell model, trained on PBC alone: "before"
    results = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "models": {}}
    for name, classifier in (("before", pbc_only), ("after", smear_model)):
        results["models"][name] = {"model": f"{classifier.name} {classifier.version} "
                                            f"({classifier.precision})",
                                   "halves": run(args.data, classifier)}
    out = Path(__file__).with_name("out")
    out.mkdir(exist_ok=True)
    (out / "smear.json").write_text(json.dumps(results, indent=1))
    after = results["models"]["after"]["halves"]
    lines = ["## Smear analysis on BCCD (issue 5)\n",
             f"Machine: {results['machine']}. Measured {results['date']}. Parameters of the detector "
             f"were chosen on the even-numbered fields; the odd-numbered ones are held out.\n",
             "| fields | white-cell recall | precision (IoU ≥ 0.5) | red cells: MAE (bias) per field "
             "| platelets: MAE | seconds per field (detect + classify) |",
             "|---|---|---|---|---|---|"]
    for half, r in after.items():
        lines.append(f"| {half}: {r['fields']} | {r['recall']:.3f} | {r['precision']:.3f} | "
                     f"{r['red_cell_mae']:.1f} ({r['red_cell_bias']:+.1f}) | {r['platelet_mae']:.2f} | "
                     f"{r['seconds_per_field']:.2f} |")
    lines += ["\nWhite-cell type on the cells found (fields whose labels.csv row names one of "
              "neutrophil, eosinophil, lymphocyte, monocyte):\n",
              "| classifier | tuning (even fields) | held out (odd fields) |", "|---|---|---|"]
    for name, m in results["models"].items():
        h = m["halves"]
        cells = [f"{100 * r['white_cell_accuracy']:.1f}% of {r['white_cells_classified']}"
                 for r in h.values()]
        lines.append(f"| {name}: {m['model']} | {cells[0]} | {cells[1]} |")
    write_section("smear", "\n".join(lines))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
