"""Training-time augmentation on uint8 batches: what a cell image may vary by.

A cell has no orientation (flips, 90-degree turns) and sits anywhere in the crop (random
crop-and-resize). Labs differ in stain, camera and light, so a recipe also varies colour:

* ``mild`` (the original): brightness, contrast, saturation and a per-channel gain of 5-10%;
* ``lab``: what other labs look like, chosen by leave-one-lab-out measurement
  (benchmarks/bench_crosslab.py): stain jitter in the colour-deconvolution (HED) space of
  scikit-image (Tellez et al., 2018), hue turns, stronger light and saturation changes, zoom
  in and out, and blur;
* ``lab-cut``: ``lab``, and half of the frames cut close round the cell, as canonical framing
  sees a cell from a camera that shows less round it (1.5-2x the training lab's zoom);
* ``lab-cut-mild``: ``lab``, and 30% of the frames cut less close (at most 1.5x zoom);
* ``lab-strong``: ``lab`` with about twice the stain, hue and light jitter (Tellez et al., 2019:
  the strongest HED jitter generalised best to unseen centres);
* ``lab-grey``: ``lab``, and a fifth of the frames in grey (the model must also know a cell
  by its shape and texture); ``lab-grey-mild``: a tenth;
* ``lab-mix``: ``lab``, and half of the frames take another frame's colour statistics
  (MixStyle of Zhou et al., 2021, on pixels; akin to RandStainNA's sampled stain statistics);
* ``lab-randconv``: ``lab``, and half of the frames mixed with a random convolution of
  themselves (Xu et al., 2021: local colour and texture randomised, shape kept).

The result is normalised with the shared spec.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from ..preprocess import PreprocessSpec


@dataclass(frozen=True)
class Recipe:
    crop_scale: tuple[float, float] = (0.7, 1.0)  # area share kept by the random crop
    zoom_out: float = 1.0  # at most this much smaller, on the image's median colour
    colour: float = 0.1  # brightness, contrast and saturation: 1 +- this
    stain_gain: float = 0.05  # per-channel gain: 1 +- this
    hed: float = 0.0  # HED stain jitter: scale 1 +- this, shift +- this
    hue: float = 0.0  # hue turn, in radians: +- this
    blur: float = 0.0  # probability of a slight blur (another focus or optics)
    edge_cut: float = 0.0  # probability of losing the frame's edges (a camera that zooms in)
    edge_cut_least: float = 0.22  # the kept square's half side, at least (0.5: the whole frame)
    grey: float = 0.0  # probability of a grey frame
    style_mix: float = 0.0  # probability of taking another frame's channel means and spreads
    random_conv: float = 0.0  # probability of mixing with a random convolution of the frame


RECIPES = {
    "mild": Recipe(),
    "lab": Recipe(
        crop_scale=(0.6, 1.0),
        zoom_out=1.3,
        colour=0.2,
        stain_gain=0.08,
        hed=0.1,
        hue=0.15,
        blur=0.3,
    ),
}
# the lab recipe, and half the cells cut close round the frame's centre (1.5-2x zoom)
RECIPES["lab-cut"] = replace(RECIPES["lab"], edge_cut=0.5)
# fewer cells, cut less close (up to 1.5x zoom): lab-cut's trade without its full strength
RECIPES["lab-cut-mild"] = replace(RECIPES["lab"], edge_cut=0.3, edge_cut_least=0.33)
RECIPES["lab-strong"] = replace(RECIPES["lab"], colour=0.3, stain_gain=0.15, hed=0.2, hue=0.3)
RECIPES["lab-grey"] = replace(RECIPES["lab"], grey=0.2)
RECIPES["lab-grey-mild"] = replace(RECIPES["lab"], grey=0.1)  # lab-grey cost PBC a point
RECIPES["lab-mix"] = replace(RECIPES["lab"], style_mix=0.5)
RECIPES["lab-randconv"] = replace(RECIPES["lab"], random_conv=0.5)


def _uniform(gen: torch.Generator, n: int, lo: float, hi: float, *shape) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand((n, *shape), generator=gen)


def random_resized_crop(
    x: torch.Tensor, gen: torch.Generator, scale=(0.7, 1.0), ratio=(3 / 4, 4 / 3)
) -> torch.Tensor:
    n, _, h, w = x.shape
    out = torch.empty_like(x)
    scales = _uniform(gen, n, *scale)
    ratios = torch.exp(_uniform(gen, n, math.log(ratio[0]), math.log(ratio[1])))
    for i in range(n):
        cw = min(w, max(8, round(math.sqrt(scales[i] * ratios[i]) * w)))
        ch = min(h, max(8, round(math.sqrt(scales[i] / ratios[i]) * h)))
        top = int(torch.randint(0, h - ch + 1, (1,), generator=gen))
        left = int(torch.randint(0, w - cw + 1, (1,), generator=gen))
        out[i] = F.interpolate(
            x[i : i + 1, :, top : top + ch, left : left + cw],
            size=(h, w),
            mode="bilinear",
            align_corners=False,
        )[0]
    return out


def _median_colour(x: torch.Tensor) -> torch.Tensor:
    """(n, 3, 1, 1): each image's background colour, the median of its rows' medians."""
    return x.median(dim=3, keepdim=True).values.median(dim=2, keepdim=True).values


def random_zoom_out(x: torch.Tensor, gen: torch.Generator, most: float) -> torch.Tensor:
    """Each image shrunk by up to ``most`` and placed anywhere on its own median colour."""
    n, _, h, w = x.shape
    factors = _uniform(gen, n, 1.0, most)
    out = _median_colour(x).expand_as(x).clone()
    for i in range(n):
        sh, sw = max(8, round(h / factors[i].item())), max(8, round(w / factors[i].item()))
        small = F.interpolate(x[i : i + 1], size=(sh, sw), mode="bilinear", align_corners=False)
        top = int(torch.randint(0, h - sh + 1, (1,), generator=gen))
        left = int(torch.randint(0, w - sw + 1, (1,), generator=gen))
        out[i, :, top : top + sh, left : left + sw] = small[0]
    return out


def random_edge_cut(x: torch.Tensor, gen: torch.Generator, least: float) -> torch.Tensor:
    """Each image kept only in a square round its centre (half side ``least`` to 0.5 of the
    frame, moved a little), its own median colour beyond: what canonical framing makes of a
    cell whose source image was cut close round it (a stronger objective, a smaller sensor)."""
    n, _, h, w = x.shape
    fill = _median_colour(x)
    halves = _uniform(gen, n, least, 0.5)
    shifts = _uniform(gen, n, -0.05, 0.05, 2)
    ys = (torch.arange(h) + 0.5) / h - 0.5
    xs = (torch.arange(w) + 0.5) / w - 0.5
    inside_y = (ys[None] - shifts[:, :1]).abs() <= halves[:, None]  # n x h
    inside_x = (xs[None] - shifts[:, 1:]).abs() <= halves[:, None]  # n x w
    inside = (inside_y[:, :, None] & inside_x[:, None, :])[:, None]  # n x 1 x h x w
    return torch.where(inside, x, fill)


def _hed_matrices():
    from skimage.color import hed_from_rgb, rgb_from_hed

    return (
        torch.tensor(hed_from_rgb, dtype=torch.float32),
        torch.tensor(rgb_from_hed, dtype=torch.float32),
    )


def hed_jitter(x: torch.Tensor, gen: torch.Generator, amount: float) -> torch.Tensor:
    """Scale and shift each stain's amount in the haematoxylin-eosin-DAB space (as
    scikit-image's rgb2hed / hed2rgb), a stain and a staining time of another lab."""
    to_hed, to_rgb = _hed_matrices()
    n = x.shape[0]
    log_adjust = math.log(1e-6)
    rgb = x.permute(0, 2, 3, 1).clamp(min=1e-6)
    stains = ((torch.log(rgb) / log_adjust) @ to_hed).clamp(min=0)
    stains = stains * _uniform(gen, n, 1 - amount, 1 + amount, 1, 1, 3)
    # shifts are small beside the stain amounts of a blood smear (about 0 to 0.15)
    stains = stains + _uniform(gen, n, -amount / 5, amount / 5, 1, 1, 3)
    rgb = torch.exp(-(stains * -log_adjust) @ to_rgb)
    return rgb.clamp(0, 1).permute(0, 3, 1, 2)


