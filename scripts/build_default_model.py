"""Rebuild the bundled default model and its sample images, in one command:

    .venv/bin/python scripts/build_default_model.py [--data ../shared/data/pbc] [--run runs/default]

1. trains EfficientNet-Lite0 (ImageNet weights) on PBC at 128 px: AdamW + cosine, label smoothing
   0.1, 10 epochs, batch 32, stratified 80/10/10 split with seed 0 (skipped with --skip-train);
2. exports it with calibration, out-of-distribution score and int8 (``hematovision export``);
3. copies the artifact into src/hematovision/assets/default_model/ and picks 3 test-split images
   per class as samples (the first, by a seeded shuffle, that the model classifies correctly and
   with confidence: they are demo images, not a benchmark).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

from hematovision.artifact import RunDir
from hematovision.export import export_run
from hematovision.inference import Classifier
from hematovision.training import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "src" / "hematovision" / "assets"
RECIPE = dict(
    arch="efficientnet_lite0",
    pretrained=True,
    epochs=10,
    batch_size=32,
    image_size=128,
    lr=1e-3,
    label_smoothing=0.1,
    val_fraction=0.1,
    test_fraction=0.1,
    seed=0,
)


def pick_samples(run: Path, data: Path, classifier: Classifier, per_class: int = 3) -> list[dict]:
    manifest = RunDir(run).manifest()
    rng = np.random.default_rng(0)
    chosen = []
    for cls in manifest.classes:
        files = [f for f in manifest.entries("test") if f["label"] == cls]
        picked = 0
        for i in rng.permutation(len(files)):
            path = data / files[i]["path"]
            pred = classifier.predict(path)[0]
            if pred.label == cls and not pred.uncertain:
                chosen.append({"class": cls, "source": files[i]["path"], "path": path})
                picked += 1
                if picked == per_class:
                    break
    return chosen


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "pbc")
    ap.add_argument("--run", type=Path, default=ROOT / "runs" / "default")
    ap.add_argument("--skip-train", action="store_true", help="export an existing --run")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--no-int8", action="store_true", help="ship only the fp32 model")
    ap.add_argument("--provenance", help="a note on how the run was made, kept in model.json")
    args = ap.parse_args()
    if not args.skip_train:
        train(
            TrainConfig(
                data=str(args.data), out=str(args.run), device=args.device, overwrite=True, **RECIPE
            )
        )
    artifact = export_run(
        args.run,
        int8=not args.no_int8,
        data_dir=args.data,
        overwrite=True,
        provenance=args.provenance,
    )
    target = ASSETS / "default_model"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(artifact.path, target)
    samples = ASSETS / "samples"
    shutil.rmtree(samples, ignore_errors=True)
    samples.mkdir(parents=True)
    lines = [
        "# Sample images",
        "",
        "Real single-cell images from the PBC data set, from the held-out test split of the "
        'bundled model: Acevedo et al., "A dataset of microscopic peripheral blood cell '
        'images for development of automatic recognition systems", Data in Brief 30 (2020) '
        "105474, doi:10.17632/snkd93bnjr.1, licensed CC BY 4.0. Unmodified.",
        "",
        "| file | class | original file |",
        "|---|---|---|",
    ]
    for s in pick_samples(args.run, args.data, Classifier.load(target)):
        name = f"{s['class']}_{Path(s['source']).name}"
        shutil.copy(s["path"], samples / name)
        lines.append(f"| {name} | {s['class']} | {s['source']} |")
    (samples / "ATTRIBUTION.md").write_text("\n".join(lines) + "\n")
    print(f"default model in {target}; {len(lines) - 6} samples in {samples}")


if __name__ == "__main__":
    main()
