"""The one definition of preprocessing, shared by training, evaluation, export and serving.

An image goes through four steps:
  1. ``to_rgb``: decode and convert any mode (L, P, RGBA, I;16, CMYK...) to 8-bit RGB;
  2. ``frame_cell`` (when the spec's ``framing`` is "cell"): find the white cell's nucleus and
     frame a square around it whose side is a fixed multiple of the nucleus's size, so a cell
     fills the same share of the input whatever the source's zoom or crop;
  3. ``resize``: square resize to the model's input size, kept as uint8 (this is what the
     decode cache stores);
  4. ``normalize``: scale to [0, 1], subtract ``mean`` and divide by ``std`` per channel,
     channels first. Exported models take step 3's uint8 pixels and do step 4 in their graph
     (the spec's ``input`` is then "uint8"); ``model_input`` feeds either kind.
The spec is serialised into ``model.json`` so that serving reproduces it exactly, with no torch.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import HematoVisionError, ImageNotFound, ImageTooLarge, UnreadableImage

ImageInput = str | Path | bytes | Image.Image | np.ndarray

# Refuse absurdly large images before decoding them (a decompression bomb guard). The check is
# ours (_load_checked raises), so PIL's own warning for the same condition is only noise.
Image.MAX_IMAGE_PIXELS = 64_000_000
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
MIN_IMAGE_SIDE = 16


@dataclass(frozen=True)
class PreprocessSpec:
    """How pixels become a model input."""

    input_size: int = 128
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    resample: str = "bilinear"
    framing: str = "none"  # "cell": canonical framing of the white cell (frame_cell)
    # "float": the model takes normalised NCHW float32; "uint8": NHWC pixels, the model's
    # graph normalises them (exported models: one less pass over the batch in numpy)
    input: str = "float"

    def to_dict(self) -> dict:
        return {
            "input_size": self.input_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "resample": self.resample,
            "framing": self.framing,
            "input": self.input,
        }

    @classmethod
    def from_dict(cls, d: dict) -> PreprocessSpec:
        """Read a spec; keys written by older versions (layout, extra) are ignored."""
        if d.get("input", "float") not in ("float", "uint8"):
            raise HematoVisionError(f"unknown model input {d['input']!r} (float or uint8)")
        return cls(
            input_size=int(d["input_size"]),
            mean=tuple(float(v) for v in d["mean"]),
            std=tuple(float(v) for v in d["std"]),
            resample=d.get("resample", "bilinear"),
            framing=d.get("framing", "none"),
            input=d.get("input", "float"),
        )


_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


def _array_to_pil(arr: np.ndarray) -> Image.Image:
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # CHW -> HWC
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise UnreadableImage(f"cannot read an image from an array of shape {arr.shape}")
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating):
            scale = 255.0 if arr.max(initial=0) <= 1.0 else 1.0
            arr = np.clip(arr * scale, 0, 255).astype(np.uint8)
        elif arr.dtype == np.uint16:
            arr = (arr // 257).astype(np.uint8)
        else:
            arr = np.clip(arr, 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def _flatten_alpha(img: Image.Image) -> Image.Image:
    # Transparent areas become white, the colour of an empty bright-field background.
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _load_checked(opened: Image.Image) -> Image.Image:
    # The header gives the size before any pixel is decoded: refuse bombs before decoding.
    if opened.width * opened.height > Image.MAX_IMAGE_PIXELS:
        raise Image.DecompressionBombError(f"{opened.width}x{opened.height}")
    opened.load()
    return ImageOps.exif_transpose(opened)  # always a copy, valid after the file is closed


def to_rgb(image: ImageInput, max_side: int | None = None) -> Image.Image:
    """Decode ``image`` (path, bytes, PIL image or array) into an 8-bit RGB PIL image.

    EXIF orientation is honoured; 16-bit and float images are rescaled, not clipped.
    ``max_side``: large images are decoded reduced (JPEG at a smaller scale, others reduced by
    an integer factor) to at most about twice that side, so memory follows what is needed.
    Raises HematoVisionError when the input is not a decodable image or is too small.
    """
    name = str(image) if isinstance(image, (str, Path)) else "image"
    img = _as_rgb(_open(image, name, max_side))
    if max_side and max(img.size) >= 2 * max_side:
        img = img.reduce(max(img.size) // max_side)
    if min(img.size) < MIN_IMAGE_SIDE:
        raise UnreadableImage(
            f"{name}: too small ({img.size[0]}x{img.size[1]} px; "
            f"at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} needed)"
        )
    return img


def _open(image: ImageInput, name: str, max_side: int | None = None) -> Image.Image:
    """Any input as a decoded PIL image, upright; decoding errors as HematoVisionErrors."""
    try:
        if isinstance(image, (str, Path, bytes)):
            source = io.BytesIO(image) if isinstance(image, bytes) else image
            with Image.open(source) as opened:
                if max_side:  # JPEG only: decode at 1/2, 1/4 or 1/8 scale, never below max_side
                    opened.draft("RGB", (max_side, max_side))
                return _load_checked(opened)
        if isinstance(image, Image.Image):
            return image
        if isinstance(image, np.ndarray):
            return _array_to_pil(image)
        raise UnreadableImage(f"cannot read an image from a {type(image).__name__}")
    except HematoVisionError:
        raise
    except Image.DecompressionBombError:
        raise ImageTooLarge(
            f"{name}: more than {Image.MAX_IMAGE_PIXELS:,} pixels, too large to decode safely"
        ) from None
    except FileNotFoundError:
        raise ImageNotFound(f"{name}: file not found") from None
    except IsADirectoryError:
        raise UnreadableImage(f"{name}: is a folder, not an image") from None
    except UnidentifiedImageError:
        raise UnreadableImage(f"{name}: not an image file (unknown format)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise UnreadableImage(f"{name}: not a readable image ({exc})") from None


def _as_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB from any mode: 16-bit and float rescaled, transparency flattened to white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        if img.mode in ("I;16", "I;16B", "I;16L"):
            lo, hi = 0.0, 65535.0
        arr = (arr - lo) / max(hi - lo, 1e-9) * 255.0
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        return _flatten_alpha(img)
    return img if img.mode == "RGB" else img.convert("RGB")


def upright_size(data: bytes) -> tuple[int, int]:
    """(width, height) of an encoded image as it is shown (EXIF orientation applied), read
    from its header alone: nothing is decoded. Raises HematoVisionError if unreadable."""
    try:
        with Image.open(io.BytesIO(data)) as opened:
            width, height = opened.size
            orientation = opened.getexif().get(0x0112, 1)
    except Image.DecompressionBombError:
        raise ImageTooLarge(
            f"image: more than {Image.MAX_IMAGE_PIXELS:,} pixels, too large to decode safely"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise UnreadableImage(f"image: not a readable image ({exc})") from None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


# ---------------------------------------------------------------- canonical framing
CELL_FRAME = 4.0  # frame side / sqrt(nucleus area): PBC's median, so its crops keep their look
FRAME_ANALYSIS_SIDE = 160  # px: the nucleus is found on a copy this large (fast, and enough)
FRAMING_REVISION = 3  # raised whenever frame_cell's output changes: decode caches are keyed on it
PADDING_LEVEL = 40  # brightest channel below this, joined to the image's edge: padding
Box = tuple[int, int, int]  # left, top, side: a square in the source image's pixels


def stain_score(rgb: np.ndarray) -> np.ndarray:
    """How blue-violet each pixel of a uint8 image is, ``B - (R + G) / 2``, in halves so that
    it is an integer (-510..510): Romanowsky-stained nuclei and platelets score high, red
    cells and background low."""
    r, g, b = (rgb[..., i].astype(np.int16) for i in range(3))
    return 2 * b - r - g


def counted_median(counts: np.ndarray) -> float:
    """The median of values 0, 1, 2... occurring ``counts`` times (as ``np.median``: the mean
    of the two middle ones when there is an even number), without sorting anything."""
    n = int(counts.sum())
    below = np.cumsum(counts)
    low, high = (int(np.searchsorted(below, rank, side="right")) for rank in ((n - 1) // 2, n // 2))
    return (low + high) / 2


def median_colour(img: Image.Image) -> tuple[int, int, int]:
    """The image's median colour (per channel, as ``np.median`` then ``int``): in a smear,
    mostly the background between cells. Read off Pillow's histogram, without sorting."""
    counts = np.asarray(img.convert("RGB").histogram()).reshape(3, 256)
    return tuple(int(counted_median(channel)) for channel in counts)


