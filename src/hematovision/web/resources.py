"""One accessor per resource of the running app, as flaskr's ``get_db``: the settings, the two
classifiers (loaded once per worker process by the factory) and the storage."""

from __future__ import annotations

from flask import current_app

from ..inference import Classifier
from ..storage import Storage
from .config import WebSettings


def get_settings() -> WebSettings:
    return current_app.config["HEMATOVISION"]


def get_classifier() -> Classifier:
    """The single-cell classifier."""
    return current_app.extensions["hematovision.classifier"]


def get_smear_classifier() -> Classifier:
    """The classifier for white cells cut from smear fields."""
    return current_app.extensions["hematovision.smear_classifier"]


def get_storage() -> Storage:
    return current_app.extensions["hematovision.storage"]
