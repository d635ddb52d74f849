"""Storage: records in a real database (SQLAlchemy; SQLite in WAL mode by default, or
PostgreSQL) and uploaded images kept content-addressed (SHA-256) in the data folder.

Files and rows are written together: image files first, then one transaction with the records
and one ``ImageRef`` per record's use of an image; if the transaction fails, the files it wrote
are removed again (unless another record uses them). An image file is deleted with its last
use, whatever the record type. ``check`` finds what a killed process can still leave behind.

A person's delete is a soft delete (``delete_*``: hidden, with who, when and why); an admin's
``purge_deleted`` then erases those records and frees their images.
"""

from __future__ import annotations

import errno
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import and_, create_engine, delete, event, func, select
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError
from sqlalchemy.orm import Session, selectinload, sessionmaker

from ..errors import HematoVisionError
from ..files import write_atomic
from .lab import (
    AuditLog,
    LabError,
    Locked,
    ModelRegistry,
    NotFound,
    Samples,
    Users,
    _actor,
    _line,
    cells_of_smear,
    cells_of_upload,
)
from .models import (
    Base,
    ImageRef,
    PredictionRecord,
    Sample,
    SampleCell,
    SmearAnalysis,
    Upload,
)

__all__ = [
    "Base",
    "LabError",
    "Locked",
    "NotFound",
    "Sample",
    "SampleCell",
    "ImageRef",
    "PredictionRecord",
    "SmearAnalysis",
    "Storage",
    "StorageFull",
    "Upload",
]

MIGRATIONS = Path(__file__).with_name("migrations")
log = logging.getLogger("hematovision")
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
LEGACY_DERIVED = ("heatmap", "annotated")  # image caches of version 0.1, removed with the image


class StorageFull(HematoVisionError):
    """The data folder's disk (or the database's) has no space left."""

    code = "insufficient_storage"


def _is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in DISK_FULL
    if isinstance(exc, OperationalError):  # SQLite "database or disk is full", PostgreSQL 53100
        text = str(exc.orig).lower()
        return getattr(exc.orig, "sqlstate", None) == "53100" or "disk is full" in text
    return False


@dataclass
class StorageReport:
    """What ``Storage.check`` found (and, with repair, fixed)."""

    orphan_files: list[str] = field(default_factory=list)  # image files no record uses
    missing_files: list[str] = field(default_factory=list)  # images records use, not on disk
    temporary_files: list[str] = field(default_factory=list)  # left by an interrupted write
    repaired: bool = False

    @property
    def ok(self) -> bool:
        return not (self.orphan_files or self.missing_files or self.temporary_files)

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "orphan_files": self.orphan_files,
            "missing_files": self.missing_files,
            "temporary_files": self.temporary_files,
            "repaired": self.repaired,
        }


