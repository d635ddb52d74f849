"""The REST API, /api/v1, and its OpenAPI 3 document."""

from __future__ import annotations

from flask import Blueprint, jsonify, request, url_for
from werkzeug.exceptions import BadRequest

from ..storage import LabError
from . import MAX_ID, error_response
from .auth import actor, audit, delete_audited
from .openapi import openapi_document
from .resources import get_classifier, get_settings, get_smear_classifier, get_storage
from .samples import (
    add_files,
    decide,
    fhir_document,
    sample_differential,
    sample_json,
    smear_differential,
    upload_differential,
)
from .service import UploadError, analyze_files, classify_files, uploaded_files

api = Blueprint("api", __name__)


def model_summary() -> dict:
    clf = get_classifier()
    return {"name": clf.name, "version": clf.version}


def paging() -> tuple[int, int]:
    """``limit`` (1..200, default 20) and ``offset`` (0..2^31-1) from the query string."""
    try:
        limit = int(request.args.get("limit", 20))
        offset = int(request.args.get("offset", 0))
    except ValueError:
        raise BadRequest("limit and offset must be integers") from None
    if not (1 <= limit <= 200 and 0 <= offset <= MAX_ID):
        raise BadRequest(f"limit must be 1..200 and offset 0..{MAX_ID}")
    return limit, offset


def _prediction_json(record) -> dict:
    data = record.to_dict()
    data["links"] = {
        "self": url_for("api.get_prediction", prediction_id=record.id),
        "result_page": url_for("pages.result", upload_id=record.upload_id),
    }
    return data


def smear_json(record) -> dict:
    """A smear analysis as the API shows it, with its differential under the lab's rule."""
    data = record.to_dict()
    data["differential"] = smear_differential(record).to_dict()
    data["links"] = {
        "self": url_for("api.get_smear", smear_id=record.id),
        "page": url_for("pages.smear_result", smear_id=record.id),
    }
    return data


def _process(handler, classifier):
    """Run a service handler on the request's files: (record, None) or (None, error answer)."""
    settings = get_settings()
    try:
        files = uploaded_files(request.files.getlist("file"), settings.max_files)
        return handler(files, classifier, get_storage(), settings), None
    except UploadError as exc:
        return None, error_response(exc.status, exc.code, exc.message, rejected=exc.rejected)


@api.post("/api/v1/predictions")
def create_predictions():
    upload, failure = _process(classify_files, get_classifier())
    if failure:
        return failure
    body = {
        "predictions": [_prediction_json(p) for p in upload.predictions],
        "rejected": list(upload.rejected or []),
        "differential": upload_differential(upload).to_dict(),
        "model": model_summary(),
        "upload_id": upload.id,
    }
    return jsonify(body), 201, {"Location": url_for("pages.result", upload_id=upload.id)}


@api.get("/api/v1/predictions/<id:prediction_id>")
def get_prediction(prediction_id: int):
    record = get_storage().get_prediction(prediction_id)
    if record is None:
        return error_response(404, "not_found", f"no prediction {prediction_id}")
    return jsonify(_prediction_json(record))


@api.get("/api/v1/predictions")
def list_predictions():
    limit, offset = paging()
    label = request.args.get("label") or None
    records, total = get_storage().list_predictions(limit, offset, label)
    return jsonify(
        predictions=[_prediction_json(r) for r in records], total=total, limit=limit, offset=offset
    )


@api.delete("/api/v1/predictions/<id:prediction_id>")
def delete_prediction(prediction_id: int):
    return _soft_delete(get_storage().delete_prediction, prediction_id, "prediction")


def _soft_delete(delete, record_id, kind: str):
    """A soft delete with the ``reason`` query parameter, audited; 204, 400 or 404."""
    reason = request.args.get("reason", "")
    _, failure = _lab_call(lambda: delete_audited(delete, record_id, kind, reason))
    return failure or ("", 204)


@api.post("/api/v1/smears")
def create_smear():
    record, failure = _process(analyze_files, get_smear_classifier())
    if failure:
        return failure
    return (
        jsonify(smear_json(record)),
        201,
        {"Location": url_for("api.get_smear", smear_id=record.id)},
    )


@api.get("/api/v1/smears")
def list_smears():
    limit, offset = paging()
    records, total = get_storage().list_smears(limit, offset)
    return jsonify(smears=[smear_json(r) for r in records], total=total, limit=limit, offset=offset)


@api.get("/api/v1/smears/<id:smear_id>")
def get_smear(smear_id: int):
    record = get_storage().get_smear(smear_id)
    if record is None:
        return error_response(404, "not_found", f"no smear analysis {smear_id}")
    return jsonify(smear_json(record))


@api.delete("/api/v1/smears/<id:smear_id>")
def delete_smear(smear_id: int):
    return _soft_delete(get_storage().delete_smear, smear_id, "smear")


# ---------------------------------------------------------------- samples
def _lab_call(action):
    """Run a storage call of the lab's rules: its value, or the error answer it refuses with."""
    try:
        return action(), None
    except LabError as exc:
        return None, error_response(exc.status, exc.code, str(exc))


