"""Rebuild the bundled smear model, in one command:

    .venv/bin/python scripts/build_smear_model.py --base runs/pbc [--run runs/smear]

``--base``: a PBC-only run, round 1's recipe (hematovision train --data ../shared/data/pbc
--arch efficientnet_lite0 --pretrained --epochs 10 --label-smoothing 0.1 --val-fraction 0.1
--test-fraction 0.1 --out runs/pbc); the bundled default model is now trained on three labs.

1. cuts the white cells of the even-numbered BCCD fields as analyze_smear cuts them for an
   unframed classifier (``hematovision data crops``);
2. continues the base run (`--init`, same PBC split) for 3 epochs on 150 PBC images
   per class plus the crops (8 times each), lr 3e-4, label smoothing 0.1;
3. exports it (calibration, OOD score, int8) and ships the int8 model and its model.json in
   src/hematovision/assets/smear_model/, with its accuracy on the held-out odd BCCD fields.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from hematovision.errors import exit_on_error
from hematovision.export import export_run
from hematovision.inference import Classifier
from hematovision.smear.crops import bccd_white_cells
from hematovision.smear.detect import DEFAULT_PARAMS
from hematovision.smear.scoring import score_fields
from hematovision.training import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]

RECIPE = dict(
    arch="efficientnet_lite0",
    epochs=3,
    lr=3e-4,
    warmup_epochs=0.3,
    label_smoothing=0.1,
    max_per_class=150,
    extra_repeat=8,
    val_fraction=0.1,
    test_fraction=0.1,
    seed=0,
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pbc", type=Path, default=ROOT.parent / "shared" / "data" / "pbc")
    ap.add_argument("--bccd", type=Path, default=ROOT.parent / "shared" / "data" / "bccd")
    ap.add_argument(
        "--base",
        type=Path,
        default=ROOT / "runs" / "pbc",
        help="a PBC-only run of round 1's recipe (see above)",
    )
    ap.add_argument("--run", type=Path, default=ROOT / "runs" / "smear")
    ap.add_argument("--skip-train", action="store_true", help="export an existing --run")
    ap.add_argument("--provenance", help="a note on how the run was made, kept in model.json")
    args = ap.parse_args()
    crops = args.run.parent / "bccd-crops-even"
    if not args.skip_train:
        shutil.rmtree(crops, ignore_errors=True)
        bccd_white_cells(args.bccd, crops, parity="even", crop_factor=DEFAULT_PARAMS.crop_factor)
        train(
            TrainConfig(
                data=str(args.pbc),
                out=str(args.run),
                init=str(args.base),
                extra_train=str(crops),
                overwrite=True,
                **RECIPE,
            )
        )
    artifact = export_run(
        args.run, int8=True, data_dir=args.pbc, overwrite=True, provenance=args.provenance
    )
    held_out = score_fields(args.bccd, Classifier.load(artifact.path, precision="int8"))[
        "held out (odd fields)"
    ]
    target = ROOT / "src" / "hematovision" / "assets" / "smear_model"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    shutil.copy(artifact.file("int8"), target / "model.int8.onnx")
    artifact.name = "hematovision-smear-" + artifact.architecture
    artifact.files = {"int8": artifact.files["int8"]}  # int8 only: a small package
    artifact.metrics["bccd_held_out_fields"] = {
        "white_cell_accuracy": held_out["white_cell_accuracy"],
        "white_cells": held_out["white_cells_classified"],
        "fields": held_out["fields"],
        "classes": "neutrophil, eosinophil, lymphocyte, monocyte (labels.csv)",
    }
    artifact.save(target)
    print(
        f"smear model in {target}: BCCD held-out white-cell accuracy "
        f"{100 * held_out['white_cell_accuracy']:.1f}%"
    )


if __name__ == "__main__":
    exit_on_error(main)
