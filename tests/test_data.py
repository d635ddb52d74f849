import json
import logging
import shutil

import numpy as np
import pytest
from PIL import Image

from hematovision.data import (
    DecodeCache,
    SplitManifest,
    decode_folder,
    inspect_folder,
    make_synthetic,
    normalize_class_name,
    scan_folder,
    stratified_split,
)
from hematovision.errors import HematoVisionError
from hematovision.preprocess import PreprocessSpec

SPEC = PreprocessSpec(input_size=32)


def _tree(root, spec: dict[str, int], size=(40, 40)):
    for cls, n in spec.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            colour = (i * 20 % 255, sum(map(ord, cls)) * 7 % 255, 90)
            Image.new("RGB", size, colour).save(root / cls / f"{i}.png")
    return root


def test_class_names_are_normalised():
    assert normalize_class_name(" Immature Granulocyte ") == "immature_granulocyte"
    assert normalize_class_name("NEUTROPHIL") == "neutrophil"
    assert normalize_class_name("band-neutrophil") == "band_neutrophil"


def test_scan_merges_folders_that_name_the_same_class(tmp_path):
    _tree(tmp_path, {"Lymphocyte": 2, "lymphocyte ": 1, "Neutrophil": 3})
    folder = scan_folder(tmp_path)
    assert folder.classes == ["lymphocyte", "neutrophil"]
    assert folder.counts() == {"lymphocyte": 3, "neutrophil": 3}


def test_missing_and_empty_folders_are_clear_errors(tmp_path):
    with pytest.raises(HematoVisionError, match="not found"):
        scan_folder(tmp_path / "nope")
    (tmp_path / "empty" / "lymphocyte").mkdir(parents=True)
    with pytest.raises(HematoVisionError, match="no images found"):
        scan_folder(tmp_path / "empty")


