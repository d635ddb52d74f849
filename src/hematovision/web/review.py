"""The lab's pages: samples, the review screen (keyboard first), sign-off and amendments,
the printable report and the FHIR document, accounts and the audit log (admins)."""

from __future__ import annotations

import io
import json
import math

from flask import Blueprint, Response, abort, redirect, render_template, request, url_for

from ..artifact import ModelArtifact
from ..errors import HematoVisionError
from ..pdf_report import SampleReport, sample_pdf
from ..storage import LabError
from ..tables import write_differential_csv
from .api import model_summary
from .auth import actor, audit, delete_audited, may, requires
from .pages import IMMUTABLE, _csv, _page
from .resources import get_classifier, get_settings, get_smear_classifier, get_storage
from .samples import (
    add_files,
    cell_jpeg,
    decide,
    differential_json,
    fhir_document,
    review_groups,
    sample_differential,
    sample_notice,
)
from .service import UploadError

review = Blueprint("review", __name__)
PAGE_SIZE = 20


def _sample(public_id: str):
    """The sample, or 404 (also for a deleted one)."""
    try:
        return get_storage().samples.get(public_id)
    except LabError as exc:
        abort(exc.status, description=str(exc))


def _lab_error(exc: LabError, public_id: str | None = None):
    if public_id and exc.status in (400, 409):
        return sample(public_id, error=str(exc)), exc.status
    abort(exc.status, description=str(exc))


@review.get("/samples")
def samples(error: str | None = None):
    page = _page()
    records, total = get_storage().samples.list(PAGE_SIZE, (page - 1) * PAGE_SIZE)
    return render_template(
        "samples.html",
        samples=records,
        page=page,
        pages=max(1, math.ceil(total / PAGE_SIZE)),
        error=error,
    )


@review.post("/samples")
def create_sample():
    try:
        target = int(request.form.get("target", "100"))
        record = get_storage().samples.create(request.form.get("accession", ""), actor(), target)
    except (ValueError, LabError) as exc:
        return samples(error=str(exc) if isinstance(exc, LabError) else "bad target"), 400
    audit("created", f"sample:{record.public_id}", accession=record.accession)
    return redirect(url_for("review.sample", public_id=record.public_id), code=303)


@review.get("/samples/<public_id>")
def sample(public_id: str, error: str | None = None):
    record = _sample(public_id)
    classes = get_classifier().classes
    differential = sample_differential(record, classes, get_storage())
    if error is None:
        audit("viewed", f"sample:{public_id}")
    return render_template(
        "sample.html",
        sample=record,
        classes=classes,
        groups=review_groups(record, classes),
        differential=differential,
        summary=differential_json(record, differential),
        notice=sample_notice(record),
        can_review=may("technologist") and not record.locked,
        can_sign=may("technologist"),
        error=error,
    )


def _signed_json(record) -> dict | None:
    return record.versions[-1].to_dict() if record.versions else None


def _report(public_id: str) -> dict:
    """What a report shows: the last signed version (or the unreviewed count, marked so)."""
    record = _sample(public_id)
    classes = get_classifier().classes
    signed = _signed_json(record)
    if signed:
        summary = signed["differential"]
    else:
        summary = differential_json(record, sample_differential(record, classes, get_storage()))
    return {
        "sample": record,
        "summary": summary,
        "signed": signed,
        "groups": review_groups(record, classes),
        "model": model_summary(),
    }


@review.get("/samples/<public_id>/report")
def report(public_id: str):
    """The printable report (print CSS), with a link to the same as a PDF file."""
    parts = _report(public_id)
    audit("exported", f"sample:{public_id}", format="report")
    return render_template("report.html", **parts)


@review.get("/samples/<public_id>/report.pdf")
def report_pdf(public_id: str):
    """The report as a PDF file (ReportLab), the reviewed cells' pictures included."""
    parts, storage = _report(public_id), get_storage()
    record = parts["sample"]
    document = SampleReport(
        accession=record.accession,
        public_id=record.public_id,
        created=f"{record.created_at:%Y-%m-%d} by {record.created_by}",
        summary=parts["summary"],
        model=parts["model"],
        signed=parts["signed"],
        groups=[
            (title, [cell_jpeg(storage, c) for c in cells]) for _, title, cells in parts["groups"]
        ],
    )
    audit("exported", f"sample:{public_id}", format="pdf")
    version = f"-v{parts['signed']['version']}" if parts["signed"] else "-unsigned"
    name = f"hematovision-sample-{record.public_id}{version}.pdf"
    return Response(
        sample_pdf(document),
        mimetype="application/pdf",
        headers={"Content-Disposition": f"attachment; filename={name}"},
    )


@review.get("/samples/<public_id>/fhir.json")
def fhir(public_id: str):
    record = _sample(public_id)
    audit("exported", f"sample:{public_id}", format="fhir")
    return fhir_document(record)


@review.get("/samples/<public_id>/differential.csv")
def differential_csv(public_id: str):
    record = _sample(public_id)
    buffer = io.StringIO()
    write_differential_csv(
        buffer, sample_differential(record, get_classifier().classes, get_storage())
    )
    audit("exported", f"sample:{public_id}", format="csv")
    return _csv(buffer.getvalue(), f"hematovision-sample-{record.public_id}-differential.csv")


@review.post("/samples/<public_id>/<any(cells, fields):kind>")
def add_to_sample(public_id: str, kind: str):
    _sample(public_id)  # 404 before reading any upload
    try:
        add_files(public_id, kind)
    except UploadError as exc:
        return sample(public_id, error=exc.message), exc.status
    except LabError as exc:
        return _lab_error(exc, public_id)
    return redirect(url_for("review.sample", public_id=public_id), code=303)


