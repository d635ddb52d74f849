"""Test-time augmentation on the bundled model: what the 8 flips and turns buy, and cost (issue 11).

The same artifact with and without TTA, side by side, on its own labs' held-out cells (PBC and
LISC test split of today's split, BCCD's odd fields): accuracy, macro-F1, wrong and not
flagged, flagged, ECE; and the time of ``Classifier.predict`` per image (one image, one
inference thread, and 256 paths in batches of 32 with 2 threads), medians of repeats.
The other measurements of TTA (models that never saw a lab, or a class) are
bench_uncertainty.py's and bench_unknown_class.py's.

    python benchmarks/bench_tta.py
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from bench_crosslab import score
from bench_sample_flags import bundled_cell_sets
from hematovision.inference import DEFAULT_MODEL, Classifier

from _common import machine, table_head, table_row, write_section

REPEATS = 5


def ms_per_image(clf: Classifier, paths: list[Path], batch_size: int, repeats: int) -> float:
    """The median over ``repeats`` of ``Classifier.predict``'s milliseconds per image: the
    first path alone (``batch_size`` 1), or all of them in batches."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        clf.predict(paths if batch_size > 1 else paths[0], batch_size=batch_size)
        times.append((time.perf_counter() - start) / (len(paths) if batch_size > 1 else 1))
    return 1000 * statistics.median(times)


def main() -> None:
    print(machine())
    plain = Classifier.load(DEFAULT_MODEL, tta=False, engine="onnxruntime", threads=1)
    tta = Classifier.load(DEFAULT_MODEL, tta=True, engine="onnxruntime", threads=1)
    sets = bundled_cell_sets(plain.classes)
    rows = {}
    for name, (paths, labels) in sets.items():
        rows[name] = {"plain": score(plain, paths, labels), "tta": score(tta, paths, labels)}
        print(name, rows[name])
    pbc = sets["pbc test split"][0]
    single = {
        k: statistics.median(ms_per_image(c, [p], 1, REPEATS) for p in pbc[:20])
        for k, c in {"plain": plain, "tta": tta}.items()
    }
    batched = {
        k: ms_per_image(
            Classifier.load(DEFAULT_MODEL, tta=k == "tta", engine="onnxruntime", threads=2),
            pbc[:256],
            32,
            3,
        )
        for k in ("plain", "tta")
    }
    print(single, batched)
    lines = [
        "## Test-time augmentation on the bundled model (issue 11)",
        "",
        f"Machine: {machine()}. The bundled model on ONNX Runtime fp32 without and with TTA "
        "(the 8 flips and quarter turns averaged; a cell is also flagged where fewer than 75% of "
        "the views agree). Accuracy / wrong and not flagged / flagged, then macro-F1 and ECE.",
        "",
        *table_head(["cells", "n", "without TTA", "with TTA", "macro-F1", "ECE"]),
    ]
    for name, r in rows.items():
        p, t = r["plain"], r["tta"]
        lines.append(
            table_row(
                [
                    name,
                    p["n"],
                    f"{p['accuracy']:.2%} / {p['wrong_unflagged']:.2%} / {p['flagged']:.1%}",
                    f"{t['accuracy']:.2%} / {t['wrong_unflagged']:.2%} / {t['flagged']:.1%}",
                    f"{p['f1_macro']:.3f} -> {t['f1_macro']:.3f}",
                    f"{p['ece']:.3f} -> {t['ece']:.3f}",
                ]
            )
        )
    ratio = single["tta"] / single["plain"]
    lines += [
        "",
        f"Time per image (`Classifier.predict`, PBC, median): one image with 1 thread "
        f"{single['plain']:.1f} ms without, {single['tta']:.1f} ms with TTA "
        f"({ratio:.1f}x); 256 paths in batches of 32 with 2 threads {batched['plain']:.1f} / "
        f"{batched['tta']:.1f} ms per image ({batched['tta'] / batched['plain']:.1f}x).",
    ]
    write_section("tta", "\n".join(lines))


if __name__ == "__main__":
    main()
