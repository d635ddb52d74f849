"""Downloaders for the public data sets: progress, SHA-256 check, resume, safe extraction."""

from __future__ import annotations

import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import HematoVisionError
from ..files import sha256_file
from ..progress import progress_bar

CHUNK = 1 << 20


@dataclass(frozen=True)
class Source:
    """Where a public data set lives, and what the user owes its authors."""

    name: str
    url: str
    filename: str
    sha256: str | None  # None: the publisher gives no checksum; the one computed is printed
    licence: str
    citation: str
    inner_root: str  # the folder inside the archive that holds the data


SOURCES = {
    "pbc": Source(
        "pbc",
        "https://data.mendeley.com/public-files/datasets/snkd93bnjr/files/"
        "2fc38728-2ae7-4a62-a857-032af82334c3/file_downloaded",
        "PBC_dataset_normal_DIB.zip",
        None,
        "CC BY 4.0",
        "Acevedo et al., A dataset of microscopic peripheral blood cell images for development "
        "of automatic recognition systems, Data in Brief 30 (2020) 105474, "
        "doi:10.17632/snkd93bnjr.1",
        "PBC_dataset_normal_DIB",
    ),
    "bccd": Source(
        "bccd",
        "https://github.com/Shenggan/BCCD_Dataset/archive/refs/heads/master.zip",
        "BCCD_Dataset-master.zip",
        None,
        "MIT",
        "BCCD Dataset, Shenggan/BCCD_Dataset (GitHub), MIT licence",
        "BCCD_Dataset-master/BCCD",
    ),
}

# every public data set a model may learn from: (licence, citation), by lab name
CITATIONS = {s.name: (s.licence, s.citation) for s in SOURCES.values()} | {
    "lisc": (
        "research use, cite the paper (crops: MIT)",
        "Rezatofighi & Soltanian-Zadeh, Automatic recognition of five types of white blood "
        "cells in peripheral blood, Computerized Medical Imaging and Graphics 35 (2011) 333-343",
    ),
}


def download(url: str, dest: Path, show_progress: bool = True, timeout: float = 60) -> Path:
    """Download ``url`` to ``dest``, resuming from ``dest.part`` when the server allows it."""
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "hematovision"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the partial file is already complete
            part.replace(dest)
            return dest
        raise HematoVisionError(f"download failed: {url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise HematoVisionError(f"download failed: {url}: {getattr(exc, 'reason', exc)}") from None
    with response:
        if have and response.status != 206:  # server ignored the range: start again
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length else None
        with (
            open(part, "ab" if have else "wb") as fh,
            progress_bar(f"downloading {dest.name}", total, enabled=show_progress) as bar,
        ):
            bar.advance(have)
            try:
                for chunk in iter(lambda: response.read(CHUNK), b""):
                    fh.write(chunk)
                    bar.advance(len(chunk))
            except OSError as exc:
                raise HematoVisionError(
                    f"download interrupted ({exc}); run the same command again to resume"
                ) from None
    if total is not None and part.stat().st_size != total:
        raise HematoVisionError("download incomplete; run the same command again to resume")
    part.replace(dest)
    return dest


def _safe_target(dest: Path, member: str) -> Path:
    pure = PurePosixPath(member.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts:
        raise HematoVisionError(f"unsafe path in archive, refusing to extract: {member}")
    target = (dest / pure).resolve()
    if not target.is_relative_to(dest.resolve()):
        raise HematoVisionError(f"unsafe path in archive, refusing to extract: {member}")
    return target


def extract(archive: Path, dest: Path) -> None:
    """Extract a zip or tar archive into ``dest``; every member is checked before any is written."""
    dest.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            for m in members:
                _safe_target(dest, m.filename)
            for m in members:
                target = _safe_target(dest, m.filename)
                if m.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(m) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
            for m in members:
                _safe_target(dest, m.name)
                if not (m.isfile() or m.isdir()):
                    raise HematoVisionError(f"refusing to extract link or device: {m.name}")
            tf.extractall(dest, members=members, filter="data")
    else:
        raise HematoVisionError(f"{archive} is not a zip or tar archive")


def fetch(
    name: str,
    dest: str | Path,
    archive: str | Path | None = None,
    sha256: str | None = None,
    url: str | None = None,
    show_progress: bool = True,
) -> dict:
    """Download (or take ``archive``), verify and install data set ``name`` into ``dest``.

    Returns a summary: where the data is, the archive's SHA-256, licence and citation.
    """
    if name not in SOURCES:
        raise HematoVisionError(f"unknown data set {name!r}; choose from {', '.join(SOURCES)}")
    source = SOURCES[name]
    dest = Path(dest)
    final = dest / name
    if final.exists() and any(final.iterdir()):
        raise HematoVisionError(f"{final} already holds data; remove it to fetch again")
    downloads = dest / ".downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    if archive is not None:
        archive_path = Path(archive)
        if not archive_path.is_file():
            raise HematoVisionError(f"archive not found: {archive_path}")
    else:
        archive_path = downloads / source.filename
        if not archive_path.exists():
            download(url or source.url, archive_path, show_progress)
    digest = sha256_file(archive_path)
    expected = sha256 or source.sha256
    if expected and digest != expected.lower():
        if archive is None:
            archive_path.unlink()  # a corrupt download must not be reused
        raise HematoVisionError(
            f"SHA-256 mismatch for {archive_path.name}: expected {expected}, got {digest}"
        )
    staging = dest / f".extract-{name}"
    shutil.rmtree(staging, ignore_errors=True)
    extract(archive_path, staging)
    inner = staging / source.inner_root
    if not inner.is_dir():
        tops = [p for p in staging.iterdir() if p.is_dir()]
        inner = tops[0] if len(tops) == 1 else staging
    shutil.rmtree(final, ignore_errors=True)
    inner.replace(final)
    shutil.rmtree(staging, ignore_errors=True)
    return {
        "name": name,
        "path": str(final),
        "sha256": digest,
        "verified": bool(expected),
        "licence": source.licence,
        "citation": source.citation,
    }
