"""Batch inference on Ray: an archive of images through an actor pool, results as Parquet.

Ray Data reads the image paths (a list, or a Parquet, CSV or text file of them), ``map_batches``
runs them through a pool of actors that each hold one ``Classifier`` (one engine session per
actor, loaded once), and the rows stream back to this process, which writes them into one
Parquet and one JSON Lines file, with the fields of ``hematovision predict --format json``.
An image that cannot be read is a row with its ``error``, never a failed job. Without an
address a local Ray instance is started; with one, the job joins that cluster (every node must
see the model and the images at the same paths). Optional: ``pip install 'hematovision[ray]'``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..artifact import ModelArtifact
from ..errors import HematoVisionError
from ..files import output_folder
from .classifier import DEFAULT_MODEL, Classifier, Prediction

TABLE_SUFFIXES = (".parquet", ".csv", ".txt")  # files that list images, one per row or line


def result_schema(classes: list[str]):
    """The Arrow schema of a result row: ``predict --format json``'s fields, plus the error."""
    import pyarrow as pa

    return pa.schema(
        [
            ("path", pa.string()),
            ("label", pa.string()),
            ("confidence", pa.float64()),
            ("uncertain", pa.bool_()),
            ("reasons", pa.list_(pa.string())),
            ("probabilities", pa.struct([(c, pa.float64()) for c in classes])),
            ("error", pa.string()),
            ("code", pa.string()),
        ]
    )


def result_row(path: str, prediction: Prediction) -> dict:
    if not prediction.ok:
        return {"path": path, "error": prediction.error, "code": prediction.error_code}
    return {"path": path, **prediction.to_dict(), "error": None, "code": None}


class ClassifyBatch:
    """The actors' callable class: one Classifier per actor, a batch of paths per call."""

    def __init__(self, model: str, engine: str, threads: int, folder: str | None):
        self.classifier = Classifier.load(model, engine=engine, threads=threads)
        self.schema = result_schema(self.classifier.classes)
        self.folder = folder

    def __call__(self, batch: dict):
        import pyarrow as pa

        paths = batch_paths(batch, self.folder)
        images, unreachable = [], {}
        for path in paths:
            try:
                images.append(fetch(path))
            except FETCH_ERRORS as exc:  # an unreachable URI: its row
                unreachable[path] = unreachable_row(path, exc)
        done = iter(self.classifier.predict(images, errors="report", batch_size=len(paths)))
        rows = [unreachable.get(p) or result_row(p, next(done)) for p in paths]
        return pa.Table.from_pylist(rows, schema=self.schema)


def checked_model(path: str | Path) -> tuple[str, list[str]]:
    """The artifact folder as an absolute path (the actors may run anywhere) and its classes;
    a bad artifact fails here, in one line, before any actor starts."""
    path = Path(path).resolve()
    return str(path), ModelArtifact.load(path).check().classes


URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
MAX_FETCH_BYTES = 64 * 2**20  # one image from a URI
FETCH_ERRORS = (OSError, ValueError, ImportError)  # what fetch raises for an unreachable URI


def unreachable_row(path: str, exc: Exception) -> dict:
    """The result row of a path or URI that could not be fetched."""
    return {"path": path, "error": f"{path}: cannot fetch: {exc}", "code": "unreachable"}


def batch_paths(batch: dict, folder: str | None) -> list[str]:
    """A batch's paths or URIs; relative paths are relative to ``folder`` (a list file's)."""
    return [
        str(p) if URI.match(str(p)) else os.path.join(folder or "", str(p)) for p in batch["path"]
    ]


def fetch(location: str) -> str | bytes:
    """A local path as it is; a URI's bytes: http(s) with the standard library, any other
    scheme (s3://, gs://, ...) through fsspec and the package that scheme needs."""
    if not URI.match(location):
        return location
    if location.lower().startswith(("http://", "https://")):
        import urllib.request

        with urllib.request.urlopen(location, timeout=60) as response:
            data = response.read(MAX_FETCH_BYTES + 1)
    else:
        import fsspec

        with fsspec.open(location, "rb") as fh:
            data = fh.read(MAX_FETCH_BYTES + 1)
    if len(data) > MAX_FETCH_BYTES:
        raise ValueError(f"larger than {MAX_FETCH_BYTES // 2**20} MB")
    return data