class Storage:
    """The database and the image store behind the web application."""

    def __init__(
        self,
        database_url: str | None,
        data_dir: str | Path,
        store_images: bool = True,
        min_free_mb: float = 100.0,
    ):
        self.data_dir = Path(data_dir).resolve()  # never relative to a later working folder
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a file of that name, no permission...
            raise HematoVisionError(
                f"cannot use {self.data_dir} as the data folder: {exc.strerror}"
            ) from None
        self.store_images = store_images
        self.min_free_mb = min_free_mb
        self.url = database_url or f"sqlite:///{self.data_dir / 'hematovision.db'}"
        self.engine = _engine(self.url)
        self.session = sessionmaker(self.engine, expire_on_commit=False)
        self.samples = Samples(self.session)
        self.users = Users(self.session)
        self.audit = AuditLog(self.session)
        self.models = ModelRegistry(self.session, self.data_dir / "models")

    # ---------------------------------------------------------------- schema
    def migrate(self) -> None:
        """Create or upgrade the schema to the newest revision (Alembic); one log line when it
        changed (Alembic's own lines are for developers: the CLI keeps them at WARNING)."""
        from alembic import command
        from alembic.config import Config
        from alembic.runtime.migration import MigrationContext

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with _connect(self.engine) as connection:
            if connection.dialect.name == "sqlite":
                # a table rebuilt by a migration is dropped: with foreign keys on, SQLite would
                # cascade that drop to the rows that point at it. Off only while migrating.
                connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
                connection.commit()  # PRAGMA foreign_keys is ignored inside a transaction
            with connection.begin():
                before = MigrationContext.configure(connection).get_current_revision()
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
                after = MigrationContext.configure(connection).get_current_revision()
            if after != before:
                where = self.engine.url.render_as_string(hide_password=True)
                log.info("database schema %s -> %s: %s", before or "new", after, where)
            if connection.dialect.name == "sqlite":
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")
                # the schema into the database file, the write-ahead log back to empty: a
                # later full disk then finds the log small, and a delete can still commit
                connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
                connection.commit()

    # ---------------------------------------------------------------- disk
    def free_mb(self) -> float:
        return shutil.disk_usage(self.data_dir).free / 2**20

    def disk_is_low(self) -> bool:
        return self.free_mb() < self.min_free_mb

    # ---------------------------------------------------------------- images
    def _image_path(self, sha256: str) -> Path:
        return self.data_dir / "images" / sha256[:2] / sha256

    def image_path(self, sha256: str) -> Path | None:
        if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
            return None
        path = self._image_path(sha256)
        return path if path.is_file() else None

    def _write_images(self, images: dict[str, bytes]) -> list[str]:
        """Write the images not yet stored; returns the SHA-256 of those this call created."""
        created = []
        try:
            for sha, data in images.items():
                path = self._image_path(sha)
                if not path.exists():
                    write_atomic(path, data, durable=True)
                    created.append(sha)
        except OSError as exc:
            self._remove_unused(created)
            if exc.errno in DISK_FULL:
                raise StorageFull("the server's disk is full: nothing was stored") from None
            raise
        return created

    def _remove_unused(self, shas) -> None:
        """Delete the image files (and derived images) of ``shas`` that no record uses."""
        if not shas:
            return
        with self.session() as s:
            used = _images_in_use(s, shas)
        for sha in set(shas) - used:
            self._image_path(sha).unlink(missing_ok=True)
            for kind in LEGACY_DERIVED:
                for path in (self.data_dir / kind / sha[:2]).glob(f"{sha}-*"):
                    path.unlink(missing_ok=True)

    # ---------------------------------------------------------------- writing records
    def _store(self, images: dict[str, bytes], build: Callable[[Session], object]):
        """Write ``images``, then ``build`` the records in one transaction; on any failure the
        files this call created are removed again (write, commit, clean up).

        Below ``min_free_mb`` nothing new is stored: the rest is kept for what must still
        work on a nearly full disk (deletes, which win space back, reviews, the audit log)."""
        if self.disk_is_low():
            raise StorageFull(
                f"the server's disk is full (under {self.min_free_mb:g} MB free): "
                "nothing was stored"
            )
        created = self._write_images(images if self.store_images else {})
        try:
            with self.session.begin() as s:
                record = build(s)
            return record
        except BaseException as exc:
            self._remove_unused(created)
            if _is_disk_full(exc):
                raise StorageFull("the server's disk is full: nothing was stored") from None
            raise

    def add_upload(
        self,
        predictions: list[dict],
        images: dict[str, bytes],
        rejected: list[dict] = (),
        sample: Sample | None = None,
    ) -> Upload:
        """One upload, its predictions and their image files, stored together (and, with a
        ``sample``, its cells added to that sample's review)."""

        def build(s: Session) -> Upload:
            upload = Upload(
                predictions=[
                    PredictionRecord(**p, image_stored=self.store_images) for p in predictions
                ],
                rejected=list(rejected),
                sample_id=_open_sample_id(s, sample),
            )
            s.add(upload)
            s.flush()
            if sample is not None:
                s.add_all(cells_of_upload(sample.id, upload.predictions))
            if self.store_images:
                s.add_all(
                    ImageRef(image_sha256=p.image_sha256, record_type="prediction", record_id=p.id)
                    for p in upload.predictions
                )
            return upload

        return self._store(images, build)  # expire_on_commit=False: no need to read it back

    def add_smear(
        self,
        fields: list[dict],
        images: dict[str, bytes],
        differential: dict,
        model_name: str,
        model_version: str,
        rejected: list[dict] = (),
        sample: Sample | None = None,
    ) -> SmearAnalysis:
        """One smear analysis and its field images, stored together (and, with a ``sample``,
        its white cells added to that sample's review)."""

        def build(s: Session) -> SmearAnalysis:
            for f in fields:
                f["image_stored"] = self.store_images
            record = SmearAnalysis(
                fields=fields,
                differential=differential,
                model_name=model_name,
                model_version=model_version,
                rejected=list(rejected),
                sample_id=_open_sample_id(s, sample),
            )
            s.add(record)
            s.flush()
            if sample is not None:
                s.add_all(cells_of_smear(sample.id, record))
            if self.store_images:
                s.add_all(
                    ImageRef(image_sha256=sha, record_type="smear", record_id=record.id)
                    for sha in dict.fromkeys(f["image_sha256"] for f in fields)
                )
            return record

        return self._store(images, build)

    # ---------------------------------------------------------------- reading records
    def get_upload(self, upload_id: int) -> Upload | None:
        """The upload with its predictions that are not deleted."""
        shown = selectinload(Upload.predictions.and_(PredictionRecord.deleted_at.is_(None)))
        with self.session() as s:
            return s.get(Upload, upload_id, options=[shown])

    def get_prediction(self, prediction_id: int) -> PredictionRecord | None:
        return self._get_shown(PredictionRecord, prediction_id)

    def list_predictions(
        self, limit: int = 20, offset: int = 0, label: str | None = None
    ) -> tuple[list[PredictionRecord], int]:
        query = select(PredictionRecord).where(PredictionRecord.deleted_at.is_(None))
        if label:
            query = query.where(PredictionRecord.label == label)
        return self._page(query, PredictionRecord.id, limit, offset)

    def get_smear(self, smear_id: int) -> SmearAnalysis | None:
        return self._get_shown(SmearAnalysis, smear_id)

    def list_smears(self, limit: int = 20, offset: int = 0) -> tuple[list[SmearAnalysis], int]:
        query = select(SmearAnalysis).where(SmearAnalysis.deleted_at.is_(None))
        return self._page(query, SmearAnalysis.id, limit, offset)

    def _get_shown(self, model, record_id: int):
        """A record by id, or None when there is none or it was deleted."""
        with self.session() as s:
            record = s.get(model, record_id)
            return record if record is not None and record.deleted_at is None else None

    def _page(self, query, order, limit: int, offset: int):
        with self.session() as s:
            total = s.scalar(select(func.count()).select_from(query.subquery()))
            rows = s.scalars(query.order_by(order.desc()).limit(limit).offset(offset))
            return list(rows), int(total or 0)

    # ---------------------------------------------------------------- deleting records
    def delete_prediction(self, prediction_id: int, reason: str, by: str | None = None) -> None:
        """Soft-delete a result: hidden from then on, kept with who, when and ``reason``.
        Raises NotFound (none, or already deleted) or LabError (no reason)."""
        self._soft_delete(PredictionRecord, prediction_id, reason, by, "prediction")

    def delete_smear(self, smear_id: int, reason: str, by: str | None = None) -> None:
        """Soft-delete a smear analysis, as ``delete_prediction``."""
        self._soft_delete(SmearAnalysis, smear_id, reason, by, "smear analysis")

    def _soft_delete(self, model, record_id: int, reason: str, by: str | None, what: str):
        reason = _line(reason, "a delete's reason", 500)
        with self.session.begin() as s:
            record = s.get(model, record_id, with_for_update=True)
            if record is None or record.deleted_at is not None:
                raise NotFound(f"no {what} {record_id}")
            record.mark_deleted(_actor(by), reason)

    def purge_deleted(self, older_than: timedelta = timedelta(0)) -> dict[str, int]:
        """Erase the records deleted more than ``older_than`` ago, and the images only they
        used: how an admin wins disk space back. Returns how many of each kind went."""
        cutoff = datetime.now(UTC) - older_than
        kinds = {"predictions": (PredictionRecord, self.erase_prediction)}
        kinds["smear_analyses"] = (SmearAnalysis, self.erase_smear)
        erased = {}
        for kind, (model, erase) in kinds.items():
            with self.session() as s:
                ids = list(s.scalars(select(model.id).where(model.deleted_at <= cutoff)))
            erased[kind] = sum(erase(record_id) for record_id in ids)
        return erased

    def erase_prediction(self, prediction_id: int) -> bool:
        """Erase a record for good (and its upload if it was the last); its image goes with
        its last use. People delete (``delete_prediction``); purges erase."""

        def remove(s: Session):
            record = s.get(PredictionRecord, prediction_id)
            if record is None:
                return None
            upload_id = record.upload_id
            s.delete(record)
            s.flush()
            if not s.scalar(select(func.count()).where(PredictionRecord.upload_id == upload_id)):
                s.delete(s.get(Upload, upload_id))
            return record.image_sha256

        return self._erase("prediction", prediction_id, remove)

    def erase_smear(self, smear_id: int) -> bool:
        """Erase a smear analysis for good; its field images go with their last use."""

        def remove(s: Session):
            record = s.get(SmearAnalysis, smear_id)
            if record is None:
                return None
            s.delete(record)
            return True

        return self._erase("smear", smear_id, remove)

    def _erase(self, record_type: str, record_id: int, remove: Callable[[Session], object]) -> bool:
        mine = _uses(record_type, record_id)
        for attempt in (1, 2):
            try:
                with self.session.begin() as s:
                    shas = list(s.scalars(select(ImageRef.image_sha256).where(mine)))
                    if remove(s) is None:
                        return False
                    s.execute(delete(ImageRef).where(mine))
                break
            except OperationalError as exc:
                if attempt == 2 or not _is_disk_full(exc):
                    raise
                # a full disk: free this record's images no other record uses, then retry,
                # so that deleting is how space is won back
                self._remove_images_only_used_by(record_type, record_id)
        self._remove_unused(shas)
        return True

    def _remove_images_only_used_by(self, record_type: str, record_id: int) -> None:
        uses = _uses(record_type, record_id)
        with self.session() as s:
            mine = set(s.scalars(select(ImageRef.image_sha256).where(uses)))
            query = select(ImageRef.image_sha256).where(ImageRef.image_sha256.in_(mine), ~uses)
            shared = set(s.scalars(query)) | _used(s, SampleCell.image_sha256, mine)
        for sha in mine - shared:
            self._image_path(sha).unlink(missing_ok=True)

    # ---------------------------------------------------------------- consistency
    def check(self, repair: bool = False, grace_seconds: float = 600) -> StorageReport:
        """Find image files no record uses (older than ``grace_seconds``: a request may be
        writing one now), images records use that are missing, and temporary files left by an
        interrupted write; with ``repair``, delete the first and last and mark the missing
        images as not stored."""
        report = StorageReport()
        with self.session() as s:
            used = _images_in_use(s)
        now = time.time()
        on_disk = set()
        for path in (self.data_dir / "images").glob("*/*"):
            if path.name.endswith(".tmp"):
                report.temporary_files.append(str(path))
            elif now - path.stat().st_mtime >= grace_seconds:
                on_disk.add(path.name)
                if path.name not in used:
                    report.orphan_files.append(path.name)
            else:
                on_disk.add(path.name)
        report.missing_files = sorted(used - on_disk)
        if repair:
            self._repair(report)
        return report

    def _repair(self, report: StorageReport) -> None:
        self._remove_unused(report.orphan_files)
        for tmp in report.temporary_files:
            Path(tmp).unlink(missing_ok=True)
        if report.missing_files:
            with self.session.begin() as s:
                s.execute(delete(ImageRef).where(ImageRef.image_sha256.in_(report.missing_files)))
                for record in s.scalars(
                    select(PredictionRecord).where(
                        PredictionRecord.image_sha256.in_(report.missing_files)
                    )
                ):
                    record.image_stored = False
        report.repaired = True


