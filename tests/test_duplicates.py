"""Copies of one cell found among a data set's crops (issue 11: group LISC before splitting)."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hematovision.data import duplicates
from hematovision.data.duplicates import (
    SAME_CELL_INLIERS,
    keypoints,
    near_duplicate_groups,
    shared_keypoints,
)


def copies_of(path, out):
    """Copies of a cell made the way LISC's are: shifted, rescaled, black-padded, and exact twins
    of the cell and of its shifted copy (LISC repeats some files: a twin must not hide a copy)."""
    img = Image.open(path).convert("RGB")
    w, h = img.size
    shifted = img.crop((w // 8, h // 10, w, h)).resize(img.size)
    rescaled = img.resize((int(w * 0.8), int(h * 0.8)), Image.BICUBIC)
    padded = img.copy()
    padded.paste((0, 0, 0), (0, 0, w, h // 5))
    made = []
    for name, copy in (("shifted", shifted), ("rescaled", rescaled), ("padded", padded)):
        made.append(out / f"{path.stem}-{name}.jpg")
        copy.save(made[-1], quality=90)
    for original in (path, made[0]):
        made.append(out / f"{original.stem}-twin.jpg")
        shutil.copyfile(original, made[-1])
    return made


def test_copies_of_a_cell_share_a_group_and_other_cells_do_not(pbc_dir, tmp_path):
    cells = sorted((pbc_dir / "neutrophil").glob("[!.]*.jpg"))[:6]
    (tmp_path / "broken.jpg").write_bytes(b"not an image")  # its own group, no error
    paths, cell_of = [*cells, tmp_path / "broken.jpg"], [*range(len(cells)), -1]
    for k, cell in enumerate(cells[:3]):
        copies = copies_of(cell, tmp_path)
        paths += copies
        cell_of += [k] * len(copies)
    groups = near_duplicate_groups(paths)
    assert len(set(groups)) == len(cells) + 1  # one group per cell, one for the broken file
    for k in range(len(cells)):
        assert len({g for g, c in zip(groups, cell_of) if c == k}) == 1
    assert shared_keypoints(keypoints(cells[4]), keypoints(cells[5])) < SAME_CELL_INLIERS


def test_lisc_groups_hold_its_copies_and_no_two_groups_share_a_cell(lisc_dir):
    """LISC numbers a cell's copies consecutively; no pair of crops in two groups matches."""
    paths = sorted((lisc_dir / "neutrophil").glob("*.jpg"), key=lambda p: int(p.stem))[:40]
    groups = near_duplicate_groups(paths)
    assert 5 <= len(set(groups)) <= 15 and np.bincount(groups).max() <= 12  # ~5 copies a cell
    assert np.mean(groups[1:] == groups[:-1]) > 0.7
    points = [keypoints(p) for p in paths]
    for i in range(len(paths)):
        for j in range(i + 1, len(paths)):
            if groups[i] != groups[j]:
                assert shared_keypoints(points[i], points[j]) < SAME_CELL_INLIERS, (i, j)


def test_near_descriptors_are_counted_alike_a_block_at_a_time(lisc_dir, monkeypatch):
    paths = sorted((lisc_dir / "eosinophil").glob("*.jpg"), key=lambda p: int(p.stem))[:24]
    points = [keypoints(p) for p in paths]
    points.insert(5, (np.zeros((0, 2)), np.zeros((0, 256), bool)))  # an image without keypoints
    whole = duplicates.candidate_pairs(points)
    assert len(whole) >= 10 and not (whole == 5).any()
    monkeypatch.setattr(duplicates, "BLOCK_DESCRIPTORS", 700)  # about two images a block
    assert len(duplicates._blocks([len(d) for _, d in points])) >= 8
    assert np.array_equal(duplicates.candidate_pairs(points), whole)


def test_groups_are_cached_by_content(lisc_dir, tmp_path, monkeypatch):
    paths = sorted((lisc_dir / "lymphocyte").glob("*.jpg"), key=lambda p: int(p.stem))[:12]
    monkeypatch.setenv("HEMATOVISION_CACHE", str(tmp_path / "cache"))
    first = near_duplicate_groups(paths)
    (entry,) = (tmp_path / "cache" / "groups").glob("*.npy")
    entry.write_bytes(b"damaged")
    assert np.array_equal(near_duplicate_groups(paths), first)  # computed again, entry mended
    assert np.array_equal(np.load(entry), first)

    def no_keypoints(path):
        raise AssertionError("computed again")

    monkeypatch.setattr(duplicates, "keypoints", no_keypoints)
    assert np.array_equal(near_duplicate_groups(paths), first)  # a hit: nothing computed
    monkeypatch.setenv("HEMATOVISION_CACHE", "off")
    with pytest.raises(AssertionError, match="computed again"):  # no cache: computed
        near_duplicate_groups(paths)


def test_adapt_finds_copies_when_a_lab_folder_has_no_meta_csv(pbc_dir, tmp_path):
    """adapt holds out cells, not copies: without meta.csv its groups come from the images."""
    from hematovision.adapt import embed
    from hematovision.artifact import ModelArtifact
    from hematovision.inference import DEFAULT_MODEL

    folder = tmp_path / "lab"
    for name in ("lymphocyte", "neutrophil"):
        (folder / name).mkdir(parents=True)
        for cell in sorted((pbc_dir / name).glob("[!.]*.jpg"))[:3]:
            shutil.copy(cell, folder / name / cell.name)
            copies_of(folder / name / cell.name, folder / name)
    cells = embed(ModelArtifact.load(DEFAULT_MODEL), folder)
    stems = [Path(p).stem.split("-")[0] for p in cells.paths]  # the cell each file shows
    assert len(set(cells.groups)) == len(set(stems)) == 6
    for stem in set(stems):
        assert len({g for g, s in zip(cells.groups, stems) if s == stem}) == 1
