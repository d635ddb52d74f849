"""The OpenAPI 3 description of /api/v1, served at /api/v1/openapi.json."""

from __future__ import annotations

from .._version import __version__

_ERROR = {"$ref": "#/components/schemas/Error"}


# multipart/form-data with the field "file", repeatable: how images are sent
_FILES_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {
                    "file": {"type": "array", "items": {"type": "string", "format": "binary"}}
                },
            }
        }
    },
}


def _error_response(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": _ERROR}}}


def openapi_document(model_version: str) -> dict:
    prediction = {
        "type": "object",
        "required": ["id", "filename", "label", "confidence", "uncertain", "probabilities"],
        "properties": {
            "id": {"type": "integer"},
            "upload_id": {"type": "integer"},
            "filename": {"type": "string"},
            "label": {"type": "string"},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "uncertain": {"type": "boolean"},
            "reasons": {"type": "array", "items": {"type": "string"}},
            "probabilities": {"type": "object", "additionalProperties": {"type": "number"}},
            "created_at": {"type": "string", "format": "date-time"},
            "image_sha256": {"type": "string"},
            "width": {"type": "integer"},
            "height": {"type": "integer"},
            "model": {"$ref": "#/components/schemas/ModelRef"},
            "links": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    }
    pid = {"name": "prediction_id", "in": "path", "required": True, "schema": {"type": "integer"}}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "HematoVision API",
            "version": __version__,
            "description": f"Blood-cell classification (model version {model_version}).",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                            },
                        }
                    },
                },
                "ModelRef": {
                    "type": "object",
                    "required": ["name", "version"],
                    "properties": {"name": {"type": "string"}, "version": {"type": "string"}},
                },
                "Prediction": prediction,
                "Smear": {
                    "type": "object",
                    "required": ["id", "fields", "differential", "model"],
                    "properties": {
                        "id": {"type": "integer"},
                        "created_at": {"type": "string", "format": "date-time"},
                        "model": {"$ref": "#/components/schemas/ModelRef"},
                        "differential": {
                            "type": "object",
                            "additionalProperties": {
                                "type": "object",
                                "properties": {
                                    "count": {"type": "integer"},
                                    "percent": {"type": "number"},
                                },
                            },
                        },
                        "fields": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "filename": {"type": "string"},
                                    "red_cells": {"type": "integer"},
                                    "platelets": {"type": "integer"},
                                    "white_cells": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "properties": {
                                                "box": {
                                                    "type": "array",
                                                    "items": {"type": "integer"},
                                                    "minItems": 4,
                                                    "maxItems": 4,
                                                },
                                                "label": {"type": "string"},
                                                "confidence": {"type": "number"},
                                                "uncertain": {"type": "boolean"},
                                            },
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
        "security": [{"bearer": []}, {}],
        "paths": {
            "/api/v1/predictions": {
                "post": {
                    "summary": "Classify one or more images",
                    "requestBody": _FILES_BODY,
                    "responses": {
                        "201": {
                            "description": "Classified and stored",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["predictions", "model"],
                                        "properties": {
                                            "predictions": {
                                                "type": "array",
                                                "items": {
                                                    "$ref": "#/components/schemas/Prediction"
                                                },
                                            },
                                            "model": {"$ref": "#/components/schemas/ModelRef"},
                                            "upload_id": {"type": "integer"},
                                        },
                                    }
                                }
                            },
                        },
                        "400": _error_response("No file, or an unreadable image"),
                        "401": _error_response("A token is configured and was not sent"),
                        "413": _error_response("Upload or image too large"),
                        "415": _error_response("Not an image"),
                    },
                },
                "get": {
                    "summary": "List stored predictions, newest first",
                    "parameters": [
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": 200,
                                "default": 20,
                            },
                        },
                        {
                            "name": "offset",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 0, "default": 0},
                        },
                        {"name": "label", "in": "query", "schema": {"type": "string"}},
                    ],
                    "responses": {
                        "200": {
                            "description": "A page of predictions",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {
                                            "predictions": {
                                                "type": "array",
                                                "items": {
                                                    "$ref": "#/components/schemas/Prediction"
                                                },
                                            },
                                            "total": {"type": "integer"},
                                            "limit": {"type": "integer"},
                                            "offset": {"type": "integer"},
                                        },
                                    }
                                }
                            },
                        },
                        "400": _error_response("Bad paging parameters"),
                        "401": _error_response("A token is configured and was not sent"),
                    },
                },
            },
            "/api/v1/predictions/{prediction_id}": {
                "parameters": [pid],
                "get": {
                    "summary": "One prediction",
                    "responses": {
                        "200": {
                            "description": "The prediction",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Prediction"}
                                }
                            },
                        },
                        "401": _error_response("A token is configured and was not sent"),
                        "404": _error_response("No such prediction"),
                    },
                },
                "delete": {
                    "summary": "Delete a prediction",
                    "responses": {
                        "204": {"description": "Deleted"},
                        "401": _error_response("A token is configured and was not sent"),
                        "404": _error_response("No such prediction"),
                    },
                },
            },
            "/api/v1/smears": {
                "post": {
                    "summary": "Analyse smear fields: white cells (boxes, classes), counts",
                    "requestBody": _FILES_BODY,
                    "responses": {
                        "201": {
                            "description": "Analysed and stored",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Smear"}
                                }
                            },
                        },
                        "400": _error_response("No file, or an unreadable image"),
                        "401": _error_response("A token is configured and was not sent"),
                        "413": _error_response("Upload or image too large"),
                        "415": _error_response("Not an image"),
                    },
                }
            },
            "/api/v1/smears/{smear_id}": {
                "get": {
                    "summary": "One smear analysis",
                    "parameters": [
                        {
                            "name": "smear_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "integer"},
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "The analysis",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Smear"}
                                }
                            },
                        },
                        "401": _error_response("A token is configured and was not sent"),
                        "404": _error_response("No such analysis"),
                    },
                }
            },
            "/api/v1/model": {
                "get": {
                    "summary": "The model card",
                    "responses": {
                        "200": {
                            "description": "Classes, metrics, provenance",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        "401": _error_response("A token is configured and was not sent"),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness and database check",
                    "security": [{}],
                    "responses": {
                        "200": {
                            "description": "Healthy",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        "503": {"description": "Database unavailable"},
                    },
                }
            },
        },
    }
