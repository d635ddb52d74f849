"""Several trained networks as one model with timm's interface (a deep ensemble).

Deep ensembles (Lakshminarayanan et al., 2017) keep more of their accuracy and calibration
under dataset shift than one network (Ovadia et al., 2019); on HematoVision's left-out labs two
seeds together gained on every fold (benchmarks/bench_ensemble.py). ``FeatureEnsemble`` puts
the members' last feature maps side by side (``forward_features``) and holds one linear head,
the members' heads side by side, each divided by the number of members
(``get_classifier``): its logits are the mean of the members' logits, and the export's
class-activation map and nearest-anchor distance, and ``adapt``'s head refit, work on it as on
any single network.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from ..artifact import RunDir, RunInfo
from ..errors import HematoVisionError

PARITY_TOLERANCE = 1e-4  # |ensemble logits - mean of the members' logits| allowed


class FeatureEnsemble(nn.Module):
    """The mean of ``members``' logits, each member a network that ends in global average
    pooling and one linear layer (timm's classifiers, EfficientNet-Lite0)."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        heads = [m.get_classifier() for m in members]
        if len(members) < 2 or not all(isinstance(h, nn.Linear) for h in heads):
            raise HematoVisionError(
                "an ensemble needs at least two networks, each ending in one linear layer"
            )
        if len({h.out_features for h in heads}) != 1:
            raise HematoVisionError("the ensemble's networks predict different numbers of classes")
        self.members = nn.ModuleList(members)
        self.classifier = nn.Linear(sum(h.in_features for h in heads), heads[0].out_features)
        with torch.no_grad():
            self.classifier.weight.copy_(torch.cat([h.weight for h in heads], 1) / len(heads))
            self.classifier.bias.copy_(torch.stack([h.bias for h in heads]).mean(0))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([m.forward_features(x) for m in self.members], 1)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        pooled = features.mean((2, 3))
        return pooled if pre_logits else self.classifier(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.classifier

    @torch.no_grad()
    def check(self, input_size: int) -> FeatureEnsemble:
        """Raise unless the logits are the mean of the members' own (a member whose head is
        not global average pooling and one linear layer would break this)."""
        self.eval()
        x = torch.randn(2, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
        try:
            ours = self(x)
        except RuntimeError as exc:  # feature maps of different sizes
            raise HematoVisionError(f"the ensemble's networks do not fit together: {exc}") from None
        mean = torch.stack([m(x) for m in self.members]).mean(0)
        if (ours - mean).abs().max() > PARITY_TOLERANCE:
            raise HematoVisionError(
                "an ensemble's networks must end in global average pooling and one linear layer"
            )
        return self


def ensemble_info(runs: list[RunDir]) -> RunInfo:
    """The ``RunInfo`` of an ensemble of ``runs``, which must share classes, preprocessing and
    their split (their validation images calibrate it, their test images score it)."""
    infos = [run.info() for run in runs]
    first, split = infos[0], runs[0].manifest().sha256
    for run, info in zip(runs[1:], infos[1:]):
        if info.classes != first.classes:
            raise HematoVisionError(f"{run} has classes {info.classes}, {runs[0]} {first.classes}")
        if info.preprocess != first.preprocess:
            raise HematoVisionError(f"{run} preprocesses its images unlike {runs[0]}")
        if run.manifest().sha256 != split:
            raise HematoVisionError(
                f"{run} and {runs[0]} have different splits: train ensemble members on the "
                "same data with the same --split-seed"
            )
    names = sorted({info.architecture for info in infos})
    architecture = f"ensemble-{len(infos)}x{'+'.join(names)}"
    members = [{"run": str(run), **info.provenance.training} for run, info in zip(runs, infos)]
    provenance = replace(first.provenance, training={"ensemble_members": members})
    return RunInfo(first.classes, architecture, first.preprocess, first.metrics, provenance)


def run_list(runs: str | Path | RunDir | list) -> list[RunDir]:
    """One run or several, as run folders that exist."""
    many = runs if isinstance(runs, list | tuple) else [runs]
    return [RunDir(r).require() for r in many]
