"""CSV tables of results, written the same way by the CLI and the web app: one table per file.

Text that a spreadsheet would run as a formula (it starts with ``= + - @`` or a tab or carriage
return, e.g. an uploaded file named ``=HYPERLINK(...).jpg``) is written with a leading
apostrophe, as OWASP recommends against CSV injection.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from typing import IO

from .differential import Differential

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value):
    """``value``, with text that could start a spreadsheet formula made inert."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def write_csv(stream: IO[str], header: Sequence[str], rows: Iterable[Sequence]) -> None:
    writer = csv.writer(stream)
    writer.writerow(header)
    writer.writerows([csv_safe(v) for v in row] for row in rows)


def _number(value, digits: int = 6) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def write_predictions_csv(
    stream: IO[str], records: Iterable[dict], classes: Sequence[str], keys: Sequence[str]
) -> None:
    """One row per classified cell: the ``keys`` columns (e.g. path, or id and filename),
    label, confidence, uncertain (0/1) and one probability column per class in ``classes``."""
    rows = (
        [
            *(r[k] for k in keys),
            r["label"],
            _number(r["confidence"]),
            int(bool(r["uncertain"])),
            *(_number((r.get("probabilities") or {}).get(c, 0.0)) for c in classes),
        ]
        for r in records
    )
    write_csv(stream, [*keys, "label", "confidence", "uncertain", *classes], rows)


def write_differential_csv(stream: IO[str], differential: Differential) -> None:
    """The white-cell differential (count and percent per class, beside the lab's reference
    interval and its H/L flag), then the totals: white cells counted, nucleated red cells per
    100 white cells, platelets, cells to review."""
    d = differential

    def reference(label: str) -> list:
        low, high = d.intervals.of(label) or ("", "")
        return [low, high, d.flag(label) or ""]

    rows = [[c, n, f"{d.percent(c):.1f}", *reference(c)] for c, n in d.white_cells.items()]
    nrbc = d.nrbc_per_100_white_cells
    rows += [
        ["white cells counted", d.counted, "100.0" if d.counted else "0.0", "", "", ""],
        [
            "nucleated red cells (per 100 white cells)",
            d.nucleated_red_cells,
            "" if nrbc is None else f"{nrbc:.1f}",
            *reference("erythroblast"),
        ],
        ["platelets", d.platelets, "", "", "", ""],
        ["to review (not counted)", d.to_review, "", "", "", ""],
    ]
    header = ["class", "count", "percent", "reference_low", "reference_high", "flag"]
    write_csv(stream, header, rows)


SMEAR_CELL_COLUMNS = (
    "field",
    "cell",
    "x1",
    "y1",
    "x2",
    "y2",
    "label",
    "confidence",
    "uncertain",
    "field_red_cells",
    "field_platelets",
)


def write_smear_cells_csv(stream: IO[str], fields: Iterable[dict]) -> None:
    """One row per white cell found (numbered as on the annotated field), with its field's
    red-cell and platelet counts; a field without white cells still has a row."""
    rows = []
    for f in fields:
        name = f.get("filename") or f.get("path")
        counts = [f["red_cells"], f["platelets"]]
        for number, c in enumerate(f["white_cells"], start=1):
            uncertain = "" if c["uncertain"] is None else int(bool(c["uncertain"]))
            rows.append(
                [
                    name,
                    number,
                    *c["box"],
                    c["label"],
                    _number(c["confidence"], 4),
                    uncertain,
                    *counts,
                ]
            )
        if not f["white_cells"]:
            rows.append([name, "", "", "", "", "", "", "", "", *counts])
    write_csv(stream, SMEAR_CELL_COLUMNS, rows)
