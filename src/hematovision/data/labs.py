"""Several labs' class-per-folder sets as one training set.

``combine_labs`` links each lab's images into ``OUT/<class>/<lab>/<file>`` (symbolic links: no
copy) and writes ``OUT/meta.csv`` with each file's lab and group. Near-duplicate crops of one
cell (LISC holds about five shifted copies of each) share a group, so that a split never puts
one copy in training and another in test: a "held-out" score would otherwise be inflated.
Training can then balance labs and classes (``TrainConfig.balance``).
"""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import HematoVisionError
from ..preprocess import frame_cell, to_rgb
from ..progress import progress_bar
from .folders import META, scan_folder

DUPLICATE_DISTANCE = 0.25  # cosine distance of framed thumbnails below which crops show one cell


def thumbnail_features(paths: list[Path]) -> np.ndarray:
    """Each image framed on its cell (canonical framing), as a standardised 24x24 grey patch:
    shifted copies of one cell become nearly the same vector."""
    rows = []
    for path in paths:
        framed = frame_cell(to_rgb(path))[0].convert("L").resize((24, 24), Image.BILINEAR)
        v = np.asarray(framed, np.float32).ravel()
        rows.append((v - v.mean()) / (v.std() + 1e-6))
    return np.stack(rows)


def near_duplicate_groups(paths: list[Path], distance: float = DUPLICATE_DISTANCE) -> np.ndarray:
    """A group number per image; images of one group show the same cell (average-linkage
    clustering of ``thumbnail_features``; grouping too much is safe, too little is not)."""
    from sklearn.cluster import AgglomerativeClustering

    if len(paths) < 2:
        return np.zeros(len(paths), dtype=np.int64)
    clustering = AgglomerativeClustering(
        n_clusters=None, distance_threshold=distance, metric="cosine", linkage="average"
    )
    return clustering.fit_predict(thumbnail_features(paths))


def combine_labs(
    out: str | Path,
    sources: dict[str, str | Path],
    group_duplicates: set[str] = frozenset(),
    overwrite: bool = False,
    show_progress: bool = True,
) -> Path:
    """Link the class-per-folder sets ``sources`` ({lab: folder}) into one data folder.

    ``group_duplicates``: the labs whose images come in near-duplicate copies to group."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise HematoVisionError(f"{out} exists; pass --overwrite to replace it")
        shutil.rmtree(out)
    bad = [lab for lab in sources if not re.fullmatch(r"[A-Za-z0-9_-]+", lab)]
    if bad:
        raise HematoVisionError(f"lab names are letters, digits, - and _: {', '.join(bad)}")
    unknown = set(group_duplicates) - set(sources)
    if unknown:
        raise HematoVisionError(f"--group-duplicates names no source: {', '.join(sorted(unknown))}")
    rows = []
    for lab, root in sources.items():
        folder = scan_folder(root)
        with progress_bar(f"linking {lab}", len(folder), enabled=show_progress) as bar:
            for c, name in enumerate(folder.classes):
                paths = [p for p, y in zip(folder.paths, folder.labels) if y == c]
                groups = (
                    near_duplicate_groups(paths)
                    if lab in group_duplicates
                    else np.arange(len(paths))
                )
                for path, group in zip(paths, groups):
                    rows.append(_link(out, folder, path, name, lab, f"{lab}/{name}/{group}"))
                    bar.advance()
    with open(out / META, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "lab", "group"])
        writer.writerows(rows)
    return out


def _link(out: Path, folder, path: Path, name: str, lab: str, group: str) -> list[str]:
    inner = Path(*Path(folder.relative(path)).parts[1:])  # below the class folder
    link = out / name / lab / inner
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(path.resolve())
    return [link.relative_to(out).as_posix(), lab, group]
