"""The HTML pages: upload, result, history, model card; images and vendored assets."""

from __future__ import annotations

import io
import math
from functools import lru_cache
from pathlib import Path

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

from ..inference.classifier import DEFAULT_MODEL
from ..tables import write_differential_csv, write_predictions_csv
from . import static_vendor_dir
from .resources import get_classifier, get_settings, get_smear_classifier, get_storage
from .service import (
    ACCEPTED,
    UploadError,
    analyze_files,
    classify_files,
    sniff,
    upload_differential,
    uploaded_files,
)

pages = Blueprint("pages", __name__)
SAMPLES = DEFAULT_MODEL.parent / "samples"
PAGE_SIZE = 20


@lru_cache(maxsize=1)
def sample_names() -> tuple[str, ...]:
    return tuple(sorted(p.name for p in SAMPLES.glob("*.jpg")))


@pages.get("/")
def index(error: str | None = None):
    return render_template(
        "index.html",
        samples=sample_names(),
        accepted=ACCEPTED,
        error=error,
        max_mb=get_settings().max_upload_mb,
    )


def _process_form(handler, classifier, result_endpoint: str, id_name: str):
    """Run a service handler on the form's files; on bad input, the upload page with the error."""
    try:
        files = uploaded_files(request.files.getlist("file"), get_settings().max_files)
        record = handler(files, classifier, get_storage())
    except UploadError as exc:
        return index(error=exc.message), exc.status
    return redirect(url_for(result_endpoint, **{id_name: record.id}), code=303)


@pages.post("/upload")
def upload():
    return _process_form(classify_files, get_classifier(), "pages.result", "upload_id")


@pages.post("/smears")
def smear_upload():
    return _process_form(analyze_files, get_smear_classifier(), "pages.smear_result", "smear_id")


@pages.get("/smears/<int:smear_id>")
def smear_result(smear_id: int):
    record = get_storage().get_smear(smear_id)
    if record is None:
        abort(404, description=f"no smear analysis {smear_id}")
    return render_template("smear.html", smear=record)


@pages.get("/samples/<name>")
def sample(name: str):
    if name not in sample_names():
        abort(404)
    return send_from_directory(SAMPLES, name, mimetype="image/jpeg")


@pages.post("/samples/<name>/try")
def try_sample(name: str):
    if name not in sample_names():
        abort(404)
    record = classify_files(
        [(name, (SAMPLES / name).read_bytes())], get_classifier(), get_storage()
    )
    return redirect(url_for("pages.result", upload_id=record.id), code=303)


def _upload_or_404(upload_id: int):
    record = get_storage().get_upload(upload_id)
    if record is None or not record.predictions:
        abort(404, description=f"no result {upload_id}")
    return record


@pages.get("/results/<int:upload_id>")
def result(upload_id: int):
    record = _upload_or_404(upload_id)
    clf = get_classifier()
    return render_template(
        "result.html",
        upload=record,
        classes=clf.classes,
        differential=upload_differential(record, clf.classes),
        storage=get_storage(),
    )


@pages.get("/results/<int:upload_id>.csv")
def result_csv(upload_id: int):
    record = _upload_or_404(upload_id)
    classes = get_classifier().classes
    buf = io.StringIO()
    write_predictions_csv(
        buf, (p.to_dict() for p in record.predictions), classes, keys=("id", "filename")
    )
    buf.write("\r\n")
    write_differential_csv(buf, upload_differential(record, classes))
    return Response(
        buf.getvalue(),
        mimetype="text/csv",
        headers={
            "Content-Disposition": f"attachment; filename=hematovision-result-{upload_id}.csv"
        },
    )


@pages.get("/history")
def history():
    page = max(1, request.args.get("page", 1, type=int))
    label = request.args.get("label") or None
    records, total = get_storage().list_predictions(PAGE_SIZE, (page - 1) * PAGE_SIZE, label)
    return render_template(
        "history.html",
        records=records,
        page=page,
        label=label,
        pages=max(1, math.ceil(total / PAGE_SIZE)),
        total=total,
        labels=get_classifier().classes,
    )


@pages.post("/history/<int:prediction_id>/delete")
def delete(prediction_id: int):
    if not get_storage().delete_prediction(prediction_id):
        abort(404, description=f"no prediction {prediction_id}")
    return redirect(url_for("pages.history"), code=303)


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
    )


@pages.get("/model/confusion.png")
def confusion_png():
    """The test confusion matrix, rendered at export time into the artifact."""
    path = get_classifier().artifact.file("confusion_matrix")
    if path is None or not path.is_file():
        abort(404, description="this model has no confusion matrix")
    return send_file(path, mimetype="image/png")


def _stored(sha256: str) -> Path:
    path = get_storage().image_path(sha256)
    if path is None:
        abort(404, description="image not stored")
    return path


@pages.get("/images/<sha256>")
def image(sha256: str):
    path = _stored(sha256)
    with open(path, "rb") as fh:
        kind = sniff(fh.read(16)) or "octet-stream"
    return send_file(
        path, mimetype=f"image/{kind}" if kind != "octet-stream" else "application/octet-stream"
    )


@pages.get("/images/<sha256>/thumb")
def thumbnail(sha256: str):
    from ..preprocess import to_rgb

    picture = to_rgb(_stored(sha256))
    picture.thumbnail((96, 96))
    buf = io.BytesIO()
    picture.save(buf, format="JPEG", quality=85)
    return Response(buf.getvalue(), mimetype="image/jpeg")


@pages.get("/images/<sha256>/<any(heatmap, annotated):kind>/<version>")
def derived(sha256: str, kind: str, version: str):
    _stored(sha256)
    path = get_storage().derived_path(sha256, kind, version)
    if not path.is_file():
        abort(404, description=f"no {kind} image for this upload")
    return send_file(path, mimetype="image/png")


@pages.get("/vendor/bootstrap/<path:filename>")
def vendor(filename: str):
    return send_from_directory(static_vendor_dir(), filename)
