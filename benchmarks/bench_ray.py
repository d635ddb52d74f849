"""Batch inference, local vs Ray (issue 12), side by side on the same machine and images.

``Classifier.predict`` on 1,024 PBC paths in this process (2 inference threads, preparation
in threads) against ``predict_on_ray`` on a local Ray instance (one actor per core, 1 thread
each, results streamed into Parquet and JSON Lines): images/s, median of 3 runs; Ray's
start-up is timed apart. On one small machine Ray can only add overhead; it pays across nodes.

    python benchmarks/bench_ray.py [--images 1024]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from hematovision.inference import Classifier
from hematovision.inference.ray_batch import predict_on_ray, start_ray

from _common import DEFAULT_PBC, machine, write_section

OUT = Path(__file__).with_name("out")


def rate(fn, n: int, repeats: int = 3) -> float:
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        rates.append(n / (time.perf_counter() - t))
    return statistics.median(rates)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--data", type=Path, default=DEFAULT_PBC)
    args = ap.parse_args()
    print(machine(), flush=True)
    paths = sorted(args.data.rglob("[!.]*.jpg"))[::13][: args.images]
    local = Classifier.load(engine="onnxruntime", threads=os.cpu_count())
    local_rate = rate(lambda: local.predict(paths, batch_size=64, errors="report"), len(paths))
    t = time.perf_counter()
    start_ray(quiet=True)
    startup = time.perf_counter() - t

    def on_ray():
        with tempfile.TemporaryDirectory() as tmp:
            predict_on_ray(paths, Path(tmp) / "out", engine="onnxruntime", batch_size=64)

    ray_rate = rate(on_ray, len(paths))
    results = {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "images": len(paths),
        "local_images_per_s": local_rate,
        "ray_images_per_s": ray_rate,
        "ray_startup_s": startup,
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "ray.json").write_text(json.dumps(results, indent=1))
    body = "\n".join(
        [
            "## Batch inference on Ray (issue 12)\n",
            f"Machine: {results['machine']}. {len(paths)} PBC images, ONNX Runtime fp32, "
            f"median of 3 runs. Measured {results['date']}.\n",
            "| | images/s | vs local |",
            "|---|---|---|",
            f"| `Classifier.predict` in one process ({os.cpu_count()} threads) "
            f"| {local_rate:.0f} | 1.00x |",
            f"| `predict --ray`: local Ray, {os.cpu_count()} actors, Parquet + JSON Lines written "
            f"| {ray_rate:.0f} | {ray_rate / local_rate:.2f}x |",
            f"\nStarting the local Ray instance took {startup:.1f} s (not in the rates).",
        ]
    )
    write_section("ray", body)
    print(body)


if __name__ == "__main__":
    main()
