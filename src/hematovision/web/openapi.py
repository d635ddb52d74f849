"""The OpenAPI 3 description of /api/v1, served at /api/v1/openapi.json.

Every answer the API gives is described here (schemathesis checks it in tests/test_fuzz_api.py).
"""

from __future__ import annotations

from .._version import __version__
from ..storage.lab import EXCLUSIONS
from . import MAX_ID


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(required: tuple = (), **properties) -> dict:
    return {"type": "object", "required": list(required), "properties": properties}


def _array(items: dict, **extra) -> dict:
    return {"type": "array", "items": items, **extra}


INT, NUM, STR, BOOL = (
    {"type": "integer"},
    {"type": "number"},
    {"type": "string"},
    {"type": "boolean"},
)
NULLABLE_STR = {"type": "string", "nullable": True}
TEXT = {"type": "string", "pattern": "^[^\\x00]*$"}  # any text but NUL (refused: 400)
# a label or a reason: not blank, no control characters (NUL: PostgreSQL cannot store it)
CONTROL = "\\x00-\\x1f\\x7f-\\x9f"
LINE = {"type": "string", "pattern": f"^[^{CONTROL}]*[^{CONTROL}\\s][^{CONTROL}]*$"}
NUMBER_MAP = {"type": "object", "additionalProperties": NUM}
ANY_OBJECT = {"type": "object"}


def _page_of(key: str, item: str) -> dict:
    """A page of a listing: the items under ``key``, the total, the limit and the offset."""
    fields = {key: _array(_ref(item)), "total": INT, "limit": INT, "offset": INT}
    return _obj(tuple(fields), **fields)


# the lab's reference interval (low, high; null where it sets none) and the flag against it
REFERENCE = {
    "reference": {**_array(NUM, minItems=2, maxItems=2), "nullable": True},
    "flag": {"type": "string", "enum": ["H", "L"], "nullable": True},
}

