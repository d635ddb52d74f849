"""Inference benchmark (issues 3 and 10): one model, every engine and precision, in one process.

On real PBC images, 2 threads each, side by side:
  * engines: PyTorch eager; ONNX Runtime fp32 (the shipped graph, uint8 input normalised in the
    graph; and the same graph fed floats normalised in numpy, as before issue 10); ONNX Runtime
    int8; OpenVINO f32, bf16 (its default on CPUs with bf16) and int8. int8 models are quantised
    here from the shipped fp32 model (static QDQ, the export's recipe);
  * for each: latency at batch 1 (p50/p99), images/s at batch 1/32/128 (median of 5), effective
    GFLOP/s against this machine's matrix-multiply peak, and top-1 agreement with ONNX Runtime
    fp32 on 512 images;
  * ``Classifier.predict(path)`` end to end (decode, framing, resize, model) for one image,
    on a quiet machine and with another process keeping one core busy; and for 512 paths.

    python benchmarks/bench_inference.py [--model src/hematovision/assets/default_model]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hematovision.export import ANCHORS, ServingGraph, with_static_padding
from hematovision.export.onnx_export import quantize_int8
from hematovision.inference import DEFAULT_MODEL, Classifier
from hematovision.inference.engines import OnnxRuntimeEngine, OpenVinoEngine
from hematovision.models import create_model
from hematovision.preprocess import load_resized, normalize

from _common import DEFAULT_PBC, machine, write_section

THREADS = 2
OUT = Path(__file__).with_name("out")


def matmul_peak_gflops(n: int = 1024, repeats: int = 10, dtype=torch.float32) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
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
        graph(torch.zeros(1, size, size, 3, dtype=torch.uint8))
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


def float_input_model(model: bytes) -> bytes:
    """The same graph with its in-graph normalisation cut off: it takes NCHW floats, as the
    models exported before issue 10 did (normalisation then runs in numpy)."""
    import onnx

    m = onnx.load_from_string(model)
    nodes = list(m.graph.node)
    add = next(i for i, n in enumerate(nodes) if n.op_type == "Add")
    normalised = nodes[add].output[0]
    cut = {name for node in nodes[: add + 1] for name in node.input}
    del m.graph.node[: add + 1]
    kept = [t for t in m.graph.initializer if t.name not in cut]  # scale and shift go
    del m.graph.initializer[:]
    m.graph.initializer.extend(kept)
    for node in m.graph.node:
        node.input[:] = ["input" if name == normalised else name for name in node.input]
    size = m.graph.input[0].type.tensor_type.shape.dim[1].dim_value
    m.graph.input.pop()
    m.graph.input.append(
        onnx.helper.make_tensor_value_info(
            "input", onnx.TensorProto.FLOAT, ["batch", 3, size, size]
        )
    )
    return m.SerializeToString()


def build_engines(clf: Classifier, pixels: np.ndarray) -> dict:
    """name -> a function of a uint8 NHWC batch, each running the same model."""
    spec = clf.spec
    fp32 = clf.artifact.model_bytes("fp32")
    floats = float_input_model(fp32)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "fp32.onnx").write_bytes(fp32)
        quantize_int8(Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx", pixels[:256], spec)
        int8 = (Path(tmp) / "int8.onnx").read_bytes()
    net = create_model(clf.artifact.architecture, len(clf.classes), input_size=spec.input_size)
    with torch.no_grad():
        width = net.forward_features(torch.zeros(1, 3, spec.input_size, spec.input_size)).shape[1]
    # the same operations and shapes as the ONNX graph (the artifact ships no torch weights)
    anchors = np.random.default_rng(0).standard_normal((ANCHORS, width))
    graph = ServingGraph(with_static_padding(net, spec.input_size), anchors, spec).eval()

    @torch.no_grad()
    def eager(batch):
        return [out.numpy() for out in graph(torch.from_numpy(batch))]

    ort_floats = OnnxRuntimeEngine(floats, THREADS)
    engines = {
        "PyTorch eager (fp32)": eager,
        "ONNX Runtime fp32": OnnxRuntimeEngine(fp32, THREADS).run,
        "ONNX Runtime fp32, normalised in numpy": lambda b: ort_floats.run(normalize(b, spec)),
        "ONNX Runtime int8": OnnxRuntimeEngine(int8, THREADS).run,
        "OpenVINO f32": OpenVinoEngine(fp32, THREADS, "f32").run,
        "OpenVINO bf16": OpenVinoEngine(fp32, THREADS, "bf16").run,
        "OpenVINO int8": OpenVinoEngine(int8, THREADS).run,
    }
    return engines, model_gflops(graph, spec.input_size)


def busy_core(stop) -> None:
    while not stop.is_set():
        sum(range(10_000))


def predict_latency(clf: Classifier, path: Path, runs: int = 200) -> tuple[float, float]:
    return latency_ms(lambda p: clf.predict(p), path, runs)


def end_to_end(model: Path, paths: list[Path], engine: str) -> dict:
    """Classifier.predict(path) quiet and with one core busy (1 thread), and 512 paths."""
    one = Classifier.load(model, engine=engine, threads=1)
    quiet = predict_latency(one, paths[0])
    stop = multiprocessing.Event()
    worker = multiprocessing.Process(target=busy_core, args=(stop,))
    worker.start()
    try:
        time.sleep(0.5)
        loaded = predict_latency(one, paths[0])
    finally:
        stop.set()
        worker.join()
    two = Classifier.load(model, engine=engine, threads=THREADS)
    two.predict(paths[:32])
    rates = []
    for _ in range(3):
        t = time.perf_counter()
        two.predict(paths, batch_size=64)
        rates.append(len(paths) / (time.perf_counter() - t))
    return {"quiet_ms": quiet, "busy_core_ms": loaded, "paths_per_s": statistics.median(rates)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--data", type=Path, default=DEFAULT_PBC)
    args = ap.parse_args()
    torch.set_num_threads(THREADS)
    print(machine(), flush=True)
    clf = Classifier.load(args.model, engine="onnxruntime")
    paths = sorted(args.data.rglob("[!.]*.jpg"))[::25][:512]
    pixels = np.stack([load_resized(p, clf.spec) for p in paths])
    engines, flops = build_engines(clf, pixels)
    reference = engines["ONNX Runtime fp32"](pixels)[0].argmax(1)
    peak = {"fp32": matmul_peak_gflops(), "bf16": matmul_peak_gflops(dtype=torch.bfloat16)}
    rows = {}
    for name, fn in engines.items():
        p50, p99 = latency_ms(fn, pixels[:1])
        rates = {b: throughput(fn, pixels[:128], b) for b in (1, 32, 128)}
        top1 = np.concatenate([fn(pixels[i : i + 128])[0] for i in range(0, 512, 128)]).argmax(1)
        rows[name] = {
            "p50_ms": p50,
            "p99_ms": p99,
            "images_per_s": rates,
            "gflops": flops * max(rates.values()),
            "agreement": None if "PyTorch" in name else float((top1 == reference).mean()),
        }
        print(name, json.dumps(rows[name]), flush=True)
    e2e = {engine: end_to_end(args.model, paths, engine) for engine in ("onnxruntime", "openvino")}
    print(json.dumps(e2e), flush=True)
    results = {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "model": clf.artifact.name,
        "gflop_per_image": flops,
        "matmul_peak_gflops": peak,
        "engines": rows,
        "end_to_end": e2e,
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "inference.json").write_text(json.dumps(results, indent=1))
    write_section("inference", render(results, clf))
    print(render(results, clf))


def render(results: dict, clf: Classifier) -> str:
    rows, peak, e2e = results["engines"], results["matmul_peak_gflops"], results["end_to_end"]
    base = rows["ONNX Runtime fp32"]
    lines = [
        "## Inference (issues 3 and 10)\n",
        f"Machine: {results['machine']}; {THREADS} threads for every engine. Model: the bundled "
        f"{clf.artifact.architecture} at {clf.spec.input_size} px (PyTorch: the same graph "
        f"with untrained weights, for speed only), "
        f"{results['gflop_per_image']:.3f} GFLOP per image (with the CAM and OOD outputs). "
        f"Matrix-multiply peak measured here: fp32 {peak['fp32']:.0f}, bf16 {peak['bf16']:.0f} "
        f"GFLOP/s. Agreement: top-1 against ONNX Runtime fp32 on 512 PBC images. int8 models "
        f"quantised in the script (static QDQ). Measured {results['date']}.\n",
        "| engine | latency p50 / p99 (batch 1) | vs ONNX Runtime fp32 (p50) | images/s at batch "
        "1 / 32 / 128 | effective GFLOP/s (% of its peak) | top-1 agreement |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        ips = r["images_per_s"]
        own_peak = peak["bf16"] if ("bf16" in name or "int8" in name) else peak["fp32"]
        lines.append(
            f"| {name} | {r['p50_ms']:.2f} / {r['p99_ms']:.2f} ms | "
            f"{base['p50_ms'] / r['p50_ms']:.2f}x | {ips[1]:.0f} / {ips[32]:.0f} / {ips[128]:.0f} "
            f"| {r['gflops']:.0f} ({100 * r['gflops'] / own_peak:.0f}%) "
            + (f"| {100 * r['agreement']:.1f}% |" if r["agreement"] is not None else "| — |")
        )
    lines += [
        "\n`Classifier.predict(path)`, one PBC image (decode, canonical framing, resize, model) "
        "with 1 inference thread; then 512 paths in batches of 64 with 2 threads:\n",
        "| engine | p50 / p99 quiet | p50 / p99 with one core busy | 512 paths: images/s |",
        "|---|---|---|---|",
    ]
    for engine, r in e2e.items():
        (q50, q99), (b50, b99) = r["quiet_ms"], r["busy_core_ms"]
        lines.append(
            f"| {engine} | {q50:.2f} / {q99:.2f} ms | {b50:.2f} / {b99:.2f} ms "
            f"({b50 / q50:.2f}x) | {r['paths_per_s']:.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