@review.post("/samples/<public_id>/cells/<int:cell_id>/review")
def review_cell(public_id: str, cell_id: int):
    """One decision, from the review screen's script (JSON) or a plain form."""
    data = request.get_json(silent=True) or request.form
    try:
        cell = decide(public_id, cell_id, data)
    except LabError as exc:
        return Response(
            json.dumps({"error": {"code": exc.code, "message": str(exc)}}),
            status=exc.status,
            mimetype="application/json",
        )
    record = _sample(public_id)
    differential = sample_differential(record, get_classifier().classes, get_storage())
    return {"cell": cell.to_dict(), "differential": differential_json(record, differential)}


def _cell(public_id: str, cell_id: int):
    cell = next((c for c in _sample(public_id).cells if c.id == cell_id), None)
    if cell is None:
        abort(404, description=f"no cell {cell_id} in this sample")
    return cell


@review.get("/samples/<public_id>/cells/<int:cell_id>.jpg")
def cell_picture(public_id: str, cell_id: int):
    jpeg = cell_jpeg(get_storage(), _cell(public_id, cell_id))
    return Response(jpeg, mimetype="image/jpeg", headers=IMMUTABLE)


@review.get("/samples/<public_id>/cells/<int:cell_id>/heatmap.jpg")
def cell_heatmap(public_id: str, cell_id: int):
    """Where the model looked, made when first asked for (smear cells too: on their crop)."""
    cell = _cell(public_id, cell_id)
    classifier = get_smear_classifier() if cell.smear_id else get_classifier()
    jpeg = cell_jpeg(get_storage(), cell, classifier)
    return Response(jpeg, mimetype="image/jpeg", headers=IMMUTABLE)


@review.post("/samples/<public_id>/sign")
def sign(public_id: str):
    record = _sample(public_id)
    differential = sample_differential(record, get_classifier().classes, get_storage())
    try:
        version = get_storage().samples.sign(
            public_id, actor(), differential_json(record, differential)
        )
    except LabError as exc:
        return _lab_error(exc, public_id)
    audit("signed", f"sample:{public_id}", version=version.version)
    return redirect(url_for("review.sample", public_id=public_id), code=303)


@review.post("/samples/<public_id>/amend")
def amend(public_id: str):
    reason = request.form.get("reason", "")
    try:
        record = get_storage().samples.amend(public_id, reason, actor())
    except LabError as exc:
        return _lab_error(exc, public_id)
    audit("amended", f"sample:{public_id}", version=record.version, reason=reason[:500])
    return redirect(url_for("review.sample", public_id=public_id), code=303)


@review.post("/samples/<public_id>/delete")
def delete_sample(public_id: str):
    reason = request.form.get("reason", "")
    try:
        delete_audited(get_storage().samples.delete, public_id, "sample", reason)
    except LabError as exc:
        return _lab_error(exc, public_id)
    return redirect(url_for("review.samples"), code=303)


# ---------------------------------------------------------------- admin
@review.get("/admin/audit")
@requires("admin")
def audit_log():
    page = _page()
    events, total = get_storage().audit.list(100, (page - 1) * 100, request.args.get("target"))
    return render_template(
        "audit.html", events=events, page=page, pages=max(1, math.ceil(total / 100))
    )


@review.get("/admin/models")
@requires("admin")
def models():
    """Model versions: the configured one and those registered, their metrics and provenance,
    which is active, and every activation (roll back = activate an earlier one)."""
    storage = get_storage()
    registered = []
    for slug in storage.models.slugs():
        try:
            registered.append((slug, ModelArtifact.load(storage.models.path(slug))))
        except HematoVisionError as exc:  # a broken folder is listed, never a 500
            registered.append((slug, str(exc)))
    return render_template(
        "models.html",
        registered=registered,
        active=storage.models.active() or None,
        history=storage.models.history(),
        configured=get_settings().model or "the bundled model",
        serving=get_classifier(),
    )


@review.post("/admin/models/activate")
@requires("admin")
def activate_model():
    slug = request.form.get("slug", "")
    try:
        if slug:
            ModelArtifact.load(get_storage().models.path(slug)).check()
        get_storage().models.activate(slug, actor())
    except HematoVisionError as exc:
        abort(getattr(exc, "status", 400), description=str(exc))
    audit("activated", f"model:{slug or 'configured'}")
    return redirect(url_for("review.models"), code=303)


@review.get("/admin/users")
@requires("admin")
def users(error: str | None = None, token: tuple[str, str] | None = None):
    return render_template("users.html", users=get_storage().users.list(), error=error, token=token)


@review.post("/admin/users")
@requires("admin")
def add_user():
    """A new account, from the admin's form (as ``hematovision users add``)."""
    form = request.form
    try:
        user = get_storage().users.add(
            form.get("username", ""), form.get("password", ""), form.get("role", "")
        )
    except LabError as exc:
        return users(error=str(exc)), 400
    audit("user_added", f"user:{user.username}", role=user.role)
    return redirect(url_for("review.users"), code=303)


@review.post("/admin/users/<username>/<any(enable, disable, token):action>")
@requires("admin")
def change_user(username: str, action: str):
    """Disable or enable an account, or give it a new personal API token (shown once)."""
    storage = get_storage()
    try:
        if action == "token":
            token = storage.users.new_token(username)
            audit("token_issued", f"user:{username}")
            return users(token=(username, token))
        storage.users.set_active(username, action == "enable")
    except LabError as exc:
        abort(exc.status, description=str(exc))
    audit(f"user_{action}d", f"user:{username}")
    return redirect(url_for("review.users"), code=303)
