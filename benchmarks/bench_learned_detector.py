"""A learned white-cell detector beside the classical one (issue 11, point 5: "measure both").

The learned one is a centre-point detector (CenterNet: Zhou et al., 2019, "Objects as
points"): the bundled model's backbone, EfficientNet-Lite0 from its ImageNet weights, to
stride 16, joined to its stride-8 features; a heatmap of white-cell centres and each centre's
box size. It is trained on BCCD's even fields only (the classical detector's tuning half) with
heavy scale augmentation (the field at 0.25-1.1x: white cells of about 30 to 220 px), flips and
quarter turns, and the `lab-strong` recipe's stain, colour and focus changes
(``training.augment.colour_jitter``). It sees every image at 0.55 of its pixels (the middle of
its training scales) and keeps centres above a threshold chosen on the even fields.

Both are scored as the classical one always was: BCCD's odd fields under the shifts of
``smear.scoring.SHIFTS`` (recall and precision at IoU >= 0.5), and PBC's and LISC's single-cell
images read as fields (bench_smear_labs.py's images: the centre cell found as exactly one box).

    python benchmarks/bench_learned_detector.py [--iterations 1500] [--fresh]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from bench_smear_labs import DATA, centred_share, sample
from hematovision.data.bccd import annotation, fields, match
from hematovision.models import create_model
from hematovision.smear.detect import Detections, locate_cells
from hematovision.smear.scoring import detection_under_shifts
from hematovision.training.augment import RECIPES, colour_jitter

from _common import machine, table_head, table_row, write_section

OUT = Path(__file__).with_name("out") / "learned-detector"
SIDE = 256  # training crops
STRIDE = 8
SCALES = (0.25, 1.1)  # the field's scale in training (log-uniform)
SEEN_AT = 0.55  # every image is shown at this share of its pixels
BATCH = 8
THRESHOLDS = (0.2, 0.3, 0.4, 0.5)
MEAN = STD = 0.5  # the backbone's normalisation (efficientnet_lite0's registry entry)


class CentreNet(nn.Module):
    """White-cell centres (a heatmap's logits) and box sizes (log of side / STRIDE)."""

    def __init__(self):
        super().__init__()
        base = create_model("efficientnet_lite0", num_classes=1, pretrained=True)
        self.stem = nn.Sequential(base.conv_stem, base.bn1, *base.blocks[:3])  # stride 8, 40
        self.deep = nn.Sequential(*base.blocks[3:5])  # stride 16, 112
        self.fuse = nn.Sequential(nn.Conv2d(152, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU())
        self.heat, self.size = nn.Conv2d(64, 1, 1), nn.Conv2d(64, 2, 1)
        nn.init.constant_(self.heat.bias, -2.19)  # a prior of 0.1 (CenterNet's)

    def forward(self, x):
        low = self.stem(x)
        deep = F.interpolate(self.deep(low), size=low.shape[-2:], mode="nearest")
        features = self.fuse(torch.cat([low, deep], 1))
        return self.heat(features)[:, 0], self.size(features)


def training_fields(data: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    return [
        (np.asarray(Image.open(p).convert("RGB")), np.array(annotation(data, p)["WBC"], float))
        for p in fields(data, "even")
    ]


def random_crop(rgb, boxes, rng):
    """The field at a random scale, cut to SIDE x SIDE (padded with its median colour), flipped
    and turned; its boxes moved with it (those whose centre stays inside)."""
    z = math.exp(rng.uniform(*np.log(SCALES)))
    h, w = rgb.shape[:2]
    size = (max(1, round(w * z)), max(1, round(h * z)))
    picture = np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR))
    canvas = np.empty((max(SIDE, size[1]), max(SIDE, size[0]), 3), np.uint8)
    canvas[:] = np.median(rgb.reshape(-1, 3), axis=0)
    canvas[: size[1], : size[0]] = picture
    x0 = rng.integers(0, canvas.shape[1] - SIDE + 1)
    y0 = rng.integers(0, canvas.shape[0] - SIDE + 1)
    crop = canvas[y0 : y0 + SIDE, x0 : x0 + SIDE]
    b = boxes * z - [x0, y0, x0, y0] if len(boxes) else np.zeros((0, 4))
    centre = (b[:, :2] + b[:, 2:]) / 2
    b = b[((centre >= 0) & (centre < SIDE)).all(1)]
    if rng.random() < 0.5:
        crop, b = crop[:, ::-1], np.stack([SIDE - b[:, 2], b[:, 1], SIDE - b[:, 0], b[:, 3]], 1)
    if rng.random() < 0.5:
        crop, b = crop.transpose(1, 0, 2), b[:, [1, 0, 3, 2]]
    if rng.random() < 0.5:
        crop, b = crop[::-1], np.stack([b[:, 0], SIDE - b[:, 3], b[:, 2], SIDE - b[:, 1]], 1)
    return np.ascontiguousarray(crop), b.reshape(-1, 4)


def targets(boxes_of: list[np.ndarray]):
    """CenterNet's targets: Gaussian peaks at the centres, and the sizes where they are."""
    n, cells = len(boxes_of), SIDE // STRIDE
    heat = torch.zeros(n, cells, cells)
    size = torch.zeros(n, 2, cells, cells)
    where = torch.zeros(n, cells, cells, dtype=torch.bool)
    ys, xs = torch.meshgrid(torch.arange(cells), torch.arange(cells), indexing="ij")
    for i, boxes in enumerate(boxes_of):
        for x1, y1, x2, y2 in boxes:
            cx, cy = (x1 + x2) / 2 / STRIDE, (y1 + y2) / 2 / STRIDE
            sigma = max(0.8, max(x2 - x1, y2 - y1) / STRIDE / 6)
            peak = torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2))
            heat[i] = torch.maximum(heat[i], peak)
            j, k = min(int(cy), cells - 1), min(int(cx), cells - 1)
            heat[i, j, k], where[i, j, k] = 1.0, True
            size[i, :, j, k] = torch.tensor(
                [math.log((x2 - x1) / STRIDE), math.log((y2 - y1) / STRIDE)]
            )
    return heat, size, where


