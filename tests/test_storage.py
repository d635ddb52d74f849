"""Storage on SQLite and PostgreSQL: migrations keep every record, files and rows are written
together, images are shared safely between records, and `storage check` finds what is left."""

import hashlib
import json
import os
import time

import pytest
from sqlalchemy import text

from hematovision.inference import DEFAULT_MODEL
from hematovision.storage import MIGRATIONS, Storage

SAMPLE = sorted((DEFAULT_MODEL.parent / "samples").glob("*.jpg"))[0].read_bytes()
SHA = hashlib.sha256(SAMPLE).hexdigest()


def prediction(**overrides) -> dict:
    record = dict(
        filename="a.jpg",
        image_sha256=SHA,
        width=360,
        height=363,
        label="basophil",
        confidence=0.99,
        uncertain=False,
        probabilities={"basophil": 0.99},
        reasons=[],
        model_name="m",
        model_version="1",
    )
    return {**record, **overrides}


@pytest.fixture
def storage(tmp_path, database_url):
    s = Storage(database_url, tmp_path / "data")
    s.migrate()
    return s


def _upgrade_to(storage: Storage, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with storage.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def test_the_upgrade_keeps_every_record_and_stops_reusing_ids(tmp_path, database_url):
    """A database of version 0.1 (revision 0002) with records: nothing may be lost (SQLite
    rebuilds its tables, which with foreign keys on would cascade to the predictions)."""
    old = Storage(database_url, tmp_path / "data")
    _upgrade_to(old, "0002")
    with old.engine.begin() as c:
        now = "2026-11-25 10:00:00"
        for _ in range(3):  # ids assigned by the database, as version 0.1 did
            c.execute(text("INSERT INTO uploads (created_at) VALUES (:t)"), {"t": now})
            upload_id = c.execute(text("SELECT MAX(id) FROM uploads")).scalar()
            c.execute(
                text(
                    "INSERT INTO predictions (upload_id, created_at, filename, image_sha256, "
                    "image_stored, width, height, label, confidence, uncertain, probabilities, "
                    "reasons, model_name, model_version) VALUES (:u, :t, 'a.jpg', :s, true, 1, 1, "
                    "'basophil', 0.9, false, '{}', '[]', 'm', '1')"
                ),
                {"u": upload_id, "t": now, "s": SHA},
            )
        fields = json.dumps(
            [
                {
                    "filename": "f.jpg",
                    "image_sha256": "b" * 64,
                    "image_stored": True,
                    "white_cells": [],
                    "red_cells": 0,
                    "platelets": 0,
                }
            ]
        )
        c.execute(
            text(
                "INSERT INTO smear_analyses (created_at, fields, differential, model_name, "
                "model_version) VALUES (:t, :f, '{}', 'm', '1')"
            ),
            {"t": now, "f": fields},
        )
    new = Storage(database_url, tmp_path / "data")
    new.migrate()
    assert [u for u in (new.get_upload(i) for i in (1, 2, 3)) if u and u.predictions]
    assert new.list_predictions()[1] == 3 and new.list_smears()[1] == 1
    with new.engine.connect() as c:
        refs = c.execute(text("SELECT record_type, COUNT(*) FROM image_refs GROUP BY record_type"))
        assert dict(refs.all()) == {"prediction": 3, "smear": 1}
    newest = new.list_predictions()[0][0]
    assert new.erase_prediction(newest.id)
    again = new.add_upload([prediction()], {SHA: SAMPLE})
    assert again.id > 3 and again.predictions[0].id > newest.id  # never handed out twice


def test_a_failed_insert_leaves_no_image_file(storage):
    with pytest.raises(Exception):  # noqa: B017 - whatever the database raises
        storage.add_upload([prediction(label=None)], {SHA: SAMPLE})
    assert storage.image_path(SHA) is None
    assert not list(storage.data_dir.rglob("*.tmp"))
    stored = storage.add_upload([prediction()], {SHA: SAMPLE})
    assert storage.image_path(SHA).read_bytes() == SAMPLE and stored.predictions[0].image_stored


def test_an_image_lives_as_long_as_any_record_uses_it(storage):
    a = storage.add_upload([prediction()], {SHA: SAMPLE}).predictions[0]
    b = storage.add_upload([prediction()], {SHA: SAMPLE}).predictions[0]
    smear = storage.add_smear(
        [{"filename": "f", "image_sha256": SHA, "white_cells": [], "red_cells": 0, "platelets": 0}],
        {SHA: SAMPLE},
        {},
        "m",
        "1",
    )
    for record_id in (a.id, b.id):
        assert storage.erase_prediction(record_id) and storage.image_path(SHA)
    assert storage.erase_smear(smear.id) and storage.image_path(SHA) is None
    assert not storage.erase_smear(smear.id) and not storage.erase_prediction(a.id)


def test_a_delete_hides_keeps_who_and_why_and_a_purge_erases(storage):
    from datetime import timedelta

    from hematovision.storage import LabError, NotFound, PredictionRecord

    upload = storage.add_upload([prediction(), prediction()], {SHA: SAMPLE})
    first, second = (p.id for p in upload.predictions)
    with pytest.raises(LabError, match="reason"):
        storage.delete_prediction(first, " \n ", "ana")
    storage.delete_prediction(first, "wrong slide", "ana")
    with pytest.raises(NotFound):
        storage.delete_prediction(first, "again", "ana")
    assert storage.get_prediction(first) is None and storage.list_predictions()[1] == 1
    assert [p.id for p in storage.get_upload(upload.id).predictions] == [second]
    with storage.session() as s:
        row = s.get(PredictionRecord, first)
        assert (row.deleted_by, row.delete_reason) == ("ana", "wrong slide") and row.deleted_at
    assert storage.purge_deleted(timedelta(days=1)) == {"predictions": 0, "smear_analyses": 0}
    storage.delete_prediction(second, "wrong slide", "ana")
    assert storage.image_path(SHA)  # deleted, not yet purged: the image stays
    assert storage.purge_deleted() == {"predictions": 2, "smear_analyses": 0}
    assert storage.image_path(SHA) is None and storage.get_upload(upload.id) is None


def test_storage_check_finds_and_repairs_what_a_killed_process_leaves(storage):
    kept = storage.add_upload([prediction()], {SHA: SAMPLE}).predictions[0]
    orphan = storage.data_dir / "images" / "ab" / ("ab" + "0" * 62)
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"written, then the worker was killed before its commit")
    partial = storage.data_dir / "images" / "ab" / ".x.tmp"
    partial.write_bytes(b"half")
    missing = storage.add_upload([prediction(image_sha256="c" * 64)], {"c" * 64: b"gone"})
    storage.image_path("c" * 64).unlink()
    old = time.time() - 3600
    os.utime(orphan, (old, old))
    report = storage.check()
    assert report.orphan_files == [orphan.name] and report.temporary_files == [str(partial)]
    assert report.missing_files == ["c" * 64] and not report.ok
    assert storage.check(grace_seconds=7200).orphan_files == []  # may be a request in flight
    repaired = storage.check(repair=True)
    assert repaired.repaired and not orphan.exists() and not partial.exists()
    assert storage.check().ok
    assert storage.get_prediction(missing.predictions[0].id).image_stored is False
    assert storage.image_path(kept.image_sha256) is not None
