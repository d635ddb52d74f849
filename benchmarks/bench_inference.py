"""Inference benchmark (issue: inference): the same model three ways, in one process.

PyTorch eager vs ONNX Runtime fp32 vs ONNX Runtime int8, on real PBC images, 2 threads each:
  * single-image latency (p50, p99 over 300 runs);
  * throughput at batch 1, 32 and 128 (images/s, median of 5 repeats);
  * effective GFLOP/s (model FLOPs x images/s) against the machine's fp32 matrix-multiply peak
    measured in the same script.
PyTorch runs the exporter's own graph (EfficientNet-Lite0 + CAM + OOD distance) rebuilt from
the bundled model's recipe: the same operations and shapes as the ONNX file.

    python benchmarks/bench_inference.py [--model src/hematovision/assets/default_model]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from hematovision.export import ServingGraph
from hematovision.inference import DEFAULT_MODEL, Classifier
from hematovision.models import create_model
from hematovision.preprocess import load_resized, normalize

from _common import DEFAULT_PBC, machine, write_section

THREADS = 2
OUT = Path(__file__).with_name("out")


def matmul_peak_gflops(n: int = 1024, repeats: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        rates.append(2 * n**3 / (time.perf_counter() - t) / 1e9)
    return statistics.median(rates)


def model_gflops(graph: torch.nn.Module, size: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        graph(torch.zeros(1, 3, size, size))
    return counter.get_total_flops() / 1e9


def latency_ms(fn, x, runs: int = 300) -> tuple[float, float]:
    for _ in range(20):
        fn(x)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn(x)
        times.append((time.perf_counter() - t) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def throughput(fn, inputs: np.ndarray, batch: int, repeats: int = 5) -> float:
    n = max(batch * 2, 128)
    data = np.concatenate([inputs] * (n // len(inputs) + 1))[:n]
    fn(data[:batch])
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        for i in range(0, n, batch):
            fn(data[i : i + batch])
        rates.append(n / (time.perf_counter() - t))
    return statistics.median(rates)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--data", type=Path, default=DEFAULT_PBC)
    args = ap.parse_args()
    torch.set_num_threads(THREADS)
    fp32 = Classifier.load(args.model, threads=THREADS)
    artifact = fp32.artifact
    int8 = (
        Classifier.load(args.model, precision="int8", threads=THREADS)
        if "int8" in fp32.artifact.precisions()
        else None
    )
    spec = fp32.spec
    paths = sorted(args.data.rglob("[!.]*.jpg"))[::80][:128]
    x = normalize(np.stack([load_resized(p, spec) for p in paths]), spec)

    n_classes = len(artifact.classes)
    net = create_model(artifact.architecture, n_classes, input_size=spec.input_size).eval()
    with torch.no_grad():
        features = net.forward_features(torch.zeros(1, 3, spec.input_size, spec.input_size)).shape[
            1
        ]
    graph = ServingGraph(
        net, np.zeros(features), np.zeros((features, 64)), np.zeros((n_classes, 64))
    ).eval()

    @torch.no_grad()
    def eager(batch):
        return graph(torch.from_numpy(batch))

    engines = {
        "PyTorch eager (fp32)": eager,
        "ONNX Runtime fp32": lambda b: fp32.session.run(None, {"input": b}),
    }
    if int8 is not None:  # the artifact may ship fp32 only
        engines["ONNX Runtime int8"] = lambda b: int8.session.run(None, {"input": b})
    peak = matmul_peak_gflops()
    flops = model_gflops(graph, spec.input_size)
    rows = {}
    for name, fn in engines.items():
        p50, p99 = latency_ms(fn, x[:1])
        rates = {b: throughput(fn, x, b) for b in (1, 32, 128)}
        rows[name] = {
            "p50_ms": p50,
            "p99_ms": p99,
            "images_per_s": rates,
            "gflops": flops * max(rates.values()),
        }
        print(name, json.dumps(rows[name]), flush=True)
    results = {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "model": artifact.name,
        "gflop_per_image": flops,
        "matmul_peak_gflops": peak,
        "engines": rows,
        "int8_accuracy": artifact.metrics.get("test_int8"),
        "fp32_accuracy": artifact.metrics["test"]["accuracy"],
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "inference.json").write_text(json.dumps(results, indent=1))
    eager_p50 = rows["PyTorch eager (fp32)"]["p50_ms"]
    lines = [
        "## Inference (issue 3)\n",
        f"Machine: {results['machine']}; {THREADS} threads for "
        f"every engine. Model: the bundled {artifact.architecture} at {spec.input_size} px, "
        f"{flops:.3f} GFLOP per image (with the CAM and OOD outputs). fp32 matrix-multiply "
        f"peak measured here: {peak:.0f} GFLOP/s. Measured {results['date']}.\n",
        "| engine | latency p50 / p99 (batch 1) | speed-up vs eager (p50) | images/s at batch 1 / 32 / 128 | effective GFLOP/s (% of peak) |",
        "|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        ips = r["images_per_s"]
        lines.append(
            f"| {name} | {r['p50_ms']:.2f} / {r['p99_ms']:.2f} ms | "
            f"{eager_p50 / r['p50_ms']:.2f}x | {ips[1]:.0f} / {ips[32]:.0f} / {ips[128]:.0f} "
            f"| {r['gflops']:.1f} ({100 * r['gflops'] / peak:.0f}%) |"
        )
    acc8 = results["int8_accuracy"]
    lines.append(
        f"\nTest accuracy (the model's held-out split, {artifact.metrics['test']['n']} images): "
        f"fp32 {100 * results['fp32_accuracy']:.2f}%"
        + (f", int8 {100 * acc8['accuracy']:.2f}%." if acc8 else " (no int8 model shipped).")
    )
    write_section("inference", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