def nucleus_score(rgb: np.ndarray) -> np.ndarray:
    """How nucleus-like each pixel is: bluer (``stain_score``) and darker (minus the mean of
    R, G and B), in sixths so that it is an integer: ``4B - 5R - 5G``. Only differences within
    one image are used (Otsu's thresholds, the nuclei's rise above them), so a stain's overall
    cast or a camera's brightness does not matter."""
    r, g, b = (rgb[..., i].astype(np.int16) for i in range(3))
    return 4 * b - 5 * (r + g)  # = 3 * stain_score - 2 * (R + G + B), in a third of the time


def purple_score(rgb: np.ndarray) -> np.ndarray:
    """How purple each pixel of a uint8 image is, ``R + B - 2G`` (an integer): Romanowsky
    nuclei take up green light whatever the cast of the rest, so where red cells are lavender
    rather than pink (a bluer stain) the nuclei still stand out by it."""
    r, g, b = (rgb[..., i].astype(np.int16) for i in range(3))
    return r + b - 2 * g


NUCLEUS_MIN_RISE = 6 * 20  # in nucleus_score's sixths: the darkest blue must stand out this much


def cross_morphology(mask: np.ndarray, grow: bool, times: int = 1) -> np.ndarray:
    """Binary dilation (``grow``) or erosion by the 3x3 cross, ``times`` over, outside the
    image counting as background: ``scipy.ndimage.binary_dilation``/``binary_erosion`` with
    their default structure and border, in a few whole-array passes instead of pixel loops."""
    for _ in range(times):
        out = mask.copy()
        if grow:
            out[1:] |= mask[:-1]
            out[:-1] |= mask[1:]
            out[:, 1:] |= mask[:, :-1]
            out[:, :-1] |= mask[:, 1:]
        else:
            out[1:] &= mask[:-1]
            out[:-1] &= mask[1:]
            out[:, 1:] &= mask[:, :-1]
            out[:, :-1] &= mask[:, 1:]
            out[[0, -1]] = out[:, [0, -1]] = False  # their neighbour outside is background
        mask = out
    return mask


