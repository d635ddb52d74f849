"""The HTML pages: upload, result, history, model card; images and vendored assets."""

from __future__ import annotations

import csv
import io
import math
from functools import lru_cache
from pathlib import Path

from flask import (Blueprint, Response, abort, current_app, redirect, render_template, request,
                   send_file, send_from_directory, url_for)

from ..inference.classifier import DEFAULT_MODEL
from . import static_vendor_dir
from .service import (ACCEPTED, UploadError, analyze_files, classify_files, differential, sniff,
                      uploaded_files)

pages = Blueprint("pages", __name__)
SAMPLES = DEFAULT_MODEL.parent / "samples"
PAGE_SIZE = 20


def _classifier():
    return current_app.extensions["hematovision.classifier"]


def _storage():
    return current_app.extensions["hematovision.storage"]


@lru_cache(maxsize=1)
def sample_names() -> tuple[str, ...]:
    return tuple(sorted(p.name for p in SAMPLES.glob("*.jpg")))


@pages.get("/")
def index(error: str | None = None):
    return render_template("index.html", samples=sample_names(), accepted=ACCEPTED, error=error,
                           max_mb=current_app.config["HEMATOVISION"].max_upload_mb)


def _process_form(handler, classifier, result_endpoint: str, id_name: str):
    """Run a service handler on the form's files; on bad input, the upload page with the error."""
    try:
        files = uploaded_files(request.files.getlist("file"),
                               current_app.config["HEMATOVISION"].max_files)
        record = handler(files, classifier, _storage())
    except UploadError as exc:
        return index(error=exc.message), exc.status
    return redirect(url_for(result_endpoint, **{id_name: record.id}), code=303)


@pages.post("/upload")
def upload():
    return _process_form(classify_files, _classifier(), "pages.result", "upload_id")


@pages.post("/smears")
def smear_upload():
    return _process_form(analyze_files, current_app.extensions["hematovision.smear_classifier"],
                         "pages.smear_result", "smear_id")


@pages.get("/smears/<int:smear_id>")
def smear_result(smear_id: int):
    record = _storage().get_smear(smear_id)
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
    record = classify_files([(name, (SAMPLES / name).read_bytes())], _classifier(), _storage())
    return redirect(url_for("pages.result", upload_id=record.id), code=303)


def _upload_or_404(upload_id: int):
    record = _storage().get_upload(upload_id)
    if record is None or not record.predictions:
        abort(404, description=f"no result {upload_id}")
    return record


@pages.get("/results/<int:upload_id>")
def result(upload_id: int):
    record = _upload_or_404(upload_id)
    clf = _classifier()
    return render_template("result.html", upload=record, classes=clf.classes,
                           differential=differential(record, clf.classes),
                           storage=_storage())


@pages.get("/results/<int:upload_id>.csv")
def result_csv(upload_id: int):
    record = _upload_or_404(upload_id)
    classes = _classifier().classes
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["id", "filename", "label", "confidence", "uncertain", *classes])
    for p in record.predictions:
        writer.writerow([p.id, p.filename, p.label, f"{p.confidence:.4f}", int(p.uncertain),
                         *(f"{p.probabilities.get(c, 0):.4f}" for c in classes)])
    writer.writerow([])
    writer.writerow(["class", "count", "percent"])
    for c, d in differential(record, classes).items():
        writer.writerow([c, d["count"], d["percent"]])
    return Response(buf.getvalue(), mimetype="text/csv", headers={
        "Content-Disposition": f"attachment; filename=hematovision-result-{upload_id}.csv"})


@pages.get("/history")
def history():
    page = max(1, request.args.get("page", 1, type=int))
    label = request.args.get("label") or None
    records, total = _storage().list_predictions(PAGE_SIZE, (page - 1) * PAGE_SIZE, label)
    return render_template("history.html", records=records, page=page, label=label,
                           pages=max(1, math.ceil(total / PAGE_SIZE)), total=total,
                           labels=_classifier().classes)


@pages.post("/history/<int:prediction_id>/delete")
def delete(prediction_id: int):
    if not _storage().delete_prediction(prediction_id):
        abort(404, description=f"no prediction {prediction_id}")
    return redirect(url_for("pages.history"), code=303)


@pages.get("/model")
def model():
    clf = _classifier()
    smear = current_app.extensions["hematovision.smear_classifier"]
    return render_template("model.html", clf=clf, meta=clf.meta,
                           test=clf.meta.get("metrics", {}).get("test", {}), smear=smear,
                           smear_metrics=smear.meta.get("metrics", {}))


@pages.get("/model/confusion.png")
def confusion_png():
    test = _classifier().meta.get("metrics", {}).get("test", {})
    if "confusion_matrix" not in test:
        abort(404, description="this model card has no confusion matrix")
    return Response(_confusion_png(tuple(map(tuple, test["confusion_matrix"])),
                                   tuple(_classifier().classes)), mimetype="image/png")


@lru_cache(maxsize=4)
def _confusion_png(matrix: tuple, classes: tuple) -> bytes:
    import numpy as np

    from ..evaluation.report import plot_confusion
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cm.png"
        plot_confusion({"confusion_matrix": np.array(matrix), "classes": list(classes)}, path)
        return path.read_bytes()


def _stored(sha256: str) -> Path:
    path = _storage().image_path(sha256)
    if path is None:
        abort(404, description="image not stored")
    return path


@pages.get("/images/<sha256>")
def image(sha256: str):
    path = _stored(sha256)
    with open(path, "rb") as fh:
        kind = sniff(fh.read(16)) or "octet-stream"
    return send_file(path, mimetype=f"image/{kind}" if kind != "octet-stream" else
                     "application/octet-stream")


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
    path = _storage().derived_path(sha256, kind, version)
    if not path.is_file():
        abort(404, description=f"no {kind} image for this upload")
    return send_file(path, mimetype="image/png")


@pages.get("/vendor/bootstrap/<path:filename>")
def vendor(filename: str):
    return send_from_directory(static_vendor_dir(), filename)