def hue_turn(x: torch.Tensor, gen: torch.Generator, most: float) -> torch.Tensor:
    """Turn the hue by up to ``most`` radians: a rotation of the chroma plane in YIQ."""
    yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    angles = _uniform(gen, x.shape[0], -most, most)
    cos, sin = torch.cos(angles), torch.sin(angles)
    rotation = torch.zeros(x.shape[0], 3, 3)
    rotation[:, 0, 0] = 1
    rotation[:, 1, 1], rotation[:, 1, 2] = cos, -sin
    rotation[:, 2, 1], rotation[:, 2, 2] = sin, cos
    transform = torch.linalg.inv(yiq) @ rotation @ yiq  # n x 3 x 3
    return torch.einsum("nij,njhw->nihw", transform, x).clamp(0, 1)


def style_mix(x: torch.Tensor, gen: torch.Generator, probability: float) -> torch.Tensor:
    """Chosen frames take a mix of their own and another frame's per-channel mean and
    spread (the batch mixes labs: one lab's cells in another's colours)."""
    n = x.shape[0]
    chosen = torch.rand(n, generator=gen) < probability
    if n < 2 or not chosen.any():
        return x
    mean = x.mean((2, 3), keepdim=True)
    std = x.std((2, 3), keepdim=True) + 1e-4
    other = torch.randperm(n, generator=gen)
    weight = _uniform(gen, n, 0.0, 1.0, 1, 1, 1)  # 1: wholly the other frame's colours
    new_mean = weight * mean[other] + (1 - weight) * mean
    new_std = weight * std[other] + (1 - weight) * std
    mixed = ((x - mean) / std * new_std + new_mean).clamp(0, 1)
    return torch.where(chosen[:, None, None, None], mixed, x)


