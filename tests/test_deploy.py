"""The Dockerfile, really built and started: podman builds it (chroot isolation) on a base
image made from Debian's packages (no registry of images is reachable here: debootstrap, then
podman import; Debian bookworm's python3 is 3.11), and buildah runs the server inside it on the
host's network (podman run cannot set rlimits/cgroups on this machine). Then /healthz, a login
by token and one prediction, from outside."""

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from test_server import _multipart

from conftest import require

ROOT = Path(__file__).resolve().parents[1]
BASE = "localhost/hematovision-base:bookworm"  # kept between runs: made once per machine
IMAGE = "localhost/hematovision:test"
CA = "/etc/ssl/certs/ca-certificates.crt"
SAMPLE = ROOT / "src" / "hematovision" / "assets" / "samples"
PASSWORD = "correct horse battery"


def sh(*command, **options) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, text=True, **options)
    assert done.returncode == 0, f"{' '.join(command)}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    tools = [shutil.which(t) for t in ("podman", "buildah", "debootstrap")]
    require(all(tools), "podman, buildah and debootstrap (Debian packages; .ci/run installs them)")
    if subprocess.run(["podman", "image", "exists", BASE]).returncode != 0:
        rootfs = tmp_path_factory.mktemp("rootfs")
        sh(
            "debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
            "bookworm", str(rootfs), "http://deb.debian.org/debian", timeout=900,
        )  # fmt: skip
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        sh("podman", "import", "-", BASE, stdin=tar.stdout, timeout=300)
        tar.wait()
    replaced = image_id(IMAGE)
    sh(
        "podman", "build", "--isolation", "chroot", "--format", "docker",
        "--build-arg", f"BASE={BASE}", "--build-arg", "PIP_CERT=/etc/ssl/certs/host-ca.crt",
        "--volume", f"{CA}:/etc/ssl/certs/host-ca.crt:ro", "-t", IMAGE, str(ROOT),
        timeout=1200,
    )  # fmt: skip
    if replaced and replaced != image_id(IMAGE):  # its tag moved: remove it, not left dangling
        subprocess.run(["podman", "rmi", replaced], capture_output=True)  # kept if in use
    return IMAGE


def image_id(name: str) -> str | None:
    found = subprocess.run(["podman", "image", "inspect", "--format", "{{.Id}}", name],
                           capture_output=True, text=True)  # fmt: skip
    return found.stdout.strip() if found.returncode == 0 else None


@pytest.fixture
def container(image):
    name = sh("buildah", "from", "--isolation", "chroot", image).stdout.strip().splitlines()[-1]
    yield name
    subprocess.run(["buildah", "rm", name], capture_output=True)


def inside(container: str, script: str, **options) -> subprocess.CompletedProcess:
    command = ["buildah", "run", "--isolation", "chroot", "--network", "host", container]
    return sh(*command, "--", "sh", "-c", script, **options)


def test_the_image_is_what_the_readme_says(image, container):
    info = json.loads(sh("podman", "image", "inspect", image).stdout)[0]
    config = info["Config"]
    assert config["User"] == "hematovision" and "/data" in config["Volumes"]
    assert "healthz" in " ".join(info["Healthcheck"]["Test"])
    assert config["Env"] and any(e.startswith("HEMATOVISION_DATA_DIR=/data") for e in config["Env"])
    no_torch = "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)"
    inside(container, f'python3 -c "{no_torch}"')  # serving needs no PyTorch


def test_the_built_image_serves_health_and_a_prediction(container):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # a server others can reach needs an account first
    refused = subprocess.run(
        ["buildah", "run", "--isolation", "chroot", "--network", "host", container, "--",
         "hematovision", "serve", "--host", "0.0.0.0", "--port", str(port)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert refused.returncode != 0 and "users add NAME --role admin" in refused.stderr
    made = inside(
        container,
        f"echo '{PASSWORD}' | hematovision -q users add admin --role admin --password-stdin"
        " && hematovision -q users token admin",
        timeout=300,
    )
    token = made.stdout.strip().splitlines()[-1]
    server = subprocess.Popen(
        ["buildah", "run", "--isolation", "chroot", "--network", "host", container, "--",
         "hematovision", "-q", "serve", "--host", "0.0.0.0", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        health = _wait_for(f"{base}/healthz", server)
        assert health["status"] == "ok"
        with pytest.raises(urllib.error.HTTPError) as anonymous:
            urllib.request.urlopen(f"{base}/api/v1/predictions", timeout=10)
        assert anonymous.value.code == 401  # accounts are on inside the image
        answer = _post_image(f"{base}/api/v1/predictions", next(SAMPLE.glob("*.jpg")), token)
        assert answer["predictions"][0]["label"] and answer["model"]["version"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


def _wait_for(url: str, server: subprocess.Popen, seconds: float = 120) -> dict:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.loads(response.read())
        except OSError:
            if server.poll() is not None:
                raise AssertionError(server.stderr.read().decode()[-3000:]) from None
            time.sleep(0.5)
    raise AssertionError("the server in the image did not answer")


def _post_image(url: str, path: Path, token: str) -> dict:
    body, boundary = _multipart([path])
    headers = {
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        "Authorization": f"Bearer {token}",
    }
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 201
        return json.loads(response.read())
