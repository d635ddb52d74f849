"""A sample's report as a PDF file (ReportLab): what the printable page shows, for the lab's
records and for systems that take a document rather than a web page.

Built from plain values (the differential's ``to_dict``, the signed version's dict, the cells'
pictures), so it needs neither Flask nor the database.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

from .differential import display_name, interval_text

CELLS_PER_ROW = 10
CELL_SIDE_MM = 16


@dataclass
class SampleReport:
    """What a sample's report says."""

    accession: str
    public_id: str
    created: str  # "2026-11-26 by ana"
    summary: dict  # Differential.to_dict() + "target" (the signed version's, once signed)
    model: dict  # name, version
    signed: dict | None = None  # the last signed version (signed_by, signed_at, amend_reason)
    groups: list[tuple[str, list[bytes]]] = field(default_factory=list)  # cells' JPEGs


def sample_pdf(report: SampleReport) -> bytes:
    """The report as PDF bytes (A4)."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer

    styles = getSampleStyleSheet()
    buffer = io.BytesIO()
    title = f"White-cell differential - {report.accession}"
    document = SimpleDocTemplate(
        buffer, pagesize=A4, title=title, author="HematoVision", subject=report.public_id
    )
    story = [Paragraph(escape(title), styles["Title"]), Paragraph(_signature(report))]
    story += [Spacer(1, 4 * mm), _differential_table(report.summary), Spacer(1, 2 * mm)]
    for line in _other_counts(report.summary):
        story.append(Paragraph(line, styles["Normal"]))
    story.append(Paragraph(_footnote(report), styles["Italic"]))
    for title_of_group, pictures in report.groups:
        if pictures:
            heading = f"{escape(display_name(title_of_group))} ({len(pictures)})"
            story += [Spacer(1, 3 * mm), Paragraph(heading, styles["Heading4"])]
            story.append(_picture_grid(pictures, CELL_SIDE_MM * mm))
    document.build(story)
    return buffer.getvalue()


def _signature(report: SampleReport) -> str:
    signed = report.signed
    if not signed:
        return "<b>Not signed</b>: the model's count, not reviewed by a person."
    when = signed["signed_at"][:16].replace("T", " ")
    text = (
        f"Version {signed['version']}, reviewed and signed by <b>{escape(signed['signed_by'])}</b>"
        f" at {escape(when)} UTC"
    )
    if signed.get("amend_reason"):
        text += f"; amended because: {escape(signed['amend_reason'])}"
    return text + "."


def _differential_table(summary: dict):
    from reportlab.lib import colors
    from reportlab.platypus import Table, TableStyle

    rows = [["white cell", "count", "%", "95% interval", "reference", ""]]
    for label, v in summary["white_cells"].items():
        interval = "{:.1f}-{:.1f}".format(*v["ci95"])
        reference = interval_text(v.get("reference"), "-")  # a version signed before: none
        row = [display_name(label), v["count"], f"{v['percent']:.1f}", interval, reference]
        rows.append([*row, v.get("flag") or ""])
    counted = ["counted", summary["white_cells_counted"], "", f"target {summary['target']}"]
    rows.append([*counted, "", ""])
    table = Table(rows, hAlign="LEFT")
    table.setStyle(
        TableStyle(
            [
                ("FONTNAME", (0, 0), (-1, 0), "Helvetica-Bold"),
                ("LINEBELOW", (0, 0), (-1, 0), 0.5, colors.black),
                ("LINEABOVE", (0, -1), (-1, -1), 0.5, colors.black),
                ("ALIGN", (1, 0), (-1, -1), "RIGHT"),
            ]
        )
    )
    return table


def _other_counts(summary: dict) -> list[str]:
    nrbc = summary["nucleated_red_cells"]
    per_100 = nrbc["per_100_white_cells"]
    lines = [
        f"Nucleated red cells: {nrbc['count']} "
        f"({'-' if per_100 is None else per_100} per 100 white cells) {nrbc.get('flag') or ''}",
        f"Platelets (apart): {summary['platelets']}",
        f"To review: {summary['to_review']}",
    ]
    if summary.get("reference_intervals"):
        lines.append(f"Reference intervals: {escape(summary['reference_intervals'])}")
    if summary.get("outside_reference"):
        names = ", ".join(display_name(c) for c in summary["outside_reference"])
        lines.append(f"<b>Outside the reference intervals: {escape(names)}</b>")
    return lines


def _footnote(report: SampleReport) -> str:
    model = report.model
    return escape(
        "Intervals: exact binomial (Clopper-Pearson) 95%, as in Rümke's tables. "
        f"Model {model['name']} {model['version']}. Sample {report.public_id}, "
        f"created {report.created}."
    )


def _picture_grid(pictures: list[bytes], side: float):
    from reportlab.platypus import Image as Picture
    from reportlab.platypus import Table

    cells = [Picture(io.BytesIO(jpeg), width=side, height=side) for jpeg in pictures]
    rows = [cells[i : i + CELLS_PER_ROW] for i in range(0, len(cells), CELLS_PER_ROW)]
    rows[-1] += [""] * (CELLS_PER_ROW - len(rows[-1]))
    return Table(rows, colWidths=[side + 2] * CELLS_PER_ROW, hAlign="LEFT")
