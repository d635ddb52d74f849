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


class SoftDeleted:
    """A record deleted by a person stays, hidden, with who, when and why (an admin's
    ``hematovision storage purge`` removes it for good)."""

    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    deleted_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    delete_reason: Mapped[str | None] = mapped_column(String(500), nullable=True)

    def mark_deleted(self, by: str, reason: str) -> None:
        self.deleted_at, self.deleted_by, self.delete_reason = utcnow(), by, reason


class Upload(Base):
    """One request: one or more images classified together (a batch)."""

    __tablename__ = "uploads"
    __table_args__ = NEVER_REUSE_IDS
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    rejected: Mapped[list] = mapped_column(JSON, default=list)  # [{filename, code, message}]
    sample_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    predictions: Mapped[list[PredictionRecord]] = relationship(
        back_populates="upload", order_by="PredictionRecord.id"
    )


class PredictionRecord(SoftDeleted, Base):
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


class SmearAnalysis(SoftDeleted, Base):
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
    sample_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)

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


# ---------------------------------------------------------------- the lab workflow
class User(Base):
    """A personal account. Passwords are argon2 hashes; API tokens are kept as SHA-256 of a
    random token (a token has 256 bits of entropy: a slow hash buys nothing)."""

    __tablename__ = "users"
    __table_args__ = NEVER_REUSE_IDS
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))  # admin, technologist, viewer
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    token_sha256: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "username": self.username,
            "role": self.role,
            "active": self.active,
            "has_token": self.token_sha256 is not None,
            "created_at": _iso(self.created_at),
        }


class Sample(SoftDeleted, Base):
    """A patient sample (accession number or free label): cells and smear fields collected
    over time, reviewed, then signed. ``public_id`` is what URLs carry (not guessable)."""

    __tablename__ = "samples"
    __table_args__ = NEVER_REUSE_IDS
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    accession: Mapped[str] = mapped_column(String(128), index=True)
    target: Mapped[int] = mapped_column(Integer, default=100)  # white cells to count
    status: Mapped[str] = mapped_column(String(16), default="open")  # open, signed, amending
    version: Mapped[int] = mapped_column(Integer, default=1)
    amend_reason: Mapped[str | None] = mapped_column(String(500), nullable=True)  # while amending
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    created_by: Mapped[str] = mapped_column(String(64))
    cells: Mapped[list[SampleCell]] = relationship(order_by="SampleCell.id")
    versions: Mapped[list[SampleVersion]] = relationship(order_by="SampleVersion.version")

    @property
    def locked(self) -> bool:
        return self.status == "signed"


class SampleCell(Base):
    """One cell of a sample: what the model said and what the reviewer decided.

    ``label`` is the cell's current class (the model's until someone changes it); ``status``:
    auto (not reviewed), confirmed, reclassified or excluded (debris, smudge, artefact)."""

    __tablename__ = "sample_cells"
    __table_args__ = NEVER_REUSE_IDS
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id"), index=True)
    prediction_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    smear_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    field_index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    image_sha256: Mapped[str] = mapped_column(String(64))
    box: Mapped[list | None] = mapped_column(JSON, nullable=True)  # in the field; None: whole
    model_label: Mapped[str] = mapped_column(String(64))
    confidence: Mapped[float] = mapped_column(Float)
    uncertain: Mapped[bool] = mapped_column(Boolean)
    model_version: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="auto")
    exclusion: Mapped[str | None] = mapped_column(String(32), nullable=True)
    reasons: Mapped[list | None] = mapped_column(JSON, nullable=True)  # None: stored before 0007

    @property
    def reviewed(self) -> bool:
        return self.status != "auto"

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "label": self.label,
            "status": self.status,
            "exclusion": self.exclusion,
            "model": {
                "label": self.model_label,
                "confidence": self.confidence,
                "uncertain": self.uncertain,
                "reasons": self.reasons,  # null: stored before reasons were kept
                "version": self.model_version,
            },
            "source": "smear" if self.smear_id else "cell",
            "box": self.box,
        }


class Correction(Base):
    """One reviewer's decision on one cell, kept forever (what the model learns from)."""

    __tablename__ = "corrections"
    __table_args__ = NEVER_REUSE_IDS
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cell_id: Mapped[int] = mapped_column(ForeignKey("sample_cells.id"), index=True)
    sample_version: Mapped[int] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(16))  # confirm, reclassify, exclude
    old_label: Mapped[str] = mapped_column(String(64))
    new_label: Mapped[str | None] = mapped_column(String(64), nullable=True)
    exclusion: Mapped[str | None] = mapped_column(String(32), nullable=True)
    model_version: Mapped[str] = mapped_column(String(64))
    by: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SampleVersion(Base):
    """A signed differential: who signed, when, and (for an amendment) why it changed."""

    __tablename__ = "sample_versions"
    __table_args__ = NEVER_REUSE_IDS
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    signed_by: Mapped[str] = mapped_column(String(64))
    signed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    amend_reason: Mapped[str | None] = mapped_column(String(500), nullable=True)
    differential: Mapped[dict] = mapped_column(JSON)
    cells: Mapped[dict] = mapped_column(JSON)  # cell id -> label or "excluded:<reason>"

    def to_dict(self) -> dict:
        return {
            "version": self.version,
            "signed_by": self.signed_by,
            "signed_at": _iso(self.signed_at),
            "amend_reason": self.amend_reason,
            "differential": self.differential,
        }


class AuditEvent(Base):
    """Who did what to what, and when. Append-only: the database refuses updates and deletes."""

    __tablename__ = "audit_events"
    __table_args__ = NEVER_REUSE_IDS
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))  # created, viewed, exported, corrected, ...
    target: Mapped[str] = mapped_column(String(200))  # e.g. "sample:9f3a…", "user:ana"
    detail: Mapped[dict] = mapped_column(JSON, default=dict)

    def to_dict(self) -> dict:
        return {
            "at": _iso(self.at),
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "detail": dict(self.detail or {}),
        }


class ModelActivation(Base):
    """An admin made a registered model the one that classifies (the newest row wins)."""

    __tablename__ = "model_activations"
    __table_args__ = NEVER_REUSE_IDS
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(160))  # folder name under <data>/models
    by: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
