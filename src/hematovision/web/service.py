"""What happens to uploaded images, shared by the pages and the REST API."""

from __future__ import annotations

import hashlib
import io

from ..differential import count_differential
from ..errors import HematoVisionError, ImageTooLarge
from ..inference import Classifier, heatmap_overlay
from ..preprocess import to_rgb
from ..smear import FieldTooLarge, analyze_smear, annotate, cell_labels
from ..storage import SmearAnalysis, Storage, Upload

ACCEPTED = "JPEG, PNG, GIF, BMP, TIFF or WebP"


class UploadError(Exception):
    """A request the client must change: carries the HTTP status and a stable code."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def sniff(data: bytes) -> str | None:
    """The image format from the file's first bytes (never from its name)."""
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data.startswith(b"BM"):
        return "bmp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def uploaded_files(storages, max_files: int) -> list[tuple[str, bytes]]:
    """(name, bytes) of the request's file fields (browsers send an empty one for no file)."""
    files = [f for f in storages if f.filename or f.content_length]
    if len(files) > max_files:
        raise UploadError(400, "too_many_files", f"at most {max_files} files in one request")
    return [(f.filename, f.read()) for f in files]


def read_pictures(files: list[tuple[str, bytes]]) -> list[tuple[str, bytes, object]]:
    """Check every uploaded file by its bytes and decode it: [(name, bytes, RGB picture)].

    Raises UploadError (400 no file/empty/unreadable, 413 too many pixels, 415 not an image)."""
    if not files:
        raise UploadError(400, "no_file", "no image in the request (multipart field 'file')")
    pictures = []
    for name, data in files:
        shown = (name or "upload")[:255]
        if not data:
            raise UploadError(400, "empty_file", f"{shown}: the file is empty")
        if sniff(data) is None:
            raise UploadError(
                415, "unsupported_media_type", f"{shown}: not an image; send {ACCEPTED}"
            )
        try:
            pictures.append((shown, data, to_rgb(data)))
        except ImageTooLarge as exc:
            raise UploadError(413, "image_too_large", f"{shown}: {exc}") from None
        except HematoVisionError as exc:
            raise UploadError(400, "unreadable_image", f"{shown}: {exc}") from None
    return pictures


def _png(picture) -> bytes:
    buf = io.BytesIO()
    picture.save(buf, format="PNG")
    return buf.getvalue()


def classify_files(
    files: list[tuple[str, bytes]], classifier: Classifier, storage: Storage
) -> Upload:
    """Check every file, then classify and store them all in one transaction (all or none)."""
    pictures = read_pictures(files)
    predictions = classifier.predict([p for _, _, p in pictures], heatmaps=storage.store_images)
    records = []
    for (name, data, picture), pred in zip(pictures, predictions):
        sha = hashlib.sha256(data).hexdigest()
        stored = storage.save_image(sha, data)
        if stored:
            storage.save_derived(
                sha, "heatmap", classifier.version, _png(heatmap_overlay(picture, pred.heatmap))
            )
        records.append(
            dict(
                filename=name,
                image_sha256=sha,
                image_stored=stored,
                width=picture.size[0],
                height=picture.size[1],
                label=pred.label,
                confidence=pred.confidence,
                uncertain=pred.uncertain,
                probabilities=pred.probabilities,
                reasons=pred.reasons,
                model_name=classifier.name,
                model_version=classifier.version,
            )
        )
    return storage.add_upload(records)


def analyze_files(
    files: list[tuple[str, bytes]], classifier: Classifier, storage: Storage
) -> SmearAnalysis:
    """Smear fields: find and classify the white cells of each, count, store, add up."""
    pictures = read_pictures(files)
    fields, results = [], []
    for name, data, picture in pictures:
        try:
            result = analyze_smear(picture, classifier)
        except FieldTooLarge as exc:
            raise UploadError(413, exc.code, f"{name}: {exc}") from None
        except HematoVisionError as exc:
            raise UploadError(400, exc.code, f"{name}: {exc}") from None
        sha = hashlib.sha256(data).hexdigest()
        stored = storage.save_image(sha, data)
        if stored:
            storage.save_derived(
                sha, "annotated", classifier.version, _png(annotate(picture, result))
            )
        results.append(result)
        fields.append(
            {
                "filename": name,
                "image_sha256": sha,
                "image_stored": stored,
                **{k: v for k, v in result.to_dict().items() if k != "path"},
                "width": result.width,
                "height": result.height,
            }
        )
    return storage.add_smear(
        fields,
        count_differential(cell_labels(results), classifier.classes),
        classifier.name,
        classifier.version,
    )


def upload_differential(upload: Upload, classes: list[str]) -> dict[str, dict]:
    """The differential count of an upload's images."""
    return count_differential([p.label for p in upload.predictions], classes)
