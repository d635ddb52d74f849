"""What is in a data folder: class balance, image sizes and modes, broken files."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from ..progress import progress_bar
from .folders import scan_folder


def _probe(path: Path):
    try:
        with Image.open(path) as img:
            size, mode = img.size, img.mode
            img.load()  # a full decode: catches truncated files that verify() lets through
        return size, mode, None
    except Exception as exc:  # noqa: BLE001 - any decoder failure means "unreadable"
        return None, None, f"{type(exc).__name__}: {exc}"


def inspect_folder(root: str | Path, show_progress: bool = True) -> dict:
    """Summarise a class-per-folder data set: counts, imbalance, sizes, modes, unreadable files."""
    folder = scan_folder(root)
    sizes, modes, unreadable = Counter(), Counter(), []
    ok_counts = Counter()
    with (
        progress_bar("inspecting", len(folder), enabled=show_progress) as bar,
        ThreadPoolExecutor(max_workers=2) as pool,
    ):
        for path, label, (size, mode, err) in zip(
            folder.paths, folder.labels, pool.map(_probe, folder.paths)
        ):
            if err is None:
                sizes[f"{size[0]}x{size[1]}"] += 1
                modes[mode] += 1
                ok_counts[folder.classes[label]] += 1
            else:
                unreadable.append({"path": folder.relative(path), "error": err})
            bar.advance()
    counts = {c: ok_counts.get(c, 0) for c in folder.classes}
    nonzero = [n for n in counts.values() if n]
    return {
        "root": str(folder.root),
        "classes": folder.classes,
        "total": sum(counts.values()),
        "counts": counts,
        "imbalance_ratio": (max(nonzero) / min(nonzero)) if nonzero else None,
        "sizes": dict(sizes.most_common()),
        "modes": dict(modes.most_common()),
        "unreadable": unreadable,
    }
