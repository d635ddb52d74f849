"""Accounts: who may see and do what (Flask-Login sessions, personal API tokens, roles).

Accounts are on as soon as one user exists (``hematovision users add``). Then every page,
image and API route needs a login (pages) or a personal token (API), except the login page,
``/healthz``, the OpenAPI document and static assets. Roles rank viewer < technologist <
admin: reading needs a viewer, any change a technologist, and the views marked
``@requires("admin")`` an admin. With no user the app runs single-user, for the person at
this machine: ``serve`` then listens on a loopback address only (see server.py).
"""

from __future__ import annotations

import hmac
from functools import wraps

from flask import Blueprint, current_app, g, redirect, render_template, request, url_for
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user

from .resources import get_settings, get_storage

RANK = {"viewer": 0, "technologist": 1, "admin": 2}
PUBLIC = {"auth.login", "api.healthz", "api.openapi", "pages.vendor", "static"}
READ_METHODS = {"GET", "HEAD", "OPTIONS"}

auth = Blueprint("auth", __name__)
login_manager = LoginManager()


class Account(UserMixin):
    """The logged-in user as Flask-Login sees it (a copy of the row, never the session's)."""

    def __init__(self, user):
        self.id, self.username, self.role = user.id, user.username, user.role

    def may(self, role: str) -> bool:
        return RANK[self.role] >= RANK[role]


@login_manager.user_loader
def _load(user_id: str):
    user = get_storage().users.get(int(user_id)) if user_id.isdigit() else None
    return Account(user) if user is not None and user.active else None


def requires(role: str):
    """Mark a view as needing at least ``role`` (checked by ``guard`` before every request)."""

    def mark(view):
        view.required_role = role
        return wraps(view)(view)

    return mark


def accounts_on() -> bool:
    if "accounts_on" not in g:
        g.accounts_on = get_storage().users.any()
    return g.accounts_on


def current_account() -> Account | None:
    """The user behind this request: a token's (API) or the session's (pages)."""
    if "account" not in g:
        g.account = None
        if request.path.startswith("/api/"):
            sent = request.headers.get("Authorization", "")
            user = get_storage().users.by_token(sent[7:]) if sent.startswith("Bearer ") else None
            g.account = Account(user) if user is not None else None
        elif current_user.is_authenticated:
            g.account = current_user
    return g.account


def actor() -> str | None:
    """The name recorded in the audit log and on signatures; None means the local user."""
    account = current_account() if accounts_on() else None
    return account.username if account else None


def audit(action: str, target: str, **detail) -> None:
    """One audit-log entry in the name of the user behind this request."""
    get_storage().audit.record(actor(), action, target, **detail)


def delete_audited(delete, record_id, kind: str, reason: str) -> None:
    """``delete(record_id, reason, by)`` (a storage soft delete) in the name of the user
    behind this request, and its audit entry with the reason; raises what it raises."""
    delete(record_id, reason, actor())
    audit("deleted", f"{kind}:{record_id}", reason=reason.strip()[:500])


def may(role: str) -> bool:
    """Can the user behind this request act as ``role``? (Always, in single-user mode.)"""
    if not accounts_on():
        return True
    account = current_account()
    return account is not None and account.may(role)


def guard():
    """Before every request: with accounts on, a login or token, then the route's role."""
    from . import error_response

    if request.endpoint in PUBLIC or request.endpoint is None:
        return None
    if not accounts_on():
        return _shared_token()
    account = current_account()
    if account is None:
        if request.path.startswith("/api/"):
            message = "log in: send 'Authorization: Bearer <your personal API token>'"
            return error_response(401, "unauthorized", message)
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
    view = current_app.view_functions.get(request.endpoint)
    needed = getattr(view, "required_role", None)
    needed = needed or ("viewer" if request.method in READ_METHODS else "technologist")
    if not account.may(needed):
        return error_response(403, "forbidden", f"this needs the {needed} role")
    return None


def _shared_token():
    """Single-user mode: the API's one shared token, if the server has one set."""
    from . import error_response

    token = get_settings().api_token
    if not token or not request.path.startswith("/api/"):
        return None
    sent = request.headers.get("Authorization", "")
    if not (sent.startswith("Bearer ") and hmac.compare_digest(sent[7:].encode(), token.encode())):
        return error_response(
            401, "unauthorized", "this server needs 'Authorization: Bearer <token>'"
        )
    return None


def _safe_next(target: str | None) -> str:
    """Only a path on this server (never //host or a scheme): no open redirect."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("pages.index")


@auth.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "GET":
        return render_template("login.html", error=None, accounts=accounts_on())
    username = request.form.get("username", "")
    user = get_storage().users.authenticate(username, request.form.get("password", ""))
    if user is None:
        get_storage().audit.record(username[:64] or "?", "login_failed", f"user:{username[:58]}")
        error = "unknown user name or wrong password (or the account is disabled)"
        return render_template("login.html", error=error, accounts=accounts_on()), 401
    login_user(Account(user))
    get_storage().audit.record(user.username, "logged_in", f"user:{user.username}")
    return redirect(_safe_next(request.args.get("next")), code=303)


@auth.post("/logout")
def logout():
    if current_user.is_authenticated:
        get_storage().audit.record(
            current_user.username, "logged_out", "user:" + current_user.username
        )
    logout_user()
    return redirect(url_for("auth.login"), code=303)