SCHEMAS = {
    "Error": _obj(
        ("error",),
        error=_obj(("code", "message"), code=STR, message=STR),
        rejected=_array(_ref("Rejection")),
    ),
    "Rejection": _obj(("filename", "code", "message"), filename=STR, code=STR, message=STR),
    "ModelRef": _obj(("name", "version"), name=STR, version=STR),
    "Differential": _obj(
        ("white_cells", "white_cells_counted", "nucleated_red_cells", "platelets", "to_review"),
        white_cells={
            "type": "object",
            "additionalProperties": _obj(
                ("count", "percent"),
                count=INT,
                percent=NUM,
                ci95=_array(NUM, minItems=2, maxItems=2),  # exact binomial 95% interval, %
                **REFERENCE,
            ),
        },
        white_cells_counted=INT,
        nucleated_red_cells=_obj(
            ("count", "per_100_white_cells"),
            count=INT,
            per_100_white_cells={"type": "number", "nullable": True},
            **REFERENCE,
        ),
        platelets=INT,
        to_review=INT,
        outside_reference=_array(STR),  # the classes flagged H or L
        reference_intervals=STR,  # where the intervals come from
    ),
    "Prediction": _obj(
        ("id", "upload_id", "filename", "label", "confidence", "uncertain", "probabilities"),
        id=INT,
        upload_id=INT,
        filename=STR,
        label=STR,
        confidence={"type": "number", "minimum": 0, "maximum": 1},
        uncertain=BOOL,
        reasons=_array(STR),
        probabilities=NUMBER_MAP,
        created_at={"type": "string", "format": "date-time"},
        image_sha256=STR,
        image_stored=BOOL,
        width=INT,
        height=INT,
        model=_ref("ModelRef"),
        links={"type": "object", "additionalProperties": STR},
    ),
    "Upload": _obj(
        ("predictions", "rejected", "differential", "model", "upload_id"),
        predictions=_array(_ref("Prediction")),
        rejected=_array(_ref("Rejection")),
        differential=_ref("Differential"),
        model=_ref("ModelRef"),
        upload_id=INT,
    ),
    "PredictionList": _page_of("predictions", "Prediction"),
    "WhiteCell": _obj(
        ("box", "label", "confidence", "uncertain"),
        box=_array(INT, minItems=4, maxItems=4),
        label=NULLABLE_STR,
        confidence={"type": "number", "nullable": True},
        uncertain={"type": "boolean", "nullable": True},
        reasons=_array(STR),  # why a cell is uncertain (absent in analyses stored before)
    ),
    "Field": _obj(
        ("filename", "image_sha256", "white_cells", "red_cells", "platelets"),
        filename=STR,
        image_sha256=STR,
        image_stored=BOOL,
        path=NULLABLE_STR,
        width=INT,
        height=INT,
        white_cells=_array(_ref("WhiteCell")),
        red_cells=INT,
        platelets=INT,
        red_cell_positions=_array(_array(INT, minItems=2, maxItems=2)),
        platelet_positions=_array(_array(INT, minItems=2, maxItems=2)),
        warnings=_array(STR),
    ),
    "Smear": _obj(
        ("id", "fields", "rejected", "differential", "model"),
        id=INT,
        created_at={"type": "string", "format": "date-time"},
        fields=_array(_ref("Field")),
        rejected=_array(_ref("Rejection")),
        differential=_ref("Differential"),
        model=_ref("ModelRef"),
        links={"type": "object", "additionalProperties": STR},
    ),
    "SmearList": _page_of("smears", "Smear"),
    "ModelCard": _obj(
        ("name", "version", "classes"),
        name=STR,
        version=STR,
        classes=_array(STR),
        architecture=STR,
        input_size=INT,
        temperature=NUM,
        confidence_threshold=NUM,
        metrics=ANY_OBJECT,
        data=ANY_OBJECT,
        licence=NULLABLE_STR,
        provenance=NULLABLE_STR,
        engine=_obj(
            ("name", "precision"),
            name={"type": "string", "enum": ["onnxruntime", "openvino"]},
            precision=STR,
        ),
    ),
    "SampleCell": _obj(
        ("id", "label", "status", "model", "source"),
        id=INT,
        label=STR,
        status={"type": "string", "enum": ["auto", "confirmed", "reclassified", "excluded"]},
        exclusion=NULLABLE_STR,
        model=_obj(
            ("label", "confidence", "uncertain", "version"),
            label=STR,
            confidence=NUM,
            uncertain=BOOL,
            reasons=_array(STR, nullable=True),  # null: stored before they were kept
            version=STR,
        ),
        source={"type": "string", "enum": ["cell", "smear"]},
        box={"type": "array", "items": INT, "nullable": True},
    ),
    "SampleVersion": _obj(
        ("version", "signed_by", "signed_at", "differential"),
        version=INT,
        signed_by=STR,
        signed_at={"type": "string", "format": "date-time"},
        amend_reason=NULLABLE_STR,
        differential=ANY_OBJECT,
    ),
    "Sample": _obj(
        ("id", "accession", "status", "version", "target", "differential", "versions"),
        id=STR,
        accession=STR,
        status={"type": "string", "enum": ["open", "signed", "amending"]},
        version=INT,
        target={"type": "integer", "enum": [100, 200]},
        created_at={"type": "string", "format": "date-time", "nullable": True},
        created_by=STR,
        differential={
            "allOf": [
                _ref("Differential"),
                _obj(("target", "progress"), target=INT, progress=NUM),
            ]
        },
        versions=_array(_ref("SampleVersion")),
        cells=_array(_ref("SampleCell")),
        links={"type": "object", "additionalProperties": STR},
    ),
    "SampleList": _page_of("samples", "Sample"),
    "NewSample": _obj(
        ("accession",),
        accession={**LINE, "maxLength": 128},
        target={"type": "integer", "enum": [100, 200]},
    ),
    "Amendment": _obj(("reason",), reason={**LINE, "maxLength": 500}),
    "Health": _obj(
        ("status", "database", "disk", "model"),
        status={"type": "string", "enum": ["ok", "degraded"]},
        database={"type": "string", "enum": ["ok", "unavailable"]},
        disk=_obj(
            ("status", "free_mb"), status={"type": "string", "enum": ["ok", "low"]}, free_mb=NUM
        ),
        model=_ref("ModelRef"),
    ),
}

