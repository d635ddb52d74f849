"""The model registry: one entry point, ``create_model(name, num_classes, pretrained)``.

Names: ``seed-cnn`` (the original baseline), ``efficientnet_lite0`` (ImageNet weights
shipped offline) and any timm architecture (``mobilenetv2_100``, ``resnet50``...).
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import HematoVisionError
from ..preprocess import PreprocessSpec, normalize

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelInfo:
    """What preprocessing and licence go with an architecture."""

    name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    min_input_size: int
    licence: str


def _timm():
    import timm
    return timm


def model_info(arch: str) -> ModelInfo:
    if arch == "seed-cnn":
        # the original design scaled pixels to [0, 1] and nothing more
        return ModelInfo(arch, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 32, "Apache-2.0 (HematoVision)")
    if arch == "efficientnet_lite0":
        from .efficientnet_lite import LICENCE
        return ModelInfo(arch, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 32, LICENCE)
    timm = _timm()
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, list_architectures(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise HematoVisionError(f"unknown architecture {arch!r}{hint} "
                                f"(seed-cnn, efficientnet_lite0 or any timm model name)")
    cfg = timm.models.get_pretrained_cfg(arch) if hasattr(timm.models, "get_pretrained_cfg") else None
    mean = tuple(getattr(cfg, "mean", IMAGENET_MEAN) or IMAGENET_MEAN)
    std = tuple(getattr(cfg, "std", IMAGENET_STD) or IMAGENET_STD)
    licence = getattr(cfg, "license", None) or "see timm model card"
    return ModelInfo(arch, mean, std, 32, licence)


def list_architectures() -> list[str]:
    return ["seed-cnn", "efficientnet_lite0", *_timm().list_models()]


def create_model(arch: str, num_classes: int, pretrained: bool = False,
                 input_size: int = 128, weights: str | None = None) -> nn.Module:
    """Build ``arch`` with a ``num_classes`` head; ``pretrained`` loads ImageNet weights,
    from the model hub or, with ``weights``, from that address (http/https) or local file."""
    info = model_info(arch)  # raises on unknown names
    if input_size < info.min_input_size:
        raise HematoVisionError(f"--image-size {input_size} is too small for {arch}; "
                                f"at least {info.min_input_size}")
    if arch == "seed-cnn":
        if pretrained:
            raise HematoVisionError("seed-cnn is trained from scratch; it has no pretrained weights")
        from .seed_cnn import seed_cnn
        return seed_cnn(num_classes, input_size)
    if arch == "efficientnet_lite0":
        from .efficientnet_lite import efficientnet_lite0
        return efficientnet_lite0(num_classes, pretrained=pretrained)
    overlay = None
    if weights:
        pretrained = True
        overlay = ({"url": weights, "hf_hub_id": None} if "://" in weights
                   else {"file": str(Path(weights).expanduser()), "hf_hub_id": None})
    try:
        return _timm().create_model(arch, pretrained=pretrained, num_classes=num_classes,
                                    pretrained_cfg_overlay=overlay)
    except Exception as exc:  # noqa: BLE001 - hub/network errors come in many types
        if not pretrained:
            raise
        raise HematoVisionError(
            f"cannot load ImageNet weights for {arch} from {weights or 'the model hub'}: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}. With no network, use "
            f"--arch efficientnet_lite0 (its weights ship with a package), --weights FILE, "
            f"or train without --pretrained") from None


def preprocess_spec(arch: str, input_size: int) -> PreprocessSpec:
    info = model_info(arch)
    return PreprocessSpec(input_size=input_size, mean=info.mean, std=info.std)


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@torch.no_grad()
def predict_proba(model: nn.Module, images_uint8: np.ndarray, spec: PreprocessSpec,
                  batch_size: int = 128, device: torch.device | None = None) -> np.ndarray:
    """Class probabilities for NHWC uint8 images (already resized), in eval mode."""
    device = device or next(model.parameters()).device
    model.eval()
    out = []
    for i in range(0, len(images_uint8), batch_size):
        x = torch.from_numpy(normalize(images_uint8[i:i + batch_size], spec)).to(device)
        out.append(torch.softmax(model(x).float(), dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def load_trained(run_dir: str | Path, device: str = "cpu") -> tuple[nn.Module, dict]:
    """The best weights of a training run and its ``model.json``."""
    run_dir = Path(run_dir)
    meta_path, weights = run_dir / "model.json", run_dir / "best.pt"
    if not meta_path.is_file() or not weights.is_file():
        raise HematoVisionError(f"{run_dir} is not a training run (model.json and best.pt expected)")
    meta = json.loads(meta_path.read_text())
    model = create_model(meta["architecture"], len(meta["classes"]), pretrained=False,
                         input_size=meta["preprocess"]["input_size"])
    state = torch.load(weights, map_location=device, weights_only=True)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), meta
