"""The REST API, /api/v1, and its OpenAPI 3 document."""

from __future__ import annotations

import hmac

from flask import Blueprint, jsonify, request, url_for

from .openapi import openapi_document
from .resources import get_classifier, get_settings, get_smear_classifier, get_storage
from .service import UploadError, analyze_files, classify_files, uploaded_files

api = Blueprint("api", __name__)


def error(status: int, code: str, message: str):
    return jsonify(error={"code": code, "message": message}), status


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
        return error(401, "unauthorized", "this server needs 'Authorization: Bearer <token>'")
    return None


def _prediction_json(record) -> dict:
    data = record.to_dict()
    data["links"] = {
        "self": url_for("api.get_prediction", prediction_id=record.id),
        "result_page": url_for("pages.result", upload_id=record.upload_id),
    }
    return data


def _process(handler, classifier):
    """Run a service handler on the request's files: (record, None) or (None, error answer)."""
    try:
        files = uploaded_files(request.files.getlist("file"), get_settings().max_files)
        return handler(files, classifier, get_storage()), None
    except UploadError as exc:
        return None, error(exc.status, exc.code, exc.message)


@api.post("/api/v1/predictions")
def create_predictions():
    upload, failure = _process(classify_files, get_classifier())
    if failure:
        return failure
    body = {
        "predictions": [_prediction_json(p) for p in upload.predictions],
        "model": model_summary(),
        "upload_id": upload.id,
    }
    return jsonify(body), 201, {"Location": url_for("pages.result", upload_id=upload.id)}


@api.get("/api/v1/predictions/<int:prediction_id>")
def get_prediction(prediction_id: int):
    record = get_storage().get_prediction(prediction_id)
    if record is None:
        return error(404, "not_found", f"no prediction {prediction_id}")
    return jsonify(_prediction_json(record))


@api.get("/api/v1/predictions")
def list_predictions():
    try:
        limit = int(request.args.get("limit", 20))
        offset = int(request.args.get("offset", 0))
    except ValueError:
        return error(400, "bad_request", "limit and offset must be integers")
    if not (1 <= limit <= 200 and offset >= 0):
        return error(400, "bad_request", "limit must be 1..200 and offset >= 0")
    records, total = get_storage().list_predictions(limit, offset, request.args.get("label"))
    return jsonify(
        predictions=[_prediction_json(r) for r in records], total=total, limit=limit, offset=offset
    )


@api.delete("/api/v1/predictions/<int:prediction_id>")
def delete_prediction(prediction_id: int):
    if not get_storage().delete_prediction(prediction_id):
        return error(404, "not_found", f"no prediction {prediction_id}")
    return "", 204


@api.post("/api/v1/smears")
def create_smear():
    record, failure = _process(analyze_files, get_smear_classifier())
    if failure:
        return failure
    return (
        jsonify(record.to_dict()),
        201,
        {"Location": url_for("api.get_smear", smear_id=record.id)},
    )


@api.get("/api/v1/smears/<int:smear_id>")
def get_smear(smear_id: int):
    record = get_storage().get_smear(smear_id)
    if record is None:
        return error(404, "not_found", f"no smear analysis {smear_id}")
    return jsonify(record.to_dict())


@api.get("/api/v1/model")
def model_card():
    return jsonify(get_classifier().artifact.card())


@api.get("/healthz")
def healthz():
    from sqlalchemy import text

    try:
        with get_storage().engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        database = "ok"
    except Exception:  # noqa: BLE001 - report, do not crash the probe
        database = "unavailable"
    status = 200 if database == "ok" else 503
    return jsonify(
        status="ok" if status == 200 else "degraded", database=database, model=model_summary()
    ), status


@api.get("/api/v1/openapi.json")
def openapi():
    return jsonify(openapi_document(model_summary()["version"]))
