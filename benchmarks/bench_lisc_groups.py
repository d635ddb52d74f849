"""Are LISC's near-duplicate groups right (issue 11, point 3)?

LISC holds about five shifted, rescaled or black-padded copies of each white cell, numbered one
cell after another. ``data.labs.near_duplicate_groups`` groups them by the similarity of framed
grey thumbnails, so that no cell has copies in both training and test. Here a geometric check
judges each pair of consecutively numbered crops: ORB keypoints (scikit-image) matched and
fitted by RANSAC with a similarity transform. Copies of one cell are the same pixels moved, so
they share many inliers; two different cells share almost none (the control: crops of two
different classes). Counted: consecutive pairs the grouping keeps together and those it splits,
and how many of each match geometrically.

    python benchmarks/bench_lisc_groups.py
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from hematovision.data.labs import near_duplicate_groups

from _common import DEFAULT_PBC, machine, table_head, table_row, write_section

LISC = DEFAULT_PBC.parent / "lisc"
SAME_CELL_INLIERS = 20  # the control's 99th percentile is about 5
CONTROL_PAIRS = 40  # per class


def keypoints(path):
    """ORB keypoints and descriptors of a crop's grey image."""
    from skimage.feature import ORB

    orb = ORB(n_keypoints=300, fast_threshold=0.05)
    try:
        orb.detect_and_extract(np.asarray(Image.open(path).convert("L"), np.float32) / 255)
    except RuntimeError:  # too few corners
        return np.zeros((0, 2)), np.zeros((0, 256), bool)
    return orb.keypoints, orb.descriptors


def inliers(a, b) -> int:
    """Keypoint matches between two crops that one similarity transform explains."""
    from skimage.feature import match_descriptors
    from skimage.measure import ransac
    from skimage.transform import SimilarityTransform

    (ka, da), (kb, db) = a, b
    if len(ka) < 5 or len(kb) < 5:
        return 0
    matches = match_descriptors(da, db, cross_check=True)
    if len(matches) < 5:
        return 0
    src, dst = ka[matches[:, 0]][:, ::-1], kb[matches[:, 1]][:, ::-1]
    _, kept = ransac(
        (src, dst), SimilarityTransform, 3, residual_threshold=2, max_trials=300, rng=0
    )
    return 0 if kept is None else int(kept.sum())


def main() -> None:
    rng = np.random.default_rng(0)
    classes = sorted(p.name for p in LISC.iterdir() if p.is_dir())
    paths = {c: sorted((LISC / c).glob("*.jpg"), key=lambda p: int(p.stem)) for c in classes}
    points = {p: keypoints(p) for c in classes for p in paths[c]}
    pairs = {"kept together": [], "split": [], "control: two classes": []}
    groups = {}
    for n, c in enumerate(classes):
        groups[c] = near_duplicate_groups(paths[c])
        for i in range(len(paths[c]) - 1):
            key = "kept together" if groups[c][i] == groups[c][i + 1] else "split"
            pairs[key].append(inliers(points[paths[c][i]], points[paths[c][i + 1]]))
        other = paths[classes[(n + 1) % len(classes)]]
        for _ in range(CONTROL_PAIRS):
            a, b = paths[c][rng.integers(len(paths[c]))], other[rng.integers(len(other))]
            pairs["control: two classes"].append(inliers(points[a], points[b]))
    sizes = np.concatenate([np.bincount(g) for g in groups.values()])
    lines = [
        "## LISC's near-duplicate groups checked by keypoint matching (issue 11)\n",
        f"Machine: {machine()}. LISC's {sum(map(len, paths.values()))} crops in "
        f"{len(sizes)} groups (largest {sizes.max()}). Consecutively numbered crops of one "
        f"class, judged one cell where at least {SAME_CELL_INLIERS} ORB keypoint matches fit "
        "one similarity transform (RANSAC).\n",
        *table_head(["pairs", "n", "median inliers", f">= {SAME_CELL_INLIERS} (one cell)", "p99"]),
    ]
    for name, counts in pairs.items():
        counts = np.array(counts)
        lines.append(
            table_row(
                [
                    name,
                    len(counts),
                    f"{np.median(counts):.0f}",
                    f"{(counts >= SAME_CELL_INLIERS).sum()} ({(counts >= SAME_CELL_INLIERS).mean():.0%})",
                    f"{np.percentile(counts, 99):.0f}",
                ]
            )
        )
    write_section("lisc_groups", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
