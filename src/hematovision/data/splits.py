"""Deterministic stratified train/val/test splits, saved as a manifest next to the run."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from ..errors import HematoVisionError
from ..files import write_atomic
from .folders import ImageFolder

SPLITS = ("train", "val", "test")


def grouped_split(
    labels: np.ndarray, groups: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> np.ndarray:
    """``stratified_split`` of whole groups: the files of one group (copies of one cell) always
    land in the same split. A group's label is its first file's (groups do not mix classes)."""
    _, first, inverse = np.unique(
        np.asarray(groups, dtype=str), return_index=True, return_inverse=True
    )
    return stratified_split(np.asarray(labels)[first], val_fraction, test_fraction, seed)[inverse]


def stratified_split(
    labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> np.ndarray:
    """Assign each item to 'train', 'val' or 'test', stratified by label, fixed by ``seed``."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise HematoVisionError(
            "--val-fraction and --test-fraction must be in [0, 1) and sum below 1"
        )
    labels = np.asarray(labels)
    _, counts = np.unique(labels, return_counts=True)
    needed = 1 + (val_fraction > 0) + (test_fraction > 0)
    if counts.min() < needed:
        raise HematoVisionError(
            f"a class has only {counts.min()} image(s); at least {needed} per class are needed "
            f"for a stratified train/val/test split"
        )
    idx = np.arange(len(labels))
    out = np.full(len(labels), "train", dtype=object)
    rest = idx
    if test_fraction > 0:
        rest, test = train_test_split(
            idx, test_size=test_fraction, stratify=labels, random_state=seed
        )
        out[test] = "test"
    if val_fraction > 0:
        _, val = train_test_split(
            rest,
            test_size=val_fraction / (1 - test_fraction),
            stratify=labels[rest],
            random_state=seed,
        )
        out[val] = "val"
    return out.astype(str)


@dataclass
class SplitManifest:
    """Which file went to which split: written once, read by evaluation."""

    classes: list[str]
    seed: int
    val_fraction: float
    test_fraction: float
    data_root: str
    files: list[dict]  # {"path": relative posix path, "label": class, "split": name, "sha256"}

    @property
    def sha256(self) -> str:
        lines = "\n".join(
            f"{f['path']}\t{f['label']}\t{f['split']}\t{f.get('sha256', '')}" for f in self.files
        )
        return hashlib.sha256(lines.encode()).hexdigest()

    def counts(self) -> dict[str, dict[str, int]]:
        out = {s: dict.fromkeys(self.classes, 0) for s in SPLITS}
        for f in self.files:
            out[f["split"]][f["label"]] += 1
        return out

    def entries(self, split: str) -> list[dict]:
        return [f for f in self.files if split == "all" or f["split"] == split]

    def indices(self, folder: ImageFolder, split: str) -> np.ndarray:
        """Positions in ``folder`` of the images of ``split`` (train, val, test or all).

        The one rule for finding a run's images again: by their path relative to the data
        folder. Raises when some are missing (the data moved or changed since the run)."""
        wanted = [f["path"] for f in self.entries(split)]
        position = {folder.relative(p): i for i, p in enumerate(folder.paths)}
        missing = [p for p in wanted if p not in position]
        if missing:
            raise HematoVisionError(
                f"{len(missing)} of the {len(wanted)} {split} images of this run are not in "
                f"{folder.root} (e.g. {missing[0]}); pass the folder the run was trained on"
            )
        return np.array([position[p] for p in wanted], dtype=np.int64)

    def select(self, folder: ImageFolder, split: str) -> ImageFolder:
        """The images of ``split`` in ``folder``, labelled with the run's classes."""
        return folder.relabel(self.classes).subset(self.indices(folder, split))

    def save(self, path: Path) -> None:
        data = {
            "classes": self.classes,
            "seed": self.seed,
            "val_fraction": self.val_fraction,
            "test_fraction": self.test_fraction,
            "data_root": self.data_root,
            "sha256": self.sha256,
            "counts": self.counts(),
            "files": self.files,
        }
        write_atomic(Path(path), json.dumps(data, indent=1).encode())  # never read half-written

    @classmethod
    def load(cls, path: Path) -> SplitManifest:
        try:
            d = json.loads(Path(path).read_text())
            return cls(
                d["classes"],
                d["seed"],
                d["val_fraction"],
                d["test_fraction"],
                d["data_root"],
                d["files"],
            )
        except (OSError, ValueError, KeyError) as exc:
            raise HematoVisionError(f"cannot read split manifest {path}: {exc}") from None

    @classmethod
    def build(
        cls,
        folder: ImageFolder,
        sha256: list[str],
        val_fraction: float,
        test_fraction: float,
        seed: int,
    ) -> SplitManifest:
        if folder.groups is None:
            split = stratified_split(folder.labels, val_fraction, test_fraction, seed)
        else:
            split = grouped_split(folder.labels, folder.groups, val_fraction, test_fraction, seed)
        files = [
            {"path": folder.relative(p), "label": folder.classes[y], "split": s, "sha256": h}
            for p, y, s, h in zip(folder.paths, folder.labels, split, sha256)
        ]
        if folder.labs is not None:
            for f, lab in zip(files, folder.labs):
                f["lab"] = str(lab)
        return cls(
            list(folder.classes),
            seed,
            val_fraction,
            test_fraction,
            str(folder.root.resolve()),
            files,
        )
