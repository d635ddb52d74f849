"""Class-per-folder data sets: scanning, class names, decoding with the cache."""

from __future__ import annotations

import hashlib
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import HematoVisionError
from ..files import IMAGE_SUFFIXES
from ..preprocess import PreprocessSpec, load_resized
from ..progress import progress_bar
from .cache import DecodeCache

log = logging.getLogger("hematovision")


def normalize_class_name(name: str) -> str:
    """'Immature Granulocyte ' -> 'immature_granulocyte' (case, spaces and dashes)."""
    return re.sub(r"[\s\-]+", "_", name.strip().lower()).strip("_")


META = "meta.csv"  # optional, in a data folder: path, lab, group (see data.labs)


@dataclass
class ImageFolder:
    """Image files of a class-per-folder tree, with their labels and, for each, its lab and its
    group (files of one group, e.g. copies of one cell, must stay in one split)."""

    root: Path
    classes: list[str]
    paths: list[Path]
    labels: np.ndarray  # index into classes
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    labs: np.ndarray | None = None  # lab name per file (None: one lab)
    groups: np.ndarray | None = None  # group per file (None: each file its own group)

    def __len__(self) -> int:
        return len(self.paths)

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def counts(self) -> dict[str, int]:
        return {c: int((self.labels == i).sum()) for i, c in enumerate(self.classes)}

    def subset(self, keep: np.ndarray) -> ImageFolder:
        """The images at positions ``keep`` (indices, or a boolean mask), in folder order."""
        keep = np.asarray(keep)
        idx = np.flatnonzero(keep) if keep.dtype == bool else np.sort(keep.astype(np.int64))
        return ImageFolder(
            self.root,
            self.classes,
            [self.paths[i] for i in idx],
            self.labels[idx],
            labs=None if self.labs is None else self.labs[idx],
            groups=None if self.groups is None else self.groups[idx],
        )

    def lab_names(self) -> np.ndarray:
        """The lab of each file ("data" when the folder names none)."""
        return self.labs if self.labs is not None else np.full(len(self), "data", dtype=object)

    def relabel(self, classes: list[str]) -> ImageFolder:
        """The same images with labels indexing ``classes`` (a model's class list, which may
        hold classes this folder lacks); a class the list does not have is an error."""
        unknown = sorted(set(self.classes) - set(classes))
        if unknown:
            raise UnknownClasses(self.root, unknown, classes)
        remap = np.array([classes.index(c) for c in self.classes], dtype=np.int64)
        labels = remap[self.labels] if len(self.labels) else self.labels
        return ImageFolder(
            self.root, list(classes), self.paths, labels, self.skipped, self.labs, self.groups
        )


class UnknownClasses(HematoVisionError):
    """A data folder has classes that a model (or another data set) does not have."""

    def __init__(self, root: Path, unknown: list[str], classes: list[str]):
        self.unknown = unknown
        super().__init__(
            f"{root} has class(es) the model does not know: {', '.join(unknown)} "
            f"(model classes: {', '.join(classes)})"
        )


def limit_per_class(labels: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """Positions of at most ``n`` items per label, drawn by ``seed``, in their original order
    (all positions when ``n`` is None or 0)."""
    labels = np.asarray(labels)
    if not n:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    return np.sort(
        np.concatenate(
            [rng.permutation(np.flatnonzero(labels == c))[:n] for c in np.unique(labels)]
        )
    )


def scan_folder(root: str | Path) -> ImageFolder:
    """Find ``root/<class>/**/<image>`` files. Class names are normalised; folders whose
    names normalise to the same class are merged. Raises on a missing or empty folder."""
    root = Path(root)
    if not root.exists():
        raise HematoVisionError(f"data folder not found: {root}")
    if not root.is_dir():
        raise HematoVisionError(f"not a folder: {root}")
    by_class: dict[str, list[Path]] = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(
            p for p in sub.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if files:
            by_class.setdefault(normalize_class_name(sub.name), []).extend(files)
    if not by_class:
        raise HematoVisionError(
            f"no images found in {root}: expected one sub-folder per class, e.g. "
            f"{root}/lymphocyte/*.jpg"
        )
    classes = sorted(by_class)
    paths = [p for c in classes for p in by_class[c]]
    labels = np.array([i for i, c in enumerate(classes) for _ in by_class[c]], dtype=np.int64)
    folder = ImageFolder(root, classes, paths, labels)
    if (root / META).is_file():
        _read_meta(folder)
    return folder


def _read_meta(folder: ImageFolder) -> None:
    """Labs and groups from the folder's meta.csv (files it does not name: "data", alone)."""
    import csv

    with open(folder.root / META, newline="") as fh:
        rows = {r["path"]: r for r in csv.DictReader(fh)}
    relative = [folder.relative(p) for p in folder.paths]
    folder.labs = np.array([rows.get(r, {}).get("lab") or "data" for r in relative], dtype=object)
    folder.groups = np.array([rows.get(r, {}).get("group") or r for r in relative], dtype=object)


@dataclass
class DecodedImages:
    """Resized uint8 images of an ImageFolder, with the files that failed to decode dropped."""

    folder: ImageFolder
    arrays: np.ndarray  # N x H x W x 3 uint8
    sha256: list[str]


def decode_folder(
    folder: ImageFolder,
    spec: PreprocessSpec,
    cache: DecodeCache | None = None,
    workers: int = 2,
    show_progress: bool = True,
) -> DecodedImages:
    """Decode and resize every image once (through the cache). Files that are not
    decodable images are skipped with a warning naming each; a class left empty is an error."""
    cache = cache or DecodeCache.default()

    def work(path: Path):
        try:
            data = path.read_bytes()
            key = hashlib.sha256(data).hexdigest()
            arr = cache.get(key, spec)
            if arr is None:
                arr = load_resized(data, spec)
                cache.put(key, spec, arr)
            return arr, key, None
        except HematoVisionError as exc:
            return None, None, str(exc).removeprefix("image: ")
        except OSError as exc:
            return None, None, str(exc)

    arrays, hashes, keep, skipped = [], [], [], []
    with (
        progress_bar("decoding", len(folder), enabled=show_progress) as bar,
        ThreadPoolExecutor(max_workers=workers) as pool,
    ):
        for i, (arr, key, err) in enumerate(pool.map(work, folder.paths)):
            if err is None:
                arrays.append(arr)
                hashes.append(key)
                keep.append(i)
            else:
                skipped.append((folder.paths[i], err))
                log.warning("skipping %s: %s", folder.paths[i], err)
            bar.advance()
    kept = folder.subset(np.isin(np.arange(len(folder)), keep))
    kept.skipped = skipped
    had = folder.counts()
    empty = [c for c, n in kept.counts().items() if n == 0 and had[c] > 0]
    if empty:
        raise HematoVisionError(f"no readable images left in class(es): {', '.join(empty)}")
    size = spec.input_size
    stacked = np.stack(arrays) if arrays else np.zeros((0, size, size, 3), np.uint8)
    return DecodedImages(kept, stacked, hashes)


def decode_labelled(
    root: str | Path, classes: list[str], spec: PreprocessSpec, show_progress: bool = True
) -> DecodedImages:
    """Decode a class-per-folder set whose labels index ``classes`` (e.g. a lab's own cells
    added to a model's training images)."""
    return decode_folder(scan_folder(root).relabel(classes), spec, show_progress=show_progress)
