"""Single cells as other labs' stains, cameras and optics change them: the bundled model beside
another artifact (issue 11), cell by cell.

Two sets of cells: the white cells of BCCD's odd-numbered fields (held out from every bundled
build: only the even ones are trained on) and PBC test-split cells of ``--run`` (at most
PER_CLASS per class; the other model may have trained on a few of them if its split differed).
Each set as recorded and shifted as ``smear.scoring.SHIFTS`` shifts smear fields (colour casts,
a pale stain, blur, JPEG quality 30) plus a strong cast like a rapid stain's; for each model
and shift: accuracy, wrong and not flagged, flagged.

    python benchmarks/bench_cell_shifts.py --run runs/default-grey [--model runs/default-grey/artifact]
        [--section cell_shifts]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from bench_crosslab import score
from hematovision.artifact import RunDir
from hematovision.data import scan_folder
from hematovision.inference import Classifier
from hematovision.smear.crops import bccd_white_cells
from hematovision.smear.scoring import SHIFTS, colour_cast

from _common import DEFAULT_PBC, machine, write_section

OUT = Path(__file__).with_name("out") / "cell-shifts"
PER_CLASS = 60
# the smear benchmark's shifts but zoom (it has its own test), and a magenta-red cast beyond
# both of its casts, as a rapid stain's
CELL_SHIFTS = {k: f for k, f in SHIFTS.items() if not k.endswith("x")}
CELL_SHIFTS["strong cast"] = colour_cast((1.15, 0.78, 0.95))


def cell_sets(run: Path, classes: list[str]) -> dict[str, tuple[list[Path], np.ndarray]]:
    crops = OUT / "bccd-odd"
    if not crops.is_dir():
        bccd_white_cells(DEFAULT_PBC.parent / "bccd", crops, parity="odd", show_progress=False)
    folder = scan_folder(crops)
    bccd = (
        [Path(p) for p in folder.paths],
        np.array([classes.index(folder.classes[y]) for y in folder.labels]),
    )
    manifest = RunDir(run).manifest()
    root = Path(manifest.data_root)
    pbc_files = [f for f in manifest.entries("test") if f.get("lab") == "pbc"]
    rng = np.random.default_rng(0)
    chosen = []
    for name in classes:
        mine = [f for f in pbc_files if f["label"] == name]
        chosen += [mine[i] for i in rng.permutation(len(mine))[:PER_CLASS]]
    pbc = (
        [root / f["path"] for f in chosen],
        np.array([classes.index(f["label"]) for f in chosen]),
    )
    return {"BCCD odd fields": bccd, "PBC test": pbc}


def _cell(r: dict) -> str:
    return f"{r['accuracy']:.1%} / {r['wrong_unflagged']:.1%} / {r['flagged']:.0%}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, required=True, help="a run whose PBC test cells to use")
    ap.add_argument(
        "--model", type=Path, help="the artifact beside the bundled model (default: the run's)"
    )
    ap.add_argument(
        "--section",
        default="cell_shifts",
        help="the RESULTS.md section to write (a new name keeps an earlier comparison)",
    )
    args = ap.parse_args()
    models = {
        "bundled": Classifier.load(),
        "other": Classifier.load(args.model or args.run / "artifact"),
    }
    names = {"bundled": "the bundled model", "other": str(args.model or args.run / "artifact")}
    rows = []
    for set_name, (paths, labels) in cell_sets(args.run, models["bundled"].classes).items():
        pictures = [Image.open(p).convert("RGB") for p in paths]
        for shift, change in CELL_SHIFTS.items():
            seen = [change(p)[0] for p in pictures]
            for key, clf in models.items():
                row = {
                    "cells": set_name,
                    "n": len(labels),
                    "shift": shift,
                    "model": key,
                    **score(clf, seen, labels),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    lines = [
        "## Single cells under other labs' shifts: the bundled model beside another (issue 11)\n",
        f"`benchmarks/bench_cell_shifts.py --run {args.run}`; {machine()}. Other model: "
        f"{names['other']}. Accuracy / wrong and not flagged / flagged.\n",
        "| cells | shift | the bundled model | other model |",
        "|---|---|---|---|",
    ]
    for i in range(0, len(rows), 2):
        a, b = rows[i], rows[i + 1]
        lines.append(f"| {a['cells']} ({a['n']}) | {a['shift']} | {_cell(a)} | {_cell(b)} |")
    write_section(args.section, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