def loss_of(heat_logits, sizes, heat, size, where):
    """CenterNet's penalty-reduced focal loss on the heatmap, plus L1 on the sizes."""
    p = torch.sigmoid(heat_logits).clamp(1e-4, 1 - 1e-4)
    positive = heat == 1
    focal = -torch.where(
        positive, (1 - p) ** 2 * torch.log(p), (1 - heat) ** 4 * p**2 * torch.log(1 - p)
    ).sum() / max(1, int(positive.sum()))
    l1 = (sizes.permute(0, 2, 3, 1)[where] - size.permute(0, 2, 3, 1)[where]).abs().mean()
    return focal + 0.1 * (l1 if where.any() else 0)


def normalised(batch_uint8: np.ndarray) -> torch.Tensor:
    return (torch.from_numpy(np.array(batch_uint8)).permute(0, 3, 1, 2).float() / 255 - MEAN) / STD


def train(data: Path, iterations: int, log) -> CentreNet:
    torch.manual_seed(0)
    rng, gen = np.random.default_rng(0), torch.Generator().manual_seed(0)
    train_fields = training_fields(data)
    model = CentreNet()
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, 1e-3, total_steps=iterations)
    model.train()
    start = time.time()
    for step in range(iterations):
        crops = [
            random_crop(*train_fields[rng.integers(len(train_fields))], rng) for _ in range(BATCH)
        ]
        x = torch.from_numpy(np.stack([c for c, _ in crops])).permute(0, 3, 1, 2).float() / 255
        x = (colour_jitter(x, gen, RECIPES["lab-strong"]) - MEAN) / STD
        loss = loss_of(*model(x), *targets([b for _, b in crops]))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        if step % 50 == 0 or step == iterations - 1:
            log(f"step {step}/{iterations} loss {loss.item():.3f} ({time.time() - start:.0f} s)")
    return model.eval()


@torch.no_grad()
def detect(model: CentreNet, rgb: np.ndarray, threshold: float) -> Detections:
    """White-cell boxes in an H x W x 3 array, in its own pixels."""
    h, w = rgb.shape[:2]
    size = (max(STRIDE, round(w * SEEN_AT)), max(STRIDE, round(h * SEEN_AT)))
    x = normalised(np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR))[None])
    pad = (0, -size[0] % 16, 0, -size[1] % 16)
    heat_logits, sizes = model(F.pad(x, pad, mode="replicate"))
    heat = torch.sigmoid(heat_logits[0])
    peaks = (heat == F.max_pool2d(heat[None], 3, 1, 1)[0]) & (heat > threshold)
    boxes = []
    for j, k in peaks.nonzero().tolist():
        bw, bh = (torch.exp(sizes[0, :, j, k]) * STRIDE).tolist()
        cx, cy = (k + 0.5) * STRIDE, (j + 0.5) * STRIDE
        box = [(cx - bw / 2), (cy - bh / 2), (cx + bw / 2), (cy + bh / 2)]
        boxes.append([max(0.0, min(v / SEEN_AT, (w, h)[i % 2])) for i, v in enumerate(box)])
    return Detections(white_cells=boxes, red_cells=None)


