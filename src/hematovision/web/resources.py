"""One accessor per resource of the running app, as flaskr's ``get_db``: the settings, the two
classifiers (loaded once per worker process, and again when an admin activates another model
version) and the storage."""

from __future__ import annotations

import threading
import time

from flask import current_app, g
from sqlalchemy.exc import OperationalError

from ..inference import Classifier
from ..storage import Storage
from .config import WebSettings

ACTIVE_CHECK_SECONDS = 1.0  # how stale a worker's idea of the active model may be
_swap = threading.Lock()


def get_settings() -> WebSettings:
    return current_app.config["HEMATOVISION"]


def get_classifier() -> Classifier:
    """The single-cell classifier."""
    return _models()[0]


def get_smear_classifier() -> Classifier:
    """The classifier for white cells cut from smear fields."""
    return _models()[1]


def get_storage() -> Storage:
    return current_app.extensions["hematovision.storage"]


def _models() -> tuple[Classifier, Classifier]:
    """(cells, smear cells): the model version an admin activated, else those the app started
    with; one answer for the whole request."""
    if "models" not in g:
        state = current_app.extensions["hematovision.models"]
        if time.monotonic() - state["checked"] > ACTIVE_CHECK_SECONDS:
            with _swap:  # only when it is time to look: no lock on every request
                if time.monotonic() - state["checked"] > ACTIVE_CHECK_SECONDS:
                    state["checked"] = time.monotonic()
                    try:
                        active = get_storage().models.active() or None
                    except OperationalError:  # the database is down: keep the model in use
                        active = state["slug"]
                    _follow(state, active)
        g.models = state["current"]
    return g.models


def _follow(state: dict, slug: str | None) -> None:
    if slug == state["slug"]:
        return
    if slug is None:
        state["current"] = state["configured"]
    else:
        settings = get_settings()
        path = get_storage().models.path(slug)
        loaded = Classifier.load(path, engine=settings.engine, threads=settings.model_threads)
        state["current"] = (loaded, loaded)  # an adapted model classifies smear cells too
    state["slug"] = slug
    current_app.logger.info("classifying with %s", slug or "the configured model")
