"""Smear fields: white-cell detection on real BCCD fields, counts, annotation, bad input."""

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hematovision.cli import main
from hematovision.data.bccd import match, voc_boxes
from hematovision.errors import HematoVisionError
from hematovision.smear import analyze_smear, annotate, field_differential, locate_cells


@pytest.fixture(scope="module")
def bccd(bccd_dir):
    return bccd_dir


def _fields(bccd, n=12):
    return sorted((bccd / "JPEGImages").glob("*.jpg"))[1 : 2 * n : 2]  # odd (held-out) fields


def test_white_cells_are_found_on_real_fields(bccd):
    tp = fp = fn = 0
    for image in _fields(bccd):
        truth = voc_boxes(bccd / "Annotations" / f"{image.stem}.xml")["WBC"]
        found = locate_cells(np.asarray(Image.open(image).convert("RGB")))
        boxes, red, platelets = found.white_cells, len(found.red_cells), len(found.platelets)
        pairs = match(boxes, truth)
        tp, fp, fn = tp + len(pairs), fp + len(boxes) - len(pairs), fn + len(truth) - len(pairs)
        assert red > 0 and platelets >= 0
    assert tp / (tp + fn) >= 0.9 and tp / (tp + fp) >= 0.9


def test_analysis_shape_counts_and_annotation(bccd):
    image = _fields(bccd, 1)[0]
    result = analyze_smear(image)
    assert result.width == 640 and result.height == 480 and result.path == str(image.resolve())
    assert len(result.white_cells) >= 1
    for cell in result.white_cells:
        x1, y1, x2, y2 = cell.box
        assert 0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 480
        assert cell.label and 0 <= cell.confidence <= 1
    diff = field_differential([result.to_dict(), result.to_dict()])
    classified = diff.counted + diff.to_review + diff.nucleated_red_cells
    assert classified + diff.platelets - 2 * result.platelets == 2 * len(result.white_cells)
    if diff.counted:
        assert sum(diff.percent(c) for c in diff.white_cells) == pytest.approx(100, abs=0.5)
    drawn = np.asarray(annotate(image, result.to_dict())).astype(int)
    original = np.asarray(Image.open(image).convert("RGB")).astype(int)
    x1, y1, x2, y2 = result.white_cells[0].box
    assert drawn.shape == original.shape
    assert np.abs(drawn[y1 + 20, x1] - original[y1 + 20, x1]).sum() > 30  # the box's left edge
    assert np.array_equal(drawn[-1, -1], original[-1, -1]) or len(result.white_cells) > 1


def test_a_field_without_white_cells_reports_none(bccd):
    image = _fields(bccd, 1)[0]
    picture = Image.open(image).convert("RGB")
    truth = voc_boxes(bccd / "Annotations" / f"{image.stem}.xml")["WBC"]
    x1, _, x2, _ = truth[0]
    # the widest strip of the field with no white cell in it
    strip = (
        picture.crop((0, 0, int(x1) - 5, 480))
        if x1 > 640 - x2
        else picture.crop((int(x2) + 5, 0, 640, 480))
    )
    result = analyze_smear(strip)
    assert result.white_cells == [] and result.red_cells > 0
    blank = analyze_smear(Image.new("RGB", (640, 480), (230, 225, 235)))
    assert blank.white_cells == [] and blank.red_cells == 0


def test_grayscale_field_finds_nothing_and_says_why(bccd):
    image = _fields(bccd, 1)[0]
    result = analyze_smear(Image.open(image).convert("L"))
    assert result.white_cells == [] and "grayscale" in result.warnings[0]


def test_too_large_and_corrupt_inputs_are_clear_errors(tmp_path):
    with pytest.raises(HematoVisionError, match="larger than a smear field"):
        analyze_smear(np.zeros((4500, 4500, 3), np.uint8), classify=False)
    bad = tmp_path / "field.jpg"
    bad.write_bytes(b"\xff\xd8\xff not really")
    with pytest.raises(HematoVisionError, match="field.jpg"):
        analyze_smear(bad)


