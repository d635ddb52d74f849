"""The lab's records beside the uploads: samples and their reviewed cells, accounts, the audit
log. Each is one small class over the Storage's sessions (``storage.samples``, ``.users``,
``.audit``), so the pages, the API and the CLI share one definition of every rule."""

from __future__ import annotations

import hashlib
import secrets
import shutil
import unicodedata
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload, sessionmaker

from ..errors import HematoVisionError
from .models import (
    AuditEvent,
    Correction,
    ModelActivation,
    PredictionRecord,
    Sample,
    SampleCell,
    SampleVersion,
    SmearAnalysis,
    User,
)

ROLES = ("admin", "technologist", "viewer")
# a sample is read with its cells and versions: they are used after its session has closed
WHOLE_SAMPLE = (selectinload(Sample.cells), selectinload(Sample.versions))
EXCLUSIONS = ("debris", "smudge", "artefact")
TARGETS = (100, 200)
_hasher = PasswordHasher()


class LabError(HematoVisionError):
    """A request the lab's rules refuse; ``status`` is its HTTP status."""

    code = "invalid"
    status = 400


class NotFound(LabError):
    code, status = "not_found", 404


class Locked(LabError):
    code, status = "locked", 409


def _line(text, what: str, longest: int) -> str:
    """One line of text a person typed: not blank, no control character, not too long."""
    text = text.strip() if isinstance(text, str) else ""
    if not text or len(text) > longest or any(unicodedata.category(c) == "Cc" for c in text):
        raise LabError(f"{what} must be 1 to {longest} characters, without control characters")
    return text


def _actor(name: str | None) -> str:
    return name or "local"