def _images_in_use(s: Session, among=None) -> set[str]:
    """The images (of ``among``, default all) that something uses: a result or smear analysis
    (its ``ImageRef``), or a sample's cell, which keeps its picture whatever becomes of the
    result it came from (a signed differential shows its cells for good)."""
    return _used(s, ImageRef.image_sha256, among) | _used(s, SampleCell.image_sha256, among)


def _used(s: Session, column, among=None) -> set[str]:
    """The image hashes in ``column`` (of ``among``, default all)."""
    query = select(column).distinct()
    if among is not None:
        query = query.where(column.in_(list(among)))
    return set(s.scalars(query))


def _open_sample_id(s: Session, sample: Sample | None) -> int | None:
    """The sample's id, checked inside the writing transaction: still there and not signed."""
    if sample is None:
        return None
    current = s.get(Sample, sample.id, with_for_update=True)
    if current is None or current.deleted_at is not None:
        raise NotFound(f"no sample {sample.public_id}")
    if current.locked:
        raise Locked(f"sample {current.accession} is signed: amend it (with a reason) first")
    return current.id


def _uses(record_type: str, record_id: int):
    """The image references of one record (a SQL condition)."""
    return and_(ImageRef.record_type == record_type, ImageRef.record_id == record_id)


def _connect(engine):
    """A connection, or one clear line saying why the database cannot be reached (a server that
    is down, a wrong password, a SQLite file in a folder that does not exist)."""
    try:
        return engine.connect()
    except DBAPIError as exc:
        where = engine.url.render_as_string(hide_password=True)
        reason = str(exc.orig or exc).strip().splitlines()[0]
        raise HematoVisionError(f"cannot reach the database {where}: {reason}") from None


def _engine(url: str):
    sqlite = url.startswith("sqlite")
    try:
        engine = create_engine(
            url,
            # pre-ping: the first request after a database restart reconnects instead of failing
            pool_pre_ping=True,
            connect_args={"timeout": 30, "check_same_thread": False} if sqlite else {},
        )
    except ArgumentError as exc:  # not a URL, or a database SQLAlchemy has no dialect for
        raise HematoVisionError(
            f"the database URL cannot be used ({exc}); PostgreSQL's looks like "
            "postgresql+psycopg://USER:PASSWORD@HOST/DATABASE"
        ) from None
    except ImportError as exc:  # a dialect whose driver is not installed (e.g. mysql://)
        raise HematoVisionError(
            f"no driver for the database URL ({exc.name or exc} is not installed); HematoVision "
            "comes with PostgreSQL's (postgresql+psycopg://) and SQLite's"
        ) from None
    if sqlite:

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            # WAL: readers never block the writer, and a crash mid-write loses no committed row
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

    return engine
