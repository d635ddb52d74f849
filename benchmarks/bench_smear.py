"""Smear-field benchmark on BCCD (issue: smear analysis).

White-cell detection precision/recall at IoU >= 0.5 against the Pascal VOC boxes, red-cell and
platelet count errors per field, seconds per field, and the classifier's accuracy on the white
cells found, against labels.csv (fields with one labelled type; neutrophil, eosinophil,
lymphocyte, monocyte). Parameters were chosen on the even-numbered fields: the odd-numbered
ones are reported apart as the held-out half. Beside them, each classifier on LISC's cells, a
lab it may never have seen (the bundled default model trained on LISC; the smear model that
shipped until 2026-11-28, or any ``--model``, did not): what a lab that installs it gets.

    python benchmarks/bench_smear.py [--data ../shared/data/bccd] [--model DIR]
    # the former smear model, compared: its files from git, in a folder
    git archive 5af9392 src/hematovision/assets/smear_model | tar -x -C /tmp
    python benchmarks/bench_smear.py --model /tmp/src/hematovision/assets/smear_model
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench_crosslab import left_out_images, score
from hematovision.inference import Classifier
from hematovision.smear import load_smear_classifier
from hematovision.smear.detect import DEFAULT_PARAMS
from hematovision.smear.scoring import SHIFTS, detection_under_shifts, score_fields

from _common import DEFAULT_PBC, machine, table_head, table_row, write_section

DEFAULT_BCCD = DEFAULT_PBC.parent / "bccd"
LISC = DEFAULT_PBC.parent / "lisc"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=DEFAULT_BCCD)
    ap.add_argument("--model", type=Path, default=None, help="another model, compared too")
    ap.add_argument("--precision", choices=["fp32", "int8"], default=None)
    args = ap.parse_args()
    candidates = {"bundled default model": Classifier.load()}
    if args.model:
        other = load_smear_classifier(args.model, precision=args.precision)
        candidates[f"--model {args.model.name}"] = other
    results = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "models": {}}
    for name, classifier in candidates.items():
        results["models"][name] = {
            "model": f"{classifier.name} {classifier.version} ({classifier.precision}, "
            f"{classifier.engine_info()['name']})",
            "halves": score_fields(args.data, classifier),
            "lisc": score(classifier, *left_out_images(LISC, classifier.classes)),
        }
    out = Path(__file__).with_name("out")
    out.mkdir(exist_ok=True)
    (out / "smear.json").write_text(json.dumps(results, indent=1))
    after = results["models"]["bundled default model"]["halves"]
    lines = [
        "## Smear analysis on BCCD (issues 5 and 10)\n",
        f"Machine: {results['machine']}. Measured {results['date']}. Parameters of the detector "
        f"were chosen on the even-numbered fields; the odd-numbered ones are held out.\n",
        "| fields | white-cell recall | precision (IoU ≥ 0.5) | red cells: MAE (bias) per field "
        "| platelets: MAE | ms per field, median (decode, detect, classify) |",
        "|---|---|---|---|---|---|",
    ]
    for half, r in after.items():
        lines.append(
            f"| {half}: {r['fields']} | {r['recall']:.3f} | {r['precision']:.3f} | "
            f"{r['red_cell_mae']:.1f} ({r['red_cell_bias']:+.1f}) | {r['platelet_mae']:.2f} | "
            f"{1000 * r['seconds_per_field']:.0f} |"
        )
    lines += [
        "\nWhite-cell type on the cells found (fields whose labels.csv row names one of "
        "neutrophil, eosinophil, lymphocyte, monocyte): accuracy of the cells scored, and the "
        "share wrong and not flagged:\n",
        "| classifier | tuning (even fields) | held out (odd fields) | LISC cells |",
        "|---|---|---|---|",
    ]
    for name, m in results["models"].items():
        h = m["halves"]
        cells = [
            f"{100 * r['white_cell_accuracy']:.1f}% of {r['white_cells_classified']}, "
            f"{100 * r['white_cells_wrong_unflagged']:.1f}%"
            for r in h.values()
        ]
        lisc = m["lisc"]
        seen = " (trained on LISC)" if name == "bundled default model" else ""
        cells.append(
            f"{100 * lisc['accuracy']:.1f}% of {lisc['n']}, "
            f"{100 * lisc['wrong_unflagged']:.1f}%{seen}"
        )
        lines.append(table_row([f"{name}: {m['model']}", *cells]))
    write_section("smear", "\n".join(lines))
    shifts = {
        "each field's own scale": detection_under_shifts(args.data, "odd"),
        "BCCD's fixed parameters": detection_under_shifts(args.data, "odd", DEFAULT_PARAMS),
    }
    (out / "smear_shifts.json").write_text(json.dumps(shifts, indent=1))
    rows = [
        "## Smear detector under other labs' differences (issue 11)\n",
        f"Machine: {results['machine']}. The held-out odd BCCD fields, transformed as other "
        "labs' fields differ (the boxes transformed too); white-cell recall / precision at "
        "IoU >= 0.5, and red cells found per annotated red-cell box (BCCD does not box every "
        "red cell, so read it for its stability, not as an error).\n",
        *table_head(["shift", *shifts]),
    ]
    for name in SHIFTS:
        cells = [
            f"{r[name]['recall']:.3f} / {r[name]['precision']:.3f}, "
            f"red x{r[name]['red_cells_found_per_annotated']:.2f}"
            for r in shifts.values()
        ]
        rows.append(table_row([name, *cells]))
    write_section("smear_shifts", "\n".join(rows))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