# ---------------------------------------------------------------- samples
class Samples:
    """Samples, their cells and their signed versions."""

    def __init__(self, session: sessionmaker):
        self.session = session

    def create(self, accession: str, by: str | None, target: int = 100) -> Sample:
        accession = _line(accession, "the accession number (or label)", 128)
        if target not in TARGETS:
            raise LabError(f"the target must be one of {', '.join(map(str, TARGETS))} white cells")
        sample = Sample(
            public_id=secrets.token_hex(10),  # 80 random bits; a FHIR id too
            accession=accession,
            target=target,
            status="open",
            version=1,
            created_by=_actor(by),
        )
        with self.session.begin() as s:
            s.add(sample)
        return sample

    def get(self, public_id: str) -> Sample:
        """The sample with its cells and versions; deleted samples are not found."""
        with self.session() as s:
            sample = s.scalar(
                select(Sample)
                .where(Sample.public_id == public_id, Sample.deleted_at.is_(None))
                .options(*WHOLE_SAMPLE)
            )
        if sample is None:
            raise NotFound(f"no sample {public_id}")
        return sample

    def list(self, limit: int = 20, offset: int = 0) -> tuple[list[Sample], int]:
        query = select(Sample).where(Sample.deleted_at.is_(None))
        with self.session() as s:
            total = s.scalar(select(func.count()).select_from(query.subquery()))
            page = query.order_by(Sample.id.desc()).limit(limit).offset(offset)
            rows = s.scalars(page.options(*WHOLE_SAMPLE))
            return list(rows), int(total or 0)

    def check_open(self, public_id: str) -> Sample:
        sample = self.get(public_id)
        if sample.locked:
            raise Locked(f"sample {sample.accession} is signed: amend it (with a reason) first")
        return sample

    def platelets(self, sample: Sample) -> int:
        """Platelets the smear detector counted in the sample's fields (counted apart)."""
        with self.session() as s:
            query = select(SmearAnalysis.fields).where(SmearAnalysis.sample_id == sample.id)
            return sum(f.get("platelets", 0) for fields in s.scalars(query) for f in fields)

    def review(
        self,
        public_id: str,
        cell_id: int,
        action: str,
        by: str | None,
        label: str | None = None,
        exclusion: str | None = None,
        classes: list[str] = (),
    ) -> SampleCell:
        """Confirm, reclassify or exclude one cell; the decision is kept as a Correction."""
        if action == "reclassify" and label not in classes:
            raise LabError(f"unknown class {label!r}; one of {', '.join(classes)}")
        if action == "exclude" and exclusion not in EXCLUSIONS:
            raise LabError(f"exclude as one of {', '.join(EXCLUSIONS)}")
        if action not in ("confirm", "reclassify", "exclude"):
            raise LabError("action must be confirm, reclassify or exclude")
        with self.session.begin() as s:
            sample = self._open_for_update(s, public_id)
            cell = s.get(SampleCell, cell_id)
            if cell is None or cell.sample_id != sample.id:
                raise NotFound(f"no cell {cell_id} in this sample")
            s.add(
                Correction(
                    cell_id=cell.id,
                    sample_version=sample.version,
                    action=action,
                    old_label=cell.label if cell.status != "excluded" else "excluded",
                    new_label=label if action == "reclassify" else None,
                    exclusion=exclusion if action == "exclude" else None,
                    model_version=cell.model_version,
                    by=_actor(by),
                )
            )
            if action == "reclassify":
                cell.label = label
                cell.status = "confirmed" if label == cell.model_label else "reclassified"
            elif action == "confirm":
                cell.status = "confirmed" if cell.label == cell.model_label else "reclassified"
            else:
                cell.status = "excluded"
            cell.exclusion = exclusion if action == "exclude" else None
            return cell

    def corrections(self, public_id: str) -> list[Correction]:
        sample = self.get(public_id)
        with self.session() as s:
            query = (
                select(Correction)
                .join(SampleCell, SampleCell.id == Correction.cell_id)
                .where(SampleCell.sample_id == sample.id)
                .order_by(Correction.id)
            )
            return list(s.scalars(query))

    def _open_for_update(self, s: Session, public_id: str) -> Sample:
        """The sample's row, locked for this transaction; refused when it is signed."""
        sample = self._for_update(s, public_id)
        if sample.locked:
            raise Locked(f"sample {sample.accession} is signed: amend it (with a reason) first")
        return sample

    def _for_update(self, s: Session, public_id: str) -> Sample:
        """The sample's row, locked for this transaction (not a deleted one)."""
        sample = s.scalar(
            select(Sample)
            .where(Sample.public_id == public_id, Sample.deleted_at.is_(None))
            .with_for_update()
        )
        if sample is None:
            raise NotFound(f"no sample {public_id}")
        return sample

    def sign(self, public_id: str, by: str | None, differential: dict) -> SampleVersion:
        """Sign the current differential: a new version, and the sample is locked."""
        with self.session.begin() as s:
            sample = self._open_for_update(s, public_id)
            cells = s.scalars(select(SampleCell).where(SampleCell.sample_id == sample.id))
            version = SampleVersion(
                sample_id=sample.id,
                version=sample.version,
                signed_by=_actor(by),
                amend_reason=sample.amend_reason if sample.status == "amending" else None,
                differential=differential,
                cells={
                    str(c.id): f"excluded:{c.exclusion}" if c.status == "excluded" else c.label
                    for c in cells
                },
            )
            s.add(version)
            sample.status = "signed"
            return version

    def amend(self, public_id: str, reason: str, by: str | None) -> Sample:
        """Unlock a signed sample for an amended version; the reason goes with that version."""
        reason = _line(reason, "an amendment's reason", 500)
        with self.session.begin() as s:
            sample = self._for_update(s, public_id)
            if not sample.locked:
                raise LabError("only a signed sample is amended; this one is still open")
            sample.status, sample.version = "amending", sample.version + 1
            sample.amend_reason = reason[:500]
            return sample

    def delete(self, public_id: str, reason: str, by: str | None) -> None:
        """A soft delete: the sample disappears from lists and links, its records stay."""
        reason = _line(reason, "a delete's reason", 500)
        with self.session.begin() as s:
            self._for_update(s, public_id).mark_deleted(_actor(by), reason)

    def reviewed_cells(self):
        """(cell, sample) of every reviewed, not excluded cell of the signed samples' last
        signed versions: the lab's own labelled data."""
        with self.session() as s:
            query = (
                select(SampleCell, Sample)
                .join(Sample, Sample.id == SampleCell.sample_id)
                .where(
                    Sample.deleted_at.is_(None),
                    Sample.status == "signed",
                    SampleCell.status.in_(("confirmed", "reclassified")),
                )
                .options(selectinload(Sample.versions))
                .order_by(SampleCell.id)
            )
            return list(s.execute(query).tuples())


def cells_of_upload(sample_id: int, predictions: list[PredictionRecord]) -> list[SampleCell]:
    return [
        SampleCell(
            sample_id=sample_id,
            prediction_id=p.id,
            image_sha256=p.image_sha256,
            model_label=p.label,
            confidence=p.confidence,
            uncertain=p.uncertain,
            reasons=list(p.reasons or []),
            model_version=p.model_version,
            label=p.label,
            status="auto",
        )
        for p in predictions
    ]


def cells_of_smear(sample_id: int, record: SmearAnalysis) -> list[SampleCell]:
    return [
        SampleCell(
            sample_id=sample_id,
            smear_id=record.id,
            field_index=number,
            image_sha256=f["image_sha256"],
            box=list(cell["box"]),
            model_label=cell["label"],
            confidence=cell["confidence"],
            uncertain=cell["uncertain"],
            reasons=cell.get("reasons"),
            model_version=record.model_version,
            label=cell["label"],
            status="auto",
        )
        for number, f in enumerate(record.fields)
        for cell in f["white_cells"]
        if cell.get("label")
    ]


