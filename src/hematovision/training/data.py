"""The images a training run learns from: decoded once, split by the run's manifest."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..artifact import RunDir
from ..data import (
    ImageFolder,
    SplitManifest,
    UnknownClasses,
    decode_folder,
    decode_labelled,
    limit_per_class,
    scan_folder,
)
from ..data.splits import SPLITS
from ..errors import HematoVisionError
from ..preprocess import PreprocessSpec
from .config import TrainConfig


@dataclass
class TrainingData:
    """Decoded images (NHWC uint8), their labels, and the positions each split holds."""

    classes: list[str]
    spec: PreprocessSpec
    manifest: SplitManifest
    images: np.ndarray
    labels: np.ndarray
    split: dict[str, np.ndarray]
    x_train: np.ndarray  # the training split, plus any --extra-train images
    y_train: np.ndarray
    extra_files: list[dict] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    decode_seconds: float = 0.0
    labs: np.ndarray | None = None  # lab of every image (positions as ``images``)
    weights: np.ndarray | None = None  # sampling probability of each training image

    def split_images(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        idx = self.split[split]
        return self.images[idx], self.labels[idx]


def scan_training_folder(cfg: TrainConfig) -> ImageFolder:
    """The data folder's images, limited per class for a new run; at least two classes."""
    folder = scan_folder(cfg.data)
    if not cfg.init:  # continuing a run keeps its split: --max-per-class thins only its train
        folder = folder.subset(
            limit_per_class(_lab_class(folder), cfg.max_per_class, cfg.data_seed)
        )
    if len(folder.classes) < 2:
        raise HematoVisionError(
            f"only one class ({folder.classes[0]}) in {cfg.data}; "
            f"a classifier needs at least two class folders"
        )
    return folder


def _lab_class(folder: ImageFolder) -> np.ndarray:
    """Each image's class, or its lab and class when the folder names labs (limits count per
    lab, so that a large lab does not crowd out a small one)."""
    return folder.labels if folder.labs is None else lab_class_keys(folder.labs, folder.labels)


def lab_class_keys(labs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """One key per (lab, class) pair: what limits and balance count by."""
    return np.array([f"{lab}/{y}" for lab, y in zip(labs, labels)])


def load_training_data(
    cfg: TrainConfig, run: RunDir, folder: ImageFolder, spec: PreprocessSpec
) -> TrainingData:
    """Decode ``folder`` (through the cache), fix the split and add the extra images."""
    start = time.perf_counter()
    decoded = decode_folder(folder, spec, show_progress=cfg.show_progress)
    seconds = time.perf_counter() - start
    classes, labels = decoded.folder.classes, decoded.folder.labels
    manifest = _split_manifest(cfg, run, decoded)
    split = {s: manifest.indices(decoded.folder, s) for s in SPLITS}
    if cfg.init and cfg.max_per_class:
        train = split["train"]
        split["train"] = np.sort(
            train[limit_per_class(labels[train], cfg.max_per_class, cfg.data_seed)]
        )
    x_train, y_train = decoded.arrays[split["train"]], labels[split["train"]]
    labs = decoded.folder.lab_names()
    train_labs = labs[split["train"]]
    extra_files = []
    if cfg.extra_train:
        extra_x, extra_y, extra_files = _extra_training_images(cfg, classes, spec)
        x_train = np.concatenate([x_train] + [extra_x] * cfg.extra_repeat)
        y_train = np.concatenate([y_train] + [extra_y] * cfg.extra_repeat)
        train_labs = np.concatenate(
            [train_labs] + [np.full(len(extra_y), "extra")] * cfg.extra_repeat
        )
    weights = balanced_weights(train_labs, y_train) if cfg.balance == "lab-class" else None
    return TrainingData(
        classes,
        spec,
        manifest,
        decoded.arrays,
        labels,
        split,
        x_train,
        y_train,
        extra_files,
        [str(p) for p, _ in decoded.folder.skipped],
        seconds,
        labs,
        weights,
    )


def balanced_weights(labs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Sampling probabilities under which every (lab, class) pair is drawn equally often."""
    _, inverse, counts = np.unique(
        lab_class_keys(labs, labels), return_inverse=True, return_counts=True
    )
    weights = 1.0 / counts[inverse]
    return weights / weights.sum()


def _split_manifest(cfg: TrainConfig, run: RunDir, decoded) -> SplitManifest:
    """A new stratified split, the one being resumed, or (--init) the earlier run's, so that
    its validation and test images stay unseen."""
    if cfg.resume:
        return run.manifest()
    if cfg.init:
        manifest = RunDir(cfg.init).manifest()
        if manifest.classes != decoded.folder.classes:
            raise HematoVisionError(
                f"--init run has classes {manifest.classes}, the data {decoded.folder.classes}"
            )
    else:
        manifest = SplitManifest.build(
            decoded.folder, decoded.sha256, cfg.val_fraction, cfg.test_fraction, cfg.data_seed
        )
    manifest.save(run.split_file)
    return manifest


def _extra_training_images(cfg: TrainConfig, classes: list[str], spec: PreprocessSpec):
    """Images for the training split only (e.g. cells cropped from another lab's smears: they
    teach the model that lab's look and never enter validation or test)."""
    try:
        extra = decode_labelled(cfg.extra_train, classes, spec, show_progress=cfg.show_progress)
    except UnknownClasses as exc:
        raise HematoVisionError(
            f"--extra-train has class(es) not in --data: {', '.join(exc.unknown)}"
        ) from None
    labels = extra.folder.labels
    files = [
        {"path": extra.folder.relative(p), "label": classes[y], "sha256": h}
        for p, y, h in zip(extra.folder.paths, labels, extra.sha256)
    ]
    return extra.arrays, labels, files
