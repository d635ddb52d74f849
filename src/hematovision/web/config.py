"""Web settings: flags of ``hematovision serve`` over ``HEMATOVISION_*`` environment variables."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path

from ..differential import ReferenceIntervals
from ..errors import HematoVisionError


@dataclass
class WebSettings:
    """Every setting of the web app, with its default; the environment names are
    ``HEMATOVISION_`` + the upper-case field name (e.g. ``HEMATOVISION_MAX_UPLOAD_MB``)."""

    model: str | None = None  # artifact folder; None: the bundled model
    smear_model: str | None = None  # for cells cropped from fields; None: ``model``
    data_dir: str = "hematovision-data"  # database file, images, secret key (made absolute)
    database_url: str | None = None  # any SQLAlchemy URL; default SQLite in data_dir
    max_upload_mb: float = 20.0  # bytes per request
    max_files: int = 64  # files per request
    max_image_megapixels: float = 40.0  # pixels per image (read from its header)
    max_request_megapixels: float = 100.0  # pixels per request, all images together
    min_free_mb: float = 100.0  # below this free disk space /healthz reports "low"
    api_token: str | None = None  # when set, the REST API needs "Authorization: Bearer <token>"
    store_images: bool = True
    trusted_proxies: int = 0  # proxies in front that set X-Forwarded-For/-Proto (TLS there)
    threads: int = 4  # threads per worker process (gthread): a slow client holds one thread
    engine: str = "auto"  # onnxruntime, openvino, or auto (see inference/engines.py)
    model_threads: int = 1  # inference threads per worker process
    request_timeout: float = 30.0  # seconds a client may take to send one request body
    reference_intervals: str | None = None  # CSV class,low,high; None: typical adult ones

    def __post_init__(self):
        # resolved once, at start-up: files are written and served from the same place
        # whatever folder a worker or a library later resolves relative paths against
        self.data_dir = str(Path(self.data_dir).expanduser().resolve())
        _check_limits(self)

    @classmethod
    def from_env(cls, **overrides) -> WebSettings:
        """Defaults, then ``HEMATOVISION_*`` variables, then ``overrides`` that are not None."""
        values = {}
        for f in fields(cls):
            text = os.environ.get(f"HEMATOVISION_{f.name.upper()}")
            if text:
                values[f.name] = _parse(f.name, text, f.default)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @cached_property
    def intervals(self) -> ReferenceIntervals:
        """The lab's reference intervals, read once (a bad file stops the server starting)."""
        return ReferenceIntervals.configured(self.reference_intervals)

    def secret_key(self) -> bytes:
        """``HEMATOVISION_SECRET_KEY``, else a key made once and kept in the data folder, so
        that every worker process signs sessions (and CSRF tokens) alike."""
        if os.environ.get("HEMATOVISION_SECRET_KEY"):
            return os.environ["HEMATOVISION_SECRET_KEY"].encode()
        path = Path(self.data_dir) / "secret_key"
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path.read_bytes()
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(32))
        return path.read_bytes()


# a limit that cannot work (none, or a negative size) stops the start with one clear line
LIMITS = (
    (("max_upload_mb", "max_image_megapixels", "max_request_megapixels", "request_timeout"),
     lambda v: v > 0, "more than 0"),
    (("max_files", "threads", "model_threads"), lambda v: v >= 1, "at least 1"),
    (("min_free_mb", "trusted_proxies"), lambda v: v >= 0, "0 or more"),
)  # fmt: skip


def _check_limits(settings: WebSettings) -> None:
    for names, holds, rule in LIMITS:
        for name in names:
            value = getattr(settings, name)
            if not holds(value):  # NaN holds no rule either
                raise HematoVisionError(
                    f"the setting {name} (HEMATOVISION_{name.upper()}) must be {rule}, not {value}"
                )


BOOLEANS = {"1": True, "true": True, "yes": True, "on": True}
BOOLEANS |= {"0": False, "false": False, "no": False, "off": False}


def _parse(name: str, text: str, default):
    """An environment variable's text as the type of the setting's default."""
    kinds = {bool: "yes or no (1/0, true/false, on/off)", int: "a whole number", float: "a number"}
    try:
        if isinstance(default, bool):
            return BOOLEANS[text.strip().lower()]
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except (KeyError, ValueError):
        raise HematoVisionError(
            f"HEMATOVISION_{name.upper()}={text!r} is not {kinds[type(default)]}"
        ) from None
    return text