def even_f1(model: CentreNet, data: Path, threshold: float) -> float:
    tp = found = truth = 0
    for image in fields(data, "even"):
        boxes = detect(model, np.asarray(Image.open(image).convert("RGB")), threshold).white_cells
        wbc = annotation(data, image)["WBC"]
        tp, found, truth = tp + len(match(boxes, wbc)), found + len(boxes), truth + len(wbc)
    return 2 * tp / max(1, found + truth)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iterations", type=int, default=1500)
    ap.add_argument("--fresh", action="store_true", help="train again though a model is saved")
    args = ap.parse_args()
    print(machine())
    OUT.mkdir(parents=True, exist_ok=True)
    bccd, weights = DATA / "bccd", OUT / "centrenet.pt"
    start = time.time()
    if args.fresh or not weights.exists():
        model = train(bccd, args.iterations, print)
        torch.save(model.state_dict(), weights)
    else:
        model = CentreNet()
        model.load_state_dict(torch.load(weights, weights_only=True))
        model.eval()
    minutes = (time.time() - start) / 60
    f1 = {t: even_f1(model, bccd, t) for t in THRESHOLDS}
    threshold = max(f1, key=f1.get)
    print("even-field F1 by threshold", f1, "->", threshold)

    def learned(rgb):
        return detect(model, rgb, threshold)

    shifts = {
        "classical": detection_under_shifts(bccd, "odd"),
        "learned": detection_under_shifts(bccd, "odd", detector=learned),
    }
    labs = {  # no white cell in a platelet's image
        lab: [p for c, ps in sample(DATA / lab, 40).items() if c != "platelet" for p in ps]
        for lab in ("pbc", "lisc")
    }
    cells = {
        lab: {
            "classical": centred_share(images)[0],
            "learned": centred_share(images, detector=learned)[0],
        }
        for lab, images in labs.items()
    }
    timing = {}
    odd = [np.asarray(Image.open(p).convert("RGB")) for p in list(fields(bccd, "odd"))[:40]]
    for name, run in (("classical", locate_cells), ("learned", learned)):
        times = []
        for rgb in odd:
            t = time.perf_counter()
            run(rgb)
            times.append(time.perf_counter() - t)
        timing[name] = 1000 * float(np.median(times))
    results = {
        "shifts": shifts,
        "cells": cells,
        "ms": timing,
        "threshold": threshold,
        "even_f1": f1,
        "iterations": args.iterations,
        "train_minutes": minutes,
    }
    (OUT / "results.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))
    write_section("learned_detector", table(results))


def table(r: dict) -> str:
    lines = [
        "## A learned white-cell detector beside the classical one (issue 11)",
        "",
        f"Machine: {machine()}. The learned detector (bench_learned_detector.py: CenterNet on "
        f"EfficientNet-Lite0's ImageNet weights, {r['iterations']} steps of {BATCH} crops from "
        f"BCCD's even fields, threshold {r['threshold']} chosen on them) beside `locate_cells`. "
        "BCCD's odd fields under each shift: white-cell recall / precision at IoU >= 0.5; "
        "single-cell images read as fields: the centre cell found as exactly one box; "
        "median ms per BCCD field (2 threads).",
        "",
        *table_head(["images", "shift", "classical", "learned"]),
    ]
    for shift, c in r["shifts"]["classical"].items():
        learned = r["shifts"]["learned"][shift]
        lines.append(
            table_row(
                [
                    "BCCD odd fields",
                    shift,
                    f"{c['recall']:.3f} / {c['precision']:.3f}",
                    f"{learned['recall']:.3f} / {learned['precision']:.3f}",
                ]
            )
        )
    for lab, c in r["cells"].items():
        lines.append(
            table_row(
                [f"{lab} cells", "as recorded", f"{c['classical']:.1%}", f"{c['learned']:.1%}"]
            )
        )
    ms = r["ms"]
    lines.append(
        table_row(["ms per BCCD field", "", f"{ms['classical']:.0f}", f"{ms['learned']:.0f}"])
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
