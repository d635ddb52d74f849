"""The database schema (SQLAlchemy 2 declarative). Changes go through an Alembic migration."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, TypeDecorator
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# ids are never reused: SQLite needs AUTOINCREMENT for that (PostgreSQL sequences never reuse)
NEVER_REUSE_IDS = {"sqlite_autoincrement": True}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """A timestamp stored with its time zone and always read back as UTC (SQLite keeps none)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


class Base(DeclarativeBase):
    pass


class Upload(Base):
    """One request: one or more images classified together (a batch)."""

    __tablename__ = "uploads"
    __table_args__ = NEVER_REUSE_IDS
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    rejected: Mapped[list] = mapped_column(JSON, default=list)  # [{filename, code, message}]
    predictions: Mapped[list[PredictionRecord]] = relationship(
        back_populates="upload", order_by="PredictionRecord.id"
    )


class PredictionRecord(Base):
    """One classified image."""

    __tablename__ = "predictions"
    __table_args__ = NEVER_REUSE_IDS
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    upload_id: Mapped[int] = mapped_column(ForeignKey("uploads.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    filename: Mapped[str] = mapped_column(String(255))  # as the client named it; display only
    image_sha256: Mapped[str] = mapped_column(String(64), index=True)
    image_stored: Mapped[bool] = mapped_column(Boolean, default=True)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    label: Mapped[str] = mapped_column(String(64), index=True)
    confidence: Mapped[float] = mapped_column(Float)
    uncertain: Mapped[bool] = mapped_column(Boolean)
    probabilities: Mapped[dict] = mapped_column(JSON)
    reasons: Mapped[list] = mapped_column(JSON, default=list)
    model_name: Mapped[str] = mapped_column(String(128))
    model_version: Mapped[str] = mapped_column(String(64))
    upload: Mapped[Upload] = relationship(back_populates="predictions")

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "upload_id": self.upload_id,
            "filename": self.filename,
            "label": self.label,
            "confidence": self.confidence,
            "uncertain": self.uncertain,
            "reasons": list(self.reasons or []),
            "probabilities": dict(self.probabilities),
            "created_at": _iso(self.created_at),
            "image_sha256": self.image_sha256,
            "image_stored": self.image_stored,
            "width": self.width,
            "height": self.height,
            "model": {"name": self.model_name, "version": self.model_version},
        }


class SmearAnalysis(Base):
    """One smear-field upload: per field, the white cells found (boxes, classes), the red cells
    and platelets (counts and positions)."""

    __tablename__ = "smear_analyses"
    __table_args__ = NEVER_REUSE_IDS
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    fields: Mapped[list] = mapped_column(JSON)  # [{filename, image_sha256, ... counts}]
    differential: Mapped[dict] = mapped_column(JSON)  # as counted when analysed
    rejected: Mapped[list] = mapped_column(JSON, default=list)  # [{filename, code, message}]
    model_name: Mapped[str] = mapped_column(String(128))
    model_version: Mapped[str] = mapped_column(String(64))

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "fields": list(self.fields),
            "rejected": list(self.rejected or []),
            "created_at": _iso(self.created_at),
            "model": {"name": self.model_name, "version": self.model_version},
        }


class ImageRef(Base):
    """One record's use of a stored image: an image file is deleted with its last use."""

    __tablename__ = "image_refs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_sha256: Mapped[str] = mapped_column(String(64), index=True)
    record_type: Mapped[str] = mapped_column(String(16))  # "prediction" or "smear"
    record_id: Mapped[int] = mapped_column(Integer)
