"""Whole slides (issue 12): seconds per megapixel and peak memory, 30 MP and 300 MP.

Each input is a tiled, JPEG-compressed TIFF of one level (no pyramid, as a stitched scan;
tifffile, written tile by tile, so making it needs no memory either) paved with BCCD fields;
``analyze_slide`` reads it region by region (tiffslide) in a fresh process, whose peak
resident memory (ru_maxrss) is reported; then the overview ``smear`` writes, in another.

    python benchmarks/bench_slide.py [--sizes 30 300]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from _common import DEFAULT_PBC, machine, write_section

BCCD = DEFAULT_PBC.parent / "bccd" / "JPEGImages"
TILE = 512


def write_slide(path: Path, megapixels: float) -> tuple[int, int]:
    """A square-ish slide of ``megapixels`` paved with BCCD fields, tile by tile."""
    fields = np.stack(
        [np.asarray(Image.open(p).convert("RGB")) for p in sorted(BCCD.glob("*.jpg"))[:40]]
    )
    n, h, w = fields.shape[:3]
    side = -(-int((megapixels * 1e6) ** 0.5) // TILE) * TILE  # at least the size asked

    def tile_at(y: int, x: int) -> np.ndarray:
        """A paving of real fields: each band of fields starts at another one."""
        rows, cols = np.arange(y, y + TILE), np.arange(x, x + TILE)
        which = ((rows // h) * 7)[:, None] + (cols // w)[None, :]
        return fields[which % n, (rows % h)[:, None], (cols % w)[None, :]]

    def tiles():
        for y in range(0, side, TILE):
            for x in range(0, side, TILE):
                yield tile_at(y, x)

    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        tif.write(tiles(), shape=(side, side, 3), dtype=np.uint8, tile=(TILE, TILE),
                  photometric="rgb", compression="jpeg", subifds=0)  # fmt: skip
    return side, side


OVERVIEW = (
    "import json, resource, sys, time\n"
    "from hematovision.smear.slide import overview\n"
    "t = time.perf_counter()\n"
    "overview(sys.argv[1], {'white_cells': []})\n"
    "print(json.dumps({'overview_seconds': time.perf_counter() - t,"
    " 'overview_peak_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))\n"
)


def measure(path: Path) -> dict:
    """One analysis in a fresh process: seconds, peak memory, white cells; and the overview
    the CLI writes beside it (2048 px), in another."""
    code = (
        "import json, resource, sys, time\n"
        "from hematovision.smear.slide import analyze_slide\n"
        "t = time.perf_counter()\n"
        "f = analyze_slide(sys.argv[1], show_progress=False)\n"
        "print(json.dumps({'seconds': time.perf_counter() - t, 'white_cells': len(f.white_cells),"
        " 'red_cells': f.red_cells, 'peak_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))\n"
    )
    result = {}
    for script in (code, OVERVIEW):
        done = subprocess.run(
            [sys.executable, "-c", script, str(path)], capture_output=True, text=True
        )
        if done.returncode:
            raise RuntimeError(done.stderr)
        result.update(json.loads(done.stdout.strip().splitlines()[-1]))
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=float, nargs="+", default=[30, 300])
    args = ap.parse_args()
    print(machine(), flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mp in args.sizes:
            path = Path(tmp) / f"slide-{mp:g}mp.tif"
            t = time.perf_counter()
            w, h = write_slide(path, mp)
            made = time.perf_counter() - t
            result = measure(path)
            result.update(megapixels=w * h / 1e6, file_mb=path.stat().st_size / 2**20, made_s=made)
            rows.append(result)
            print(json.dumps(result), flush=True)
            path.unlink()
    body = "\n".join(
        [
            "## Whole slides: seconds per megapixel and peak memory (issue 12)\n",
            f"Machine: {machine()}. Tiled TIFFs (JPEG tiles, one level: no pyramid, as a "
            "stitched scan) paved with BCCD fields, `analyze_slide` (tiles of 2048 px + 256 px "
            "margins, the bundled model) in a fresh process each; then the 2048 px overview "
            f"that `smear` writes, in another. Measured {time.strftime('%Y-%m-%d')}.\n",
            "| slide | file | seconds | s per MP | peak memory | white cells "
            "| overview: seconds, peak memory |",
            "|---|---|---|---|---|---|---|",
            *(
                f"| {r['megapixels']:.0f} MP | {r['file_mb']:.0f} MB | {r['seconds']:.0f} "
                f"| {r['seconds'] / r['megapixels']:.2f} | {r['peak_mb']:.0f} MB | {r['white_cells']} "
                f"| {r['overview_seconds']:.1f} s, {r['overview_peak_mb']:.0f} MB |"
                for r in rows
            ),
            "\nPeak memory follows the tile, not the slide: the 10x larger slide needs about "
            "the same memory.",
        ]
    )
    (Path(__file__).with_name("out")).mkdir(exist_ok=True)
    write_section("slide", body)
    print(body)


if __name__ == "__main__":
    main()
