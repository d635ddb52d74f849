"""The white-cell differential count, as a haematology lab reports it.

The one rule, used by the web pages, the API, the CSV files, the CLI and smear analyses:

* the differential is over **white cells** only (basophil, eosinophil, ig, lymphocyte,
  monocyte, neutrophil, and any other class a custom model adds), as percentages;
* **erythroblasts** (nucleated red cells) are not white cells: they are reported as nucleated
  red cells per 100 white cells;
* **platelets** are reported apart, as a count;
* a cell flagged **uncertain** (low confidence, or "may not be a blood cell") is listed
  "to review" and counted nowhere until a person decides.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from scipy.special import betaincinv

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
    alpha = 1 - level
    # the beta distribution's quantiles (scipy.stats.beta.ppf, without its 30x overhead)
    low = betaincinv(count, total - count + 1, alpha / 2) if count > 0 else 0.0
    high = betaincinv(count + 1, total - count, 1 - alpha / 2) if count < total else 1.0
    return (round(100 * float(low), 1), round(100 * float(high), 1))


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

    def to_dict(self) -> dict:
        return {
            "white_cells": {
                c: {
                    "count": n,
                    "percent": self.percent(c),
                    "ci95": list(percent_interval(n, self.counted)),
                }
                for c, n in self.white_cells.items()
            },
            "white_cells_counted": self.counted,
            "nucleated_red_cells": {
                "count": self.nucleated_red_cells,
                "per_100_white_cells": self.nrbc_per_100_white_cells,
            },
            "platelets": self.platelets,
            "to_review": self.to_review,
        }


def count_differential(
    cells: Iterable[tuple[str | None, bool]],
    classes: Iterable[str] | None = None,
    platelets: int = 0,
) -> Differential:
    """The differential of ``cells`` given as (label, uncertain) pairs.

    ``classes``: the model's classes (default: the six white-cell classes of PBC);
    ``platelets``: platelets counted apart (e.g. by the smear detector), added to those
    classified as platelets."""
    result = Differential(dict.fromkeys(white_cell_classes(classes), 0), platelets=platelets)
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
