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
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from hematovision.artifact import ModelArtifact
from hematovision.evaluation.shifts import zoomed
from hematovision.models import create_model, preprocess_spec
from hematovision.preprocess import model_view, normalize, resize, to_rgb
from hematovision.training.augment import augment_batch
from hematovision.training.loop import lr_schedule

from _common import machine, write_section

ZOOMS = ("1.0", "1.5", "2.0")
RECIPES = ("lab", "lab-cut")
PER_CLASS = 720
WEIGHTS = "imagenet_fp16.pt"


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
        _write_jpegs(out / f"{name}.npz", arrays, [classes.index(f["label"]) for f in entries])

    save("train", (to_rgb(root / f["path"]) for f in train), train)
    pictures = [to_rgb(root / f["path"]) for f in val]
    for z in ZOOMS:
        save(f"zoom{z}", (zoomed(p, float(z)) for p in pictures), val)
    model = create_model("efficientnet_lite0", num_classes=8, pretrained=True)
    weights = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    torch.save({k: v for k, v in weights.items() if not k.startswith("classifier.")}, out / WEIGHTS)
    print(f"packed {len(train)} training and {len(val)} validation cells into {out}")


def _write_jpegs(path: Path, arrays, labels) -> None:
    blobs = []
    for array in arrays:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, "JPEG", quality=90)
        blobs.append(buffer.getvalue())
    offsets = np.cumsum([0] + [len(b) for b in blobs])
    data = np.frombuffer(b"".join(blobs), np.uint8)
    np.savez(path, data=data, offsets=offsets, labels=np.array(labels))


def _read_jpegs(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    saved = np.load(path)
    raw, offsets = saved["data"].tobytes(), saved["offsets"]
    arrays = [
        np.asarray(Image.open(io.BytesIO(raw[a:b])).convert("RGB"))
        for a, b in zip(offsets[:-1], offsets[1:])
    ]
    return torch.from_numpy(np.stack(arrays)), torch.from_numpy(saved["labels"]).long()


def fit(x, y, spec, weights, recipe: str, seed: int, device: str, epochs=8, batch=32, lr=1e-3):
    """The bundled model's recipe on (x, y): warm-up for one epoch, then cosine decay."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = create_model("efficientnet_lite0", num_classes=8, pretrained=False)
    model.load_state_dict({k: v.float() for k, v in weights.items()}, strict=False)
    model.to(device)
    steps_per_epoch = len(x) // batch
    total = epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule(steps_per_epoch, total))
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        for i in range(steps_per_epoch):
            chosen = order[i * batch : (i + 1) * batch]
            inputs = augment_batch(x[chosen], spec, gen, recipe).to(device)
            loss = F.cross_entropy(model(inputs), y[chosen].to(device), label_smoothing=0.1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval()


@torch.no_grad()
def labels_of(model, x, spec, device: str) -> torch.Tensor:
    out = []
    for start in range(0, len(x), 256):
        inputs = torch.from_numpy(normalize(x[start : start + 256].numpy(), spec))
        out.append(model(inputs.to(device)).argmax(1).cpu())
    return torch.cat(out)


def train(packed: Path, device: str, seeds: int) -> None:
    spec = preprocess_spec("efficientnet_lite0", 128, framing="cell")
    x, y = _read_jpegs(packed / "train.npz")
    weights = torch.load(packed / WEIGHTS, weights_only=True)
    zoom = {z: _read_jpegs(packed / f"zoom{z}.npz") for z in ZOOMS}
    truth = zoom["1.0"][1]
    rows = []
    for seed in range(seeds):
        for recipe in RECIPES:
            start = time.perf_counter()
            model = fit(x, y, spec, weights, recipe, seed, device)
            seen = {z: labels_of(model, images, spec, device) for z, (images, _) in zoom.items()}
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
    args = ap.parse_args()
    if args.step == "pack":
        pack(args.run, args.out)
    else:
        train(args.packed, args.device, args.seeds)


if __name__ == "__main__":
    main()