# ---------------------------------------------------------------- accounts
class Users:
    """Personal accounts: argon2 password hashes (argon2-cffi), personal API tokens."""

    def __init__(self, session: sessionmaker):
        self.session = session

    def any(self) -> bool:
        """Are accounts on? (They are as soon as one user exists.)"""
        with self.session() as s:
            return s.scalar(select(User.id).limit(1)) is not None

    def add(self, username: str, password: str, role: str) -> User:
        username = (username or "").strip()
        if not username or len(username) > 64 or not username.isprintable() or " " in username:
            raise LabError("a user name is 1 to 64 printable characters without spaces")
        if role not in ROLES:
            raise LabError(f"the role must be one of {', '.join(ROLES)}")
        if len(password or "") < 8:
            raise LabError("a password needs at least 8 characters")
        user = User(username=username, password_hash=_hasher.hash(password), role=role, active=True)
        try:
            with self.session.begin() as s:
                s.add(user)
        except IntegrityError:
            raise LabError(f"user {username} exists already") from None
        return user

    def list(self) -> list[User]:
        with self.session() as s:
            return list(s.scalars(select(User).order_by(User.username)))

    def get(self, user_id: int) -> User | None:
        with self.session() as s:
            return s.get(User, user_id)

    def _update(self, username: str, change) -> User:
        with self.session.begin() as s:
            user = s.scalar(select(User).where(User.username == username))
            if user is None:
                raise NotFound(f"no user {username}")
            change(user)
            return user

    def set_active(self, username: str, active: bool) -> User:
        return self._update(username, lambda u: setattr(u, "active", active))

    def new_token(self, username: str) -> str:
        """A new personal API token (shown once; only its hash is kept)."""
        token = secrets.token_urlsafe(32)
        self._update(username, lambda u: setattr(u, "token_sha256", _sha256(token)))
        return token

    def authenticate(self, username: str, password: str) -> User | None:
        with self.session() as s:
            user = s.scalar(select(User).where(User.username == (username or "")))
        if user is None:
            _hasher.hash(password or "")  # the same time for a name that does not exist
            return None
        try:
            _hasher.verify(user.password_hash, password or "")
        except (VerificationError, InvalidHashError):
            return None
        return user if user.active else None

    def by_token(self, token: str) -> User | None:
        with self.session() as s:
            user = s.scalar(select(User).where(User.token_sha256 == _sha256(token)))
        return user if user is not None and user.active else None


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------- model versions
class ModelRegistry:
    """Model artifacts registered with the app (copied into ``<data>/models/<slug>``) and
    which one is active: the newest activation; none means the configured model."""

    def __init__(self, session: sessionmaker, root: Path):
        self.session, self.root = session, root

    def slugs(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "model.json").is_file())

    def path(self, slug: str) -> Path:
        if slug not in self.slugs():
            raise NotFound(f"no registered model {slug}")
        return self.root / slug

    def register(self, artifact_dir: Path, name: str, version: str) -> str:
        """Copy an artifact folder in (checked by the caller); returns its slug."""
        slug = "".join(c if c.isalnum() or c in "._-" else "_" for c in f"{name}-{version}")
        if (self.root / slug).exists():
            raise LabError(f"model {slug} is registered already")
        tmp = self.root / f".{slug}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(artifact_dir, tmp)
        tmp.rename(self.root / slug)  # all or nothing: never half a model
        return slug

    def activate(self, slug: str, by: str | None) -> None:
        """Classify with ``slug`` from now on; "" goes back to the configured model."""
        if slug:
            self.path(slug)
        with self.session.begin() as s:
            s.add(ModelActivation(slug=slug, by=_actor(by)))

    def active(self) -> str | None:
        with self.session() as s:
            return s.scalar(select(ModelActivation.slug).order_by(ModelActivation.id.desc()))

    def history(self, limit: int = 20) -> list[ModelActivation]:
        with self.session() as s:
            query = select(ModelActivation).order_by(ModelActivation.id.desc()).limit(limit)
            return list(s.scalars(query))


# ---------------------------------------------------------------- audit
def _event(actor: str | None, action: str, target: str, **detail) -> AuditEvent:
    return AuditEvent(actor=_actor(actor), action=action, target=target, detail=detail)


class AuditLog:
    """Append-only: ``record`` and ``list``, nothing else (the database refuses the rest)."""

    def __init__(self, session: sessionmaker):
        self.session = session

    def record(self, actor: str | None, action: str, target: str, **detail) -> None:
        with self.session.begin() as s:
            s.add(_event(actor, action, target[:200], **detail))

    def list(self, limit: int = 100, offset: int = 0, target: str | None = None):
        query = select(AuditEvent)
        if target:
            query = query.where(AuditEvent.target == target)
        with self.session() as s:
            total = s.scalar(select(func.count()).select_from(query.subquery()))
            rows = s.scalars(query.order_by(AuditEvent.id.desc()).limit(limit).offset(offset))
            return list(rows), int(total or 0)
