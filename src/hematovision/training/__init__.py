"""Training (needs the ``train`` extra: torch, torchvision, timm).

``TrainConfig`` is torch-free (the CLI builds its parser from it); ``train`` and
``evaluate_run`` import torch when first used.
"""

from .config import TrainConfig

__all__ = ["TrainConfig", "evaluate_run", "train"]


def __getattr__(name: str):
    if name == "train":
        from .loop import train

        return train
    if name == "evaluate_run":
        from .evaluate import evaluate_run

        return evaluate_run
    raise AttributeError(f"module 'hematovision.training' has no attribute {name!r}")
