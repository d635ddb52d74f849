"""The web application: Flask application factory, pages and REST API blueprints.

Serving imports only ``inference`` and ``storage``: no torch at run time.
"""

from __future__ import annotations

from pathlib import Path

from flask import Flask, jsonify, render_template, request
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException

from ..inference import Classifier
from ..smear import load_smear_classifier
from ..storage import Storage
from .config import WebSettings

csrf = CSRFProtect()

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)


def create_app(
    settings: WebSettings | None = None,
    classifier: Classifier | None = None,
    migrate: bool = True,
    smear_classifier: Classifier | None = None,
) -> Flask:
    """Build the app: the classifiers (loaded once per process) and one Storage."""
    settings = settings or WebSettings.from_env()
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=settings.secret_key(),
        MAX_CONTENT_LENGTH=int(settings.max_upload_mb * 2**20),
        HEMATOVISION=settings,
        WTF_CSRF_TIME_LIMIT=None,
    )
    storage = Storage(settings.database_url, settings.data_dir, settings.store_images)
    if migrate:
        storage.migrate()
    app.extensions["hematovision.storage"] = storage
    app.extensions["hematovision.classifier"] = classifier or Classifier.load(settings.model)
    app.extensions["hematovision.smear_classifier"] = smear_classifier or load_smear_classifier(
        settings.smear_model
    )
    csrf.init_app(app)

    from .api import api
    from .pages import pages

    csrf.exempt(api)  # the API takes no cookies: token auth, not forms
    app.register_blueprint(pages)
    app.register_blueprint(api)

    @app.after_request
    def security_headers(response):
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "same-origin"
        return response

    def wants_json() -> bool:
        return request.path.startswith("/api/") or request.path == "/healthz"

    @app.errorhandler(CSRFError)
    def csrf_error(exc):
        return render_template("error.html", status=400, message=exc.description), 400

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        message = {413: f"the upload is larger than {settings.max_upload_mb:g} MB"}.get(
            exc.code, exc.description
        )
        if wants_json():
            code = (exc.name or "error").lower().replace(" ", "_")
            return jsonify(error={"code": code, "message": message}), exc.code
        return render_template("error.html", status=exc.code, message=message), exc.code

    @app.errorhandler(Exception)
    def unexpected(exc):  # never a stack trace in an answer; the log keeps it
        app.logger.exception("unhandled error")
        if wants_json():
            return jsonify(error={"code": "internal_error", "message": "internal error"}), 500
        return render_template("error.html", status=500, message="internal error"), 500

    return app


def static_vendor_dir() -> Path:
    """Bootstrap 5, as installed from PyPI with Bootstrap-Flask (MIT; licence headers kept)."""
    import flask_bootstrap

    return Path(flask_bootstrap.__file__).with_name("static") / "bootstrap5"
