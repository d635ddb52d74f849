"""Copies of one cell among a data set's crops, so that a split keeps each cell on one side.

Some data sets (LISC) hold several shifted, rescaled or padded copies of each cell. Copies are
the same pixels moved: ORB keypoints of two copies match, and one similarity transform (fitted
by RANSAC) explains the matches; two different cells share almost none. RANSAC on every pair
of a class would take hours, so it checks only the pairs where many of one image's keypoint
descriptors have a near descriptor in the other (one matrix product per image). Groups
are the connected components of the matches.
``benchmarks/bench_lisc_groups.py`` measures the rule on LISC.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
from PIL import Image

from ..files import sha256_file, write_atomic
from ..progress import progress_bar
from .cache import cache_root

SAME_CELL_INLIERS = 20  # copies of one cell: median ~200; crops of two classes: 99th percentile ~5
NEAR_BITS = 32  # of ORB's 256: a descriptor's copy in a moved image is nearer than this
MIN_VOTES = 10  # near descriptors, both ways, for RANSAC to check a pair (two cells: 99.9th pct ~5)
MIN_MATCHES = 10  # descriptor matches (cross-checked, ratio test) below which RANSAC is skipped
BLOCK_DESCRIPTORS = 30_000  # other images' descriptors compared at once (about 30 MB in float32)
GROUPING_REVISION = 1  # raised whenever the rule changes: cached groups are keyed on it


def keypoints(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """ORB keypoints (row, column) and binary descriptors of an image's grey pixels."""
    from skimage.feature import ORB

    orb = ORB(n_keypoints=300, fast_threshold=0.05)
    try:
        orb.detect_and_extract(np.asarray(Image.open(path).convert("L"), np.float32) / 255)
    except (RuntimeError, OSError):  # a flat image has too few corners; a broken file none
        return np.zeros((0, 2)), np.zeros((0, 256), bool)
    return orb.keypoints, orb.descriptors


def shared_keypoints(a, b) -> int:
    """How many keypoint matches of two images one similarity transform explains (0 when the
    matches are too few for RANSAC to be worth running: two different cells give under 15)."""
    from skimage.feature import match_descriptors
    from skimage.measure import ransac
    from skimage.transform import SimilarityTransform

    (ka, da), (kb, db) = a, b
    if min(len(ka), len(kb)) < MIN_MATCHES:
        return 0
    matches = match_descriptors(da, db, cross_check=True, max_ratio=0.8)  # Lowe's ratio test
    if len(matches) < MIN_MATCHES:
        return 0
    src, dst = ka[matches[:, 0]][:, ::-1], kb[matches[:, 1]][:, ::-1]  # (x, y) for the fit
    # Two matches fix a similarity; stopping at the inliers needed keeps true copies cheap.
    _, kept = ransac(
        (src, dst),
        SimilarityTransform,
        min_samples=2,
        residual_threshold=2,
        max_trials=200,
        stop_sample_num=SAME_CELL_INLIERS,
        rng=0,
    )
    return 0 if kept is None else int(kept.sum())


def candidate_pairs(points: list[tuple[np.ndarray, np.ndarray]], bar=None) -> np.ndarray:
    """Pairs (i < j) of images where at least ``MIN_VOTES`` descriptors of one have a descriptor
    within ``NEAR_BITS`` (Hamming distance) in the other, counted both ways: an (n, 2) array.

    A radius, not the nearest image: where a data set holds an exact twin, the twin would take
    every nearest-descriptor vote and hide the cell's other copies. The cost grows with the
    square of the images (LISC's 306 monocytes: about a minute on 2 cores); the other images'
    descriptors are compared a block at a time, so memory stays bounded."""
    sizes = np.array([len(d) for _, d in points])
    start = np.concatenate([[0], np.cumsum(sizes)])
    bits = np.concatenate([d for _, d in points]).astype(np.uint8)  # 0/1, converted per block
    described = np.flatnonzero(sizes)  # images with no keypoints take no part
    votes = np.zeros((len(points), len(points)), np.int64)
    for block in _blocks(sizes):
        others = block[sizes[block] > 0]
        if not len(others):
            continue
        target = bits[start[block[0]] : start[block[-1] + 1]].astype(np.float32)
        target_ones = target.sum(1)
        for i in described:
            query = bits[start[i] : start[i + 1]].astype(np.float32)
            distance = query.sum(1)[:, None] + target_ones[None, :] - 2 * (query @ target.T)
            nearest = np.minimum.reduceat(distance, start[others] - start[block[0]], axis=1)
            votes[i, others] = (nearest <= NEAR_BITS).sum(0)
            if bar is not None:
                bar.advance()
    return np.argwhere(np.triu(votes + votes.T >= MIN_VOTES, 1))