# multipart/form-data with the field "file", repeatable: how images are sent
FILES_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": _obj(("file",), file=_array({"type": "string", "format": "binary"}))
        }
    },
}
ERRORS = {
    "400": "bad request: no file, an unreadable image, a bad parameter",
    "401": "the server needs 'Authorization: Bearer <token>'",
    "404": "no such record",
    "408": "the request body took too long to arrive",
    "413": "too large: the upload, an image's pixels, or the request's pixel budget",
    "403": "your role does not allow this",
    "409": "the sample is signed (locked): amend it first",
    "415": "not an image",
    "507": "the server's disk is full: nothing was stored",
}


def _json(description: str, schema: dict) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _responses(ok: str, schema: dict | None, *errors: str, status: str = "200") -> dict:
    answers = {status: _json(ok, schema) if schema else {"description": ok}}
    for code in ("400", "401", "408", *errors):
        answers[code] = _json(ERRORS[code], _ref("Error"))
    return answers


def _id(name: str) -> dict:
    schema = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
    return {"name": name, "in": "path", "required": True, "schema": schema}


PAGING = [
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 200}},
    {
        "name": "offset",
        "in": "query",
        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_ID},
    },
]
LABEL = {"name": "label", "in": "query", "schema": TEXT, "description": "only this class"}
UPLOAD_ERRORS = ("413", "415", "507")


def _collection(name: str, item: str, listing: str, params: list, post_summary: str) -> dict:
    """The four operations of a record collection: list, create (upload), read, delete."""
    id_param = [_id(f"{item.lower()}_id")]
    return {
        f"/api/v1/{name}": {
            "get": {
                "summary": f"List {name}, newest first",
                "parameters": params,
                "responses": _responses(f"a page of {name}", _ref(listing)),
            },
            "post": {
                "summary": post_summary,
                "requestBody": FILES_BODY,
                "responses": _responses(
                    "stored", _ref(UPLOAD_SCHEMA[item]), *UPLOAD_ERRORS, status="201"
                ),
            },
        },
        f"/api/v1/{name}/{{{item.lower()}_id}}": {
            "get": {
                "parameters": id_param,
                "responses": _responses(f"the {item.lower()}", _ref(item), "404"),
            },
            "delete": {
                "summary": "Delete (softly: hidden, kept with who, when and why) with a reason",
                "parameters": [*id_param, REASON],
                "responses": _responses("deleted", None, "403", "404", status="204"),
            },
        },
    }


UPLOAD_SCHEMA = {"Prediction": "Upload", "Smear": "Smear"}  # what a POST answers
REASON = {"name": "reason", "in": "query", "required": True, "schema": {**LINE, "maxLength": 500}}
SAMPLE_ID = {
    "name": "public_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9a-f]{20}$"},
}


def _json_body(schema: str) -> dict:
    return {"required": True, "content": {"application/json": {"schema": _ref(schema)}}}


