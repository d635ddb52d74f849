"""Models (PyTorch): the registry, the architectures it holds, and inference on trained runs.

``create_model(name, num_classes, pretrained)`` builds ``seed-cnn`` (the original baseline),
``efficientnet_lite0`` (ImageNet weights shipped offline) or any timm architecture.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..artifact import RunDir, RunInfo
from ..errors import HematoVisionError
from ..preprocess import PreprocessSpec, normalize
from . import efficientnet_lite, seed_cnn  # noqa: F401 - they register themselves
from .ensemble import FeatureEnsemble, ensemble_info, run_list
from .registry import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ModelInfo,
    create_model,
    list_models,
    model_info,
    preprocess_spec,
    register_model,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "FeatureEnsemble",
    "ModelInfo",
    "create_model",
    "list_models",
    "load_trained",
    "model_info",
    "pick_device",
    "predict_proba",
    "preprocess_spec",
    "register_model",
]


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def freeze_early_layers(model: nn.Module, blocks: int) -> None:
    """Keep the stem and the first ``blocks`` blocks of a timm EfficientNet/MobileNet-style
    model (``conv_stem``, ``bn1``, ``blocks``) as they are: no gradients, no BatchNorm updates.

    The early, high-resolution layers cost most of a backward pass and hold generic features.
    """
    if not blocks:
        return
    if not all(hasattr(model, name) for name in ("conv_stem", "bn1", "blocks")):
        raise HematoVisionError(
            f"--freeze-blocks needs a model with a stem and blocks (e.g. efficientnet_lite0), "
            f"not {type(model).__name__}"
        )
    if not 0 < blocks <= len(model.blocks):
        raise HematoVisionError(f"--freeze-blocks must be between 0 and {len(model.blocks)}")
    for module in (model.conv_stem, model.bn1, *model.blocks[:blocks]):
        module.requires_grad_(False)


@torch.no_grad()
def predict_proba(
    model: nn.Module,
    images_uint8: np.ndarray,
    spec: PreprocessSpec,
    batch_size: int = 128,
    device: torch.device | None = None,
) -> np.ndarray:
    """Class probabilities for NHWC uint8 images (already resized), in eval mode."""
    device = device or next(model.parameters()).device
    model.eval()
    out = []
    for i in range(0, len(images_uint8), batch_size):
        x = torch.from_numpy(normalize(images_uint8[i : i + batch_size], spec)).to(device)
        out.append(torch.softmax(model(x).float(), dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def load_trained(
    runs: str | Path | RunDir | list, device: str = "cpu"
) -> tuple[nn.Module, RunInfo]:
    """The best weights of a training run, in eval mode, and its ``RunInfo``; of several runs
    (same classes, preprocessing and split), their ``FeatureEnsemble``."""
    runs = run_list(runs)
    if len(runs) > 1:
        info = ensemble_info(runs)
        members = [load_trained(run)[0] for run in runs]
        ensemble = FeatureEnsemble(members).check(info.preprocess.input_size)
        return ensemble.to(device).eval(), info
    run = runs[0]
    info = run.info()
    model = create_model(
        info.architecture,
        len(info.classes),
        pretrained=False,
        input_size=info.preprocess.input_size,
    )
    state = torch.load(run.best, map_location=device, weights_only=True)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), info