def read_paths(inputs: list[str] | str):
    """A Ray dataset with one ``path`` column: from a list of image paths (made absolute), or
    from a Parquet or CSV file with a ``path`` column, or a text file with one path a line
    (paths in them are relative to the file's folder)."""
    import ray.data

    if isinstance(inputs, (str, Path)):
        table = Path(inputs)
        if table.suffix not in TABLE_SUFFIXES or not table.is_file():
            raise HematoVisionError(f"{table}: not a .parquet, .csv or .txt list of images")
        # reading a list is light: it must not wait for a CPU the classifying actors hold
        light = {"num_cpus": 0}
        if table.suffix == ".txt":
            dataset = ray.data.read_text(str(table), **light).rename_columns({"text": "path"})
        else:
            reader = ray.data.read_parquet if table.suffix == ".parquet" else ray.data.read_csv
            dataset = reader(str(table), **light)
        if "path" not in dataset.columns():
            raise HematoVisionError(f"{table} has no 'path' column")
        return dataset.select_columns(["path"])
    if not inputs:
        raise HematoVisionError("no images to classify")
    return ray.data.from_items(
        [{"path": str(p) if URI.match(str(p)) else str(Path(p).resolve())} for p in inputs]
    )


def start_ray(address: str | None = None, quiet: bool = False) -> None:
    """Join the Ray cluster at ``address``, or start a local instance on this machine's cores
    (nothing to do when this process is connected already)."""
    try:
        import ray
    except ImportError:
        raise HematoVisionError("--ray needs Ray: pip install 'hematovision[ray]'") from None
    if ray.is_initialized():
        return
    try:
        if address:
            ray.init(address=address, log_to_driver=not quiet)
        else:
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=not quiet)
    except ConnectionError as exc:
        raise HematoVisionError(f"cannot reach the Ray cluster at {address}: {exc}") from None
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = not quiet


def predict_on_ray(
    inputs: list[str] | str,
    out_dir: str | Path,
    model: str | Path | None = None,
    engine: str = "auto",
    batch_size: int = 64,
    actors: int | None = None,
    threads: int = 1,
) -> dict:
    """Classify ``inputs`` (``read_paths``) on the Ray cluster this process is connected to
    (``start_ray``) and write ``out_dir/predictions.parquet`` and ``predictions.jsonl``.

    ``actors``: the pool's size (default: the cluster's CPUs / ``threads``). Returns a
    summary: images, failures, counts per label and the two files."""
    model, classes = checked_model(model or DEFAULT_MODEL)
    job = RayJob(ClassifyBatch, {"model": model, "engine": engine}, result_schema(classes))
    return job.run(inputs, out_dir, "predictions", batch_size, actors, threads)


class RayJob:
    """An actor class over image paths on Ray, its rows streamed into Parquet + JSON Lines.

    ``actor(folder=..., threads=..., **kwargs)`` is called with a batch ``{"path": [...]}``
    and returns an Arrow table of ``schema``; ``labels(row)`` names what a summary counts."""

    def __init__(self, actor, kwargs: dict, schema, labels=lambda row: [row["label"]]):
        self.actor, self.kwargs, self.schema, self.labels = actor, kwargs, schema, labels

    def run(self, inputs, out_dir, name: str, batch_size: int, actors, threads: int) -> dict:
        """The results stream back to this process, which writes them as they come (memory
        stays bounded), so no other task waits for a CPU the actors hold."""
        import ray
        import ray.data

        out = output_folder(out_dir, empty=True, make=False)
        folder = None if isinstance(inputs, list) else str(Path(inputs).resolve().parent)
        pool = actors or max(1, int(ray.cluster_resources().get("CPU", 1)) // threads)
        results = read_paths(inputs).map_batches(
            self.actor,
            fn_constructor_kwargs={**self.kwargs, "threads": threads, "folder": folder},
            batch_size=batch_size,
            compute=ray.data.ActorPoolStrategy(size=pool),
            num_cpus=threads,
            batch_format="numpy",
        )
        out.mkdir(parents=True, exist_ok=True)
        return self._write(results, out, name)

    def _write(self, results, out: Path, name: str) -> dict:
        """One Parquet and one JSON Lines file, renamed into place when complete; images,
        failures and labels counted on the way."""
        import json
        from collections import Counter

        import pyarrow.parquet as pq

        parquet, jsonl = out / f"{name}.parquet", out / f"{name}.jsonl"
        labels, rows, failures = Counter(), 0, 0
        with (
            pq.ParquetWriter(f"{parquet}.tmp", self.schema) as table_file,
            open(f"{jsonl}.tmp", "w") as lines_file,
        ):
            for batch in results.iter_batches(batch_format="pyarrow", batch_size=None):
                batch = batch.cast(self.schema)
                table_file.write_table(batch)
                for row in batch.to_pylist():
                    lines_file.write(json.dumps(row) + "\n")
                    rows += 1
                    failures += row["error"] is not None
                    labels.update(label for label in self.labels(row) if label)
        os.replace(f"{parquet}.tmp", parquet)
        os.replace(f"{jsonl}.tmp", jsonl)
        return {
            "images": rows,
            "failures": failures,
            "labels": dict(labels.most_common()),
            "parquet": str(parquet),
            "jsonl": str(jsonl),
        }
