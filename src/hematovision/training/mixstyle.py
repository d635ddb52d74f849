"""MixStyle (Zhou et al., ICLR 2021): a lab's look as feature statistics, mixed in training.

The channel means and spreads of early feature maps carry an image's style (stain, light,
camera) more than its content. In training, each image's are replaced, with probability ``p``,
by a random mix of its own and another image's in the batch, so that the later layers learn
classes under styles between those of the training labs. Evaluation and export are untouched:
the hooks do nothing in eval mode and are not part of the weights.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import HematoVisionError

ALPHA = 0.1  # Beta(0.1, 0.1): mostly near one image or the other, as in the paper
STAGES = 3  # after the first three stages: style lives in early layers


def add_mixstyle(model: nn.Module, p: float, stages: int = STAGES) -> list:
    """Mix feature statistics after the first ``stages`` blocks of an EfficientNet-style model
    (``blocks``); returns the hooks' handles. ``p`` 0: nothing added."""
    if not p:
        return []
    if not hasattr(model, "blocks") or len(model.blocks) < stages:
        raise HematoVisionError(
            f"--mixstyle needs a model with stages of blocks (e.g. efficientnet_lite0), "
            f"not {type(model).__name__}"
        )
    beta = torch.distributions.Beta(ALPHA, ALPHA)

    def mix(module: nn.Module, inputs, x: torch.Tensor) -> torch.Tensor:
        if not module.training or len(x) < 2 or torch.rand(()) >= p:
            return x
        mean = x.mean((2, 3), keepdim=True).detach()
        std = (x.var((2, 3), keepdim=True) + 1e-6).sqrt().detach()
        weight = beta.sample((len(x), 1, 1, 1)).to(x)
        other = torch.randperm(len(x), device=x.device)
        mixed_mean = weight * mean + (1 - weight) * mean[other]
        mixed_std = weight * std + (1 - weight) * std[other]
        return (x - mean) / std * mixed_std + mixed_mean

    return [model.blocks[i].register_forward_hook(mix) for i in range(stages)]