def cross_opening(mask: np.ndarray) -> np.ndarray:
    """``scipy.ndimage.binary_opening`` with its default cross (``cross_morphology``)."""
    return cross_morphology(cross_morphology(mask, grow=False), grow=True)


def centres_and_areas(labels: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(y, x) centre and pixel count of each of the ``n`` labelled components, in one
    counting pass over the labelled pixels (``ndi.center_of_mass`` and ``ndi.sum`` make one
    pass over the whole image per component)."""
    where = np.flatnonzero(labels)
    component = labels.ravel()[where]
    areas = np.bincount(component, minlength=n + 1)[1:]
    sums = [np.bincount(component, c, n + 1)[1:] for c in np.divmod(where, labels.shape[1])]
    return np.stack(sums, axis=1) / areas[:, None], areas


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``scipy.ndimage.binary_fill_holes`` (4-connected background) by labelling: the background
    that touches the edge stays, the rest is filled. The same result, without its iterations."""
    from scipy import ndimage as ndi

    background, _ = ndi.label(~mask)
    edge = np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]])
    outside = np.zeros(background.max() + 1, bool)
    outside[edge] = True
    outside[0] = False  # label 0 is the mask itself
    return ~outside[background]


def otsu_upper(score: np.ndarray) -> float | None:
    """The upper of the two three-class Otsu thresholds (scikit-image), from a 256-bin count
    of the integer scores; None for an image with fewer than three levels."""
    from skimage.filters import threshold_multiotsu

    lo, hi = int(score.min()), int(score.max())
    if hi == lo:
        return None
    width = (hi - lo + 1) / 256
    counts = np.bincount(((score - lo) / width).astype(np.intp).ravel(), minlength=256)
    centres = lo + (np.arange(256) + 0.5) * width
    try:
        return float(threshold_multiotsu(hist=(counts, centres), classes=3)[-1])
    except ValueError:
        return None


def locate_nucleus(img: Image.Image) -> tuple[float, float, float] | None:
    """(x, y, size) of the white cell's nucleus: its centre and the square root of its area,
    in pixels of ``img``; None when the image shows no nucleus (blank, noise, debris...).

    Three classes by Otsu's method (scikit-image) split background, other cells and nuclei;
    the nuclear lobes are joined, and the largest nucleus near the centre is the cell's."""
    from scipy import ndimage as ndi

    f = max(img.size) / FRAME_ANALYSIS_SIDE
    size = (max(1, round(img.width / f)), max(1, round(img.height / f)))
    small = img.resize(size, Image.BILINEAR, reducing_gap=1.0)  # a box reduce first: faster
    score = nucleus_score(np.asarray(small))
    threshold = otsu_upper(score)
    if threshold is None or score.max() - threshold < NUCLEUS_MIN_RISE:
        return None
    opened = cross_opening(score > threshold)
    closed = cross_morphology(cross_morphology(opened, grow=True, times=3), grow=False, times=3)
    labels, n = ndi.label(fill_holes(closed))
    if not n:
        return None
    h, w = labels.shape
    centres, areas = centres_and_areas(labels, n)
    cy, cx = centres[:, 0], centres[:, 1]
    distance = np.hypot(cx - w / 2, cy - h / 2) / max(w, h)
    best = int(np.argmax(areas * np.exp(-4 * distance)))  # large and near the centre
    return cx[best] * f, cy[best] * f, float(np.sqrt(areas[best])) * f


