"""Training benchmark on the real PBC data (issue: foundation).

Side by side, in one script, on one machine:
  * the data pipeline: images/s decoding JPEGs (first epoch) vs reading the decode cache (later
    epochs), median of 3 repeats on the same 600 images;
  * (a) the original recipe: seed-cnn, 128 px, 10 epochs, batch 32, Adam;
  * (b) the transfer recipe: EfficientNet-Lite0 from ImageNet weights, 128 px, AdamW with
    warm-up + cosine, label smoothing 0.1, 10 epochs, batch 32;
  * (c) the fast recipe (issue 10: >= 98.5% in <= 10 minutes on 2 cores): (b) with the stem
    and first three blocks frozen (--freeze-blocks 3), twice the learning rate, 4 epochs;
  * (d) (c) with progressive resizing (--start-size 96: 96, 112, 112, 128 px);
    (c) and (d) reported as time to accuracy, epoch by epoch (validation) and at the end (test);
both on the same fixed 80/10/10 stratified split (seed 0). Results: benchmarks/out/*.json and
the "training" section of benchmarks/RESULTS.md.

    python benchmarks/bench_training.py [--data ../shared/data/pbc] [--only pipeline,a,b,c]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from hematovision.data import DecodeCache, decode_folder, scan_folder
from hematovision.models import preprocess_spec
from hematovision.training import TrainConfig, train

from _common import DEFAULT_PBC, machine, table_head, table_row, write_section

OUT = Path(__file__).with_name("out")

RECIPES = {
    "a": dict(
        arch="seed-cnn",
        epochs=10,
        batch_size=32,
        image_size=128,
        optimizer="adam",
        lr=1e-3,
        patience=10,
    ),
    "b": dict(
        arch="efficientnet_lite0",
        pretrained=True,
        epochs=10,
        batch_size=32,
        image_size=128,
        optimizer="adamw",
        lr=1e-3,
        label_smoothing=0.1,
        patience=5,
    ),
}
# (c): (b) made fast: the high-resolution early layers frozen, a higher rate, fewer epochs
RECIPES["c"] = {**RECIPES["b"], "epochs": 4, "freeze_blocks": 3, "lr": 2e-3, "warmup_epochs": 0.3}
# (d): (c) with progressive resizing: 96 px in the first epoch, growing to 128 px by the last
RECIPES["d"] = {**RECIPES["c"], "start_size": 96}


def bench_pipeline(data: Path, n: int = 600, repeats: int = 3) -> dict:
    folder = scan_folder(data)
    step = max(1, len(folder) // n)
    sample = folder.subset((__import__("numpy").arange(len(folder)) % step) == 0)
    sample = sample.subset(__import__("numpy").arange(len(sample)) < n)
    spec = preprocess_spec("seed-cnn", 128)
    cold, warm = [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            cache = DecodeCache(tmp)
            t = time.perf_counter()
            decode_folder(sample, spec, cache, show_progress=False)
            cold.append(len(sample) / (time.perf_counter() - t))
            t = time.perf_counter()
            decode_folder(sample, spec, cache, show_progress=False)
            warm.append(len(sample) / (time.perf_counter() - t))
    return {
        "images": len(sample),
        "decode_images_per_s": statistics.median(cold),
        "cache_images_per_s": statistics.median(warm),
        "ratio": statistics.median(warm) / statistics.median(cold),
        "cold_runs": cold,
        "warm_runs": warm,
    }


def run_recipe(key: str, data: Path, cache_dir: Path) -> dict:
    import os

    os.environ["HEMATOVISION_CACHE"] = str(cache_dir)
    out = OUT / "runs" / key
    t = time.perf_counter()
    run = train(
        TrainConfig(
            data=str(data),
            out=str(out),
            val_fraction=0.1,
            test_fraction=0.1,
            seed=0,
            overwrite=True,
            show_progress=sys.stderr.isatty(),
            **RECIPES[key],
        )
    )
    wall = time.perf_counter() - t
    m = run.metrics()
    with open(run.history_file) as fh:
        history = list(csv.DictReader(fh))
    return {
        "recipe": RECIPES[key],
        "run": str(out),
        "wall_seconds": round(wall, 1),
        "train_seconds": m["train_seconds"],
        "decode_seconds": m["decode_seconds"],
        "epochs_run": m["epochs_run"],
        "best_epoch": m["best_epoch"],
        "test_accuracy": m["test"]["accuracy"],
        "test_f1_macro": m["test"]["f1_macro"],
        "test_ece": m["test"]["ece"],
        "test_n": m["test"]["n"],
        "val_accuracy": m["val"]["accuracy"],
        "epochs": [
            {
                "epoch": int(h["epoch"]),
                "seconds": float(h["seconds"]),
                "val": float(h["val_accuracy"]),
                "image_size": int(h.get("image_size") or RECIPES[key]["image_size"]),
            }
            for h in history
        ],
    }


def render(results: dict) -> str:
    lines = [
        "## Training (issue 2)\n",
        f"Machine: {results['machine']}.",
        f"Data: `{results['data']}`, fixed stratified 80/10/10 split, seed 0. "
        f"Measured {results['date']}.\n",
    ]
    p = results.get("pipeline")
    if p:
        lines += [
            "### Data pipeline (600 PBC images, median of 3)\n",
            "| first epoch: decode JPEG + resize | later epochs: decode cache | ratio |",
            "|---|---|---|",
            f"| {p['decode_images_per_s']:.0f} images/s | {p['cache_images_per_s']:.0f} images/s "
            f"| {p['ratio']:.1f}x |\n",
        ]
    rows = [(k, results[k]) for k in ("a", "b") if k in results]
    if rows:
        lines += [
            "### Recipes\n",
            "| recipe | test accuracy | test macro-F1 | test ECE | epochs (best) | training wall time |",
            "|---|---|---|---|---|---|",
        ]
        names = {
            "a": "(a) original: seed-cnn, 128 px, 10 epochs, batch 32, Adam",
            "b": "(b) transfer: EfficientNet-Lite0 (ImageNet), 128 px, AdamW + cosine, "
            "label smoothing 0.1, 10 epochs, batch 32",
        }
        for k, r in rows:
            lines.append(
                f"| {names[k]} | {100 * r['test_accuracy']:.2f}% | {r['test_f1_macro']:.4f} "
                f"| {r['test_ece']:.4f} | {r['epochs_run']} ({r['best_epoch']}) "
                f"| {r['train_seconds'] / 60:.1f} min (+{r['decode_seconds']:.0f} s decode) |"
            )
        lines.append(f"\nTest split: {rows[0][1]['test_n']} images.")
    return "\n".join(lines)


def time_to_accuracy(results: dict) -> str:
    """Recipes (c) and (d) epoch by epoch: minutes since the start of training, input size and
    val accuracy; then each one's test accuracy and wall time."""
    runs = {k: results[k] for k in ("c", "d") if k in results}
    c = next(iter(runs.values()))
    recipe = c["recipe"]
    lines = [
        "## Training time to accuracy (issue 10)\n",
        f"Machine: {c['machine']}. Measured {c['date']}. Recipe (c): EfficientNet-Lite0 from "
        f"ImageNet weights, {recipe['image_size']} px, the stem and first "
        f"{recipe['freeze_blocks']} blocks frozen, AdamW at lr {recipe['lr']}, "
        f"warm-up {recipe['warmup_epochs']} epoch then cosine, label smoothing 0.1, "
        f"{recipe['epochs']} epochs, batch 32. Recipe (d): (c) with progressive resizing "
        "(`--start-size 96`: the input grows from 96 px in the first epoch to 128 px in the last). "
        f"PBC, fixed stratified 80/10/10 split, seed 0 ({c['test_n']} test images).\n",
        *table_head(
            ["epoch", *(f"({k}) px, minutes of training (cumulative), val accuracy" for k in runs)]
        ),
    ]
    totals = dict.fromkeys(runs, 0.0)
    for i in range(max(len(r["epochs"]) for r in runs.values())):
        cells = []
        for k, r in runs.items():
            e = r["epochs"][i]
            totals[k] += e["seconds"]
            size = e.get("image_size", r["recipe"]["image_size"])
            cells.append(f"{size} px, {totals[k] / 60:.1f} min, {100 * e['val']:.2f}%")
        lines.append(table_row([i + 1, *cells]))
    lines.append("")
    for k, r in runs.items():
        lines.append(
            f"- ({k}): test accuracy of the best epoch ({r['best_epoch']}) "
            f"{100 * r['test_accuracy']:.2f}% after {r['wall_seconds'] / 60:.1f} minutes of wall "
            f"time in all (decoding, {r['epochs_run']} epochs, evaluation)."
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=DEFAULT_PBC)
    ap.add_argument("--only", default="pipeline,a,b,c")
    args = ap.parse_args()
    if not args.data.is_dir():
        sys.exit(f"PBC data not found at {args.data}; pass --data")
    OUT.mkdir(parents=True, exist_ok=True)
    store = OUT / "training.json"
    results = json.loads(store.read_text()) if store.exists() else {}
    results.update(
        {"machine": machine(), "data": str(args.data), "date": time.strftime("%Y-%m-%d")}
    )
    todo = args.only.split(",")
    if "pipeline" in todo:
        results["pipeline"] = bench_pipeline(args.data)
        print(json.dumps(results["pipeline"]), flush=True)
    for key in ("a", "b", "c", "d"):
        if key in todo:
            results[key] = run_recipe(key, args.data, OUT / "cache")
            results[key].update(machine=machine(), date=time.strftime("%Y-%m-%d"))
            print(key, json.dumps(results[key]), flush=True)
            store.write_text(json.dumps(results, indent=1))
    store.write_text(json.dumps(results, indent=1))
    if {"pipeline", "a", "b"} & set(todo):
        write_section("training", render(results))
        print(render(results))
    if {"c", "d"} & set(todo):
        write_section("training-fast", time_to_accuracy(results))
        print(time_to_accuracy(results))


if __name__ == "__main__":
    main()
