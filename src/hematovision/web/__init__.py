"""The web application: Flask application factory, pages and REST API blueprints.

Serving imports only ``inference``, ``smear`` and ``storage``: no torch at run time. The
classifiers' modules are imported by the factory, as the blueprints are, so that the CLI's
account and model commands, which read ``config`` only, start without them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from flask import Flask, jsonify, render_template, request
from flask.sessions import SecureCookieSessionInterface
from flask_wtf.csrf import CSRFError, CSRFProtect
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import BadRequest, HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import BaseConverter

from ..storage import Storage, StorageFull
from .config import WebSettings

if TYPE_CHECKING:
    from ..inference import Classifier

csrf = CSRFProtect()

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
MAX_ID = 2**31 - 1  # PostgreSQL's integer; SQLite's is larger, the URL rule is the same


class IdConverter(BaseConverter):
    """A record id in a URL: digits; one outside 1..2^31-1 becomes 0, an id no record has, so
    it is simply not found (refusing it here would make werkzeug answer 405 for some methods)."""

    regex = r"\d+"

    def to_python(self, value: str) -> int:
        number = int(value)
        return number if 1 <= number <= MAX_ID else 0


class SessionInterface(SecureCookieSessionInterface):
    """The session cookie is also ``Secure`` whenever the request came over HTTPS (directly or
    through a trusted proxy), so it is never sent back over plain HTTP."""

    def get_cookie_secure(self, app) -> bool:
        return super().get_cookie_secure(app) or request.is_secure


def create_app(
    settings: WebSettings | None = None,
    classifier: Classifier | None = None,
    migrate: bool = True,
    smear_classifier: Classifier | None = None,
) -> Flask:
    """Build the app: the classifiers (loaded once per process) and one Storage."""
    from ..inference import Classifier
    from ..smear import load_smear_classifier

    settings = settings or WebSettings.from_env()
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=settings.secret_key(),
        MAX_CONTENT_LENGTH=int(settings.max_upload_mb * 2**20),
        MAX_FORM_PARTS=settings.max_files + 20,
        HEMATOVISION=settings,
        WTF_CSRF_TIME_LIMIT=None,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_HTTPONLY=True,
    )
    app.session_interface = SessionInterface()
    app.url_map.converters["id"] = IdConverter
    if settings.trusted_proxies:
        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)
    storage = Storage(
        settings.database_url, settings.data_dir, settings.store_images, settings.min_free_mb
    )
    if migrate:
        storage.migrate()
    app.extensions["hematovision.storage"] = storage
    engine = {"engine": settings.engine, "threads": settings.model_threads}
    cells = classifier or Classifier.load(settings.model, **engine)
    if smear_classifier is None and settings.smear_model:
        smear_classifier = load_smear_classifier(settings.smear_model, **engine)
    configured = (cells, cells if smear_classifier is None else smear_classifier)  # one model
    # what resources.get_classifier() serves: these, until an admin activates another version
    app.extensions["hematovision.models"] = {
        "configured": configured,
        "current": configured,
        "slug": None,
        "checked": float("-inf"),
    }
    csrf.init_app(app)

    from .api import api
    from .auth import auth, login_manager
    from .pages import pages
    from .review import review

    login_manager.init_app(app)
    csrf.exempt(api)  # the API takes no cookies: token auth, not forms
    for blueprint in (pages, api, auth, review):
        app.register_blueprint(blueprint)
    _register_hooks(app)
    _register_error_handlers(app, settings)
    return app


def wants_json() -> bool:
    return request.path.startswith("/api/") or request.path == "/healthz"


def error_response(status: int, code: str, message: str, headers: dict | None = None, **extra):
    """The one error shape: JSON ``{"error": {"code", "message"}}`` on the API, a page elsewhere."""
    if wants_json():
        response = jsonify(error={"code": code, "message": message}, **extra)
    else:
        response = render_template("error.html", status=status, message=message)
    return response, status, headers or {}


def _register_hooks(app: Flask) -> None:
    @app.before_request
    def refuse_nul_bytes():
        # a NUL byte is never meaningful in a URL or a form field, and PostgreSQL cannot store it
        if "\x00" in request.full_path or any("\x00" in v for v in request.args.values()):
            raise BadRequest("the request contains a NUL byte")

    from .auth import accounts_on, current_account, guard

    app.before_request(guard)  # after the NUL check: every route, pages, images and API

    @app.context_processor
    def account():
        try:
            on = accounts_on()
            return {"accounts": on, "account": current_account() if on else None}
        except OperationalError:  # rendering the page that says the database is down
            return {"accounts": False, "account": None}

    @app.after_request
    def security_headers(response):
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "same-origin"
        return response


def _register_error_handlers(app: Flask, settings: WebSettings) -> None:
    """Every error answers in the one shape of ``error_response``; never a stack trace."""

    @app.errorhandler(CSRFError)
    def csrf_error(exc):
        return error_response(400, "csrf", exc.description)

    @app.errorhandler(StorageFull)
    def storage_full(exc):
        return error_response(507, exc.code, f"{exc}; free space on the server and try again")

    @app.errorhandler(OperationalError)
    def database_unavailable(exc):  # down, restarting, or (SQLite) locked past its timeout
        app.logger.warning("database unavailable: %s", str(exc.orig or exc).strip())
        message = "the database did not answer; try again in a moment"
        return error_response(503, "database_unavailable", message, {"Retry-After": "5"})

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        message, headers = exc.description, {}
        if exc.code == 413:
            message = _too_large_message(settings)
        if exc.code == 405:  # keep the Allow header the exception carries
            headers = {k: v for k, v in exc.get_headers() if k == "Allow"}
        code = (exc.name or "error").lower().replace(" ", "_")
        return error_response(exc.code, code, message, headers)

    @app.errorhandler(Exception)
    def unexpected(exc):  # never a stack trace in an answer; the log keeps it
        app.logger.exception("unhandled error")
        return error_response(500, "internal_error", "internal error")


def _too_large_message(settings: WebSettings) -> str:
    length = request.content_length
    if length is not None and length <= settings.max_upload_mb * 2**20:
        return f"too many parts in the form: at most {settings.max_files} files in one request"
    return f"the upload is larger than {settings.max_upload_mb:g} MB"


def static_vendor_dir() -> Path:
    """Bootstrap 5, as installed from PyPI with Bootstrap-Flask (MIT; licence headers kept)."""
    import flask_bootstrap

    return Path(flask_bootstrap.__file__).with_name("static") / "bootstrap5"
