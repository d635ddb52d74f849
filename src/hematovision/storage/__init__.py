"""Storage: predictions in a real database (SQLAlchemy; SQLite in WAL mode by default) and
uploaded images kept content-addressed (SHA-256) in the data folder."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, event, func, select
from sqlalchemy.orm import selectinload, sessionmaker

from ..files import write_atomic
from .models import Base, PredictionRecord, SmearAnalysis, Upload

__all__ = ["Base", "PredictionRecord", "SmearAnalysis", "Storage", "Upload"]

MIGRATIONS = Path(__file__).with_name("migrations")


class Storage:
    """The database and the image store behind the web application."""

    def __init__(self, database_url: str | None, data_dir: str | Path, store_images: bool = True):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.store_images = store_images
        self.url = database_url or f"sqlite:///{(self.data_dir / 'hematovision.db').resolve()}"
        sqlite = self.url.startswith("sqlite")
        self.engine = create_engine(
            self.url, connect_args={"timeout": 30, "check_same_thread": False} if sqlite else {}
        )
        if sqlite:

            @event.listens_for(self.engine, "connect")
            def _pragmas(dbapi_connection, _record):
                cursor = dbapi_connection.cursor()
                # WAL: readers never block the writer, and a crash mid-write loses no committed row
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.execute("PRAGMA foreign_keys=ON")
                cursor.close()

        self.session = sessionmaker(self.engine, expire_on_commit=False)

    # ---------------------------------------------------------------- schema
    def migrate(self) -> None:
        """Create or upgrade the schema to the newest revision (Alembic)."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    # ---------------------------------------------------------------- images
    def _image_path(self, sha256: str) -> Path:
        return self.data_dir / "images" / sha256[:2] / sha256

    def save_image(self, sha256: str, data: bytes) -> bool:
        """Keep the uploaded bytes under their SHA-256; returns whether they are stored."""
        if not self.store_images:
            return False
        path = self._image_path(sha256)
        if not path.exists():
            write_atomic(path, data, durable=True)
        return True

    def image_path(self, sha256: str) -> Path | None:
        if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
            return None
        path = self._image_path(sha256)
        return path if path.is_file() else None

    def derived_path(self, sha256: str, kind: str, model_version: str) -> Path:
        """Where an image made from an upload by a model is kept (kind: heatmap, annotated)."""
        safe_version = "".join(c for c in model_version if c.isalnum() or c in ".-")
        return self.data_dir / kind / sha256[:2] / f"{sha256}-{safe_version}.png"

    def save_derived(self, sha256: str, kind: str, model_version: str, png: bytes) -> None:
        if self.store_images:
            write_atomic(self.derived_path(sha256, kind, model_version), png, durable=True)

    # ---------------------------------------------------------------- records
    def add_upload(self, predictions: list[dict]) -> Upload:
        """Store one upload and its predictions in a single transaction."""
        with self.session.begin() as s:
            upload = Upload(predictions=[PredictionRecord(**p) for p in predictions])
            s.add(upload)
        return self.get_upload(upload.id)

    def get_upload(self, upload_id: int) -> Upload | None:
        with self.session() as s:
            return s.get(Upload, upload_id, options=[selectinload(Upload.predictions)])

    def get_prediction(self, prediction_id: int) -> PredictionRecord | None:
        with self.session() as s:
            return s.get(PredictionRecord, prediction_id)

    def list_predictions(
        self, limit: int = 20, offset: int = 0, label: str | None = None
    ) -> tuple[list[PredictionRecord], int]:
        query = select(PredictionRecord)
        if label:
            query = query.where(PredictionRecord.label == label)
        with self.session() as s:
            total = s.scalar(select(func.count()).select_from(query.subquery()))
            rows = s.scalars(query.order_by(PredictionRecord.id.desc()).limit(limit).offset(offset))
            return list(rows), int(total or 0)

    def delete_prediction(self, prediction_id: int) -> bool:
        """Delete a record; its image goes too unless another record shows the same image."""
        with self.session.begin() as s:
            record = s.get(PredictionRecord, prediction_id)
            if record is None:
                return False
            sha, upload_id = record.image_sha256, record.upload_id
            s.delete(record)
            s.flush()
            still_used = s.scalar(select(func.count()).where(PredictionRecord.image_sha256 == sha))
            if not s.scalar(select(func.count()).where(PredictionRecord.upload_id == upload_id)):
                s.delete(s.get(Upload, upload_id))
        if not still_used:
            for path in (
                self._image_path(sha),
                *(self.data_dir / "heatmap" / sha[:2]).glob(f"{sha}-*.png"),
            ):
                path.unlink(missing_ok=True)
        return True

    def add_smear(
        self, fields: list[dict], differential: dict, model_name: str, model_version: str
    ) -> SmearAnalysis:
        with self.session.begin() as s:
            record = SmearAnalysis(
                fields=fields,
                differential=differential,
                model_name=model_name,
                model_version=model_version,
            )
            s.add(record)
        return record

    def get_smear(self, smear_id: int) -> SmearAnalysis | None:
        with self.session() as s:
            return s.get(SmearAnalysis, smear_id)