def _sample_body(public_id: str):
    record, failure = _lab_call(lambda: get_storage().samples.get(public_id))
    if failure:
        return None, failure
    differential = sample_differential(record, get_classifier().classes, get_storage())
    return sample_json(record, differential), None


def _json_body() -> dict:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise BadRequest("send a JSON object (Content-Type: application/json)")
    return data


@api.post("/api/v1/samples")
def create_sample():
    data = _json_body()
    target = data.get("target", 100)
    accession = data.get("accession")
    if not isinstance(accession, str) or not isinstance(target, int):
        return error_response(400, "invalid", "accession (a string) and target (100 or 200)")
    record, failure = _lab_call(lambda: get_storage().samples.create(accession, actor(), target))
    if failure:
        return failure
    audit("created", f"sample:{record.public_id}", accession=record.accession)
    body, _ = _sample_body(record.public_id)
    return jsonify(body), 201, {"Location": body["links"]["self"]}


@api.get("/api/v1/samples")
def list_samples():
    limit, offset = paging()
    records, total = get_storage().samples.list(limit, offset)
    classes = get_classifier().classes
    items = [
        sample_json(r, sample_differential(r, classes, get_storage()), cells=False) for r in records
    ]
    return jsonify(samples=items, total=total, limit=limit, offset=offset)


@api.get("/api/v1/samples/<public_id>")
def get_sample(public_id: str):
    body, failure = _sample_body(public_id)
    if failure:
        return failure
    audit("viewed", f"sample:{public_id}")
    return jsonify(body)


@api.post("/api/v1/samples/<public_id>/<any(cells, fields):kind>")
def add_to_sample(public_id: str, kind: str):
    """Single-cell images (cells) or smear fields (fields) classified into the sample."""
    try:
        add_files(public_id, kind)
    except UploadError as exc:
        return error_response(exc.status, exc.code, exc.message, rejected=exc.rejected)
    except LabError as exc:  # signed or deleted (maybe while the files were classified)
        return error_response(exc.status, exc.code, str(exc))
    body, _ = _sample_body(public_id)
    return jsonify(body), 201


@api.post("/api/v1/samples/<public_id>/cells/<id:cell_id>/review")
def review_sample_cell(public_id: str, cell_id: int):
    data = _json_body()
    _, failure = _lab_call(lambda: decide(public_id, cell_id, data))
    if failure:
        return failure
    body, _ = _sample_body(public_id)
    return jsonify(body)


@api.post("/api/v1/samples/<public_id>/sign")
def sign_sample(public_id: str):
    body, failure = _sample_body(public_id)
    if failure:
        return failure
    version, failure = _lab_call(
        lambda: get_storage().samples.sign(public_id, actor(), body["differential"])
    )
    if failure:
        return failure
    audit("signed", f"sample:{public_id}", version=version.version)
    body, _ = _sample_body(public_id)
    return jsonify(body)


@api.post("/api/v1/samples/<public_id>/amend")
def amend_sample(public_id: str):
    reason = _json_body().get("reason")
    reason = reason if isinstance(reason, str) else ""
    record, failure = _lab_call(lambda: get_storage().samples.amend(public_id, reason, actor()))
    if failure:
        return failure
    audit("amended", f"sample:{public_id}", version=record.version, reason=reason[:500])
    body, _ = _sample_body(public_id)
    return jsonify(body)


@api.delete("/api/v1/samples/<public_id>")
def delete_sample(public_id: str):
    return _soft_delete(get_storage().samples.delete, public_id, "sample")


@api.get("/api/v1/samples/<public_id>/fhir")
def sample_fhir(public_id: str):
    record, failure = _lab_call(lambda: get_storage().samples.get(public_id))
    if failure:
        return failure
    audit("exported", f"sample:{public_id}", format="fhir")
    return jsonify(fhir_document(record)), 200, {"Content-Type": "application/fhir+json"}


@api.get("/api/v1/model")
def model_card():
    classifier = get_classifier()
    return jsonify({**classifier.artifact.card(), "engine": classifier.engine_info()})


@api.get("/healthz")
def healthz():
    """200 when the database answers and the disk has room; 503 (with the reason) otherwise."""
    from sqlalchemy import text

    storage = get_storage()
    try:
        with storage.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        database = "ok"
    except Exception:  # noqa: BLE001 - report, do not crash the probe
        database = "unavailable"
    free = storage.free_mb()
    disk = {"status": "low" if free < storage.min_free_mb else "ok", "free_mb": round(free, 1)}
    healthy = database == "ok" and disk["status"] == "ok"
    body = {
        "status": "ok" if healthy else "degraded",
        "database": database,
        "disk": disk,
        "model": model_summary(),
    }
    return jsonify(body), 200 if healthy else 503


@api.get("/api/v1/openapi.json")
def openapi():
    return jsonify(openapi_document(model_summary()["version"], get_classifier().classes))