def test_smear_cli_json_and_exit_code(bccd, tmp_path, capsys):
    fields = [str(p) for p in _fields(bccd, 2)]
    bad = tmp_path / "broken.jpg"
    bad.write_text("nope")
    code = main(
        ["-q", "smear", *fields, str(bad), "--format", "json", "--out", str(tmp_path / "ann")]
    )
    captured = capsys.readouterr()
    assert code == 1 and "broken.jpg" in captured.err
    body = json.loads(captured.out)
    assert [f["path"] for f in body["fields"]] == [str(Path(f).resolve()) for f in fields]
    cells = [c for f in body["fields"] for c in f["white_cells"]]
    assert cells and all(len(c["box"]) == 4 and c["label"] for c in cells)
    d = body["differential"]
    platelets_classified = d["platelets"] - sum(f["platelets"] for f in body["fields"])
    assert d["white_cells_counted"] + d["to_review"] + d["nucleated_red_cells"][
        "count"
    ] + platelets_classified == len(cells)
    assert len(list((tmp_path / "ann").glob("*_annotated.png"))) == 2


def test_smear_api_and_page(bccd, tmp_path):
    from hematovision.web import create_app
    from hematovision.web.config import WebSettings

    client = create_app(WebSettings(data_dir=str(tmp_path / "d"))).test_client()
    field = _fields(bccd, 1)[0]
    r = client.post(
        "/api/v1/smears",
        data={"file": [(io.BytesIO(field.read_bytes()), field.name)]},
        content_type="multipart/form-data",
    )
    assert r.status_code == 201
    body = r.get_json()
    assert body["fields"][0]["filename"] == field.name and body["fields"][0]["white_cells"]
    assert client.get(r.headers["Location"]).get_json()["id"] == body["id"]
    page = client.get(f"/smears/{body['id']}").data.decode()
    assert 'class="img-fluid rounded annotated"' in page and 'id="differential"' in page
    assert 'id="new-lab"' not in page  # too few cells to say
    fields = _fields(bccd, 30)  # held-out fields: most of their white cells flagged
    r = client.post(
        "/api/v1/smears",
        data={"file": [(io.BytesIO(f.read_bytes()), f.name) for f in fields]},
        content_type="multipart/form-data",
    )
    cells = [c for f in r.get_json()["fields"] for c in f["white_cells"]]
    assert len(cells) >= 20 and all(c["reasons"] for c in cells if c["uncertain"])
    page = client.get(f"/smears/{r.get_json()['id']}").data.decode()
    flagged = sum(c["uncertain"] for c in cells)
    assert f"{flagged} of {len(cells)} cells are flagged for review" in page
    bad = client.post(
        "/api/v1/smears",
        data={"file": [(io.BytesIO(b"text"), "x.jpg")]},
        content_type="multipart/form-data",
    )
    assert bad.status_code == 415


def test_fields_are_classified_by_the_bundled_model_and_its_wrong_cells_are_flagged(bccd):
    """The bundled model never saw the odd-numbered fields' cells; a smear analysis uses it
    (the separate smear model is gone: on a lab it never saw it passed 14.5% of the cells
    wrong and unflagged), and a cell it names wrong goes to review, not into the count."""
    from hematovision.data.bccd import WBC_TYPES, field_labels
    from hematovision.inference import DEFAULT_MODEL
    from hematovision.smear import load_smear_classifier

    labels = field_labels(bccd / "labels.csv")
    clf = load_smear_classifier()
    assert Path(clf.artifact.path).resolve() == DEFAULT_MODEL.resolve()
    right = total = wrong_unflagged = 0
    for image in sorted((bccd / "JPEGImages").glob("*.jpg"))[1::2]:
        kind = labels.get(image.stem)
        if kind not in WBC_TYPES:
            continue
        truth = voc_boxes(bccd / "Annotations" / f"{image.stem}.xml")["WBC"]
        result = analyze_smear(image, clf)
        for i, _ in match([c.box for c in result.white_cells], truth):
            cell = result.white_cells[i]
            total += 1
            right += cell.label == kind
            wrong_unflagged += cell.label != kind and not cell.uncertain
    assert total >= 120 and right / total >= 0.75 and wrong_unflagged <= 1


