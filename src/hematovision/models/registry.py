"""The model registry, in the style of timm's ``_registry.py``: ``@register_model`` adds an
architecture, ``create_model`` builds any of them, and every timm name works as well.

Each model follows timm's interface: ``forward_features(x)`` gives the last feature map,
``forward_head(features)`` the logits and ``get_classifier()`` the head, so that export and
serving need no special case per architecture.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from torch import nn

from ..errors import HematoVisionError
from ..preprocess import PreprocessSpec

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelInfo:
    """An architecture: how to build it, and the preprocessing and licence that go with it."""

    name: str
    build: Callable[..., nn.Module]  # build(num_classes, pretrained=, input_size=, weights=)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    licence: str = "see timm model card"
    min_input_size: int = 32


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(name: str, **info):
    """Decorator: register ``build`` under ``name`` with its ``ModelInfo`` fields."""

    def decorator(build):
        _REGISTRY[name] = ModelInfo(name, build, **info)
        return build

    return decorator


def _timm():
    import timm

    return timm


def _timm_info(name: str) -> ModelInfo:
    timm = _timm()
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, list_models(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise HematoVisionError(
            f"unknown architecture {name!r}{hint} ({', '.join(_REGISTRY)} or any timm model name)"
        )
    cfg = timm.models.get_pretrained_cfg(name)
    return ModelInfo(
        name,
        partial(_build_timm, name=name),
        tuple(getattr(cfg, "mean", None) or IMAGENET_MEAN),
        tuple(getattr(cfg, "std", None) or IMAGENET_STD),
        getattr(cfg, "license", None) or "see timm model card",
    )


def _build_timm(
    num_classes: int, pretrained: bool, input_size: int, weights: str | None, name: str
) -> nn.Module:
    overlay = None
    if weights:
        pretrained = True
        overlay = (
            {"url": weights, "hf_hub_id": None}
            if "://" in weights
            else {"file": str(Path(weights).expanduser()), "hf_hub_id": None}
        )
    try:
        return _timm().create_model(
            name, pretrained=pretrained, num_classes=num_classes, pretrained_cfg_overlay=overlay
        )
    except Exception as exc:  # noqa: BLE001 - hub/network errors come in many types
        if not pretrained:
            raise
        raise HematoVisionError(
            f"cannot load ImageNet weights for {name} from {weights or 'the model hub'}: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}. With no network, use "
            f"--arch efficientnet_lite0 (its weights ship with a package), --weights FILE, "
            f"or train without --pretrained"
        ) from None


def model_info(name: str) -> ModelInfo:
    """The registered architecture ``name``, or timm's; a clear error with suggestions."""
    return _REGISTRY.get(name) or _timm_info(name)


def list_models() -> list[str]:
    return [*_REGISTRY, *_timm().list_models()]


def create_model(
    name: str,
    num_classes: int,
    pretrained: bool = False,
    input_size: int = 128,
    weights: str | None = None,
) -> nn.Module:
    """Build ``name`` with a ``num_classes`` head; ``pretrained`` loads ImageNet weights,
    from the model hub or, with ``weights``, from that address (http/https) or local file."""
    info = model_info(name)  # raises on unknown names
    if input_size < info.min_input_size:
        raise HematoVisionError(
            f"--image-size {input_size} is too small for {name}; at least {info.min_input_size}"
        )
    return info.build(num_classes, pretrained=pretrained, input_size=input_size, weights=weights)


def preprocess_spec(name: str, input_size: int, framing: str = "none") -> PreprocessSpec:
    """The preprocessing an architecture was pretrained with, at ``input_size``."""
    info = model_info(name)
    return PreprocessSpec(input_size=input_size, mean=info.mean, std=info.std, framing=framing)
