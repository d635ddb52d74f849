import io

import numpy as np
import pytest
from PIL import Image

from hematovision.errors import HematoVisionError
from hematovision.preprocess import PreprocessSpec, load_resized, normalize, prepare, to_rgb


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_grayscale_becomes_three_equal_channels():
    img = Image.fromarray(np.full((40, 30), 77, np.uint8), "L")
    out = np.asarray(to_rgb(img))
    assert out.shape == (40, 30, 3) and (out == 77).all()


def test_rgba_transparency_becomes_white_background():
    arr = np.zeros((20, 20, 4), np.uint8)
    arr[:10, :, :] = (200, 10, 10, 255)  # opaque red top half, transparent bottom half
    out = np.asarray(to_rgb(Image.fromarray(arr, "RGBA")))
    assert tuple(out[0, 0]) == (200, 10, 10)
    assert tuple(out[-1, -1]) == (255, 255, 255)


def test_palette_image_keeps_its_colours():
    img = Image.new("P", (24, 24))
    img.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    img.paste(1, (0, 0, 24, 12))
    out = np.asarray(to_rgb(_png_bytes(img)))
    assert tuple(out[0, 0]) == (10, 200, 30) and tuple(out[-1, 0]) == (0, 0, 0)


def test_16_bit_image_is_rescaled_not_clipped(tmp_path):
    arr = np.zeros((32, 32), np.uint16)
    arr[:, 16:] = 65535
    arr[:, :16] = 32768
    path = tmp_path / "deep.png"
    Image.fromarray(arr).save(path)
    out = np.asarray(to_rgb(path))
    assert out[0, 20, 0] == 255
    assert 120 <= out[0, 0, 0] <= 135  # half of full scale, not 255 from clipping


def test_array_inputs_hwc_chw_float():
    hwc = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    chw_float = np.moveaxis(hwc, -1, 0).astype(np.float32) / 255
    a, b = np.asarray(to_rgb(hwc)), np.asarray(to_rgb(chw_float))
    assert a.shape == b.shape == (32, 32, 3)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_exif_orientation_is_honoured(tmp_path):
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 20, 20))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif, quality=95)
    out = to_rgb(path)
    assert out.size == (20, 40)


def test_not_an_image_and_too_small_are_clear_errors(tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a picture")
    with pytest.raises(HematoVisionError, match="notes.jpg: not an image file"):
        to_rgb(bad)
    with pytest.raises(HematoVisionError, match="too small"):
        to_rgb(np.zeros((8, 8, 3), np.uint8))


def test_normalize_scales_and_standardises():
    spec = PreprocessSpec(input_size=4, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    batch = np.full((2, 4, 4, 3), 255, np.uint8)
    x = normalize(batch, spec)
    assert x.shape == (2, 3, 4, 4) and x.dtype == np.float32
    assert np.allclose(x, 1.0)
    assert np.allclose(normalize(np.zeros((4, 4, 3), np.uint8), spec), -1.0)


def test_resize_and_prepare_follow_the_spec():
    spec = PreprocessSpec(input_size=48)
    img = Image.new("RGB", (360, 363), (10, 20, 30))
    assert load_resized(img, spec).shape == (48, 48, 3)
    assert prepare([img, img], spec).shape == (2, 3, 48, 48)


def test_spec_round_trips_through_json_dict():
    spec = PreprocessSpec(input_size=96, mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6))
    assert PreprocessSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize("shape", [(1, 1), (1, 2), (17, 19), (16, 16), (363, 360)])
def test_median_colour_is_numpys_median_per_channel(shape):
    from hematovision.preprocess import median_colour

    rng = np.random.default_rng(sum(shape))
    pixels = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    expected = tuple(int(v) for v in np.median(pixels.reshape(-1, 3), axis=0))
    assert median_colour(Image.fromarray(pixels)) == expected


@pytest.mark.parametrize("seed", range(5))
def test_fill_holes_is_scipys_binary_fill_holes(seed):
    from scipy import ndimage as ndi

    from hematovision.preprocess import fill_holes

    rng = np.random.default_rng(seed)
    mask = ndi.binary_dilation(rng.random((90, 120)) > 0.93, iterations=2)  # rings and holes
    assert np.array_equal(fill_holes(mask), ndi.binary_fill_holes(mask))
    assert np.array_equal(fill_holes(np.ones((5, 5), bool)), np.ones((5, 5), bool))


@pytest.mark.parametrize("seed", range(5))
def test_centres_and_areas_are_scipys_center_of_mass_and_sum(seed):
    from scipy import ndimage as ndi

    from hematovision.preprocess import centres_and_areas, nucleus_score, stain_score

    rng = np.random.default_rng(seed)
    labels, n = ndi.label(rng.random((rng.integers(2, 60), rng.integers(2, 60))) > 0.6)
    centres, areas = centres_and_areas(labels, n)
    index = np.arange(1, n + 1)
    assert np.array_equal(areas, ndi.sum_labels(np.ones_like(labels), labels, index))
    assert np.allclose(centres, ndi.center_of_mass(np.ones_like(labels), labels, index))
    rgb = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)  # and the score's two readings agree
    assert np.array_equal(nucleus_score(rgb), 3 * stain_score(rgb) - 2 * rgb.sum(-1, dtype=int))


@pytest.mark.parametrize("seed", range(5))
def test_cross_morphology_is_scipys_binary_dilation_and_erosion(seed):
    from scipy import ndimage as ndi

    from hematovision.preprocess import cross_morphology

    rng = np.random.default_rng(seed)
    mask = rng.random((rng.integers(1, 40), rng.integers(1, 40))) > rng.random()
    for times in (1, 3):
        grown, shrunk = cross_morphology(mask, True, times), cross_morphology(mask, False, times)
        assert np.array_equal(grown, ndi.binary_dilation(mask, iterations=times))
        assert np.array_equal(shrunk, ndi.binary_erosion(mask, iterations=times))
