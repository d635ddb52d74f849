"""The white-cell differential count, as a haematology lab reports it.

The one rule, used by the web pages, the API, the CSV files, the CLI and smear analyses:

* the differential is over **white cells** only (basophil, eosinophil, ig, lymphocyte,
  monocyte, neutrophil, and any other class a custom model adds), as percentages;
* **erythroblasts** (nucleated red cells) are not white cells: they are reported as nucleated
  red cells per 100 white cells;
* **platelets** are reported apart, as a count;
* a cell flagged **uncertain** (low confidence, or "may not be a blood cell") is listed
  "to review" and counted nowhere until a person decides;
* each percentage (and the nucleated red cells per 100 white cells) is set beside the lab's
  **reference interval** and flagged ``H`` above it, ``L`` below it, as a laboratory report
  prints it. A differential far outside them is also how a model that misreads a whole class
  of a new lab's cells shows (a sample with a third of its cells called basophils):
  ``benchmarks/bench_sample_flags.py``.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .errors import HematoVisionError

WHITE_CELL_CLASSES = ("basophil", "eosinophil", "ig", "lymphocyte", "monocyte", "neutrophil")
NUCLEATED_RED_CELL = "erythroblast"
PLATELET = "platelet"
# how a class is spelled out for people (class names stay short in files and APIs)
DISPLAY_NAMES = {
    "ig": "immature granulocyte",
    "erythroblast": "erythroblast (nucleated red cell)",
}


def percent_interval(count: int, total: int, level: float = 0.95) -> tuple[float, float]:
    """The exact binomial (Clopper-Pearson) interval of ``count`` in ``total``, in percent:
    what Rümke's tables give labs for a manual differential."""
    if total <= 0:
        return (0.0, 100.0)
    # imported here, not above: web.config imports this module and the CLI's account commands
    # read web.config, which should not cost them scipy.special's half second
    from scipy.special import betaincinv

    alpha = 1 - level
    # the beta distribution's quantiles (scipy.stats.beta.ppf, without its 30x overhead)
    low = betaincinv(count, total - count + 1, alpha / 2) if count > 0 else 0.0
    high = betaincinv(count + 1, total - count, 1 - alpha / 2) if count < total else 1.0
    return (round(100 * float(low), 1), round(100 * float(high), 1))


@dataclass(frozen=True)
class ReferenceIntervals:
    """The lab's reference interval of each class, in percent of the white cells counted
    (erythroblasts: per 100 white cells); a class without one is never flagged."""

    limits: Mapping[str, tuple[float, float]]
    source: str

    def of(self, label: str) -> tuple[float, float] | None:
        return self.limits.get(label)

    def flag(self, label: str, value: float | None) -> str | None:
        """``"H"`` above the interval, ``"L"`` below it, else None."""
        limits = self.limits.get(label)
        if limits is None or value is None:
            return None
        return "H" if value > limits[1] else "L" if value < limits[0] else None

    @classmethod
    def read(cls, path: str | Path) -> ReferenceIntervals:
        """A lab's intervals from a CSV file with the columns ``class,low,high``."""
        path = Path(path)
        try:
            with open(path, newline="", encoding="utf-8-sig") as fh:
                rows = list(csv.DictReader(fh))
        except (OSError, UnicodeDecodeError) as exc:
            raise HematoVisionError(f"cannot read the reference intervals {path}: {exc}") from None
        if not rows or not {"class", "low", "high"} <= set(rows[0]):
            raise HematoVisionError(
                f"{path}: reference intervals need a header 'class,low,high' and a row per class"
            )
        limits = {}
        for line, row in enumerate(rows, start=2):
            label = (row["class"] or "").strip()
            limits[label] = _limits(path, line, label, row, limits)
        return cls(limits, str(path))

    @classmethod
    def configured(cls, path: str | Path | None = None) -> ReferenceIntervals:
        """The lab's intervals from ``path``, else from the file named by
        ``HEMATOVISION_REFERENCE_INTERVALS``, else ``ADULT_INTERVALS``."""
        path = path or os.environ.get("HEMATOVISION_REFERENCE_INTERVALS")
        return cls.read(path) if path else ADULT_INTERVALS


def _limits(path: Path, line: int, label: str, row: dict, seen: dict) -> tuple[float, float]:
    """One row's (low, high), or a message that says which line is wrong and why."""
    where = f"{path}, line {line}"
    if not label or label in seen:
        raise HematoVisionError(f"{where}: {'a repeated' if label else 'no'} class name")
    try:
        low, high = float(row["low"]), float(row["high"])
    except (TypeError, ValueError):
        raise HematoVisionError(f"{where}: low and high must be numbers (percent)") from None
    if not 0 <= low <= high < math.inf or (label != NUCLEATED_RED_CELL and high > 100):
        raise HematoVisionError(f"{where}: need 0 <= low <= high <= 100, got {low}-{high}")
    return low, high


