"""Smear fields on Ray: ``smear --ray``, the same job as ``predict --ray`` with fields as rows.

One row per field with the fields of ``hematovision smear --format json`` (``SmearField``),
or its ``error``; see ``inference.ray_batch`` for how the job runs and where results go.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import HematoVisionError
from ..inference.classifier import DEFAULT_MODEL
from ..inference.ray_batch import (
    FETCH_ERRORS,
    RayJob,
    batch_paths,
    checked_model,
    fetch,
    unreachable_row,
)
from . import analyze_smear, load_smear_classifier


def field_schema():
    """The Arrow schema of a field row (``SmearField.to_dict`` and the error)."""
    import pyarrow as pa

    points = pa.list_(pa.list_(pa.int64()))
    cell = pa.struct(
        [
            ("box", pa.list_(pa.int64())),
            ("label", pa.string()),
            ("confidence", pa.float64()),
            ("uncertain", pa.bool_()),
            ("reasons", pa.list_(pa.string())),
        ]
    )
    return pa.schema(
        [
            ("path", pa.string()),
            ("width", pa.int64()),
            ("height", pa.int64()),
            ("white_cells", pa.list_(cell)),
            ("red_cells", pa.int64()),
            ("platelets", pa.int64()),
            ("red_cell_positions", points),
            ("platelet_positions", points),
            ("warnings", pa.list_(pa.string())),
            ("error", pa.string()),
            ("code", pa.string()),
        ]
    )


class AnalyzeBatch:
    """The actors' callable class: one smear classifier per actor, a batch of fields a call."""

    def __init__(self, model: str, engine: str, threads: int, folder: str | None):
        self.classifier = load_smear_classifier(model, engine=engine, threads=threads)
        self.folder, self.schema = folder, field_schema()

    def __call__(self, batch: dict):
        import pyarrow as pa

        rows = []
        for path in batch_paths(batch, self.folder):
            try:
                field = analyze_smear(fetch(path), self.classifier).to_dict()
                rows.append({**field, "path": field["path"] or path, "error": None})  # a URI
            except HematoVisionError as exc:
                rows.append({"path": path, "error": str(exc), "code": exc.code})
            except FETCH_ERRORS as exc:  # an unreachable URI
                rows.append(unreachable_row(path, exc))
        return pa.Table.from_pylist(rows, schema=self.schema)


def analyze_on_ray(
    inputs: list[str] | str,
    out_dir: str | Path,
    model: str | Path | None = None,
    engine: str = "auto",
    batch_size: int = 8,
    actors: int | None = None,
    threads: int = 1,
) -> dict:
    """Analyse smear fields on Ray into ``out_dir/fields.parquet`` and ``fields.jsonl``;
    the summary counts white cells per label."""
    model, _ = checked_model(model or DEFAULT_MODEL)
    job = RayJob(
        AnalyzeBatch,
        {"model": model, "engine": engine},
        field_schema(),
        labels=lambda row: [cell["label"] for cell in row["white_cells"] or []],
    )
    return job.run(inputs, out_dir, "fields", batch_size, actors, threads)
