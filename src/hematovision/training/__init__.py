"""Training (needs the ``train`` extra: torch, torchvision, timm)."""

from .loop import TrainConfig, train

__all__ = ["TrainConfig", "train"]