# Typical adult intervals of a 100-cell differential, as many laboratory reports print them;
# they are no lab's validated intervals: each lab sets its own (HEMATOVISION_REFERENCE_INTERVALS).
ADULT_INTERVALS = ReferenceIntervals(
    {
        "neutrophil": (40.0, 75.0),
        "lymphocyte": (20.0, 45.0),
        "monocyte": (2.0, 10.0),
        "eosinophil": (0.0, 6.0),
        "basophil": (0.0, 2.0),
        "ig": (0.0, 1.0),
        NUCLEATED_RED_CELL: (0.0, 0.0),  # per 100 white cells: none in an adult's blood
    },
    "typical adult intervals (not a lab's own)",
)


def interval_text(limits: Iterable[float] | None, dash: str = "–") -> str:
    """A reference interval as a report prints it (``40–75``); none: a dash."""
    return dash.join(f"{v:g}" for v in limits) if limits else "—"


def display_name(label: str | None) -> str:
    return DISPLAY_NAMES.get(label or "", label or "—")


def white_cell_classes(classes: Iterable[str] | None = None) -> list[str]:
    """The white-cell classes among a model's classes (all but erythroblast and platelet)."""
    if classes is None:
        return list(WHITE_CELL_CLASSES)
    return [c for c in classes if c not in (NUCLEATED_RED_CELL, PLATELET)]


@dataclass
class Differential:
    """Counts under the lab's rule; ``to_dict`` is the one JSON form."""

    white_cells: dict[str, int]  # every white-cell class, in order, with its count
    nucleated_red_cells: int = 0
    platelets: int = 0
    to_review: int = 0
    to_review_cells: list[int] = field(default_factory=list)  # positions in the input
    intervals: ReferenceIntervals = ADULT_INTERVALS

    @property
    def counted(self) -> int:
        """White cells counted: the denominator of the percentages."""
        return sum(self.white_cells.values())

    def percent(self, label: str) -> float:
        n = self.counted
        return round(100 * self.white_cells.get(label, 0) / n, 1) if n else 0.0

    @property
    def nrbc_per_100_white_cells(self) -> float | None:
        n = self.counted
        return round(100 * self.nucleated_red_cells / n, 1) if n else None

    def flag(self, label: str) -> str | None:
        """``"H"`` / ``"L"`` where ``label``'s share lies outside the lab's interval whatever
        the cells still to review turn out to be: "H" on its least share (every one of them
        another white cell), "L" on its greatest (every one of them this class). Once every
        flagged cell is reviewed, that is the share shown."""
        counted, pending = self.counted, self.to_review
        if not counted:
            return None
        if label == NUCLEATED_RED_CELL:
            count, most_of = self.nucleated_red_cells, counted  # per 100 white cells
        else:
            count, most_of = self.white_cells.get(label, 0), counted + pending
        least = round(100 * count / (counted + pending), 1)
        most = round(100 * (count + pending) / most_of, 1)
        if self.intervals.flag(label, least) == "H":
            return "H"
        return "L" if self.intervals.flag(label, most) == "L" else None

    @property
    def outside_reference(self) -> list[str]:
        """The classes (erythroblast included) outside their reference interval."""
        labels = [*self.white_cells, NUCLEATED_RED_CELL]
        return [c for c in labels if self.flag(c)]

    def to_dict(self) -> dict:
        return {
            "white_cells": {
                c: {
                    "count": n,
                    "percent": self.percent(c),
                    "ci95": list(percent_interval(n, self.counted)),
                    **self._reference(c),
                }
                for c, n in self.white_cells.items()
            },
            "white_cells_counted": self.counted,
            "nucleated_red_cells": {
                "count": self.nucleated_red_cells,
                "per_100_white_cells": self.nrbc_per_100_white_cells,
                **self._reference(NUCLEATED_RED_CELL),
            },
            "platelets": self.platelets,
            "to_review": self.to_review,
            "outside_reference": self.outside_reference,
            "reference_intervals": self.intervals.source,
        }

    def _reference(self, label: str) -> dict:
        limits = self.intervals.of(label)
        return {"reference": list(limits) if limits else None, "flag": self.flag(label)}


def count_differential(
    cells: Iterable[tuple[str | None, bool]],
    classes: Iterable[str] | None = None,
    platelets: int = 0,
    intervals: ReferenceIntervals | None = None,
) -> Differential:
    """The differential of ``cells`` given as (label, uncertain) pairs.

    ``classes``: the model's classes (default: the six white-cell classes of PBC);
    ``platelets``: platelets counted apart (e.g. by the smear detector), added to those
    classified as platelets; ``intervals``: the lab's reference intervals (default:
    ``ReferenceIntervals.configured()``)."""
    result = Differential(
        dict.fromkeys(white_cell_classes(classes), 0),
        platelets=platelets,
        intervals=intervals or ReferenceIntervals.configured(),
    )
    for position, (label, uncertain) in enumerate(cells):
        if label is None:
            continue
        if uncertain:
            result.to_review += 1
            result.to_review_cells.append(position)
        elif label == NUCLEATED_RED_CELL:
            result.nucleated_red_cells += 1
        elif label == PLATELET:
            result.platelets += 1
        else:
            result.white_cells[label] = result.white_cells.get(label, 0) + 1
    return result
