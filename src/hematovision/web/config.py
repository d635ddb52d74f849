"""Web settings: flags of ``hematovision serve`` over ``HEMATOVISION_*`` environment variables."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path


@dataclass
class WebSettings:
    model: str | None = None  # artifact folder; None: the bundled model
    smear_model: str | None = None  # for cells cropped from fields; None: the bundled one
    data_dir: str = "hematovision-data"  # database file, images, secret key
    database_url: str | None = None  # any SQLAlchemy URL; default SQLite in data_dir
    max_upload_mb: float = 20.0
    api_token: str | None = None  # when set, the REST API needs "Authorization: Bearer <token>"
    store_images: bool = True
    max_files: int = 64  # images per upload

    @classmethod
    def from_env(cls, **overrides) -> WebSettings:
        env = os.environ
        settings = cls(
            model=env.get("HEMATOVISION_MODEL") or None,
            smear_model=env.get("HEMATOVISION_SMEAR_MODEL") or None,
            data_dir=env.get("HEMATOVISION_DATA_DIR", cls.data_dir),
            database_url=env.get("HEMATOVISION_DATABASE_URL") or None,
            max_upload_mb=float(env.get("HEMATOVISION_MAX_UPLOAD_MB", cls.max_upload_mb)),
            api_token=env.get("HEMATOVISION_API_TOKEN") or None,
            store_images=env.get("HEMATOVISION_STORE_IMAGES", "1") not in ("0", "false", "no"),
        )
        for key, value in overrides.items():
            if value is not None:
                setattr(settings, key, value)
        return settings

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
