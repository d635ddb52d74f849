"""Training-time augmentation on uint8 batches: what a cell image may vary by.

A cell has no orientation (flips, 90-degree turns), sits anywhere in the crop (random
crop-and-resize) and is stained and lit differently from lab to lab (brightness, contrast,
saturation and a per-channel stain gain). The result is normalised with the shared spec.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..preprocess import PreprocessSpec


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


def augment_batch(
    batch_uint8: torch.Tensor,
    spec: PreprocessSpec,
    gen: torch.Generator,
    colour: float = 0.1,
    stain: float = 0.05,
) -> torch.Tensor:
    """NHWC uint8 -> augmented, normalised NCHW float32 (on the CPU)."""
    x = batch_uint8.permute(0, 3, 1, 2).float() / 255.0
    n = x.shape[0]
    x = random_resized_crop(x, gen)
    flip_h = torch.rand(n, generator=gen) < 0.5
    x[flip_h] = x[flip_h].flip(3)
    flip_v = torch.rand(n, generator=gen) < 0.5
    x[flip_v] = x[flip_v].flip(2)
    turns = torch.randint(0, 4, (n,), generator=gen)
    for k in (1, 2, 3):
        x[turns == k] = torch.rot90(x[turns == k], k, dims=(2, 3))
    if colour > 0:
        x = x * _uniform(gen, n, 1 - colour, 1 + colour, 1, 1, 1)  # brightness
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * _uniform(gen, n, 1 - colour, 1 + colour, 1, 1, 1) + mean  # contrast
        gray = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
        x = (x - gray) * _uniform(gen, n, 1 - colour, 1 + colour, 1, 1, 1) + gray  # saturation
    if stain > 0:
        x = x * _uniform(gen, n, 1 - stain, 1 + stain, 3, 1, 1)  # stain balance
    x = x.clamp_(0, 1)
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    return (x - mean) / std
