"""Does a cell keep its class at 1.5-2x zoom? The lab recipe against lab-cut (issue 11).

At 1.5-2x the training lab's zoom a camera shows less round a cell: canonical framing still
finds the nucleus and frames it at the same size, but the frame's edges lie outside the source
image and come out flat (the image's median colour). ``lab-cut`` teaches that look (half of the
frames cut close round the cell, ``augment.random_edge_cut``). Both recipes are trained on the
same cells with the same seeds (bundled model's recipe: EfficientNet-Lite0, ImageNet weights,
128 px, 8 epochs, AdamW 1e-3, label smoothing 0.1), on a class-capped part of the bundled
model's training split (720 per class, every LISC and BCCD cell kept), and scored on PBC
validation cells (never the test split) at 1x, 1.5x and 2x zoom: agreement with the class at
1x, and accuracy.

Two steps, so the training can run where a GPU is: ``pack`` writes the cells (about 30 MB)
and the ImageNet weights as float16 (9.5 MB; a machine without the weights package, or without
a network, needs them):

    python benchmarks/bench_edge_cut.py pack --run runs/default --out bench-edge-cut
    python benchmarks/bench_edge_cut.py train --packed bench-edge-cut [--device cuda]

The table in RESULTS.md was made before the training loop moved to ``_packed.fit`` (shared
with bench_recipes.py), which draws each batch's augmentation from a generator of its own in a
worker process: a re-run gives other numbers, within the seeds' spread.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from _packed import (
    WEIGHTS,
    fit,
    logits_and_features,
    read_jpegs,
    save_imagenet_weights,
    write_jpegs,
)
from hematovision.artifact import ModelArtifact
from hematovision.evaluation.shifts import zoomed
from hematovision.models import preprocess_spec
from hematovision.preprocess import model_view, resize, to_rgb

from _common import machine, write_section

ZOOMS = ("1.0", "1.5", "2.0")
RECIPES = ("lab", "lab-cut")
PER_CLASS = 720


def pack(run: Path, out: Path) -> None:
    """The training cells and the zoomed validation cells, framed at 128 px, as JPEG (q 90)."""
    artifact = ModelArtifact.load(run / "artifact")
    spec, classes = artifact.preprocess, artifact.classes
    split = json.loads((run / "split.json").read_text())
    root, files = Path(split["data_root"]), split["files"]
    rng = np.random.default_rng(0)
    train = []
    for name in classes:
        mine = [f for f in files if f["split"] == "train" and f["label"] == name]
        other = [f for f in mine if f["lab"] != "pbc"]
        pbc = [f for f in mine if f["lab"] == "pbc"]
        train += other + [
            pbc[i] for i in rng.permutation(len(pbc))[: max(0, PER_CLASS - len(other))]
        ]
    val = [f for f in files if f["split"] == "val" and f["lab"] == "pbc"][::2][:500]
    out.mkdir(parents=True, exist_ok=True)

    def framed(picture):
        return resize(model_view(picture, spec)[0], spec)

    def save(name, pictures, entries):
        arrays = [framed(p) for p in pictures]
        write_jpegs(out / f"{name}.npz", arrays, [classes.index(f["label"]) for f in entries])

    save("train", (to_rgb(root / f["path"]) for f in train), train)
    pictures = [to_rgb(root / f["path"]) for f in val]
    for z in ZOOMS:
        save(f"zoom{z}", (zoomed(p, float(z)) for p in pictures), val)
    save_imagenet_weights(out)
    print(f"packed {len(train)} training and {len(val)} validation cells into {out}")


def train(packed: Path, device: str, seeds: int, workers: int) -> None:
    spec = preprocess_spec("efficientnet_lite0", 128, framing="cell")
    x, y, _ = read_jpegs(packed / "train.npz")
    weights = torch.load(packed / WEIGHTS, weights_only=True)
    zoom = {z: read_jpegs(packed / f"zoom{z}.npz")[:2] for z in ZOOMS}
    truth = zoom["1.0"][1]
    rows = []
    for seed in range(seeds):
        for recipe in RECIPES:
            start = time.perf_counter()
            model = fit(x, y, spec, weights, recipe, seed, device, workers=workers)
            seen = {
                z: torch.from_numpy(logits_and_features(model, images, spec, device)[0].argmax(1))
                for z, (images, _) in zoom.items()
            }
            row = {"recipe": recipe, "seed": seed, "seconds": time.perf_counter() - start}
            for z in ZOOMS:
                row[f"accuracy {z}"] = float((seen[z] == truth).float().mean())
                row[f"agreement {z}"] = float((seen[z] == seen["1.0"]).float().mean())
            rows.append(row)
            print(json.dumps(row), flush=True)
    report(rows, device, len(x), len(truth))


def report(rows, device: str, n_train: int, n_val: int) -> None:
    where = torch.cuda.get_device_name() if device == "cuda" else "the CPU"
    lines = [
        "## A cell at 1.5-2x zoom: edge-cut augmentation (issue 11)\n",
        f"Machine: {machine()}; trained on {where}. {n_train} training cells of the bundled "
        f"model's split (the three labs, at most {PER_CLASS} per class), 8 epochs at 128 px; "
        f"{n_val} PBC validation cells at each zoom (re-scaled and re-cropped to the same "
        f"size, as another camera shows them). Measured {time.strftime('%Y-%m-%d')}.\n",
        "| recipe | seed | accuracy 1x | agreement with 1x at 1.5x | at 2x | accuracy 1.5x | 2x |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['recipe']} | {r['seed']} | {r['accuracy 1.0']:.1%} | "
            f"{r['agreement 1.5']:.1%} | {r['agreement 2.0']:.1%} | "
            f"{r['accuracy 1.5']:.1%} | {r['accuracy 2.0']:.1%} |"
        )
    write_section("edge_cut", "\n".join(lines))
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="step", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--run", type=Path, default=Path("runs/default"))
    p.add_argument("--out", type=Path, default=Path("bench-edge-cut"))
    t = sub.add_parser("train")
    t.add_argument("--packed", type=Path, default=Path("bench-edge-cut"))
    t.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    t.add_argument("--seeds", type=int, default=2)
    t.add_argument("--workers", type=int, default=12, help="processes doing the augmentation")
    args = ap.parse_args()
    if args.step == "pack":
        pack(args.run, args.out)
    else:
        train(args.packed, args.device, args.seeds, args.workers)


if __name__ == "__main__":
    main()
