"""The HTML pages: upload, results, smear analyses, history, model card; images and assets."""

from __future__ import annotations

import io
import math
from functools import lru_cache

from flask import (
    Blueprint,
    Response,
    abort,
    redirect,
    render_template,
    request,
    send_file,
    send_from_directory,
    url_for,
)
from werkzeug.exceptions import BadRequest

from ..differential import DISPLAY_NAMES, display_name, interval_text
from ..inference import new_lab_notice
from ..inference.classifier import SAMPLES
from ..smear import fields_notice
from ..storage import LabError
from ..tables import write_differential_csv, write_predictions_csv, write_smear_cells_csv
from . import MAX_ID, static_vendor_dir
from .auth import audit, delete_audited
from .resources import get_classifier, get_settings, get_smear_classifier, get_storage
from .samples import smear_differential, upload_differential
from .service import (
    ACCEPTED,
    UploadError,
    analyze_files,
    annotated_png,
    classify_files,
    heatmap_jpeg,
    sniff,
    uploaded_files,
)

pages = Blueprint("pages", __name__)
PAGE_SIZE = 20
IMMUTABLE = {"Cache-Control": "private, max-age=31536000, immutable"}  # content-addressed


@pages.app_template_filter("display_name")
def _display_name(label: str | None) -> str:
    return display_name(label)


pages.add_app_template_filter(interval_text, "reference")
pages.add_app_template_global(DISPLAY_NAMES, "display_names")  # for the review script too


@lru_cache(maxsize=1)
def sample_names() -> tuple[str, ...]:
    return tuple(sorted(p.name for p in SAMPLES.glob("*.jpg")))


# ---------------------------------------------------------------- upload
@pages.get("/")
def index(error: str | None = None, rejected: list | None = None):
    return render_template(
        "index.html",
        samples=sample_names(),
        accepted=ACCEPTED,
        error=error,
        rejected=rejected or [],
        settings=get_settings(),
    )


def _process_form(handler, classifier, result_endpoint: str, id_name: str):
    """Run a service handler on the form's files; on bad input, the upload page with the error."""
    settings = get_settings()
    try:
        files = uploaded_files(request.files.getlist("file"), settings.max_files)
        record = handler(files, classifier, get_storage(), settings)
    except UploadError as exc:
        return index(error=exc.message, rejected=exc.rejected), exc.status
    return redirect(url_for(result_endpoint, **{id_name: record.id}), code=303)


@pages.post("/upload")
def upload():
    return _process_form(classify_files, get_classifier(), "pages.result", "upload_id")


@pages.post("/smears")
def smear_upload():
    return _process_form(analyze_files, get_smear_classifier(), "pages.smear_result", "smear_id")


@pages.get("/examples/<name>")
def example(name: str):
    """A bundled example cell image (the upload page offers them to try)."""
    if name not in sample_names():
        abort(404)
    return send_from_directory(SAMPLES, name, mimetype="image/jpeg")


@pages.post("/examples/<name>/try")
def try_example(name: str):
    if name not in sample_names():
        abort(404)
    files = [(name, (SAMPLES / name).read_bytes())]
    record = classify_files(files, get_classifier(), get_storage(), get_settings())
    return redirect(url_for("pages.result", upload_id=record.id), code=303)


# ---------------------------------------------------------------- cell results
def _upload_or_404(upload_id: int):
    record = get_storage().get_upload(upload_id)
    if record is None or not record.predictions:
        abort(404, description=f"no result {upload_id}")
    return record


@pages.get("/results/<id:upload_id>")
def result(upload_id: int):
    record = _upload_or_404(upload_id)
    audit("viewed", f"result:{upload_id}")
    classes = get_classifier().classes
    return render_template(
        "result.html",
        upload=record,
        classes=classes,
        differential=upload_differential(record),
        notice=new_lab_notice(p.reasons or [] for p in record.predictions),
        current_version=get_classifier().version,
    )


def _csv(text: str, name: str) -> Response:
    return Response(
        text, mimetype="text/csv", headers={"Content-Disposition": f"attachment; filename={name}"}
    )


@pages.get("/results/<id:upload_id>.csv")
def result_csv(upload_id: int):
    """The upload's predictions, one row per image."""
    record = _upload_or_404(upload_id)
    buffer = io.StringIO()
    records = (p.to_dict() for p in record.predictions)
    write_predictions_csv(buffer, records, get_classifier().classes, keys=("id", "filename"))
    audit("exported", f"result:{upload_id}", format="csv")
    return _csv(buffer.getvalue(), f"hematovision-result-{upload_id}.csv")


@pages.get("/results/<id:upload_id>/differential.csv")
def result_differential_csv(upload_id: int):
    record = _upload_or_404(upload_id)
    buffer = io.StringIO()
    write_differential_csv(buffer, upload_differential(record))
    return _csv(buffer.getvalue(), f"hematovision-result-{upload_id}-differential.csv")


# ---------------------------------------------------------------- smear results
def _smear_or_404(smear_id: int):
    record = get_storage().get_smear(smear_id)
    if record is None:
        abort(404, description=f"no smear analysis {smear_id}")
    return record


@pages.get("/smears/<id:smear_id>")
def smear_result(smear_id: int):
    record = _smear_or_404(smear_id)
    audit("viewed", f"smear:{smear_id}")
    differential = smear_differential(record)
    notice = fields_notice(record.fields)
    return render_template("smear.html", smear=record, differential=differential, notice=notice)