def random_convolution(x: torch.Tensor, gen: torch.Generator, probability: float) -> torch.Tensor:
    """Chosen frames mixed with a random convolution of themselves (a 1, 3 or 5 px kernel of
    normal weights per frame), rescaled to the frame's own channel means and spreads: colours
    and fine texture change, the cell's outline and the background's level do not."""
    n = x.shape[0]
    chosen = torch.rand(n, generator=gen) < probability
    if not chosen.any():
        return x
    size = (1, 3, 5)[int(torch.randint(0, 3, (1,), generator=gen))]
    weight = torch.randn(n * 3, 3, size, size, generator=gen) / math.sqrt(3 * size * size)
    mean = x.mean((2, 3), keepdim=True)
    std = x.std((2, 3), keepdim=True) + 1e-4
    padded = F.pad(x - mean, (size // 2,) * 4, mode="replicate")
    out = F.conv2d(padded.reshape(1, n * 3, *padded.shape[2:]), weight, groups=n)
    out = out.reshape(x.shape)
    out = (out - out.mean((2, 3), keepdim=True)) / (out.std((2, 3), keepdim=True) + 1e-4)
    alpha = _uniform(gen, n, 0.0, 1.0, 1, 1, 1)  # 1: the frame as it was
    mixed = (alpha * x + (1 - alpha) * (out * std + mean)).clamp(0, 1)
    return torch.where(chosen[:, None, None, None], mixed, x)


def grey_frames(x: torch.Tensor, gen: torch.Generator, probability: float) -> torch.Tensor:
    """Chosen frames in grey (their luminance in every channel)."""
    chosen = torch.rand(x.shape[0], generator=gen) < probability
    luminance = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
    return torch.where(chosen[:, None, None, None], luminance.expand_as(x), x)


def _light(x: torch.Tensor, gen: torch.Generator, colour: float) -> torch.Tensor:
    n = x.shape[0]
    x = x * _uniform(gen, n, 1 - colour, 1 + colour, 1, 1, 1)  # brightness
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * _uniform(gen, n, 1 - colour, 1 + colour, 1, 1, 1) + mean  # contrast
    gray = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
    return (x - gray) * _uniform(gen, n, 1 - colour, 1 + colour, 1, 1, 1) + gray  # saturation


def _geometry(x: torch.Tensor, gen: torch.Generator, recipe: Recipe) -> torch.Tensor:
    n = x.shape[0]
    if recipe.zoom_out > 1:
        shrink = torch.rand(n, generator=gen) < 0.5
        if shrink.any():
            x[shrink] = random_zoom_out(x[shrink], gen, recipe.zoom_out)
    x = random_resized_crop(x, gen, recipe.crop_scale)
    if recipe.edge_cut:
        cut = torch.rand(n, generator=gen) < recipe.edge_cut
        if cut.any():
            x[cut] = random_edge_cut(x[cut], gen, recipe.edge_cut_least)
    flip_h = torch.rand(n, generator=gen) < 0.5
    x[flip_h] = x[flip_h].flip(3)
    flip_v = torch.rand(n, generator=gen) < 0.5
    x[flip_v] = x[flip_v].flip(2)
    turns = torch.randint(0, 4, (n,), generator=gen)
    for k in (1, 2, 3):
        x[turns == k] = torch.rot90(x[turns == k], k, dims=(2, 3))
    return x


def _blur(x: torch.Tensor, gen: torch.Generator, probability: float) -> torch.Tensor:
    chosen = torch.rand(x.shape[0], generator=gen) < probability
    if chosen.any():
        kernel = torch.tensor([1.0, 2.0, 1.0]) / 4
        kernel = (kernel[:, None] * kernel[None, :]).expand(3, 1, 3, 3)
        x[chosen] = F.conv2d(F.pad(x[chosen], (1, 1, 1, 1), mode="replicate"), kernel, groups=3)
    return x


def augment_batch(
    batch_uint8: torch.Tensor, spec: PreprocessSpec, gen: torch.Generator, recipe: str = "mild"
) -> torch.Tensor:
    """NHWC uint8 -> augmented, normalised NCHW float32 (on the CPU)."""
    r = RECIPES[recipe]
    x = colour_jitter(_geometry(batch_uint8.permute(0, 3, 1, 2).float() / 255.0, gen, r), gen, r)
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    return (x - mean) / std


def colour_jitter(x: torch.Tensor, gen: torch.Generator, r: Recipe) -> torch.Tensor:
    """A recipe's stain, colour, focus and grey changes of NCHW frames in [0, 1] (no geometry:
    what other labs change, for any image, a field as well as a cell)."""
    if r.style_mix:
        x = style_mix(x, gen, r.style_mix)
    if r.random_conv:
        x = random_convolution(x, gen, r.random_conv)
    if r.hed:
        x = hed_jitter(x, gen, r.hed)
    if r.hue:
        x = hue_turn(x, gen, r.hue)
    x = _light(x, gen, r.colour)
    x = x * _uniform(gen, x.shape[0], 1 - r.stain_gain, 1 + r.stain_gain, 3, 1, 1)  # stain balance
    if r.blur:
        x = _blur(x, gen, r.blur)
    if r.grey:
        x = grey_frames(x, gen, r.grey)
    return x.clamp_(0, 1)
