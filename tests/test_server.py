"""The real server (`hematovision serve`, gunicorn workers) and a real browser against it."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from hematovision.inference import DEFAULT_MODEL

SAMPLES = sorted((DEFAULT_MODEL.parent / "samples").glob("*.jpg"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _multipart(paths) -> tuple[bytes, str]:
    boundary = "----hematovision-test"
    parts = []
    for path in paths:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{Path(path).name}"\r\nContent-Type: image/jpeg\r\n\r\n'.encode()
            + Path(path).read_bytes()
            + b"\r\n"
        )
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), boundary


def post(base: str, paths, timeout=60):
    body, boundary = _multipart(paths)
    request = urllib.request.Request(
        f"{base}/api/v1/predictions",
        data=body,
        method="POST",
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status, json.loads(response.read())


def get_json(base: str, path: str):
    with urllib.request.urlopen(base + path, timeout=30) as response:
        return json.loads(response.read())


class Server:
    def __init__(self, data_dir: Path, workers: int = 2):
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hematovision",
                "-q",
                "serve",
                "--port",
                str(self.port),
                "--workers",
                str(workers),
                "--data-dir",
                str(data_dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                if get_json(self.base, "/healthz")["status"] == "ok":
                    return
            except OSError:
                time.sleep(0.3)
            if self.process.poll() is not None:
                raise RuntimeError(self.process.stderr.read().decode())
        raise RuntimeError("server did not start")

    def kill(self):
        os.killpg(self.process.pid, signal.SIGKILL)  # master and workers, no clean shutdown
        self.process.wait()

    def stop(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("served"))
    yield s
    s.stop()


def test_serve_answers_on_the_bundled_model(server):
    status, body = post(server.base, SAMPLES[:2])
    assert status == 201
    assert [p["label"] for p in body["predictions"]] == [
        p.name.rsplit("_", 2)[0] for p in SAMPLES[:2]
    ]
    assert get_json(server.base, "/api/v1/model")["classes"][0] == "basophil"


def test_a_kill_mid_request_loses_no_earlier_record(tmp_path):
    server = Server(tmp_path / "data", workers=1)
    try:
        stored = [post(server.base, [p])[1]["predictions"][0]["id"] for p in SAMPLES[:4]]
        in_flight = threading.Thread(target=lambda: _swallow(post, server.base, SAMPLES[4:20]))
        in_flight.start()
        time.sleep(0.05)
        server.kill()
        in_flight.join()
    finally:
        server.stop()
    again = Server(tmp_path / "data", workers=1)
    try:
        listed = get_json(again.base, "/api/v1/predictions?limit=200")
        ids = {p["id"] for p in listed["predictions"]}
        assert set(stored) <= ids
        assert listed["total"] in (4, 20)  # the killed batch is all there or not at all
        assert post(again.base, [SAMPLES[0]])[0] == 201
    finally:
        again.stop()
    import sqlite3

    with sqlite3.connect(tmp_path / "data" / "hematovision.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def _swallow(fn, *args):
    with contextlib.suppress(OSError):
        fn(*args)


def test_browser_uploads_a_sample_and_sees_class_and_heatmap(server, tmp_path, chromium):
    from playwright.sync_api import sync_playwright

    sample = SAMPLES[9]
    expected = sample.name.rsplit("_", 2)[0]
    shots = Path(os.environ.get("HEMATOVISION_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        page = browser.new_page()
        errors = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(server.base + "/")
        page.set_input_files("#file-input", str(sample))
        assert page.locator("#preview img").count() == 1  # previewed before sending
        page.click("#submit")
        page.wait_for_url("**/results/*")
        assert page.locator(".prediction .label").first.inner_text() == expected
        page.click(".toggle-heatmap")
        heat = page.locator(".heatmap-image").first
        assert heat.is_visible()
        assert page.evaluate("document.querySelector('.heatmap-image').naturalWidth") > 0
        assert page.evaluate("document.querySelector('.progress-bar.bg-success').style.width") != ""
        page.screenshot(path=str(shots / "result-page.png"), full_page=True)
        browser.close()
    assert (shots / "result-page.png").stat().st_size > 10_000
    assert not [e for e in errors if "Content Security Policy" in e]
