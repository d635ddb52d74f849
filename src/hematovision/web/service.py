"""What happens to uploaded images, shared by the pages and the REST API.

Every file is screened by its bytes (never its name) and its header before anything is
decoded: size, format, pixels per image and pixels per request. The good files are classified
(or analysed as smear fields) and stored; the others are listed as rejected, each with its
reason. A request is refused as a whole only when no file can be used.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

from ..errors import HematoVisionError
from ..files import FAST_PNG
from ..inference import Classifier, heatmap_overlay
from ..preprocess import to_rgb, upright_size
from ..smear import MAX_FIELD_PIXELS, annotate, field_differential
from ..smear.slide import analyze_any, overview
from ..storage import Sample, SmearAnalysis, Storage, Upload
from .config import WebSettings

ACCEPTED = "JPEG, PNG, GIF, BMP, TIFF or WebP"
# cells are decoded at most about this large: a PBC crop is 360 px, and memory then follows
# what the model and the page need, not what a file declares
WEB_MAX_SIDE = 1024
STATUS = {
    "image_too_large": 413,
    "pixel_budget": 413,
    "field_too_large": 413,
    "unsupported_media_type": 415,
}


class UploadError(Exception):
    """A request the client must change: carries the HTTP status, a stable code and, when
    files were refused one by one, each refusal."""

    def __init__(self, status: int, code: str, message: str, rejected: list[dict] = ()):
        super().__init__(message)
        self.status, self.code, self.message, self.rejected = status, code, message, list(rejected)


@dataclass
class Screened:
    name: str
    data: bytes
    size: tuple[int, int]  # upright width, height (from the header)


def rejection(name: str, code: str, message: str) -> dict:
    return {"filename": name, "code": code, "message": f"{name}: {message}"}


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


def clean_filename(name: str | None) -> str:
    """A client's file name for display: no control characters (NUL included), 255 at most."""
    text = "".join(c for c in (name or "") if c.isprintable()).strip()
    return (text or "upload")[:255]


def uploaded_files(storages, max_files: int) -> list[tuple[str, bytes]]:
    """(name, bytes) of the request's file fields (browsers send an empty one for no file)."""
    files = [f for f in storages if f.filename or f.content_length]
    if len(files) > max_files:
        raise UploadError(400, "too_many_files", f"at most {max_files} files in one request")
    return [(clean_filename(f.filename), f.read()) for f in files]


def screen(files: list[tuple[str, bytes]], settings: WebSettings, max_pixels: int):
    """Split files into usable ones (with their size) and rejections, from bytes and headers
    alone: empty, not an image, unreadable header, too many pixels, over the request's budget."""
    if not files:
        raise UploadError(400, "no_file", "no image in the request (multipart field 'file')")
    budget = int(settings.max_request_megapixels * 1e6)
    usable, rejected = [], []
    for name, data in files:
        if not data:
            rejected.append(rejection(name, "empty_file", "the file is empty"))
        elif sniff(data) is None:
            rejected.append(
                rejection(name, "unsupported_media_type", f"not an image; send {ACCEPTED}")
            )
        else:
            try:
                size = upright_size(data)
            except HematoVisionError as exc:
                rejected.append(rejection(name, exc.code, str(exc).removeprefix("image: ")))
                continue
            pixels = size[0] * size[1]
            if pixels > max_pixels:
                message = f"{size[0]}x{size[1]} is more than {max_pixels / 1e6:g} megapixels"
                rejected.append(rejection(name, "image_too_large", message))
            elif pixels > budget:
                message = (
                    f"over this request's budget of {settings.max_request_megapixels:g} "
                    "megapixels; send it in another request"
                )
                rejected.append(rejection(name, "pixel_budget", message))
            else:
                budget -= pixels
                usable.append(Screened(name, data, size))
    return usable, rejected


