"""The differential count: how many cells of each class, and their share."""

from __future__ import annotations

from collections.abc import Iterable


def count_differential(labels: Iterable[str], classes: list[str] | None = None) -> dict:
    """Count and percentage of each class among ``labels``; every class of ``classes`` is listed."""
    labels = [label for label in labels if label]
    names = list(classes or []) + sorted(set(labels) - set(classes or []))
    total = len(labels)
    return {
        c: {
            "count": labels.count(c),
            "percent": round(100 * labels.count(c) / total, 1) if total else 0.0,
        }
        for c in names
    }
