"""The head refit of ``hematovision adapt``: its time with the process's BLAS threads and with one.

``adapt`` refits the classifier's last layer with L-BFGS (scipy) 7 times (the pull's
cross-validation, then the chosen one). Its matrix products are small (a few thousand feature
rows by 1,280); with numpy's and scipy's OpenBLAS both at the machine's thread count, the two
pools' threads spin against each other. Side by side on the same cells: ``fit_lab_head`` with
``FIT_BLAS_THREADS`` None (every BLAS as the process has it) and 1; medians of repeats, the
ratio, and how far the two heads lie apart. Cells: LISC's first ``--per-class`` crops of each
class, embedded by the bundled model (8 views each), all of them fitted.

    python benchmarks/bench_head_fit.py [--per-class 30] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from hematovision import adapt
from hematovision.artifact import ModelArtifact
from hematovision.inference import DEFAULT_MODEL

from _common import DEFAULT_PBC, machine, table_head, table_row, write_section

LISC = DEFAULT_PBC.parent / "lisc"


def lab_cells(base: ModelArtifact, per_class: int) -> adapt.LabCells:
    """LISC's first ``per_class`` crops of each class, embedded as ``adapt`` embeds a lab."""
    with tempfile.TemporaryDirectory() as tmp:
        for folder in sorted(p for p in LISC.iterdir() if p.is_dir()):
            (Path(tmp) / folder.name).mkdir()
            for path in sorted(folder.glob("*.jpg"))[:per_class]:
                (Path(tmp) / folder.name / path.name).symlink_to(path)
        return adapt.embed(base, tmp)


def timed_fit(cells: adapt.LabCells, head, anchors, threads: int | None):
    """Seconds of one ``fit_lab_head`` with ``FIT_BLAS_THREADS`` = ``threads``, and its head."""
    adapt.FIT_BLAS_THREADS = threads
    start = time.perf_counter()
    w, b, pull, _ = adapt.fit_lab_head(cells.views, cells.labels, cells.groups, *head, anchors)
    return time.perf_counter() - start, (w, b, pull)


def compare(one, other, cells: adapt.LabCells, anchors) -> str:
    """How far two fitted heads lie apart: weights, chosen pull, answers on cells and anchors."""
    (w1, b1, pull1), (w2, b2, pull2) = one, other
    weights = float(np.abs(w1 - w2).max() / np.abs(w1).max())

    def answers(w, b, x):
        return (x @ w.T + b).argmax(-1)

    x = cells.views.reshape(-1, cells.views.shape[-1])
    same = [(answers(w1, b1, f) == answers(w2, b2, f)).mean() for f in (x, anchors)]
    return (
        f"The two heads: weights apart by at most {weights:.1%} of the largest weight, "
        f"pull {pull1:g} and {pull2:g}, the same class for {same[0]:.2%} of the cells' views "
        f"and {same[1]:.2%} of the anchors."
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--per-class", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(machine())
    base = ModelArtifact.load(DEFAULT_MODEL)
    cells = lab_cells(base, args.per_class)
    head, anchors = adapt.head_weights(base), adapt.anchor_features(base)
    settings = {"process's threads": None, "1 thread": 1}
    seconds = {name: [] for name in settings}
    heads = {}
    for _ in range(args.repeats):  # interleaved, so that a slower moment hits both
        for name, threads in settings.items():
            spent, heads[name] = timed_fit(cells, head, anchors, threads)
            seconds[name].append(spent)
            print(f"{name}: {spent:.2f} s")
    median = {name: statistics.median(s) for name, s in seconds.items()}
    n, views = cells.views.shape[:2]
    lines = [
        "## The head refit of `adapt`: BLAS threads (issue 11)",
        "",
        f"Machine: {machine()}. `fit_lab_head` on {n} LISC crops ({args.per_class} per class, "
        f"{views} views each, embedded by the bundled model) and the bundled model's "
        f"{len(anchors)} anchors: the pull's cross-validation and the final fit. Median of "
        f"{args.repeats}, interleaved.",
        "",
        *table_head(["BLAS threads while fitting", "seconds", "ratio"]),
    ]
    slowest = max(median.values())
    for name, value in median.items():
        lines.append(table_row([name, f"{value:.2f}", f"{slowest / value:.1f}x"]))
    lines += ["", compare(*heads.values(), cells, anchors)]
    write_section("head_fit", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