def near_duplicate_groups(paths: list[Path], show_progress: bool = False) -> np.ndarray:
    """A group number per image; images of one group show the same cell.

    Computed once per set of files (cached by content under ``$HEMATOVISION_CACHE``): minutes
    for LISC's 1,287 crops on 2 cores."""
    n = len(paths)
    if n < 2:
        return np.zeros(n, dtype=np.int64)
    cached = _cache_file(paths)
    groups = _read_groups(cached, n)
    if groups is not None:
        return groups
    title = "finding copies of one cell"
    with progress_bar(f"{title}: keypoints", n, show_progress) as bar:
        points = []
        for path in paths:
            points.append(keypoints(path))
            bar.advance()
    steps = sum(len(d) > 0 for _, d in points) * len(_blocks([len(d) for _, d in points]))
    with progress_bar(f"{title}: near descriptors", steps, show_progress) as bar:
        pairs = candidate_pairs(points, bar)
    with progress_bar(f"{title}: matches", len(pairs), show_progress) as bar:
        edges = []
        for i, j in pairs:
            if shared_keypoints(points[i], points[j]) >= SAME_CELL_INLIERS:
                edges.append((i, j))
            bar.advance()
    groups = _components(n, edges)
    if cached is not None:
        buffer = io.BytesIO()
        np.save(buffer, groups, allow_pickle=False)
        write_atomic(cached, buffer.getvalue())
    return groups


def groups_by_class(folder, show_progress: bool = False) -> np.ndarray:
    """A group per image of an ``ImageFolder``, ``<class>/<n>``: copies of one cell are of one
    class, and grouping class by class costs a fraction of all at once (the cost is quadratic)."""
    groups = np.empty(len(folder), dtype=object)
    labels = np.asarray(folder.labels)
    for c, name in enumerate(folder.classes):
        where = np.flatnonzero(labels == c)
        found = near_duplicate_groups([folder.paths[i] for i in where], show_progress)
        groups[where] = [f"{name}/{g}" for g in found]
    return groups


def _blocks(sizes) -> list[np.ndarray]:
    """Consecutive images in blocks of about ``BLOCK_DESCRIPTORS`` keypoints."""
    cut = np.cumsum(sizes) // BLOCK_DESCRIPTORS
    return [np.flatnonzero(cut == k) for k in np.unique(cut)]


def _components(n: int, edges: list[tuple[int, int]]) -> np.ndarray:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    e = np.array(edges, dtype=np.int64).reshape(-1, 2)
    graph = coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1].astype(np.int64)


def _read_groups(cached: Path | None, n: int) -> np.ndarray | None:
    if cached is None:
        return None
    try:
        groups = np.load(cached, allow_pickle=False)
    except (OSError, ValueError):  # no entry yet, or a damaged one: computed again
        return None
    return groups if groups.shape == (n,) else None


def _cache_file(paths: list[Path]) -> Path | None:
    root = cache_root()
    if root is None:
        return None
    digest = hashlib.sha256(f"revision {GROUPING_REVISION}\n".encode())
    for path in paths:
        digest.update(sha256_file(path).encode())
    return root / "groups" / f"{digest.hexdigest()}.npy"