def test_broken_files_are_skipped_with_a_warning_naming_them(tmp_path, caplog):
    _tree(tmp_path, {"a": 3, "b": 3})
    (tmp_path / "a" / "._mac.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    with caplog.at_level(logging.WARNING, logger="hematovision"):
        decoded = decode_folder(scan_folder(tmp_path), SPEC, DecodeCache(None), show_progress=False)
    assert len(decoded.folder) == 6 and decoded.arrays.shape == (6, 32, 32, 3)
    assert [p.name for p, _ in decoded.folder.skipped] == ["._mac.jpg"]
    assert "._mac.jpg" in caplog.text


def test_a_class_with_no_readable_image_is_an_error_not_a_silent_drop(tmp_path):
    _tree(tmp_path, {"a": 2})
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.jpg").write_text("nope")
    with pytest.raises(HematoVisionError, match="no readable images left in class.*b"):
        decode_folder(scan_folder(tmp_path), SPEC, DecodeCache(None), show_progress=False)


def test_real_pbc_broken_file_is_skipped(pbc_dir, tmp_path):
    """The real PBC archive holds a macOS metadata file named .jpg: it must be skipped, no crash."""
    broken = sorted(pbc_dir.rglob(".*.jpg"))
    assert broken, "expected the macOS metadata file of the real archive"
    for cls in ("neutrophil", "lymphocyte"):
        (tmp_path / cls).mkdir()
        for p in sorted((pbc_dir / cls).glob("[!.]*.jpg"))[:3]:
            shutil.copy(p, tmp_path / cls)
    shutil.copy(broken[0], tmp_path / broken[0].parent.name)
    decoded = decode_folder(scan_folder(tmp_path), SPEC, DecodeCache(None), show_progress=False)
    assert len(decoded.folder) == 6
    assert [p.name for p, _ in decoded.folder.skipped] == [broken[0].name]


def test_decode_cache_is_keyed_by_content(tmp_path):
    data = _tree(tmp_path / "d", {"a": 2, "b": 2})
    cache = DecodeCache(tmp_path / "cache")
    first = decode_folder(scan_folder(data), SPEC, cache, show_progress=False)
    stored = sorted((tmp_path / "cache").rglob("*.npy"))
    assert len(stored) == 4
    # a renamed file is still a hit: same content, same key
    (data / "a" / "0.png").rename(data / "a" / "renamed.png")
    mtimes = {p: p.stat().st_mtime_ns for p in stored}
    again = decode_folder(scan_folder(data), SPEC, cache, show_progress=False)
    assert {p: p.stat().st_mtime_ns for p in stored} == mtimes
    assert np.array_equal(np.sort(first.arrays, axis=0), np.sort(again.arrays, axis=0))
    # an edited file is a miss and gets its own entry
    Image.new("RGB", (40, 40), (1, 2, 3)).save(data / "b" / "0.png")
    decode_folder(scan_folder(data), SPEC, cache, show_progress=False)
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 5
    cached = cache.get(first.sha256[0], SPEC)
    assert cached is not None and cached.shape == (32, 32, 3)


def test_decode_cache_misses_once_the_framing_changes(tmp_path, monkeypatch):
    """Arrays framed by an older frame_cell are not reused: the revision is in the key."""
    from hematovision.data import cache as cache_module

    cache, framed = DecodeCache(tmp_path / "cache"), PreprocessSpec(32, framing="cell")
    cache.put("ab" * 32, framed, np.zeros((32, 32, 3), np.uint8))
    assert cache.get("ab" * 32, framed) is not None
    monkeypatch.setattr(cache_module, "FRAMING_REVISION", cache_module.FRAMING_REVISION + 1)
    assert cache.get("ab" * 32, framed) is None
    assert cache.get("ab" * 32, SPEC) is None  # unframed specs have their own entries


def test_stratified_split_is_deterministic_and_stratified():
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    a = stratified_split(labels, 0.2, 0.1, seed=3)
    b = stratified_split(labels, 0.2, 0.1, seed=3)
    c = stratified_split(labels, 0.2, 0.1, seed=4)
    assert (a == b).all() and not (a == c).all()
    for y in (0, 1, 2):
        share = (a[labels == y] == "test").mean()
        assert abs(share - 0.1) <= 0.05
        assert abs((a[labels == y] == "val").mean() - 0.2) <= 0.05


def test_split_refuses_classes_too_small_to_stratify():
    with pytest.raises(HematoVisionError, match="only 1 image"):
        stratified_split(np.array([0, 0, 0, 1]), 0.2, 0.2, seed=0)


def test_manifest_round_trip_and_hash(tmp_path):
    folder = scan_folder(_tree(tmp_path / "d", {"a": 10, "b": 10}))
    manifest = SplitManifest.build(folder, [f"h{i}" for i in range(20)], 0.2, 0.2, seed=0)
    manifest.save(tmp_path / "split.json")
    loaded = SplitManifest.load(tmp_path / "split.json")
    assert loaded.sha256 == manifest.sha256
    assert json.loads((tmp_path / "split.json").read_text())["counts"]["test"] == {"a": 2, "b": 2}
    assert {f["split"] for f in loaded.files} == {"train", "val", "test"}


def test_inspect_reports_counts_sizes_modes_and_unreadable(tmp_path):
    _tree(tmp_path, {"a": 4, "b": 2})
    Image.new("L", (20, 30)).save(tmp_path / "b" / "gray.png")
    (tmp_path / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    summary = inspect_folder(tmp_path, show_progress=False)
    assert summary["counts"] == {"a": 4, "b": 3}
    assert summary["imbalance_ratio"] == pytest.approx(4 / 3)
    assert summary["sizes"] == {"40x40": 6, "20x30": 1}
    assert summary["modes"] == {"RGB": 6, "L": 1}
    assert [u["path"] for u in summary["unreadable"]] == ["a/broken.jpg"]


def test_synthetic_set_is_deterministic_and_shaped(tmp_path):
    a = make_synthetic(
        tmp_path / "a", ("lymphocyte", "neutrophil"), 3, 128, seed=5, show_progress=False
    )
    b = make_synthetic(
        tmp_path / "b", ("lymphocyte", "neutrophil"), 3, 128, seed=5, show_progress=False
    )
    files = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert len(files) == 6
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes()
        with Image.open(a / rel) as im:
            assert im.size == (128, 128) and im.mode == "RGB"
    with pytest.raises(HematoVisionError, match="exists"):
        make_synthetic(tmp_path / "a", ("lymphocyte",), 1, 64, show_progress=False)
    with pytest.raises(HematoVisionError, match="no simulator"):
        make_synthetic(tmp_path / "c", ("unicorn",), 1, 64, show_progress=False)