def padding(rgb: np.ndarray) -> np.ndarray:
    """Near-black pixels connected to the image's edge (a crop cut beyond its field's edge and
    padded black, a round field stop's dark corners), grown by a few pixels over their JPEG
    fringe."""
    edges = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    if not (edges.max(-1) < PADDING_LEVEL).any():
        return np.zeros(rgb.shape[:2], bool)
    dark = np.all(rgb < PADDING_LEVEL, axis=-1)
    # fill_holes keeps the background that touches the edge: of ~dark, the dark at the edge
    return cross_morphology(~fill_holes(~dark), grow=True, times=4)


def paint_over_padding(img: Image.Image) -> Image.Image:
    """``img`` with its ``padding`` in the median colour of the rest: framing took black bars
    for a nucleus (BCCD's white cells cut 3x their box with black beyond the field: 26% right,
    81% with the field's colour there), and no training image shows them."""
    rgb = np.asarray(img)
    outside = padding(rgb)
    if not outside.any() or outside.all():
        return img
    painted = rgb.copy()
    painted[outside] = np.median(rgb[~outside], axis=0).astype(np.uint8)
    return Image.fromarray(painted)


def frame_cell(img: Image.Image, k: float = CELL_FRAME) -> tuple[Image.Image, Box]:
    """The square around the cell's nucleus of side ``k`` x its size (beyond the image's edge,
    its median colour), and that square in ``img``'s pixels; the whole image when no nucleus.
    Padding (``padding``) is painted over first."""
    img = paint_over_padding(img)
    found = locate_nucleus(img)
    if found is None:
        side = max(img.size)
        x, y = img.width / 2, img.height / 2
    else:
        x, y, size = found
        side = max(MIN_IMAGE_SIDE, round(k * size))
    left, top = round(x - side / 2), round(y - side / 2)
    if (left, top, side) == (0, 0, img.width) and img.width == img.height:
        return img, (0, 0, side)
    inside = (max(0, left), max(0, top), min(img.width, left + side), min(img.height, top + side))
    if inside == (left, top, left + side, top + side):  # all within the image: nothing to fill
        return img.crop(inside), (left, top, side)
    framed = Image.new("RGB", (side, side), median_colour(img))
    framed.paste(img.crop(inside), (inside[0] - left, inside[1] - top))
    return framed, (left, top, side)


def model_view(img: Image.Image, spec: PreprocessSpec) -> tuple[Image.Image, Box]:
    """What the model sees of ``img`` before resizing: the framed cell, or the whole image."""
    if spec.framing == "cell":
        return frame_cell(img)
    return img, (0, 0, max(img.size))


def resize(img: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """Square-resize an RGB image to the spec's input size; returns HxWx3 uint8."""
    size = spec.input_size
    out = img.resize((size, size), _RESAMPLE[spec.resample])
    return np.asarray(out, dtype=np.uint8)


def load_resized(image: ImageInput, spec: PreprocessSpec) -> np.ndarray:
    """Decode, frame (per the spec) and resize one image: HxWx3 uint8, what the cache stores."""
    return resize(model_view(to_rgb(image), spec)[0], spec)


def normalize(batch_uint8: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """NHWC uint8 (or HWC) -> NCHW float32 scaled to [0, 1] and standardised by the spec."""
    batch = np.asarray(batch_uint8)
    if batch.ndim == 3:
        batch = batch[None]
    x = batch.astype(np.float32) / 255.0
    x = (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def model_input(batch_uint8: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """What a model of this spec is fed for NHWC uint8 images: the pixels themselves when its
    graph normalises them (``spec.input == "uint8"``), else ``normalize``'s output."""
    if spec.input == "uint8":
        return np.ascontiguousarray(batch_uint8, dtype=np.uint8)
    return normalize(batch_uint8, spec)


def prepare(images: list[ImageInput], spec: PreprocessSpec) -> np.ndarray:
    """Everything at once: inputs -> the batch a model of this spec is fed."""
    return model_input(np.stack([load_resized(im, spec) for im in images]), spec)