def refuse(rejected: list[dict]) -> UploadError:
    """The error for a request none of whose files could be used."""
    statuses = {STATUS.get(r["code"], 400) for r in rejected}
    first = rejected[0]
    if len(rejected) == 1:
        return UploadError(
            STATUS.get(first["code"], 400), first["code"], first["message"], rejected
        )
    return UploadError(
        statuses.pop() if len(statuses) == 1 else 400,
        first["code"] if len({r["code"] for r in rejected}) == 1 else "no_usable_file",
        f"none of the {len(rejected)} files could be used; first: {first['message']}",
        rejected,
    )


def classify_files(
    files: list[tuple[str, bytes]],
    classifier: Classifier,
    storage: Storage,
    settings: WebSettings,
    sample: Sample | None = None,
) -> Upload:
    """Classify the usable files and store them together with the list of rejected ones
    (and, with a ``sample``, add them to its cells)."""
    usable, rejected = screen(files, settings, int(settings.max_image_megapixels * 1e6))
    predictions = classifier.predict(
        [u.data for u in usable], errors="report", max_side=WEB_MAX_SIDE
    )
    records, images = [], {}
    for upload, pred in zip(usable, predictions):
        if not pred.ok:
            rejected.append(
                rejection(upload.name, pred.error_code, pred.error.removeprefix("image: "))
            )
            continue
        sha = hashlib.sha256(upload.data).hexdigest()
        images[sha] = upload.data
        records.append(
            dict(
                filename=upload.name,
                image_sha256=sha,
                width=upload.size[0],
                height=upload.size[1],
                label=pred.label,
                confidence=pred.confidence,
                uncertain=pred.uncertain,
                probabilities=pred.probabilities,
                reasons=pred.reasons,
                model_name=classifier.name,
                model_version=classifier.version,
            )
        )
    if not records:
        raise refuse(rejected)
    return storage.add_upload(records, images, rejected, sample)


def analyze_files(
    files: list[tuple[str, bytes]],
    classifier: Classifier,
    storage: Storage,
    settings: WebSettings,
    sample: Sample | None = None,
) -> SmearAnalysis:
    """Smear fields: find and classify the white cells of each usable field, and store them."""
    usable, rejected = screen(files, settings, int(settings.max_image_megapixels * 1e6))
    fields, images = [], {}
    for upload in usable:
        try:
            result, _ = analyze_any(upload.data, classifier)  # a large scan: tile by tile
        except HematoVisionError as exc:  # FieldTooLarge, ImageTooLarge, unreadable: its code
            rejected.append(rejection(upload.name, exc.code, str(exc).removeprefix("image: ")))
            continue
        sha = hashlib.sha256(upload.data).hexdigest()
        images[sha] = upload.data
        fields.append(
            {"filename": upload.name, "image_sha256": sha, **result.to_dict(), "path": None}
        )
    if not fields:
        raise refuse(rejected)
    differential = field_differential(fields, classifier.classes, settings.intervals).to_dict()
    return storage.add_smear(
        fields, images, differential, classifier.name, classifier.version, rejected, sample
    )


def heatmap_jpeg(classifier: Classifier, image_path) -> bytes:
    """The heatmap overlay of a stored image, made when first shown (JPEG: a few ms)."""
    picture = to_rgb(image_path, WEB_MAX_SIDE)
    pred = classifier.predict(picture, heatmaps=True)[0]
    buffer = io.BytesIO()
    heatmap_overlay(picture, pred.heatmap).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def annotated_png(image_path, field: dict, marks: bool) -> bytes:
    """A stored smear field with its cells drawn (and, with ``marks``, red cells and
    platelets); a scan larger than a field as a reduced overview with its cells boxed."""
    buffer = io.BytesIO()
    if field["width"] * field["height"] > MAX_FIELD_PIXELS:
        picture = overview(image_path, field)
    else:
        picture = annotate(image_path, field, marks)
    picture.save(buffer, **FAST_PNG)
    return buffer.getvalue()
