"""The real server, started as users start it (`make run`, `hematovision serve`: gunicorn
workers), a real browser against it, and what the server must survive: kill -9, SIGTERM, slow
clients, malformed requests, a busy port and a full disk."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from hematovision.differential import display_name
from hematovision.inference import DEFAULT_MODEL
from hematovision.inference.engines import resolve_engine

from conftest import BCCD, require

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = sorted((DEFAULT_MODEL.parent / "samples").glob("*.jpg"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


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


def request(base: str, path: str, method="GET", paths=(), timeout=60):
    """(status, body: parsed when JSON) of a request; error statuses are answers, not exceptions."""
    data, headers = None, {}
    if paths:
        data, boundary = _multipart(paths)
        headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, _body(response)
    except urllib.error.HTTPError as exc:
        return exc.code, _body(exc)


def _body(response):
    data = response.read()
    if "json" in (response.headers.get("Content-Type") or "") and data:
        return json.loads(data)
    return data


def post(base: str, paths, timeout=60):
    return request(base, "/api/v1/predictions", "POST", paths, timeout)


def get_json(base: str, path: str):
    return request(base, path)[1]


def serve_command(port: int, data_dir, *extra: str) -> list[str]:
    """``hematovision serve`` as the README shows it, quiet, on ``port``."""
    return [
        sys.executable,
        "-m",
        "hematovision",
        "-q",
        "serve",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        *extra,
    ]


def wait_until_up(base: str, process: subprocess.Popen, log: Path, seconds: float = 90) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        with contextlib.suppress(OSError):
            request(base, "/healthz", timeout=5)
            return
        if process.poll() is not None:
            raise RuntimeError(log.read_text())
        time.sleep(0.3)
    raise RuntimeError("server did not start")


class Server:
    """``hematovision serve`` in its own process group, its stderr kept in a log file."""

    def __init__(self, data_dir: Path, workers: int = 2, env: dict | None = None):
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = Path(str(data_dir) + ".log")
        command = serve_command(self.port, data_dir, "--workers", str(workers))
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                command,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
                env={**os.environ, **(env or {})},
            )
        wait_until_up(self.base, self.process, self.log)

    def kill(self):
        os.killpg(self.process.pid, signal.SIGKILL)  # master and workers, no clean shutdown
        self.process.wait()

    def stop(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("served") / "data")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def browser(chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield b
        b.close()


def test_serve_answers_on_the_bundled_model(server):
    status, body = post(server.base, SAMPLES[:2])
    assert status == 201
    assert [p["label"] for p in body["predictions"]] == [
        p.name.rsplit("_", 2)[0] for p in SAMPLES[:2]
    ]
    card = get_json(server.base, "/api/v1/model")
    assert card["classes"][0] == "basophil"
    assert card["engine"]["name"] == resolve_engine("auto")  # what auto picks on this machine


def test_the_engine_is_a_setting_of_serve(tmp_path):
    server = Server(tmp_path / "data", workers=1, env={"HEMATOVISION_ENGINE": "onnxruntime"})
    try:
        assert post(server.base, SAMPLES[:1])[0] == 201
        card = get_json(server.base, "/api/v1/model")
        assert card["engine"] == {"name": "onnxruntime", "precision": "fp32"}
    finally:
        server.stop()


def test_a_kill_mid_request_loses_nothing_and_storage_check_repairs_the_rest(tmp_path):
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
    check = [
        sys.executable,
        "-m",
        "hematovision",
        "-q",
        "storage",
        "check",
        "--json",
        "--data-dir",
        str(tmp_path / "data"),
        "--grace",
        "0",
    ]
    subprocess.run([*check, "--repair"], check=True, capture_output=True)
    report = json.loads(subprocess.run(check, capture_output=True, text=True).stdout)
    assert report["ok"], report  # no orphan, no missing image, no temporary file left
    again = Server(tmp_path / "data", workers=1)
    try:
        listed = get_json(again.base, "/api/v1/predictions?limit=200")
        assert set(stored) <= {p["id"] for p in listed["predictions"]}
        assert listed["total"] in (4, 20)  # the killed batch is all there or not at all
        for p in listed["predictions"]:
            assert request(again.base, f"/images/{p['image_sha256']}")[0] != 404
        assert post(again.base, [SAMPLES[0]])[0] == 201
    finally:
        again.stop()
    import sqlite3

    with sqlite3.connect(tmp_path / "data" / "hematovision.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def _swallow(fn, *args):
    with contextlib.suppress(OSError):
        fn(*args)


def test_sigterm_stops_every_worker_cleanly(tmp_path):
    """Round 1: both workers died of SIGABRT (an ONNX Runtime session made before the fork)."""
    server = Server(tmp_path / "data")
    assert post(server.base, SAMPLES[:2])[0] == 201
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=30) == 0
    log = server.log.read_text()
    assert "Shutting down: Master" in log
    assert "SIGABRT" not in log and "terminate called" not in log and "Traceback" not in log


def test_a_busy_port_is_one_clear_line_before_anything_starts(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            serve_command(port, tmp_path / "d"), capture_output=True, text=True, timeout=60
        )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: cannot listen on 127.0.0.1:{port}")
    assert "serving on" not in result.stdout + result.stderr


def test_a_bad_reference_intervals_file_is_one_clear_line_before_anything_starts(tmp_path):
    intervals = tmp_path / "lab.csv"
    intervals.write_text("class,low,high\nmonocyte,2,ten\n")
    command = serve_command(_free_port(), tmp_path / "d", "--reference-intervals", str(intervals))
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and lines == [
        f"error: {intervals}, line 2: low and high must be numbers (percent)"
    ], result.stderr
    assert not (tmp_path / "d").exists()  # nothing made before the check


def _raw(port: int, data: bytes, timeout: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        with contextlib.suppress(OSError):
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)


def test_requests_the_parser_refuses_get_the_json_error_shape(server):
    for data, status in (
        (b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", b"414"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 20_000 + b"\r\n\r\n", b"431"),
    ):
        answer = _raw(server.port, data)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.split(b" ")[1] == status and b"application/json" in head
        assert json.loads(body)["error"]["message"]


def test_slow_clients_cannot_take_the_service_down(tmp_path):
    """Two connections sending a body a byte a second (round 1: /healthz timed out)."""
    server = Server(tmp_path / "data", env={"HEMATOVISION_REQUEST_TIMEOUT": "4"})
    answers = []

    def slow_client():
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
            s.sendall(
                b"POST /api/v1/predictions HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n"
                b"Content-Type: multipart/form-data; boundary=b\r\n\r\n"
            )
            with contextlib.suppress(OSError):
                for _ in range(12):
                    s.sendall(b"x")
                    time.sleep(1)
            with contextlib.suppress(OSError):
                answers.append(s.recv(65536))

    try:
        clients = [threading.Thread(target=slow_client) for _ in range(2)]
        for c in clients:
            c.start()
        time.sleep(1)
        for _ in range(5):
            start = time.perf_counter()
            assert request(server.base, "/healthz", timeout=5)[0] == 200
            assert time.perf_counter() - start < 1.0
            time.sleep(0.5)
        for c in clients:
            c.join()
    finally:
        server.stop()
    assert len(answers) == 2 and all(a.startswith(b"HTTP/1.1 408") for a in answers), answers


@pytest.fixture
def small_disk(tmp_path):
    """A real 6 MB file system (tmpfs) for the data folder; needs root (as CI has)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], capture_output=True
    )
    require(done.returncode == 0, "mounting a small tmpfs needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_answers_507_keeps_what_is_stored_and_a_purge_frees_space(small_disk):
    server = Server(small_disk / "data", env={"HEMATOVISION_MIN_FREE_MB": "1"})
    try:
        first = post(server.base, SAMPLES[:3])[1]["predictions"]
        filler = small_disk / "filler"
        free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
        filler.write_bytes(b"\0" * (free - 150_000))  # leave room for a few images
        statuses = [post(server.base, [SAMPLES[i % len(SAMPLES)]])[0] for i in range(3, 24)]
        assert 507 in statuses and 500 not in statuses
        status, body = post(server.base, SAMPLES[5:10])
        assert status == 507 and body["error"]["code"] == "insufficient_storage"
        assert "disk is full" in body["error"]["message"]
        assert not list((small_disk / "data").rglob("*.tmp"))  # no partial file left behind
        health = request(server.base, "/healthz")
        assert health[0] == 503 and health[1]["disk"]["status"] == "low"
        for p in first:  # earlier records are all still there
            assert get_json(server.base, f"/api/v1/predictions/{p['id']}")["id"] == p["id"]
        for p in get_json(server.base, "/api/v1/predictions?limit=50")["predictions"]:
            url = f"/api/v1/predictions/{p['id']}?reason=disk%20full"
            assert request(server.base, url, "DELETE")[0] == 204  # a soft delete still commits
        purge = [sys.executable, "-m", "hematovision", "storage", "purge", "--older-than", "0"]
        before = os.statvfs(small_disk).f_bavail
        done = subprocess.run(
            [*purge, "--data-dir", str(small_disk / "data")], capture_output=True, text=True
        )
        assert done.returncode == 0 and "erased" in done.stdout, done.stderr
        images = [p for p in (small_disk / "data" / "images").rglob("*") if p.is_file()]
        assert not images and os.statvfs(small_disk).f_bavail > before  # space won back
        filler.unlink()
        assert post(server.base, [SAMPLES[20]])[0] == 201
        assert request(server.base, "/healthz")[0] == 200
    finally:
        server.stop()


# ---------------------------------------------------------------- as `make run` starts it
@pytest.fixture(scope="module")
def make_run():
    """`make run` from the repository root with its default settings (data in
    ./hematovision-data); the records the tests make are deleted again at the end."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = ROOT / ".pytest-make-run.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            ["make", "--no-print-directory", "run", f"PORT={port}"],
            cwd=ROOT,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    try:
        wait_until_up(base, process, log, seconds=300)  # make may install the web extra first
        yield base
    finally:
        _delete_created(base)
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
        log.unlink(missing_ok=True)


CREATED = {"predictions": set(), "smears": set()}


def _delete_created(base: str) -> None:
    """Delete what the tests made through the API, then erase just those records (the
    developer's own deleted records in ./hematovision-data are left to their purge)."""
    from hematovision.storage import Storage
    from hematovision.web.config import WebSettings

    for kind, ids in CREATED.items():
        for record_id in ids:
            with contextlib.suppress(OSError):
                request(base, f"/api/v1/{kind}/{record_id}?reason=test%20run", "DELETE")
    settings = WebSettings(data_dir=str(ROOT / "hematovision-data"))
    storage = Storage(settings.database_url, settings.data_dir)
    for record_id in CREATED["predictions"]:
        storage.erase_prediction(record_id)
    for record_id in CREATED["smears"]:
        storage.erase_smear(record_id)


def _remember(base: str) -> None:
    """Everything the default data folder has now that a test may have made."""
    for kind in CREATED:
        listed = get_json(base, f"/api/v1/{kind}?limit=50")
        CREATED[kind] |= {r["id"] for r in listed[kind]}


_MONOCYTES = '#sample-differential tr[data-class="monocyte"] [data-field="count"]'


def _wait_for(page, expression: str, seconds: float = 15):
    """Poll a JavaScript expression until it is truthy (``page.wait_for_function`` evaluates a
    string, which the pages' Content-Security-Policy rightly forbids)."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        if value := page.evaluate(expression):
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {expression}")


IMAGES_SETTLED = "[...document.images].every(i => !i.getAttribute('src') || i.complete)"
BROKEN_IMAGES = (
    "[...document.images].filter(i => i.getAttribute('src') && !(i.complete && i.naturalWidth > 0))"
    ".map(i => i.src)"
)


def _assert_every_image_loads(page) -> int:
    page.wait_for_load_state("load")
    _wait_for(page, IMAGES_SETTLED)
    assert page.evaluate(BROKEN_IMAGES) == []
    return page.evaluate("document.images.length")


def test_every_image_of_a_result_page_loads_under_make_run(make_run, browser, tmp_path):
    """Round 1: under the default `make run` every /images/... answered 500."""
    page = browser.new_page()
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(make_run + "/")
    page.set_input_files("#file-input", [str(SAMPLES[9]), str(SAMPLES[0])])
    page.click("#submit")
    page.wait_for_url("**/results/*")
    _remember(make_run)
    assert _assert_every_image_loads(page) == 2  # the batch's thumbnails
    page.goto(make_run + "/")
    page.set_input_files("#file-input", str(SAMPLES[9]))
    assert page.locator("#preview img").count() == 1  # previewed before sending
    page.click("#submit")
    page.wait_for_url("**/results/*")
    _remember(make_run)
    assert page.locator(".prediction .label").first.inner_text() == display_name("ig")
    page.click(".toggle-heatmap")
    _wait_for(page, "document.querySelector('.heatmap-image').naturalWidth > 0")
    assert page.locator(".heatmap-image").first.is_visible()
    assert not page.locator(".cell-image").first.is_visible()
    assert _assert_every_image_loads(page) == 2  # the cell and its heatmap
    assert page.evaluate("document.querySelector('.progress-bar.bg-success').style.width") != ""
    shots = Path(os.environ.get("HEMATOVISION_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / "result-page.png"), full_page=True)
    assert (shots / "result-page.png").stat().st_size > 10_000
    for path in ("/history", "/model", "/"):
        page.goto(make_run + path)
        assert _assert_every_image_loads(page) >= 1, path
    page.close()
    assert not [e for e in errors if "Content Security Policy" in e]


def test_every_image_of_a_smear_result_page_loads_under_make_run(make_run, browser, bccd_dir):
    field = sorted((BCCD / "JPEGImages").glob("*.jpg"))[1]
    page = browser.new_page()
    page.goto(make_run + "/")
    page.set_input_files("#smear-input", str(field))
    page.click("#smear-submit")
    page.wait_for_url("**/smears/*")
    _remember(make_run)
    assert _assert_every_image_loads(page) == 1
    plain = page.evaluate("document.querySelector('img.annotated').src")
    page.check(".toggle-marks")
    _wait_for(page, "document.querySelector('img.annotated').src.endsWith('marks=1')")
    assert _assert_every_image_loads(page) == 1 and plain.endswith("annotated.png")
    page.goto(make_run + "/history?kind=smears")
    assert page.locator("#smear-history a").count() >= 1
    page.close()


def test_pages_fit_a_phone_and_deleting_asks_why(make_run, browser):
    phone = browser.new_context(viewport={"width": 390, "height": 844})
    page = phone.new_page()
    status, body = post(make_run, [SAMPLES[0], SAMPLES[3]])
    _remember(make_run)
    for path in (
        "/",
        "/history",
        "/history?kind=smears",
        "/model",
        f"/results/{body['upload_id']}",
    ):
        page.goto(make_run + path)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, (path, width)
    page.goto(make_run + "/history")
    rows = page.locator("#history tbody tr").count()
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.locator("#history button.btn-outline-danger").first.click()
    page.wait_for_timeout(300)
    assert page.locator("#history tbody tr").count() == rows  # dismissed: nothing deleted
    page.once("dialog", lambda dialog: dialog.accept("duplicate upload"))
    page.locator("#history button.btn-outline-danger").first.click()
    page.wait_for_url("**/history*")
    page.wait_for_load_state()
    assert page.locator("#history tbody tr").count() == rows - 1
    phone.close()


def _tile(page, label: str | None = None, group: str | None = None):
    selector = ".cell-tile"
    if group:
        selector = f'.group-cells[data-group="{group}"] .cell-tile'
    if label:
        selector += f':not([data-label="{label}"])'
    return page.locator(selector).first


def _count(page, label: str) -> int:
    row = page.locator(f'#sample-differential tr[data-class="{label}"] [data-field="count"]')
    return int(row.inner_text())


def test_review_a_sample_with_the_keyboard_sign_it_and_amend_it_under_make_run(
    make_run, browser, tmp_path
):
    """The technologist's screen in single-user mode (`make run` on a fresh clone)."""
    page = browser.new_page()
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(make_run + "/samples")
    page.fill("#accession", f"PW-{int(time.time())}")
    page.click("#new-sample button")
    page.wait_for_url("**/samples/*")
    public_id = page.url.rsplit("/", 1)[1]
    page.set_input_files("#cell-files", [str(p) for p in SAMPLES[:8]])
    page.click("#add-cells button")
    page.wait_for_load_state("load")
    _remember(make_run)
    assert page.locator(".cell-tile").count() == 8
    assert _assert_every_image_loads(page) == 8

    # a digit reclassifies the selected cell (6: monocyte), the differential follows at once
    monocytes = _count(page, "monocyte")
    tile = _tile(page, label="monocyte")
    cell_id = tile.get_attribute("data-cell-id")
    tile.click()
    page.keyboard.press("6")
    moved = f'.group-cells[data-group="monocyte"] .cell-tile[data-cell-id="{cell_id}"]'
    page.wait_for_selector(moved)
    assert _count(page, "monocyte") == monocytes + 1
    # the reference flags follow the count as the server answers it
    summary = request(make_run, f"/api/v1/samples/{public_id}")[1]["differential"]
    count = summary["white_cells"]["monocyte"]["count"]
    _wait_for(page, f"document.querySelector('{_MONOCYTES}').textContent === '{count}'")
    for label, value in summary["white_cells"].items():
        row = page.locator(f'#sample-differential tr[data-class="{label}"]')
        assert row.locator('[data-field="count"]').inner_text() == str(value["count"])
        assert row.locator('[data-field="flag"]').inner_text() == (value["flag"] or ""), label
    assert page.locator("#outside-reference").is_visible() == bool(summary["outside_reference"])
    assert page.locator(moved).get_attribute("data-status") == "reclassified"
    # the selection moved on; x excludes it as debris
    selected = page.locator(".cell-tile.selected")
    other = selected.get_attribute("data-cell-id")
    assert other != cell_id
    page.keyboard.press("x")
    page.wait_for_selector(f'.group-cells[data-group="excluded"] [data-cell-id="{other}"]')
    # 3: a nucleated red cell, outside the adult interval (none), named as the page names it
    nucleated = page.locator(".cell-tile.selected").get_attribute("data-cell-id")
    page.keyboard.press("3")
    page.wait_for_selector(f'.group-cells[data-group="erythroblast"] [data-cell-id="{nucleated}"]')
    _wait_for(page, "!document.querySelector('#outside-reference').hidden")
    outside = page.locator('#outside-reference [data-field="outside"]').inner_text()
    assert "erythroblast (nucleated red cell)" in outside.split(", ")
    # drag a cell onto another class's group
    target = _tile(page, label="lymphocyte", group="neutrophil")
    if target.count():
        dragged = target.get_attribute("data-cell-id")
        target.drag_to(page.locator('.group-cells[data-group="lymphocyte"]'))
        page.wait_for_selector(f'.group-cells[data-group="lymphocyte"] [data-cell-id="{dragged}"]')
    # h: the heatmap of the selected cell, made when first asked for
    page.keyboard.press("h")
    _wait_for(page, "document.querySelector('.cell-tile.selected img').src.includes('heatmap')")
    _wait_for(page, "document.querySelector('.cell-tile.selected img').naturalWidth > 0")
    shots = Path(os.environ.get("HEMATOVISION_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / "review-screen.png"), full_page=True)

    # sign: locked, keys do nothing, the server refuses a correction
    page.click("#sign")
    page.wait_for_selector("#amend-form")
    assert page.locator("#sample-status").inner_text() == "signed"
    assert page.locator("#review").get_attribute("data-locked") == "true"
    before = page.locator(".cell-tile").first.get_attribute("data-label")
    page.locator(".cell-tile").first.click()
    page.keyboard.press("1")
    page.wait_for_timeout(300)
    assert page.locator(".cell-tile").first.get_attribute("data-label") == before
    body = json.dumps({"action": "confirm"}).encode()
    req = urllib.request.Request(
        f"{make_run}/api/v1/samples/{public_id}/cells/{cell_id}/review",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=30)
    assert refused.value.code == 409

    # amend with a reason: version 2 opens, version 1 stays in the history
    page.fill("#reason", "a monocyte was a lymphocyte")
    page.click("#amend-form button")
    page.wait_for_selector("#sign")
    assert page.locator("#sample-status").inner_text() == "amending"
    assert "version 1 signed by" in page.locator("#versions").inner_text()
    page.goto(f"{make_run}/samples/{public_id}/report")
    assert _assert_every_image_loads(page) >= 7  # the reviewed cells
    page.close()
    request(make_run, f"/api/v1/samples/{public_id}?reason=test", "DELETE")
    assert not [e for e in errors if "Content Security Policy" in e]
