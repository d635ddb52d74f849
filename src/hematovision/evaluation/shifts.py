"""What another lab's camera makes of a single cell, and whether a classifier keeps its
answer under it (the zoom test of the benchmarks and the test suite)."""

from __future__ import annotations

import numpy as np
from PIL import Image


def zoomed(img: Image.Image, z: float) -> Image.Image:
    """The same field of view at zoom ``z``: shrunk onto its median colour, or enlarged and
    centre-cropped (what another camera or objective shows of the same cell)."""
    size = img.size
    scaled = img.resize((round(img.width * z), round(img.height * z)), Image.BILINEAR)
    if z >= 1:
        left, top = (scaled.width - size[0]) // 2, (scaled.height - size[1]) // 2
        return scaled.crop((left, top, left + size[0], top + size[1]))
    fill = tuple(int(v) for v in np.median(np.asarray(img).reshape(-1, 3), axis=0))
    canvas = Image.new("RGB", size, fill)
    canvas.paste(scaled, ((size[0] - scaled.width) // 2, (size[1] - scaled.height) // 2))
    return canvas


def zoom_agreement(classifier, pictures: list[Image.Image], zooms) -> dict[float, float]:
    """For each zoom, the share of ``pictures`` whose class is the one they get at 1x."""
    base = [p.label for p in classifier.predict(pictures)]
    agreement = {}
    for z in zooms:
        labels = [p.label for p in classifier.predict([zoomed(x, z) for x in pictures])]
        agreement[z] = float(np.mean([a == b for a, b in zip(labels, base)]))
    return agreement