@pages.get("/smears/<id:smear_id>/fields/<int:number>/annotated.png")
def annotated_field(smear_id: int, number: int):
    """Field ``number`` (from 1), cells numbered; ``?marks=1`` adds red cells and platelets."""
    record = _smear_or_404(smear_id)
    if not 1 <= number <= len(record.fields):
        abort(404, description=f"no field {number} in smear analysis {smear_id}")
    field = record.fields[number - 1]
    png = annotated_png(_stored(field["image_sha256"]), field, request.args.get("marks") == "1")
    return Response(png, mimetype="image/png", headers=IMMUTABLE)


@pages.get("/smears/<id:smear_id>/cells.csv")
def smear_cells_csv(smear_id: int):
    buffer = io.StringIO()
    write_smear_cells_csv(buffer, _smear_or_404(smear_id).fields)
    return _csv(buffer.getvalue(), f"hematovision-smear-{smear_id}-cells.csv")


@pages.get("/smears/<id:smear_id>/differential.csv")
def smear_differential_csv(smear_id: int):
    record = _smear_or_404(smear_id)
    buffer = io.StringIO()
    write_differential_csv(buffer, smear_differential(record))
    return _csv(buffer.getvalue(), f"hematovision-smear-{smear_id}-differential.csv")


@pages.post("/smears/<id:smear_id>/delete")
def delete_smear(smear_id: int):
    _soft_delete(get_storage().delete_smear, smear_id, "smear")
    return redirect(url_for("pages.history", kind="smears", page=_page()), code=303)


# ---------------------------------------------------------------- history
def _page() -> int:
    """The ``page`` query or form value: 1 to what a page offset can address."""
    text = request.values.get("page", "1")
    if not text.isdigit() or not 1 <= int(text) <= MAX_ID // PAGE_SIZE:
        raise BadRequest(f"page must be a number from 1 to {MAX_ID // PAGE_SIZE}")
    return int(text)


@pages.get("/history")
def history():
    page, kind = _page(), request.args.get("kind", "cells")
    label = request.args.get("label") or None
    storage = get_storage()
    if kind == "smears":
        records, total = storage.list_smears(PAGE_SIZE, (page - 1) * PAGE_SIZE)
    else:
        kind = "cells"
        records, total = storage.list_predictions(PAGE_SIZE, (page - 1) * PAGE_SIZE, label)
    return render_template(
        "history.html",
        kind=kind,
        records=records,
        page=page,
        label=label,
        pages=max(1, math.ceil(total / PAGE_SIZE)),
        total=total,
        labels=get_classifier().classes,
    )


@pages.post("/history/<id:prediction_id>/delete")
def delete(prediction_id: int):
    _soft_delete(get_storage().delete_prediction, prediction_id, "prediction")
    label = request.form.get("label") or None
    return redirect(url_for("pages.history", label=label, page=_page()), code=303)


def _soft_delete(delete, record_id: int, kind: str) -> None:
    """A soft delete with the form's ``reason``, audited; 400 or 404 pages when refused."""
    try:
        delete_audited(delete, record_id, kind, request.form.get("reason", ""))
    except LabError as exc:
        abort(exc.status, description=str(exc))


# ---------------------------------------------------------------- model card
@pages.get("/model")
def model():
    clf, smear = get_classifier(), get_smear_classifier()
    return render_template(
        "model.html",
        clf=clf,
        artifact=clf.artifact,
        test=clf.artifact.metrics.get("test", {}),
        smear=smear,
        smear_metrics=smear.artifact.metrics,
        has_confusion=clf.artifact.file("confusion_matrix") is not None,
        adaptation=clf.artifact.metrics.get("adaptation"),
        has_adaptation_plot=clf.artifact.file("adaptation") is not None,
    )


@pages.get("/model/confusion.png")
def confusion_png():
    """The test confusion matrix, rendered at export time into the artifact."""
    return _artifact_plot("confusion_matrix", "this model has no confusion matrix")


@pages.get("/model/adaptation.png")
def adaptation_png():
    """An adapted model's held-out lab cells before and after, rendered by ``adapt``."""
    return _artifact_plot("adaptation", "this model was not adapted to a lab")


def _artifact_plot(key: str, missing: str):
    path = get_classifier().artifact.file(key)
    if path is None or not path.is_file():
        abort(404, description=missing)
    return send_file(path, mimetype="image/png")


# ---------------------------------------------------------------- images
def _stored(sha256: str):
    path = get_storage().image_path(sha256)
    if path is None:
        abort(404, description="image not stored")
    return path


@pages.get("/images/<sha256>")
def image(sha256: str):
    path = _stored(sha256)
    with open(path, "rb") as fh:
        kind = sniff(fh.read(16))
    mimetype = f"image/{kind}" if kind else "application/octet-stream"
    return send_file(path, mimetype=mimetype, max_age=31536000)


@pages.get("/images/<sha256>/thumb")
def thumbnail(sha256: str):
    from ..preprocess import to_rgb

    picture = to_rgb(_stored(sha256), max_side=192)
    picture.thumbnail((96, 96))
    buf = io.BytesIO()
    picture.save(buf, format="JPEG", quality=85)
    return Response(buf.getvalue(), mimetype="image/jpeg", headers=IMMUTABLE)


@pages.get("/images/<sha256>/heatmap/<version>")
def heatmap(sha256: str, version: str):
    """The heatmap overlay, made when first shown by the model that made the prediction."""
    path = _stored(sha256)
    classifier = get_classifier()
    if version != classifier.version:
        abort(404, description=f"the heatmap of model version {version} is no longer available")
    return Response(heatmap_jpeg(classifier, path), mimetype="image/jpeg", headers=IMMUTABLE)


@pages.get("/vendor/bootstrap/<path:filename>")
def vendor(filename: str):
    return send_from_directory(static_vendor_dir(), filename)
