"""A sample's review, shared by the pages and the API: its differential under the lab's rule
(and those of uploads and smear analyses), its cells grouped as an analyser's review screen
shows them, a cell's picture, its JSON."""

from __future__ import annotations

import io

from flask import abort, request, url_for

from ..differential import Differential, count_differential
from ..inference import flag_reasons, heatmap_overlay, new_lab_notice
from ..preprocess import to_rgb
from ..smear import crop_cell, field_differential
from ..storage import Sample, SampleCell, SmearAnalysis, Storage, Upload
from .resources import get_classifier, get_settings, get_smear_classifier
from .service import WEB_MAX_SIDE, analyze_files, classify_files, uploaded_files

CELL_PICTURE_SIDE = 144


def sample_differential(sample: Sample, classes: list[str], storage: Storage) -> Differential:
    """Reviewed labels where a person decided, the model's elsewhere; excluded cells count
    nowhere, and an uncertain cell nobody reviewed is "to review"."""
    cells = [
        (None if c.status == "excluded" else c.label, c.uncertain and not c.reviewed)
        for c in sample.cells
    ]
    platelets = storage.samples.platelets(sample)
    return count_differential(cells, classes, platelets, get_settings().intervals)


def sample_notice(sample: Sample) -> str | None:
    """The new-lab notice over the model's flags on a sample's cells, reviewed or not."""
    return new_lab_notice(flag_reasons(c.reasons, c.uncertain) for c in sample.cells)


def upload_differential(upload: Upload) -> Differential:
    """An upload's images counted under the lab's rule and reference intervals."""
    cells = ((p.label, p.uncertain) for p in upload.predictions)
    return count_differential(cells, get_classifier().classes, intervals=get_settings().intervals)


def smear_differential(smear: SmearAnalysis) -> Differential:
    """A stored smear analysis's white cells counted under the lab's rule."""
    classes = get_smear_classifier().classes
    return field_differential(smear.fields, classes, get_settings().intervals)


def differential_json(sample: Sample, differential: Differential) -> dict:
    data = differential.to_dict()
    data["target"] = sample.target
    data["progress"] = round(min(1.0, differential.counted / sample.target), 3)
    return data


def review_groups(sample: Sample, classes: list[str]) -> list[tuple[str, str, list[SampleCell]]]:
    """(key, title, cells): "to review" first, then one group per class, then excluded."""
    cells = sample.cells
    to_review = [c for c in cells if c.uncertain and not c.reviewed]
    pending = {c.id for c in to_review}
    groups = [("to_review", "to review", to_review)]
    for label in classes:
        group = [c for c in cells if c.label == label and c.status != "excluded"]
        groups.append((label, label, [c for c in group if c.id not in pending]))
    groups.append(("excluded", "excluded", [c for c in cells if c.status == "excluded"]))
    return groups


def cell_picture(storage: Storage, cell: SampleCell):
    """The cell as the reviewer sees it: the image, or its crop from the smear field."""
    path = storage.image_path(cell.image_sha256)
    if path is None:
        abort(404, description="the image of this cell is not stored")
    picture = to_rgb(path, None if cell.box else WEB_MAX_SIDE)
    return crop_cell(picture, cell.box) if cell.box else picture


def cell_jpeg(storage: Storage, cell: SampleCell, classifier=None) -> bytes:
    """The cell's picture as a JPEG; with ``classifier``, its heatmap over it (the model
    that classified the cell: other versions would show another model's attention)."""
    picture = cell_picture(storage, cell)
    if classifier is not None:
        if classifier.version != cell.model_version:
            abort(404, description=f"model version {cell.model_version} is no longer active")
        picture = heatmap_overlay(picture, classifier.predict(picture, heatmaps=True)[0].heatmap)
    picture.thumbnail((CELL_PICTURE_SIDE, CELL_PICTURE_SIDE))
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=88)
    return buffer.getvalue()


def fhir_document(sample: Sample) -> dict:
    """The FHIR DiagnosticReport of the sample: its last signed version, else the model's count."""
    from ..fhir import diagnostic_report
    from .resources import get_classifier, get_storage

    clf = get_classifier()
    differential = sample_differential(sample, clf.classes, get_storage())
    signed = sample.versions[-1].to_dict() if sample.versions else None
    model = {"name": clf.name, "version": clf.version}
    return diagnostic_report(sample_json(sample, differential, cells=False), signed, model)


def add_files(public_id: str, kind: str) -> None:
    """The request's files classified into an open sample: single cells ("cells") or smear
    fields ("fields"). Raises UploadError (bad files) or LabError (no such sample, signed)."""
    from .auth import audit
    from .resources import get_classifier, get_settings, get_smear_classifier, get_storage

    storage, settings = get_storage(), get_settings()
    handler, classifier = {
        "cells": (classify_files, get_classifier),
        "fields": (analyze_files, get_smear_classifier),
    }[kind]
    record = storage.samples.check_open(public_id)
    files = uploaded_files(request.files.getlist("file"), settings.max_files)
    handler(files, classifier(), storage, settings, sample=record)
    audit("added", f"sample:{public_id}", files=len(files), kind=kind)


def decide(public_id: str, cell_id: int, data) -> SampleCell:
    """One reviewer's decision on a cell from a request's JSON or form (action: confirm,
    reclassify with a label, exclude with a reason), kept and audited; LabError if refused."""
    from .auth import actor, audit
    from .resources import get_classifier, get_storage

    cell = get_storage().samples.review(
        public_id,
        cell_id,
        str(data.get("action", "")),
        actor(),
        label=data.get("label"),
        exclusion=data.get("exclusion"),
        classes=get_classifier().classes,
    )
    audit("corrected", f"sample:{public_id}", cell=cell_id, status=cell.status, label=cell.label)
    return cell


def sample_json(sample: Sample, differential: Differential, cells: bool = True) -> dict:
    data = {
        "id": sample.public_id,
        "accession": sample.accession,
        "status": sample.status,
        "version": sample.version,
        "target": sample.target,
        "created_at": sample.created_at.isoformat() if sample.created_at else None,
        "created_by": sample.created_by,
        "differential": differential_json(sample, differential),
        "versions": [v.to_dict() for v in sample.versions],
        "links": {
            "self": url_for("api.get_sample", public_id=sample.public_id),
            "page": url_for("review.sample", public_id=sample.public_id),
            "fhir": url_for("api.sample_fhir", public_id=sample.public_id),
        },
    }
    if cells:
        data["cells"] = [c.to_dict() for c in sample.cells]
    return data
