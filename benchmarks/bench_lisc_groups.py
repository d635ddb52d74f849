"""Are LISC's near-duplicate groups right (issue 11, point 3)?

LISC holds about five shifted, rescaled or black-padded copies of each white cell, numbered one
cell after another. ``data.duplicates.near_duplicate_groups`` groups them (ORB keypoints,
nearest-descriptor votes, RANSAC), so that no cell has copies in both training and test. Here the
groups are judged on pairs the rule did not choose to check: every pair of consecutively numbered
crops, and a random sample of pairs of one class in two groups, each judged by the same
geometric test (at least ``SAME_CELL_INLIERS`` matches one similarity transform explains). A
pair in two groups that matches is a cell whose copies a split can put on both sides. The
control: pairs of crops of two classes, which can never be one cell.

    python benchmarks/bench_lisc_groups.py [--rescore RUN ...]

``--rescore``: a training run's LISC test images scored again, apart by whether a copy of the
cell (by today's groups) was in its training or validation split.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from hematovision.data.duplicates import (
    SAME_CELL_INLIERS,
    keypoints,
    near_duplicate_groups,
    shared_keypoints,
)

from _common import DEFAULT_PBC, machine, table_head, table_row, write_section

LISC = DEFAULT_PBC.parent / "lisc"
CONTROL_PAIRS = 40  # per class
SPLIT_SAMPLE = 400  # random pairs of one class in two groups, per class


def pair_rows(paths, points, groups, rng) -> dict[str, list[int]]:
    """Shared keypoints of one class's consecutive pairs and of random pairs in two groups."""
    rows = {"consecutive, one group": [], "consecutive, two groups": [], "random, two groups": []}
    for i in range(len(paths) - 1):
        key = "consecutive, one group" if groups[i] == groups[i + 1] else "consecutive, two groups"
        rows[key].append(shared_keypoints(points[paths[i]], points[paths[i + 1]]))
    while len(rows["random, two groups"]) < SPLIT_SAMPLE:
        i, j = rng.choice(len(paths), 2, replace=False)
        if groups[i] != groups[j]:
            rows["random, two groups"].append(shared_keypoints(points[paths[i]], points[paths[j]]))
    return rows


def rescore(run, groups: dict[str, np.ndarray], paths: dict) -> list[str]:
    """A run's LISC test accuracy on cells with a copy in its training or validation split, and
    on cells wholly in test."""
    split = json.loads((run / "split.json").read_text())
    tests = [f for f in split["files"] if f["split"] == "test"]
    probs = np.load(run / "test_probs.npy")
    assert len(probs) == len(tests), f"{run}: {len(probs)} scores for {len(tests)} test images"
    group_of = {(c, p.name): f"{c}/{g}" for c in groups for p, g in zip(paths[c], groups[c])}
    cell = {  # each LISC file of the run: its cell by today's groups
        f["path"]: group_of[(f["label"], f["path"].rsplit("/", 1)[-1])]
        for f in split["files"]
        if f.get("lab") == "lisc"
    }
    sides = {}
    for f in split["files"]:
        if f["path"] in cell:
            sides.setdefault(cell[f["path"]], set()).add(f["split"])
    correct, leaked = [], []
    for f, p in zip(tests, probs):
        if f["path"] in cell:
            correct.append(split["classes"][int(p.argmax())] == f["label"])
            leaked.append(sides[cell[f["path"]]] != {"test"})
    correct, leaked = np.array(correct), np.array(leaked)
    return [
        run.name,
        f"{correct.mean():.1%} of {len(correct)}",
        f"{correct[leaked].mean():.1%} of {leaked.sum()}" if leaked.any() else "none",
        f"{correct[~leaked].mean():.1%} of {(~leaked).sum()}" if (~leaked).any() else "none",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rescore", nargs="+", default=[], metavar="RUN", help="training runs")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    classes = sorted(p.name for p in LISC.iterdir() if p.is_dir())
    paths = {c: sorted((LISC / c).glob("*.jpg"), key=lambda p: int(p.stem)) for c in classes}
    with tempfile.TemporaryDirectory() as cache:  # timed from nothing, not from a user's cache
        os.environ["HEMATOVISION_CACHE"] = cache
        start = time.perf_counter()
        groups = {c: near_duplicate_groups(paths[c], show_progress=True) for c in classes}
        minutes = (time.perf_counter() - start) / 60
    points = {p: keypoints(p) for c in classes for p in paths[c]}
    pairs = {}
    for n, c in enumerate(classes):
        for key, counts in pair_rows(paths[c], points, groups[c], rng).items():
            pairs.setdefault(key, []).extend(counts)
        other = paths[classes[(n + 1) % len(classes)]]
        for _ in range(CONTROL_PAIRS):
            a, b = paths[c][rng.integers(len(paths[c]))], other[rng.integers(len(other))]
            pairs.setdefault("control: two classes", []).append(
                shared_keypoints(points[a], points[b])
            )
    sizes = np.concatenate([np.bincount(g) for g in groups.values()])
    lines = [
        "## LISC's near-duplicate groups checked by keypoint matching (issue 11)\n",
        f"Machine: {machine()}. LISC's {sum(map(len, paths.values()))} crops in "
        f"{len(sizes)} groups (largest {sizes.max()}, median {np.median(sizes):.0f}), found in "
        f"{minutes:.1f} min. A pair is judged one cell where at least {SAME_CELL_INLIERS} ORB "
        "keypoint matches fit one similarity transform (RANSAC).\n",
        *table_head(["pairs", "n", "median inliers", f">= {SAME_CELL_INLIERS} (one cell)", "p99"]),
    ]
    for name, counts in pairs.items():
        counts = np.array(counts)
        same = counts >= SAME_CELL_INLIERS
        lines.append(
            table_row(
                [
                    name,
                    len(counts),
                    f"{np.median(counts):.0f}",
                    f"{same.sum()} ({same.mean():.0%})",
                    f"{np.percentile(counts, 99):.0f}",
                ]
            )
        )
    if args.rescore:
        lines += [
            "",
            "Runs' LISC test images scored again by today's groups: cells with a copy in the "
            "run's training or validation split against cells wholly in test.\n",
            *table_head(["run", "LISC test", "a copy in train/val", "wholly in test"]),
            *(table_row(rescore(Path(r), groups, paths)) for r in args.rescore),
        ]
    write_section("lisc_groups", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
