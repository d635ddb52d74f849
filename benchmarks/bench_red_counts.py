"""Red cells counted in BCCD fields against counts made by eye (issue 11: within 15% per field).

BCCD's red-cell boxes are incomplete (about 11.5 per field where about 22 are visible), so
eight fields were counted by eye on the full image (``bccd_red_cells_by_eye.csv``: every red
cell whose centre lies in the field, cells overlapping in a clump each counted; a half cell
where it was unclear, so about +-2 per field). The detector's count per field, its error, and
how many fields fall within 15%.

    python benchmarks/bench_red_counts.py
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from hematovision.smear.detect import estimate_red_cell_diameter, locate_cells

from _common import DEFAULT_PBC, machine, table_head, table_row, write_section

DEFAULT_BCCD = DEFAULT_PBC.parent / "bccd"
BY_EYE = Path(__file__).with_name("bccd_red_cells_by_eye.csv")


def counted(bccd: Path) -> list[dict]:
    """Per field: the count by eye, the detector's, and the field's red-cell diameter."""
    rows = []
    for row in csv.DictReader(BY_EYE.open()):
        rgb = np.asarray(Image.open(bccd / "JPEGImages" / f"{row['field']}.jpg").convert("RGB"))
        rows.append(
            {
                **row,
                "eye": float(row["red_cells_by_eye"]),
                "found": len(locate_cells(rgb).red_cells),
                "diameter": estimate_red_cell_diameter(rgb),
            }
        )
    return rows


def report(rows: list[dict]) -> str:
    errors = np.array([r["found"] / r["eye"] - 1 for r in rows])
    lines = [
        "## Red cells counted against counts by eye (issue 11)",
        "",
        f"Machine: {machine()}. Eight BCCD fields counted by eye (`bccd_red_cells_by_eye.csv`, "
        "about +-2 per field); the detector with each field's own scale.",
        "",
        *table_head(["field", "half", "by eye", "counted", "error", "red-cell diameter, px"]),
    ]
    for r, e in zip(rows, errors):
        diameter = f"{r['diameter']:.0f}" if r["diameter"] else "none"
        lines.append(
            table_row([r["field"], r["half"], f"{r['eye']:g}", r["found"], f"{e:+.0%}", diameter])
        )
    within = int((np.abs(errors) <= 0.15).sum())
    lines += [
        "",
        f"Mean absolute error {np.abs(errors).mean():.1%}, median error {np.median(errors):+.1%}; "
        f"within 15%: {within} of {len(rows)} fields.",
    ]
    return "\n".join(lines)


def main() -> None:
    body = report(counted(DEFAULT_BCCD))
    print(body)
    write_section("red_counts", body)


if __name__ == "__main__":
    main()
