"""The database schema (SQLAlchemy 2 declarative). Changes go through an Alembic migration."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Upload(Base):
    """One request: one or more images classified together (a batch)."""

    __tablename__ = "uploads"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, index=True
    )
    predictions: Mapped[list[PredictionRecord]] = relationship(
        back_populates="upload", order_by="PredictionRecord.id"
    )


class PredictionRecord(Base):
    """One classified image."""

    __tablename__ = "predictions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    upload_id: Mapped[int] = mapped_column(ForeignKey("uploads.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, index=True
    )
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
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "image_sha256": self.image_sha256,
            "width": self.width,
            "height": self.height,
            "model": {"name": self.model_name, "version": self.model_version},
        }


class SmearAnalysis(Base):
    """One smear-field upload: per field, the white cells found (boxes, classes) and counts."""

    __tablename__ = "smear_analyses"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, index=True
    )
    fields: Mapped[list] = mapped_column(JSON)  # [{filename, image_sha256, ... counts}]
    differential: Mapped[dict] = mapped_column(JSON)
    model_name: Mapped[str] = mapped_column(String(128))
    model_version: Mapped[str] = mapped_column(String(64))

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "fields": list(self.fields),
            "differential": dict(self.differential),
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "model": {"name": self.model_name, "version": self.model_version},
        }
