"""CSV tables of results, written the same way by the CLI and the web app."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from typing import IO


def write_predictions_csv(
    stream: IO[str], records: Iterable[dict], classes: Sequence[str], keys: Sequence[str]
) -> None:
    """One row per classified cell: the ``keys`` columns (e.g. path, or id and filename),
    label, confidence, uncertain (0/1) and one probability column per class in ``classes``."""
    writer = csv.writer(stream)
    writer.writerow([*keys, "label", "confidence", "uncertain", *classes])
    for r in records:
        probabilities = r.get("probabilities") or {}
        writer.writerow(
            [
                *(r[k] for k in keys),
                r["label"],
                f"{r['confidence']:.6f}",
                int(bool(r["uncertain"])),
                *(f"{probabilities.get(c, 0.0):.6f}" for c in classes),
            ]
        )


def write_differential_csv(stream: IO[str], differential: dict) -> None:
    """One row per class: count and percentage."""
    writer = csv.writer(stream)
    writer.writerow(["class", "count", "percent"])
    for name, d in differential.items():
        writer.writerow([name, d["count"], d["percent"]])