def _sample_paths() -> dict:
    """A sample's life: create, add cells and fields, review, sign, amend, report, delete."""
    base = "/api/v1/samples/{public_id}"
    sample = _ref("Sample")
    add = {
        "parameters": [SAMPLE_ID],
        "requestBody": FILES_BODY,
        "responses": _responses("added", sample, "403", "404", "409", *UPLOAD_ERRORS, status="201"),
    }
    return {
        "/api/v1/samples": {
            "get": {
                "summary": "List samples, newest first",
                "parameters": PAGING,
                "responses": _responses("a page of samples", _ref("SampleList")),
            },
            "post": {
                "summary": "A new sample (an accession number or label)",
                "requestBody": _json_body("NewSample"),
                "responses": _responses("created", sample, "403", status="201"),
            },
        },
        base: {
            "get": {
                "parameters": [SAMPLE_ID],
                "responses": _responses("the sample, its cells and versions", sample, "404"),
            },
            "delete": {
                "summary": "Delete (softly: kept in the database) with a reason",
                "parameters": [SAMPLE_ID, REASON],
                "responses": _responses("deleted", None, "403", "404", status="204"),
            },
        },
        f"{base}/cells": {"post": {**add, "summary": "Classify single-cell images into it"}},
        f"{base}/fields": {"post": {**add, "summary": "Find the white cells of smear fields"}},
        f"{base}/cells/{{cell_id}}/review": {
            "post": {
                "summary": "Confirm, reclassify or exclude one cell",
                "parameters": [SAMPLE_ID, _id("cell_id")],
                "requestBody": _json_body("Review"),
                "responses": _responses("decided", sample, "403", "404", "409"),
            }
        },
        f"{base}/sign": {
            "post": {
                "summary": "Sign the differential: a new version, and the sample is locked",
                "parameters": [SAMPLE_ID],
                "responses": _responses("signed", sample, "403", "404", "409"),
            }
        },
        f"{base}/amend": {
            "post": {
                "summary": "Unlock a signed sample for an amended version",
                "parameters": [SAMPLE_ID],
                "requestBody": _json_body("Amendment"),
                "responses": _responses("amending", sample, "403", "404"),
            }
        },
        f"{base}/fhir": {
            "get": {
                "summary": "The FHIR R4 DiagnosticReport (LOINC, UCUM)",
                "parameters": [SAMPLE_ID],
                "responses": {
                    "200": {
                        "description": "DiagnosticReport with one Observation per class",
                        "content": {"application/fhir+json": {"schema": ANY_OBJECT}},
                    },
                    **{k: v for k, v in _responses("", None, "404").items() if k != "200"},
                },
            }
        },
    }


def _paths() -> dict:
    return {
        **_collection(
            "predictions",
            "Prediction",
            "PredictionList",
            [*PAGING, LABEL],
            "Classify single-cell images; those that cannot be used are listed in 'rejected'",
        ),
        **_collection(
            "smears",
            "Smear",
            "SmearList",
            PAGING,
            "Analyse smear fields: white cells (boxes, classes), red cells and "
            "platelets, the differential",
        ),
        **_sample_paths(),
        "/api/v1/model": {"get": {"responses": _responses("the model card", _ref("ModelCard"))}},
        "/healthz": {
            "get": {
                "security": [],
                "responses": {
                    "200": _json("database and disk are fine", _ref("Health")),
                    "503": _json("degraded: the database or the disk", _ref("Health")),
                },
            },
        },
        "/api/v1/openapi.json": {
            "get": {"security": [], "responses": {"200": _json("this document", ANY_OBJECT)}}
        },
    }


def review_schema(classes: list[str]) -> dict:
    """One decision on a cell: confirm it, reclassify it as one of the model's classes, or
    exclude it as debris, smudge or artefact."""

    def action(name: str, **extra) -> dict:
        required = ("action", *extra)
        return _obj(required, action={"type": "string", "enum": [name]}, **extra)

    return {
        "oneOf": [
            action("confirm"),
            action("reclassify", label={"type": "string", "enum": list(classes)}),
            action("exclude", exclusion={"type": "string", "enum": list(EXCLUSIONS)}),
        ]
    }


def openapi_document(model_version: str, classes: list[str] = ()) -> dict:
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "HematoVision API",
            "version": __version__,
            "description": f"Blood-cell classification (model version {model_version}).",
        },
        "security": [{}, {"bearer": []}],  # a token only when the server sets one
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {**SCHEMAS, "Review": review_schema(classes)},
        },
        "paths": _paths(),
    }
