"""A simulated blood-smear data set for demos and fast tests.

Each image is one white cell on a background of red cells, drawn so that its class has the
morphology a haematologist would recognise (nucleus shape, cytoplasm colour, granules), with
random position, size, colour, blur and noise. Deterministic by seed.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..errors import HematoVisionError
from ..files import output_folder
from ..progress import progress_bar

Color = tuple[int, int, int]
SUPERSAMPLE = 2  # draw at twice the size, then downsample: smooth edges


def _jitter(rng: np.random.Generator, color: Color, amount: float = 18) -> Color:
    return tuple(int(np.clip(c + rng.normal(0, amount), 0, 255)) for c in color)


def _disc(
    draw: ImageDraw.ImageDraw, cx: float, cy: float, rx: float, ry: float, fill: Color
) -> None:
    draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=fill)


def _granules(draw, rng, cx, cy, radius, n, color, size) -> None:
    for _ in range(n):
        a, d = rng.uniform(0, 2 * math.pi), radius * math.sqrt(rng.uniform(0, 1))
        _disc(draw, cx + d * math.cos(a), cy + d * math.sin(a), size, size, _jitter(rng, color, 12))


def _red_cells(draw, rng, side: float) -> None:
    for _ in range(int(rng.integers(6, 15))):
        r = side * rng.uniform(0.08, 0.12)
        cx, cy = rng.uniform(-r, side + r, size=2)
        rim = _jitter(rng, (215, 140, 150), 10)
        _disc(draw, cx, cy, r, r * rng.uniform(0.9, 1.0), rim)
        _disc(draw, cx, cy, r * 0.45, r * 0.45, tuple(min(255, c + 25) for c in rim))


def _lobed_nucleus(draw, rng, cx, cy, r, lobes: int, color: Color, lobe_size: float) -> None:
    start = rng.uniform(0, 2 * math.pi)
    span = rng.uniform(0.9, 1.5) * math.pi
    centres = []
    for k in range(lobes):
        a = start + span * k / max(lobes - 1, 1)
        centres.append((cx + 0.42 * r * math.cos(a), cy + 0.42 * r * math.sin(a)))
    for (x0, y0), (x1, y1) in zip(centres, centres[1:]):  # thin chromatin strands
        draw.line([x0, y0, x1, y1], fill=color, width=max(1, int(r * 0.08)))
    for x, y in centres:
        s = r * lobe_size * rng.uniform(0.85, 1.15)
        _disc(draw, x, y, s, s * rng.uniform(0.75, 1.0), _jitter(rng, color, 10))


def _draw_lymphocyte(draw, rng, cx, cy, r):
    _disc(draw, cx, cy, r, r, _jitter(rng, (165, 175, 220)))
    dx, dy = rng.normal(0, r * 0.05, size=2)
    nr = r * rng.uniform(0.8, 0.88)
    _disc(draw, cx + dx, cy + dy, nr, nr * rng.uniform(0.92, 1.0), _jitter(rng, (75, 35, 115)))
    _granules(draw, rng, cx + dx, cy + dy, nr * 0.9, 40, (55, 20, 90), r * 0.05)


def _draw_neutrophil(draw, rng, cx, cy, r):
    _disc(draw, cx, cy, r, r, _jitter(rng, (225, 195, 215)))
    _granules(draw, rng, cx, cy, r * 0.95, 120, (195, 150, 190), r * 0.03)
    _lobed_nucleus(draw, rng, cx, cy, r, int(rng.integers(3, 6)), (100, 45, 140), 0.24)


def _draw_eosinophil(draw, rng, cx, cy, r):
    _disc(draw, cx, cy, r, r, _jitter(rng, (235, 170, 140)))
    _granules(draw, rng, cx, cy, r * 0.95, 160, (225, 105, 65), r * 0.05)
    _lobed_nucleus(draw, rng, cx, cy, r, 2, (105, 50, 130), 0.32)


def _draw_monocyte(draw, rng, cx, cy, r):
    r *= 1.15
    _disc(draw, cx, cy, r, r * rng.uniform(0.85, 1.0), _jitter(rng, (180, 170, 205)))
    for _ in range(int(rng.integers(2, 6))):  # vacuoles
        a, d = rng.uniform(0, 2 * math.pi), r * rng.uniform(0.5, 0.8)
        s = r * rng.uniform(0.05, 0.1)
        _disc(draw, cx + d * math.cos(a), cy + d * math.sin(a), s, s, (230, 225, 240))
    nr = r * 0.55
    _disc(draw, cx, cy, nr * 1.2, nr, _jitter(rng, (120, 80, 160)))
    a = rng.uniform(0, 2 * math.pi)  # the kidney's notch
    _disc(
        draw,
        cx + nr * math.cos(a),
        cy + nr * math.sin(a),
        nr * 0.5,
        nr * 0.5,
        _jitter(rng, (180, 170, 205)),
    )


def _draw_basophil(draw, rng, cx, cy, r):
    r *= 0.9
    _disc(draw, cx, cy, r, r, _jitter(rng, (200, 175, 215)))
    _lobed_nucleus(draw, rng, cx, cy, r, 2, (95, 50, 135), 0.35)
    _granules(draw, rng, cx, cy, r * 0.95, 90, (45, 15, 75), r * 0.08)


def _draw_platelet(draw, rng, cx, cy, r):
    for _ in range(int(rng.integers(1, 4))):
        dx, dy = rng.normal(0, r * 0.25, size=2)
        s = r * rng.uniform(0.12, 0.2)
        _disc(draw, cx + dx, cy + dy, s, s * rng.uniform(0.6, 1.0), _jitter(rng, (150, 110, 190)))
        _granules(draw, rng, cx + dx, cy + dy, s * 0.7, 8, (90, 40, 130), s * 0.15)


DRAWERS = {
    "lymphocyte": _draw_lymphocyte,
    "neutrophil": _draw_neutrophil,
    "eosinophil": _draw_eosinophil,
    "monocyte": _draw_monocyte,
    "basophil": _draw_basophil,
    "platelet": _draw_platelet,
}
SYNTH_CLASSES = tuple(DRAWERS)


def draw_cell(cell_class: str, size: int, rng: np.random.Generator) -> Image.Image:
    """One simulated image of ``cell_class``, ``size`` x ``size`` RGB."""
    side = size * SUPERSAMPLE
    background = _jitter(rng, (238, 218, 224), 8)
    img = Image.new("RGB", (side, side), background)
    draw = ImageDraw.Draw(img)
    _red_cells(draw, rng, side)
    r = side * rng.uniform(0.22, 0.3)
    cx, cy = side / 2 + rng.normal(0, side * 0.06, size=2)
    DRAWERS[cell_class](draw, rng, cx, cy, r)
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.8, 2.0)))
    img = img.resize((size, size), Image.Resampling.BILINEAR)
    arr = np.asarray(img, np.float32) * rng.uniform(0.92, 1.08)  # exposure
    arr += rng.normal(0, rng.uniform(2, 7), size=arr.shape)  # sensor noise
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def make_synthetic(
    out: str | Path,
    classes=("lymphocyte", "neutrophil"),
    per_class: int = 50,
    size: int = 128,
    seed: int = 0,
    overwrite: bool = False,
    show_progress: bool = True,
) -> Path:
    """Write ``per_class`` PNG images per class into ``out/<class>/``. Returns ``out``."""
    out = Path(out)
    unknown = [c for c in classes if c not in DRAWERS]
    if unknown:
        raise HematoVisionError(
            f"no simulator for class(es) {', '.join(unknown)}; "
            f"available: {', '.join(SYNTH_CLASSES)}"
        )
    if len(set(classes)) < 1 or per_class < 1:
        raise HematoVisionError("need at least one class and --per-class >= 1")
    if size < 32:
        raise HematoVisionError(f"--size {size} is too small; at least 32 px")
    output_folder(out, make=False)  # not a file
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise HematoVisionError(f"{out} exists and is not empty; pass --overwrite to replace it")
    with progress_bar("simulating", len(classes) * per_class, enabled=show_progress) as bar:
        for name in classes:
            folder = out / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                rng = np.random.default_rng([seed, SYNTH_CLASSES.index(name), i])
                draw_cell(name, size, rng).save(folder / f"{name}_{i:04d}.png")
                bar.advance()
    return out
