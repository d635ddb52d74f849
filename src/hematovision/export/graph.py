"""The serving graph: the network plus what serving needs, so that it needs no torch.

Outputs: the logits; class-activation maps (CAM) for heatmaps; and an out-of-distribution
score, the cosine distance of the image's pooled features to its k-th nearest "anchor", a
class-balanced sample of training images (Sun et al., 2022, "Out-of-distribution detection
with deep nearest neighbors"). Every model has timm's ``forward_features`` / ``forward_head`` /
``get_classifier``, so nothing here depends on the architecture.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..artifact import NEIGHBOUR_K, unit_rows
from ..errors import HematoVisionError
from ..preprocess import PreprocessSpec, model_input


class ServingGraph(nn.Module):
    """(logits, cam, ood) for a batch fed as ``spec`` says: NHWC uint8 pixels, normalised in
    the graph, when ``spec.input`` is "uint8"; else the normalised NCHW float batch."""

    def __init__(self, model: nn.Module, anchors: np.ndarray, spec: PreprocessSpec):
        super().__init__()
        if len(anchors) < NEIGHBOUR_K:
            raise HematoVisionError(
                f"{len(anchors)} training images: the distance score needs at least "
                f"{NEIGHBOUR_K} (its {NEIGHBOUR_K}th nearest)"
            )
        self.model, self.spec = model, spec
        # stored in float16 (half the artifact's bytes; the distances differ by < 1e-3)
        self.register_buffer("anchors", torch.as_tensor(unit_rows(anchors), dtype=torch.float16))
        # (x / 255 - mean) / std as one multiply-add per channel
        std = torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1)
        mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("scale", 1 / (255 * std))
        self.register_buffer("shift", -mean / std)

    def forward(self, x):
        if self.spec.input == "uint8":
            x = x.permute(0, 3, 1, 2).float() * self.scale + self.shift
        fmap = self.model.forward_features(x)
        logits = self.model.forward_head(fmap)
        head = self.model.get_classifier()
        if isinstance(head, nn.Linear) and head.in_features == fmap.shape[1]:
            # global pooling + one linear layer: the class-activation map is exact
            cam = torch.einsum("kc,nchw->nkhw", head.weight, fmap)
        else:  # any other head: the mean activation, the same map for every class
            cam = fmap.mean(1, keepdim=True).expand(-1, logits.shape[1], -1, -1)
        features = nn.functional.normalize(fmap.mean((2, 3)), dim=1)
        similarity = features @ self.anchors.float().T
        ood = 1 - similarity.topk(NEIGHBOUR_K, dim=1).values[:, -1]
        return logits, cam, ood


def with_static_padding(model: nn.Module, input_size: int) -> nn.Module:
    """A copy of ``model`` whose "same"-padded convolutions (timm's Conv2dSame, which computes
    its padding from the input's size at run time) have the padding of ``input_size`` fixed.

    The exported graph then holds no shape arithmetic, so ONNX Runtime can fuse it: serving
    always feeds ``input_size``, and the export's parity check covers the rewrite."""
    import copy

    from timm.layers.conv2d_same import Conv2dSame
    from timm.layers.padding import get_same_padding

    model = copy.deepcopy(model).eval()
    sizes = {}

    def record(name):
        def hook(module, inputs, output):  # returns None: the output stays as it is
            sizes.setdefault(name, inputs[0].shape[-2:])

        return hook

    hooks = [
        module.register_forward_hook(record(name))
        for name, module in model.named_modules()
        if isinstance(module, Conv2dSame)
    ]
    with torch.no_grad():
        model(torch.zeros(1, 3, input_size, input_size))
    for hook in hooks:
        hook.remove()
    for name, (height, width) in sizes.items():
        conv = model.get_submodule(name)
        (kh, kw), (sh, sw), (dh, dw) = conv.kernel_size, conv.stride, conv.dilation
        ph, pw = get_same_padding(height, kh, sh, dh), get_same_padding(width, kw, sw, dw)
        static = nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            0,
            conv.dilation,
            conv.groups,
            conv.bias is not None,
        )
        static.weight, static.bias = conv.weight, conv.bias
        padded = nn.Sequential(nn.ZeroPad2d((pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)), static)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, padded)
    return model


def _batches(images: np.ndarray, spec: PreprocessSpec, size: int = 128):
    for i in range(0, len(images), size):
        yield torch.from_numpy(model_input(images[i : i + size], spec))


@torch.no_grad()
def pooled_features(model: nn.Module, images: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Globally pooled last feature maps of NHWC uint8 images (N x C); ``spec`` is the
    training spec (float input)."""
    model.eval()
    return np.concatenate(
        [model.forward_features(x).mean((2, 3)).numpy() for x in _batches(images, spec)]
    )


@torch.no_grad()
def run_graph(graph: ServingGraph, images: np.ndarray):
    """(logits, cam, ood) of the graph in PyTorch, for NHWC uint8 images."""
    outputs = [graph(x) for x in _batches(images, graph.spec)]
    return [np.concatenate([o[k].numpy() for o in outputs]) for k in range(3)]
