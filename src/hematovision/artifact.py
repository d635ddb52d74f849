"""The contract between training and serving: the model artifact and the training-run folder.

A **training run** (``RunDir``) is what ``hematovision train`` writes: weights (``best.pt``,
``checkpoint.pt``), ``run.json`` (``RunInfo``: classes, architecture, preprocessing, settings,
data provenance, metrics), ``split.json``, ``history.csv``, ``metrics.json`` and the report.

A **model artifact** (``ModelArtifact``) is what ``hematovision export`` makes of a run and what
serving reads: ``model.onnx`` (+ ``model.int8.onnx``) and ``model.json`` with the classes, the
preprocessing, the calibration and thresholds, the export checks, metrics and provenance.
Both JSON files carry a ``format`` that is checked on load. Torch-free, like ``preprocess``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import HematoVisionError
from .files import write_atomic
from .preprocess import PreprocessSpec

ARTIFACT_FORMAT = "hematovision-model/1"
RUN_FORMAT = "hematovision-run/1"
PRECISION_FILES = {"fp32": "onnx", "int8": "int8"}  # precision -> key in ModelArtifact.files
OUTPUTS = ("logits", "cam", "ood")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise HematoVisionError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise HematoVisionError(f"{path} is not a HematoVision description (a JSON object)")
    return data


def _write_json(path: Path, data: dict) -> None:
    write_atomic(path, (json.dumps(data, indent=1) + "\n").encode())


@dataclass
class Provenance:
    """Where a model comes from: its training settings and data, licence, date, software."""

    training: dict = field(default_factory=dict)  # the TrainConfig of the run
    data: dict = field(default_factory=dict)  # root, manifest hash, counts, citation...
    licence: str | None = None
    created: str | None = None
    software: dict = field(default_factory=dict)
    note: str | None = None  # free text: how the run was made

    def to_dict(self) -> dict:
        return {
            "training": self.training,
            "data": self.data,
            "licence": self.licence,
            "created": self.created,
            "software": self.software,
            "provenance": self.note,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Provenance:
        return cls(
            dict(d.get("training") or {}),
            dict(d.get("data") or {}),
            d.get("licence"),
            d.get("created"),
            dict(d.get("software") or {}),
            d.get("provenance"),
        )


@dataclass(frozen=True)
class Calibration:
    """Temperature scaling and the two thresholds that flag a prediction as uncertain."""

    temperature: float = 1.0
    confidence_threshold: float = 0.0  # below it: "uncertain"
    ood_threshold: float | None = None  # feature distance above it: "unlike the training images"


# Above this percentile of the known images' distances, an image is "unlike the training
# images". Chosen leaving one lab out and one class out (benchmarks/bench_ood_scores.py,
# bench_uncertainty.py, bench_unknown_class.py): at 85 no fold let more than 0.4% of a new
# lab's cells through wrong and unflagged, and the bundled model flags as many of its own
# validation cells (15%) as the class-centre rule it replaces, which let through twice as
# many untaught monocytes at that cost.
OOD_PERCENTILE = 85


def ood_threshold_of(known_distances: np.ndarray) -> float:
    """The distance above which an image is "unlike the training images", from the distances
    of images the model knows (validation images, a lab's own cells once adapted to them)."""
    return float(np.percentile(known_distances, OOD_PERCENTILE))


# the 10th nearest anchor, not the nearest: one training image like an odd cell does not make
# it familiar (k = 1 ... 50 differ little in Sun et al.; 10 measured, benchmarks/RESULTS.md)
NEIGHBOUR_K = 10


def unit_rows(features: np.ndarray) -> np.ndarray:
    """``features`` (n, d) scaled to unit length: the anchors as the graph compares them."""
    features = np.asarray(features, np.float32)
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def neighbour_distances(anchors: np.ndarray, features: np.ndarray) -> np.ndarray:
    """The graph's score in NumPy: cosine distance of each of ``features`` (..., d) to its
    ``NEIGHBOUR_K``-th nearest of ``anchors`` (already unit rows)."""
    similarity = unit_rows(features.reshape(-1, features.shape[-1])) @ anchors.T
    kth = -np.partition(-similarity, NEIGHBOUR_K - 1, axis=1)[:, NEIGHBOUR_K - 1]
    return (1 - kth).reshape(features.shape[:-1])


@dataclass(frozen=True)
class ArtifactFile:
    path: str  # relative to the artifact folder
    sha256: str


@dataclass
class ModelArtifact:
    """A model ready for serving: ONNX files plus everything needed to use them honestly."""

    name: str
    version: str
    classes: list[str]
    architecture: str
    preprocess: PreprocessSpec
    calibration: Calibration
    files: dict[str, ArtifactFile]
    checks: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    provenance: Provenance = field(default_factory=Provenance)
    path: Path | None = None  # the folder it was loaded from or saved to
    # predict averages the 8 flips and turns of each cell unless told otherwise (``adapt``
    # sets it where its held-out cells say it pays)
    tta: bool = False

    # ------------------------------------------------------------ JSON
    def to_dict(self) -> dict:
        c = self.calibration
        return {
            "format": ARTIFACT_FORMAT,
            "name": self.name,
            "version": self.version,
            "classes": list(self.classes),
            "architecture": self.architecture,
            "input_size": self.preprocess.input_size,
            "preprocess": self.preprocess.to_dict(),
            "outputs": list(OUTPUTS),
            "temperature": c.temperature,
            "confidence_threshold": c.confidence_threshold,
            "ood_threshold": c.ood_threshold,
            "tta": self.tta,
            "files": {k: {"path": f.path, "sha256": f.sha256} for k, f in self.files.items()},
            "checks": self.checks,
            "metrics": self.metrics,
            **self.provenance.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict, path: Path | None = None) -> ModelArtifact:
        calibration = Calibration(
            float(d.get("temperature", 1.0)),
            float(d.get("confidence_threshold", 0.0)),
            None if d.get("ood_threshold") is None else float(d["ood_threshold"]),
        )
        files = {k: ArtifactFile(str(f["path"]), str(f["sha256"])) for k, f in d["files"].items()}
        return cls(
            str(d.get("name") or (path.name if path else "model")),
            str(d.get("version", "0")),
            [str(c) for c in d["classes"]],
            str(d.get("architecture", "unknown")),
            PreprocessSpec.from_dict(d["preprocess"]),
            calibration,
            files,
            dict(d.get("checks") or {}),
            dict(d.get("metrics") or {}),
            Provenance.from_dict(d),
            path,
            bool(d.get("tta", False)),
        )

    @classmethod
    def load(cls, path: str | Path) -> ModelArtifact:
        """Read ``path/model.json``; a clear error for a run folder, a newer format or bad JSON."""
        path = Path(path)
        meta = path / "model.json"
        if not meta.is_file():
            hint = (
                f"it is a training run: export it with 'hematovision export --model {path}'"
                if RunDir(path).is_run()
                else "make one with 'hematovision export'"
            )
            raise HematoVisionError(
                f"{path} is not a model artifact (model.json not found); {hint}"
            )
        data = _read_json(meta)
        fmt = data.get("format")
        if fmt == RUN_FORMAT:
            raise HematoVisionError(
                f"{path} is a training run, not a model artifact; export it "
                f"with 'hematovision export --model {path}'"
            )
        if fmt != ARTIFACT_FORMAT:
            raise HematoVisionError(
                f"{meta} has format {fmt!r}; this version of HematoVision "
                f"reads {ARTIFACT_FORMAT!r} (upgrade hematovision)"
            )
        try:
            return cls.from_dict(data, path)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise HematoVisionError(f"{meta} is incomplete: {type(exc).__name__} {exc}") from None

    def save(self, path: str | Path | None = None) -> Path:
        """Write ``model.json`` into ``path`` (default: where it was loaded from)."""
        self.path = Path(path) if path else self.path
        if self.path is None:
            raise ValueError("ModelArtifact.save needs a folder")
        _write_json(self.path / "model.json", self.to_dict())
        return self.path

    # ------------------------------------------------------------ files
    def add_file(self, key: str, relative: str) -> None:
        """Record a file written into the artifact folder, with its hash."""
        data = (self.path / relative).read_bytes()
        self.files[key] = ArtifactFile(relative, hashlib.sha256(data).hexdigest())

    def file(self, key: str) -> Path | None:
        entry = self.files.get(key)
        return None if entry is None or self.path is None else self.path / entry.path

    def precisions(self) -> list[str]:
        return [p for p, key in PRECISION_FILES.items() if key in self.files]

    def choose_precision(self, precision: str | None = None) -> str:
        """``precision`` if the artifact has it; by default fp32, else the one it ships."""
        available = self.precisions()
        if precision is None and available:
            return "fp32" if "fp32" in available else available[0]
        if precision not in available:
            raise HematoVisionError(
                f"{self.path} has no {precision} model (it has: {', '.join(available) or 'none'})"
            )
        return precision

    def model_bytes(self, precision: str, verify: bool = True) -> bytes:
        """The ONNX model of ``precision``, checked against the hash in model.json."""
        entry = self.files[PRECISION_FILES[self.choose_precision(precision)]]
        path = self.path / entry.path
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise HematoVisionError(f"cannot read {path}: {exc.strerror}") from None
        if verify and hashlib.sha256(data).hexdigest() != entry.sha256:
            raise HematoVisionError(f"{path} does not match the hash in model.json")
        return data

    def check(self) -> ModelArtifact:
        """Itself, once its default model file is read and matches its hash: a bad artifact
        fails in one line before anything is started."""
        self.model_bytes(self.choose_precision())
        return self

    def card(self) -> dict:
        """What a user is shown about the model (the API's model card)."""
        c = self.calibration
        return {
            "name": self.name,
            "version": self.version,
            "classes": list(self.classes),
            "architecture": self.architecture,
            "input_size": self.preprocess.input_size,
            "temperature": c.temperature,
            "confidence_threshold": c.confidence_threshold,
            "metrics": self.metrics,
            "data": self.provenance.data,
            "licence": self.provenance.licence,
            "provenance": self.provenance.note,
        }


@dataclass
class RunInfo:
    """``run.json``: what a training run learnt and how, read by evaluation and export."""

    classes: list[str]
    architecture: str
    preprocess: PreprocessSpec
    metrics: dict = field(default_factory=dict)
    provenance: Provenance = field(default_factory=Provenance)

    def to_dict(self) -> dict:
        p = self.provenance.to_dict()
        p.pop("provenance")
        return {
            "format": RUN_FORMAT,
            "classes": list(self.classes),
            "architecture": self.architecture,
            "input_size": self.preprocess.input_size,
            "preprocess": self.preprocess.to_dict(),
            "metrics": self.metrics,
            **p,
        }

    @classmethod
    def from_dict(cls, d: dict) -> RunInfo:
        return cls(
            [str(c) for c in d["classes"]],
            str(d["architecture"]),
            PreprocessSpec.from_dict(d["preprocess"]),
            dict(d.get("metrics") or {}),
            Provenance.from_dict(d),
        )


class RunDir:
    """A training run's folder: where each file lives, and typed access to what it holds."""

    INFO = "run.json"
    LEGACY_INFO = "model.json"  # runs made before 0.2 kept run.json's content under this name

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __eq__(self, other) -> bool:
        return isinstance(other, RunDir) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    # ------------------------------------------------------------ paths
    best = property(lambda self: self.path / "best.pt", doc="weights with the best val macro-F1")
    checkpoint = property(lambda self: self.path / "checkpoint.pt", doc="for --resume")
    split_file = property(lambda self: self.path / "split.json")
    history_file = property(lambda self: self.path / "history.csv")
    metrics_file = property(lambda self: self.path / "metrics.json")
    report = property(lambda self: self.path / "report.html")
    artifact = property(lambda self: self.path / "artifact", doc="default export folder")

    def probs_file(self, split: str) -> Path:
        return self.path / f"{split}_probs.npy"

    def _info_file(self) -> Path | None:
        for name in (self.INFO, self.LEGACY_INFO):
            candidate = self.path / name
            if candidate.is_file() and (
                name == self.INFO or _read_json(candidate).get("format") == RUN_FORMAT
            ):
                return candidate
        return None

    def is_run(self) -> bool:
        return self.best.is_file() and self._info_file() is not None

    def require(self) -> RunDir:
        if not self.is_run():
            raise HematoVisionError(
                f"{self.path} is not a training run ({self.INFO} and best.pt expected)"
            )
        return self

    # ------------------------------------------------------------ contents
    def info(self) -> RunInfo:
        path = self._info_file()
        if path is None:
            self.require()
        try:
            return RunInfo.from_dict(_read_json(path))
        except (KeyError, TypeError, ValueError) as exc:
            raise HematoVisionError(f"{path} is incomplete: {type(exc).__name__} {exc}") from None

    def write_info(self, info: RunInfo) -> None:
        _write_json(self.path / self.INFO, info.to_dict())

    def metrics(self) -> dict:
        return _read_json(self.metrics_file)

    def write_metrics(self, metrics: dict) -> None:
        _write_json(self.metrics_file, metrics)

    def manifest(self):
        """The run's ``SplitManifest`` (which file is in train, val or test)."""
        from .data.splits import SplitManifest

        return SplitManifest.load(self.split_file)
