"""Load test of the real server (issue: web application).

Starts `hematovision serve --workers 2` on 127.0.0.1, then 8 concurrent clients post real PBC
images (one per request) for 60 s. Reports requests/s, latency p50/p99, errors (must be 0) and
the server's resident memory (master + workers) at start and end.

    python benchmarks/bench_web.py [--seconds 60] [--clients 8] [--workers 2]
"""

from __future__ import annotations

import argparse
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


def post(base: str, path: Path) -> int:
    boundary = "----hv-bench"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + path.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        f"{base}/api/v1/predictions",
        data=body,
        method="POST",
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--data", type=Path, default=DEFAULT_PBC)
    args = ap.parse_args()
    images = sorted(args.data.rglob("[!.]*.jpg"))[::7]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    data_dir = tempfile.mkdtemp(prefix="hv-bench-")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hematovision",
            "-q",
            "serve",
            "--port",
            str(port),
            "--workers",
            str(args.workers),
            "--data-dir",
            data_dir,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(base + "/healthz", timeout=2).read()
                break
            except OSError:
                time.sleep(0.3)
        post(base, images[0])  # both workers warm: a request each
        post(base, images[1])
        mem_start = rss_mb(server.pid)
        latencies, statuses, lock = [], [], threading.Lock()
        stop_at = time.perf_counter() + args.seconds

        def client(k: int):
            i = k
            while time.perf_counter() < stop_at:
                t = time.perf_counter()
                status = post(base, images[i % len(images)])
                with lock:
                    latencies.append(time.perf_counter() - t)
                    statuses.append(status)
                i += args.clients

        start = time.perf_counter()
        threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
        mem_end = rss_mb(server.pid)
        stored = json.loads(urllib.request.urlopen(base + "/api/v1/predictions?limit=1").read())[
            "total"
        ]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    errors = sum(1 for s in statuses if s != 201)
    lat = np.array(latencies) * 1000
    result = {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "clients": args.clients,
        "workers": args.workers,
        "seconds": wall,
        "requests": len(statuses),
        "requests_per_s": len(statuses) / wall,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "errors": errors,
        "records_stored": stored,
        "rss_mb_start": mem_start,
        "rss_mb_end": mem_end,
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "web.json").write_text(json.dumps(result, indent=1))
    write_section(
        "web",
        "\n".join(
            [
                "## Web server load (issue 4)\n",
                f"Machine: {result['machine']}. `hematovision serve --workers {args.workers}` (gunicorn) on "
                f"127.0.0.1, bundled model; {args.clients} concurrent clients each posting one real PBC "
                f"image per request for {wall:.0f} s. Measured {result['date']}.\n",
                "| requests/s | latency p50 | latency p99 | errors | records stored | server memory start → end |",
                "|---|---|---|---|---|---|",
                f"| {result['requests_per_s']:.1f} | {result['p50_ms']:.0f} ms | {result['p99_ms']:.0f} ms | "
                f"{errors} of {len(statuses)} | {stored} (= {len(statuses)} + 2 warm-up) | "
                f"{mem_start:.0f} MB → {mem_end:.0f} MB |",
            ]
        ),
    )
    print(json.dumps(result, indent=1))
    if errors or stored != len(statuses) + 2:
        sys.exit("errors or lost records")


if __name__ == "__main__":
    main()
