"""Load test of the real server (issue: web application).

For each inference engine (ONNX Runtime, OpenVINO), side by side: starts `hematovision serve
--workers 2 --engine E` on 127.0.0.1, then 8 concurrent clients post real PBC images (one per
request) for 30 s, first on a new connection per request, then on connections kept open.
Reports requests/s, latency p50/p99, errors (must be 0), records stored (must be every
request) and the server's resident memory (master + workers) at start and end.

    python benchmarks/bench_web.py [--seconds 30] [--clients 8] [--workers 2]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from _common import DEFAULT_PBC, machine, write_section

OUT = Path(__file__).with_name("out")


def rss_mb(pgid: int) -> float:
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if os.getpgid(int(pid)) != pgid:
                continue
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (OSError, ProcessLookupError):
            continue
    return total / 1024


BOUNDARY = "----hv-bench"
HEADERS = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def upload_body(path: Path) -> bytes:
    return (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + path.read_bytes()
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


def post(base: str, path: Path) -> int:
    """One upload on a new connection (urllib closes it after the answer)."""
    request = urllib.request.Request(
        f"{base}/api/v1/predictions", data=upload_body(path), method="POST", headers=HEADERS
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


class KeptConnection:
    """Uploads over one HTTP/1.1 connection kept open, as browsers and requests.Session do."""

    def __init__(self, base: str):
        self.host, self.port = base.removeprefix("http://").split(":")
        self.connection = None

    def post(self, base: str, path: Path) -> int:
        for attempt in range(2):  # the server may close an idle connection: open a new one
            try:
                if self.connection is None:
                    self.connection = http.client.HTTPConnection(self.host, int(self.port), 60)
                self.connection.request("POST", "/api/v1/predictions", upload_body(path), HEADERS)
                response = self.connection.getresponse()
                response.read()
                return response.status
            except (http.client.HTTPException, OSError):
                self.connection.close()
                self.connection = None
                if attempt:
                    raise
        raise AssertionError("unreachable")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, workers: int, engine: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "hematovision", "-q", "serve", "--port", str(port)]
    command += ["--workers", str(workers), "--engine", engine]
    command += ["--data-dir", tempfile.mkdtemp(prefix="hv-bench-")]
    return subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


def wait_healthy(base: str) -> None:
    for _ in range(300):
        try:
            urllib.request.urlopen(base + "/healthz", timeout=2).read()
            return
        except OSError:
            time.sleep(0.3)


def hammer(base: str, images: list[Path], clients: int, seconds: float, keep_alive: bool):
    """``clients`` threads posting images for ``seconds``: (latencies in s, statuses, wall)."""
    latencies, statuses, lock = [], [], threading.Lock()
    stop_at = time.perf_counter() + seconds

    def client(k: int):
        send = KeptConnection(base).post if keep_alive else post
        i = k
        while time.perf_counter() < stop_at:
            t = time.perf_counter()
            status = send(base, images[i % len(images)])
            with lock:
                latencies.append(time.perf_counter() - t)
                statuses.append(status)
            i += clients

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, statuses, time.perf_counter() - start


def load_test(engine: str, images: list[Path], args, keep_alive: bool) -> dict:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(port, args.workers, engine)
    try:
        wait_healthy(base)
        post(base, images[0])  # both workers warm: a request each
        post(base, images[1])
        mem_start = rss_mb(server.pid)
        latencies, statuses, wall = hammer(base, images, args.clients, args.seconds, keep_alive)
        mem_end = rss_mb(server.pid)
        stored = json.loads(urllib.request.urlopen(base + "/api/v1/predictions?limit=1").read())
        model = json.loads(urllib.request.urlopen(base + "/api/v1/model").read())
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    lat = np.array(latencies) * 1000
    return {
        "engine": model["engine"],
        "keep_alive": keep_alive,
        "seconds": wall,
        "requests": len(statuses),
        "requests_per_s": len(statuses) / wall,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "errors": sum(1 for s in statuses if s != 201),
        "records_stored": stored["total"],
        "rss_mb_start": mem_start,
        "rss_mb_end": mem_end,
    }


def render(results: dict, args) -> str:
    lines = [
        "## Web server load (issues 4 and 10)\n",
        f"Machine: {results['machine']}. `hematovision serve --workers {args.workers} --engine "
        f"E` (gunicorn, 1 inference thread per worker) on 127.0.0.1, bundled model; "
        f"{args.clients} concurrent clients on the same cores, each posting one real PBC image "
        f"per request for {args.seconds:.0f} s. Measured {results['date']}.\n",
        "| engine (compute precision) | client connections | requests/s | latency p50 "
        "| latency p99 | errors | records stored | server memory start → end |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        lines.append(
            f"| {r['engine']['name']} ({r['engine']['precision']}) "
            f"| {'kept open' if r['keep_alive'] else 'one per request'} | {r['requests_per_s']:.1f} "
            f"| {r['p50_ms']:.0f} ms | {r['p99_ms']:.0f} ms | {r['errors']} of {r['requests']} "
            f"| {r['records_stored']} (= {r['requests']} + 2 warm-up) "
            f"| {r['rss_mb_start']:.0f} MB → {r['rss_mb_end']:.0f} MB |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--engines", default="onnxruntime,openvino")
    ap.add_argument("--data", type=Path, default=DEFAULT_PBC)
    args = ap.parse_args()
    print(machine(), flush=True)
    images = sorted(args.data.rglob("[!.]*.jpg"))[::7]
    runs = []
    for engine in args.engines.split(","):
        for keep_alive in (False, True):
            runs.append(load_test(engine, images, args, keep_alive))
            print(json.dumps(runs[-1]), flush=True)
    results = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "runs": runs}
    OUT.mkdir(exist_ok=True)
    (OUT / "web.json").write_text(json.dumps(results, indent=1))
    write_section("web", render(results, args))
    print(render(results, args))
    if any(r["errors"] or r["records_stored"] != r["requests"] + 2 for r in runs):
        sys.exit("errors or lost records")


if __name__ == "__main__":
    main()
