"""``hematovision serve``: the app under gunicorn, a production WSGI server.

Workers are threaded (gthread): a slow client holds one thread, not a whole process, and a
request body that is still arriving after ``request_timeout`` seconds is refused (408). The
master checks the model, the database and the port before any worker starts, and loads no
ONNX Runtime session itself (a session's threads must not be copied into forked workers).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import time

from gunicorn import util
from gunicorn.app.base import BaseApplication
from gunicorn.workers.gthread import ThreadWorker
from werkzeug.exceptions import RequestTimeout

from ..artifact import ModelArtifact
from ..errors import HematoVisionError
from ..inference.classifier import DEFAULT_MODEL
from ..inference.engines import resolve_engine
from ..storage import Storage
from .config import WebSettings

log = logging.getLogger("hematovision")


def write_json_error(sock, status_int, reason, mesg):
    """gunicorn's answer to a request it cannot parse (414, 431, 400...), in the API's shape."""
    code = reason.lower().replace(" ", "_")
    body = json.dumps({"error": {"code": code, "message": mesg or reason}}).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin1") + body)


class Worker(ThreadWorker):
    """gunicorn's threaded worker, answering its own errors as JSON."""

    def init_process(self):
        util.write_error = write_json_error  # this worker process only
        super().init_process()


class _DeadlineInput:
    """``wsgi.input`` that stops reading once the request's deadline has passed."""

    def __init__(self, stream, deadline: float):
        self.stream, self.deadline = stream, deadline

    def _check(self):
        if time.monotonic() > self.deadline:
            raise RequestTimeout("the request body took too long to arrive")

    def read(self, *args):
        self._check()
        try:
            return self.stream.read(*args)
        except TimeoutError:
            raise RequestTimeout("the request body took too long to arrive") from None

    def readline(self, *args):
        self._check()
        return self.stream.readline(*args)

    def __iter__(self):
        return iter(self.readline, b"")


class BodyDeadline:
    """WSGI middleware: a client has ``seconds`` to send its request body (slow-body attacks)."""

    def __init__(self, app, seconds: float):
        self.app, self.seconds = app, seconds

    def __call__(self, environ, start_response):
        connection = environ.get("gunicorn.socket")
        if connection is not None:
            connection.settimeout(self.seconds)  # no single read may wait longer either
        environ["wsgi.input"] = _DeadlineInput(
            environ["wsgi.input"], time.monotonic() + self.seconds
        )
        return self.app(environ, start_response)


class _Gunicorn(BaseApplication):
    def __init__(self, settings: WebSettings, options: dict):
        self.settings, self.options = settings, options
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        from . import create_app

        app = create_app(self.settings, migrate=False)  # each worker loads the model once
        app.wsgi_app = BodyDeadline(app.wsgi_app, self.settings.request_timeout)
        return app


def check_port(host: str, port: int) -> None:
    """Fail with one clear line when the address cannot be listened on (e.g. in use)."""
    if not 1 <= port <= 65535:
        raise HematoVisionError(f"port {port}: must be from 1 to 65535")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise HematoVisionError(
                f"cannot listen on {host}:{port}: {exc.strerror}"
                + ("; another server is using it: choose another --port" if exc.errno == 98 else "")
            ) from None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_accounts(storage: Storage, host: str) -> None:
    """With no account the app is single-user, open to whoever reaches it: that is only
    allowed on this machine's loopback address."""
    if storage.users.any():
        log.info("accounts are on: every page and API route needs a login or a token")
    elif is_loopback(host):
        log.info("single-user mode (no account yet): only this machine can reach the server")
    else:
        raise HematoVisionError(
            f"no account exists, and {host} is reachable from other machines: create the first "
            "admin with 'hematovision users add NAME --role admin' (same --data-dir or "
            "--database-url), or serve on 127.0.0.1"
        )


def serve(host: str = "127.0.0.1", port: int = 5000, workers: int = 2, **overrides) -> None:
    """Check the models, the port and the database once, then run ``workers`` processes."""
    settings = WebSettings.from_env(**overrides)
    for path in {settings.model or DEFAULT_MODEL, settings.smear_model or DEFAULT_MODEL}:
        ModelArtifact.load(path).check()  # a bad --model fails here, in one line
    log.info("reference intervals: %s", settings.intervals.source)  # a bad file fails here
    engine = resolve_engine(settings.engine)  # so does an engine that is not installed
    check_port(host, port)
    storage = Storage(settings.database_url, settings.data_dir, settings.store_images)
    storage.migrate()
    check_accounts(storage, host)
    settings.secret_key()  # created before the workers start, shared by all of them
    log.info(
        "serving on http://%s:%d with %d workers (%s); data in %s",
        host,
        port,
        workers,
        engine,
        settings.data_dir,
    )
    options = {
        "bind": f"{host}:{port}",
        "workers": workers,
        "worker_class": Worker,
        "threads": settings.threads,
        "timeout": 120,
        "graceful_timeout": 10,
        "accesslog": "-",
    }
    _Gunicorn(settings, options).run()