def test_cell_size_adapts_the_detector_to_another_magnification(bccd):
    from hematovision.smear import SmearParams

    image = _fields(bccd, 1)[0]
    truth = voc_boxes(bccd / "Annotations" / f"{image.stem}.xml")["WBC"]
    assert SmearParams.for_cell_size(200) == SmearParams()
    half = Image.open(image).convert("RGB").resize((320, 240), Image.BILINEAR)
    boxes = locate_cells(np.asarray(half), SmearParams.for_cell_size(100)).white_cells
    scaled_truth = [[v / 2 for v in box] for box in truth]
    assert len(match(boxes, scaled_truth)) == len(truth)


def test_smear_out_writes_one_csv_per_table(bccd, tmp_path, capsys):
    fields = [str(p) for p in _fields(bccd, 2)]
    out = tmp_path / "out"
    assert main(["-q", "smear", *fields, "--format", "csv", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "\r\n\r\n" not in stdout and stdout.splitlines()[0].startswith("field,cell,x1")
    with open(out / "cells.csv") as fh:
        cells = list(csv.DictReader(fh))
    assert {c["field"] for c in cells} == set(fields)
    assert all(c["field_red_cells"].isdigit() and c["field_platelets"].isdigit() for c in cells)
    for field in fields:
        numbers = [c["cell"] for c in cells if c["field"] == field]
        assert numbers in ([""], [str(n) for n in range(1, len(numbers) + 1)])
    with open(out / "differential.csv") as fh:
        rows = {r["class"]: r for r in csv.DictReader(fh)}
    assert {"neutrophil", "white cells counted", "platelets", "to review (not counted)"} <= set(
        rows
    )
    assert len(list(out.glob("*_annotated.png"))) == 2


def test_each_field_finds_its_own_scale_from_its_red_cells(bccd):
    """A field at 0.5x or 1.5x the magnification gives the same white cells, with no
    --cell-size: the size of its red cells tells the scale (within 10% in the median field and
    20% in all but one: a field of touching red cells is read less surely)."""
    from hematovision.smear.detect import BCCD_RED_CELL_PX, estimate_red_cell_diameter

    ratios = {0.5: [], 1.5: []}  # the estimate's ratio to the field's at 1x, over the zoom
    for image in _fields(bccd, 8):
        picture = Image.open(image).convert("RGB")
        truth = voc_boxes(bccd / "Annotations" / f"{image.stem}.xml")["WBC"]
        diameter = estimate_red_cell_diameter(np.asarray(picture))
        assert 0.6 < diameter / BCCD_RED_CELL_PX < 1.8  # fields of one microscope vary
        for z in ratios:
            scaled = picture.resize((round(640 * z), round(480 * z)), Image.BILINEAR)
            ratios[z].append(estimate_red_cell_diameter(np.asarray(scaled)) / diameter / z)
            boxes = locate_cells(np.asarray(scaled)).white_cells
            assert len(match(boxes, [[v * z for v in b] for b in truth])) == len(truth), (
                image.name,
                z,
            )
    for z, ratio in ratios.items():
        ratio = np.array(ratio)
        assert abs(np.median(ratio) - 1) < 0.1 and np.sum(abs(ratio - 1) > 0.2) <= 1, (z, ratio)


def test_touching_white_cells_give_two_boxes_and_pale_fields_count_red_cells(bccd):
    two = bccd / "JPEGImages" / "BloodImage_00313.jpg"  # two labelled white cells, touching
    found = locate_cells(np.asarray(Image.open(two).convert("RGB")))
    truth = voc_boxes(bccd / "Annotations" / "BloodImage_00313.xml")["WBC"]
    assert len(found.white_cells) == 2 and len(match(found.white_cells, truth)) == 2
    pale = bccd / "JPEGImages" / "BloodImage_00291.jpg"  # round 1 counted 1 red cell of ~15
    assert len(locate_cells(np.asarray(Image.open(pale).convert("RGB"))).red_cells) >= 12


def test_a_paler_stain_keeps_its_white_cells(bccd):
    """A field blended 35% towards white (a paler stain, a brighter lamp) fades the nuclei's
    violet as much as its brightness contrast: the stain threshold follows the contrast, so
    each white cell is still found (a threshold fixed above the median lost these four)."""
    from hematovision.smear.detect import _red_cells_of
    from hematovision.smear.scoring import SHIFTS

    for number in ("00070", "00072", "00160", "00180"):  # tuning (even) fields
        picture = Image.open(bccd / "JPEGImages" / f"BloodImage_{number}.jpg").convert("RGB")
        pale = np.asarray(SHIFTS["pale stain"](picture)[0])
        truth = voc_boxes(bccd / "Annotations" / f"BloodImage_{number}.xml")["WBC"]
        as_recorded = match(locate_cells(np.asarray(picture)).white_cells, truth)
        assert as_recorded and len(match(locate_cells(pale).white_cells, truth)) == len(
            as_recorded
        ), number
        ratio = _red_cells_of(pale).contrast / _red_cells_of(np.asarray(picture)).contrast
        assert ratio == pytest.approx(0.65, abs=0.05)


@pytest.mark.parametrize("k", [1, 2, 5])
def test_the_merge_closing_is_scipys_closing_with_a_square(k):
    from scipy import ndimage as ndi

    from hematovision.smear.detect import _close_square

    mask = np.random.default_rng(k).random((80, 100)) > 0.8
    expected = ndi.binary_closing(mask, structure=np.ones((3, 3)), iterations=k)
    assert np.array_equal(_close_square(mask, k), expected)


def test_counted_red_mask_equals_the_pixelwise_definition(bccd):
    """The red-cell mask and the brightness contrast from counts (median and Otsu from
    histograms, shifted morphology) are the ones the detector is defined by: np.median, Otsu
    on every pixel that is not violet, scipy's morphology, holes filled where round."""
    from scipy import ndimage as ndi
    from skimage.filters import threshold_otsu
    from skimage.measure import regionprops

    from hematovision.smear.detect import ROUND_HOLE, SPECK, VIOLET_ABOVE_MEDIAN, _red_cells_of

    def round_holes_filled(mask):
        holes = ndi.label(ndi.binary_fill_holes(mask) & ~mask)[0]
        filled = [
            r.label for r in regionprops(holes) if r.area <= SPECK or r.solidity >= ROUND_HOLE
        ]
        return mask | np.isin(holes, filled)

    for image in [*_fields(bccd, 4), bccd / "JPEGImages" / "BloodImage_00291.jpg"]:
        rgb = np.asarray(Image.open(image).convert("RGB"))
        score, median, contrast, red, *_ = _red_cells_of(rgb)
        pixels = rgb.astype(np.float32)
        expected_score = pixels[..., 2] - (pixels[..., 0] + pixels[..., 1]) / 2
        lum = pixels.mean(-1)
        above = expected_score > np.median(expected_score) + VIOLET_ABOVE_MEDIAN
        violet = ndi.binary_dilation(above, iterations=2)
        darker = lum < threshold_otsu(lum[~above])
        expected = round_holes_filled(ndi.binary_opening(darker & ~violet))
        assert median == np.median(expected_score) and np.array_equal(score, expected_score)
        assert np.array_equal(red, expected), image.name
        assert contrast == pytest.approx(lum[~darker].mean() - lum[darker].mean(), rel=1e-4)


def test_a_large_dark_nucleus_leaves_the_red_cells_counted(pbc_dir):
    """PBC's single-cell images read as fields: a white cell filling much of the image must not
    take the background's brightness threshold for itself (nucleus against the rest), which left
    29% of them with fewer than 5 red cells counted and no scale; every one shows 8 or more."""
    from hematovision.smear.detect import estimate_red_cell_diameter

    images = [f for c in sorted(pbc_dir.iterdir()) for f in sorted(c.glob("[!.]*.jpg"))[:4]]
    few, unscaled = [], []
    for image in images:
        rgb = np.asarray(Image.open(image).convert("RGB"))
        if len(locate_cells(rgb).red_cells) < 5:
            few.append(image.name)
        if estimate_red_cell_diameter(rgb) is None:
            unscaled.append(image.name)
    assert not few and not unscaled, (few, unscaled)


def test_red_cells_too_small_to_hold_a_white_cell_give_no_scale():
    """Pink specks (8 px: fragments, dust) would set white cells below the size the detector
    classifies: the field's scale is unknown (the defaults), not 8 px."""
    from hematovision.smear.detect import estimate_red_cell_diameter

    field = np.full((240, 320, 3), 235, np.uint8)
    for y in range(10, 230, 20):
        for x in range(10, 310, 20):
            field[y - 4 : y + 4, x - 4 : x + 4] = (200, 150, 160)
    assert estimate_red_cell_diameter(field) is None
    field = np.full((480, 640, 3), 235, np.uint8)  # 96 px squares: a scale it reads
    for y in range(60, 480, 120):
        for x in range(60, 640, 120):
            field[y - 48 : y + 48, x - 48 : x + 48] = (200, 150, 160)
    assert estimate_red_cell_diameter(field) == pytest.approx(96, rel=0.1)


def _counted_by_eye(lab: str) -> list[tuple[str, float]]:
    """(image, red cells counted by eye) for one lab, from the benchmarks' counts."""
    counts = Path(__file__).parents[1] / "benchmarks" / "red_cells_by_eye.csv"
    rows = csv.DictReader(counts.open())
    return [(r["image"], float(r["red_cells_by_eye"])) for r in rows if r["lab"] == lab]


def _red_cell_errors(folder: Path, lab: str) -> list[float]:
    counted = []
    for image, by_eye in _counted_by_eye(lab):
        rgb = np.asarray(Image.open(folder / image).convert("RGB"))
        counted.append(len(locate_cells(rgb).red_cells) / by_eye - 1)
    return counted


def test_red_cells_in_clumps_are_counted_as_an_eye_counts_them(bccd):
    """Eight BCCD fields counted by eye: each within 15% (issue 11's target). Overlapping red
    cells give one distance-transform peak per clump, and the clumps inflated the field's
    scale estimate: counted by their area, clump by clump, at the median opening's size
    (the peaks alone: 3 of 8 within 15%, BloodImage_00004 5 of 20)."""
    errors = _red_cell_errors(bccd, "bccd")
    assert len(errors) == 8 and max(map(abs, errors)) <= 0.15, errors


def test_a_field_whose_clumps_inflate_its_scale_keeps_its_white_cells(bccd):
    """Dense BCCD fields whose clumps made the red cells' size read 1.6-2.4x BCCD's: white
    cells sought at that magnification were missed (one of these six found). Where the red
    cells' granulometry reads them smaller by more than a field's spread, white cells are
    sought at its scale: every annotated one found, and no other box."""
    for number in ("00020", "00050", "00056", "00164", "00193"):
        truth = voc_boxes(bccd / "Annotations" / f"BloodImage_{number}.xml")["WBC"]
        rgb = np.asarray(
            Image.open(bccd / "JPEGImages" / f"BloodImage_{number}.jpg").convert("RGB")
        )
        boxes = locate_cells(rgb).white_cells
        assert len(match(boxes, truth)) == len(truth) == len(boxes), number


def _touching_red_cells(seed: int, radius: int = 32) -> tuple[np.ndarray, int]:
    """A dense field: red cells (pale centres, sizes +-8%) on a jittered hexagonal grid, each
    just touching its neighbours, and how many are centred in it."""
    rng = np.random.default_rng(seed)
    field = np.full((480, 640, 3), 235.0)
    yy, xx = np.mgrid[:480, :640]
    centred = 0
    for row, y in enumerate(np.arange(radius / 2, 480, 2 * radius * 0.866)):
        for x in np.arange(radius / 2 + radius * (row % 2), 640, 2 * radius):
            y, x, r = y + rng.normal(0, 3), x + rng.normal(0, 3), radius * rng.uniform(0.92, 1.08)
            distance = np.hypot(yy - y, xx - x)
            field[distance <= r] = (200, 150, 160)
            field[distance <= 0.4 * r] = (222, 200, 205)
            centred += 0 <= y < 480 and 0 <= x < 640
    return np.clip(field + rng.normal(0, 3, field.shape), 0, 255).astype(np.uint8), centred


@pytest.mark.parametrize("seed", [0, 1])
def test_a_field_of_touching_red_cells_counts_them(seed):
    """Where every red cell touches its neighbours, the background left between them is holes
    in the red-cell mask: filled like pale centres, they made the field a few blocks, whose
    size set the scale (4 of 90 and 17 of 89 counted; 68 and 74 now). Only round holes are
    filled now; the gaps between cells are concave."""
    field, cells = _touching_red_cells(seed)
    assert 0.75 * cells <= len(locate_cells(field).red_cells) <= 1.15 * cells


def test_red_cells_a_stain_leaves_in_pieces_are_not_counted_by_area(lisc_dir):
    """Where a stain leaves much of the red cells violet (LISC's blue fringes), the red-cell
    mask is pieces of cells and their area would count each cell several times (a mean error
    of 106% on these crops): the peaks count them, at the scale of the red cells measured
    whole (46% at the pieces' scale)."""
    errors = _red_cell_errors(lisc_dir, "lisc")
    assert len(errors) == 7 and np.mean(np.abs(errors)) <= 0.3, errors


@pytest.mark.parametrize("crop", ["monocyte/27.jpg", "neutrophil/174.jpg"])
def test_white_cells_of_a_stain_that_fringes_red_cells_are_found_whole(lisc_dir, crop):
    """LISC's red cells are half blue fringe: the red-cell mask keeps pieces of them and read
    the field's scale at about half, and the white cell, sought at that scale, fell apart
    into lobes (three boxes) or kept its nucleus alone. Where much of the cells is violet the
    red cells are measured whole (fringes and centres in) and the cell is one box round it."""
    rgb = np.asarray(Image.open(lisc_dir / crop).convert("RGB"))
    boxes = locate_cells(rgb).white_cells
    assert len(boxes) == 1, boxes
    x0, y0, x1, y1 = boxes[0]
    assert x0 < 112 < x1 and y0 < 112 < y1 and min(x1 - x0, y1 - y0) >= 80


def _lisc_crops(lisc_dir, per_class=6):
    return [f for c in sorted(lisc_dir.iterdir()) for f in sorted(c.glob("*.jpg"))[:per_class]]


def test_a_stain_with_lavender_red_cells_keeps_its_white_cells(lisc_dir):
    """LISC (a third lab) stains its red cells nearly as blue as its nuclei: the stain score
    alone finds few of the cells its crops were cut around; the field-contrast rule finds them."""
    from dataclasses import replace

    from hematovision.smear.detect import field_params
    from hematovision.smear.scoring import centred_cell

    crops = _lisc_crops(lisc_dir, 12)

    def share(contrast: bool) -> float:
        def params(rgb):
            return replace(field_params(rgb), contrast_nuclei=contrast)

        return np.mean([centred_cell(crop, params)[0] for crop in crops])

    assert share(True) >= 0.9 and share(False) <= 0.4


def test_the_contrast_rule_adds_few_cells_where_there_are_none(bccd):
    """Quarters of held-out BCCD fields with no annotated white cell: the rule's thresholds come
    from each field, so a field of red cells alone must not give it a nucleus."""
    from dataclasses import replace

    from hematovision.smear.detect import DEFAULT_PARAMS
    from hematovision.smear.scoring import empty_quarters

    quarters, found = empty_quarters(bccd, "odd", replace(DEFAULT_PARAMS, contrast_nuclei=True))
    assert quarters > 150 and found <= 0.05 * quarters


def test_black_padding_is_outside_the_field(lisc_dir):
    """A crop padded with black (as some of LISC's are, or a field stop's dark corners): no
    white cell is found in the padding, and the cells found without it are found with it."""
    same = 0
    crops = _lisc_crops(lisc_dir, 3)
    for crop in crops:
        rgb = np.asarray(Image.open(crop).convert("RGB"))
        padded = np.zeros((rgb.shape[0] + 40, rgb.shape[1] + 40, 3), np.uint8)
        padded[40:, 40:] = rgb
        boxes = locate_cells(rgb).white_cells
        found = locate_cells(padded).white_cells
        shifted = [(a - 40, b - 40, c - 40, d - 40) for a, b, c, d in found]
        assert all(a + c >= 0 and b + d >= 0 for a, b, c, d in shifted), crop  # centres inside
        same += len(match(shifted, boxes, 0.8)) == len(boxes) == len(shifted)
    assert same >= 0.8 * len(crops)
