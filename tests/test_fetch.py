"""The downloaders, against an archive served by a local HTTP server on 127.0.0.1."""

import hashlib
import http.server
import io
import tarfile
import threading
import zipfile

import pytest
from PIL import Image

from hematovision.data import fetch, scan_folder
from hematovision.data.fetch import download
from hematovision.errors import HematoVisionError


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves one in-memory file, honouring 'Range: bytes=N-' like a real CDN."""

    payload = b""
    requests: list = []

    def do_GET(self):  # noqa: N802 - http.server's naming
        type(self).requests.append(self.headers.get("Range"))
        data, status = self.payload, 200
        rng = self.headers.get("Range")
        if rng:
            start = int(rng.split("=")[1].rstrip("-"))
            if start >= len(data):
                self.send_response(416)
                self.end_headers()
                return
            data, status = data[start:], 206
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    RangeHandler.requests = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()


def _pbc_like_zip(extra: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for cls in ("basophil", "neutrophil"):
            for i in range(3):
                img = io.BytesIO()
                Image.new("RGB", (36, 36), (i * 40, 80, 120)).save(img, "JPEG")
                zf.writestr(f"PBC_dataset_normal_DIB/{cls}/{cls}_{i}.jpg", img.getvalue())
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_fetch_downloads_verifies_and_installs(server, tmp_path):
    RangeHandler.payload = _pbc_like_zip()
    url = f"http://127.0.0.1:{server.server_port}/pbc.zip"
    digest = hashlib.sha256(RangeHandler.payload).hexdigest()
    info = fetch("pbc", tmp_path, url=url, sha256=digest, show_progress=False)
    assert info["verified"] and info["sha256"] == digest and info["licence"] == "CC BY 4.0"
    folder = scan_folder(tmp_path / "pbc")
    assert folder.counts() == {"basophil": 3, "neutrophil": 3}


def test_fetch_rejects_a_checksum_mismatch_and_discards_the_download(server, tmp_path):
    RangeHandler.payload = _pbc_like_zip()
    url = f"http://127.0.0.1:{server.server_port}/pbc.zip"
    with pytest.raises(HematoVisionError, match="SHA-256 mismatch"):
        fetch("pbc", tmp_path, url=url, sha256="0" * 64, show_progress=False)
    assert not (tmp_path / "pbc").exists()
    assert not list((tmp_path / ".downloads").glob("*.zip"))


def test_download_resumes_from_a_partial_file(server, tmp_path):
    RangeHandler.payload = bytes(range(256)) * 4000
    dest = tmp_path / "file.bin"
    dest.with_name("file.bin.part").write_bytes(RangeHandler.payload[:300_000])
    download(f"http://127.0.0.1:{server.server_port}/f", dest, show_progress=False)
    assert dest.read_bytes() == RangeHandler.payload
    assert RangeHandler.requests == ["bytes=300000-"]


def test_archive_with_path_escape_is_refused_and_nothing_written(tmp_path):
    archive = tmp_path / "evil.zip"
    archive.write_bytes(_pbc_like_zip({"../../escaped.txt": b"gotcha"}))
    with pytest.raises(HematoVisionError, match="unsafe path"):
        fetch("pbc", tmp_path / "dest", archive=archive, show_progress=False)
    assert not (tmp_path / "escaped.txt").exists()
    assert not (tmp_path / "dest" / "pbc").exists()


def test_install_from_a_local_tar_archive(tmp_path):
    src = tmp_path / "src" / "BCCD_Dataset-master" / "BCCD"
    (src / "JPEGImages").mkdir(parents=True)
    (src / "Annotations").mkdir()
    Image.new("RGB", (64, 48)).save(src / "JPEGImages" / "BloodImage_00000.jpg")
    (src / "Annotations" / "BloodImage_00000.xml").write_text("<annotation/>")
    archive = tmp_path / "bccd.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(tmp_path / "src" / "BCCD_Dataset-master", arcname="BCCD_Dataset-master")
    info = fetch("bccd", tmp_path / "dest", archive=archive, show_progress=False)
    assert (tmp_path / "dest" / "bccd" / "JPEGImages" / "BloodImage_00000.jpg").is_file()
    assert not info["verified"] and len(info["sha256"]) == 64


def test_unreachable_server_is_a_clear_error(tmp_path):
    with pytest.raises(HematoVisionError, match="download failed"):
        fetch("pbc", tmp_path, url="http://127.0.0.1:9/none.zip", show_progress=False)
