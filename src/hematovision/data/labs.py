"""Several labs' class-per-folder sets as one training set.

``combine_labs`` links each lab's images into ``OUT/<class>/<lab>/<file>`` (symbolic links: no
copy) and writes ``OUT/meta.csv`` with each file's lab and group. Near-duplicate crops of one
cell (LISC holds about five shifted copies of each; found by ``data.duplicates``) share a
group, so that a split never puts one copy in training and another in test: a "held-out" score
would otherwise be inflated.
Training can then balance labs and classes (``TrainConfig.balance``).
"""

from __future__ import annotations

import csv
import re
import shutil
import tempfile
from pathlib import Path

from ..errors import HematoVisionError
from ..progress import progress_bar
from .duplicates import groups_by_class
from .folders import META, scan_folder


def combine_labs(
    out: str | Path,
    sources: dict[str, str | Path],
    group_duplicates: set[str] = frozenset(),
    overwrite: bool = False,
    show_progress: bool = True,
) -> Path:
    """Link the class-per-folder sets ``sources`` ({lab: folder}) into one data folder.

    ``group_duplicates``: the labs whose images come in near-duplicate copies to group. An
    existing ``out`` is replaced (with ``overwrite``) only once the new folder is complete."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise HematoVisionError(f"{out} is a file, not a folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise HematoVisionError(f"{out} exists; pass --overwrite to replace it")
    bad = [lab for lab in sources if not re.fullmatch(r"[A-Za-z0-9_-]+", lab)]
    if bad:
        raise HematoVisionError(f"lab names are letters, digits, - and _: {', '.join(bad)}")
    unknown = set(group_duplicates) - set(sources)
    if unknown:
        raise HematoVisionError(f"--group-duplicates names no source: {', '.join(sorted(unknown))}")
    folders = {lab: scan_folder(root) for lab, root in sources.items()}  # each one readable
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        rows = []
        for lab, folder in folders.items():
            groups = (
                groups_by_class(folder, show_progress)
                if lab in group_duplicates
                else _one_per_image(folder)
            )
            with progress_bar(f"linking {lab}", len(folder), enabled=show_progress) as bar:
                for path, label, group in zip(folder.paths, folder.labels, groups):
                    name = folder.classes[label]
                    rows.append(_link(work, folder, path, name, lab, f"{lab}/{group}"))
                    bar.advance()
        with open(work / META, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["path", "lab", "group"])
            writer.writerows(rows)
        shutil.rmtree(out, ignore_errors=True)
        work.rename(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # left only where something failed
    return out


def _one_per_image(folder) -> list[str]:
    """``<class>/<n>``, n counting each class's images from 0."""
    seen = dict.fromkeys(folder.classes, 0)
    groups = []
    for label in folder.labels:
        name = folder.classes[label]
        groups.append(f"{name}/{seen[name]}")
        seen[name] += 1
    return groups


def _link(out: Path, folder, path: Path, name: str, lab: str, group: str) -> list[str]:
    inner = Path(*Path(folder.relative(path)).parts[1:])  # below the class folder
    link = out / name / lab / inner
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(path.resolve())
    return [link.relative_to(out).as_posix(), lab, group]
