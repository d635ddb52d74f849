"""``hematovision serve``: the app under gunicorn, a production WSGI server."""

from __future__ import annotations

import logging

from gunicorn.app.base import BaseApplication

from ..inference import Classifier
from ..smear import load_smear_classifier
from ..storage import Storage
from .config import WebSettings

log = logging.getLogger("hematovision")


class _Gunicorn(BaseApplication):
    def __init__(self, settings: WebSettings, options: dict):
        self.settings, self.options = settings, options
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        from . import create_app

        return create_app(self.settings, migrate=False)  # each worker loads the model once


def serve(host: str = "127.0.0.1", port: int = 5000, workers: int = 2, **overrides) -> None:
    """Check the model and migrate the database once, then run ``workers`` processes."""
    settings = WebSettings.from_env(**overrides)
    Classifier.load(settings.model)  # a bad --model fails here, with one clear line
    load_smear_classifier(settings.smear_model)
    Storage(settings.database_url, settings.data_dir, settings.store_images).migrate()
    settings.secret_key()  # created before the workers start, shared by all of them
    log.info(
        "serving on http://%s:%d with %d workers; data in %s",
        host,
        port,
        workers,
        settings.data_dir,
    )
    _Gunicorn(
        settings,
        {
            "bind": f"{host}:{port}",
            "workers": workers,
            "timeout": 120,
            "accesslog": "-",
            "graceful_timeout": 10,
        },
    ).run()
