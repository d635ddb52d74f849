"""The REST API, /api/v1, and its OpenAPI 3 document."""

from __future__ import annotations

import hmac

from flask import Blueprint, jsonify, request, url_for
from werkzeug.exceptions import BadRequest

from ..smear import field_differential
from . import MAX_ID, error_response
from .openapi import openapi_document
from .resources import get_classifier, get_settings, get_smear_classifier, get_storage
from .service import UploadError, analyze_files, classify_files, upload_differential, uploaded_files

api = Blueprint("api", __name__)


def model_summary() -> dict:
    clf = get_classifier()
    return {"name": clf.name, "version": clf.version}


@api.before_request
def require_token():
    token = get_settings().api_token
    if not token or request.endpoint in ("api.healthz", "api.openapi"):
        return None
    sent = request.headers.get("Authorization", "")
    if not (sent.startswith("Bearer ") and hmac.compare_digest(sent[7:].encode(), token.encode())):
        return error_response(
            401, "unauthorized", "this server needs 'Authorization: Bearer <token>'"
        )
    return None


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
    data["differential"] = field_differential(
        record.fields, get_smear_classifier().classes
    ).to_dict()
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
        "differential": upload_differential(upload, get_classifier().classes).to_dict(),
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
    if not get_storage().delete_prediction(prediction_id):
        return error_response(404, "not_found", f"no prediction {prediction_id}")
    return "", 204


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
    if not get_storage().delete_smear(smear_id):
        return error_response(404, "not_found", f"no smear analysis {smear_id}")
    return "", 204


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
    return jsonify(openapi_document(model_summary()["version"]))
