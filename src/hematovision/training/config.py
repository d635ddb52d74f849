"""``TrainConfig``: every setting a training run depends on, with its default and its help.

The command line is built from these fields (``hematovision train --help``), so a default is
written once, here. Torch-free: the CLI imports it to build its parser.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from ..errors import HematoVisionError

# training/augment.py's RECIPES, without importing torch
RECIPE_NAMES = (
    "mild",
    "lab",
    "lab-cut",
    "lab-cut-mild",
    "lab-strong",
    "lab-grey",
    "lab-grey-mild",
    "lab-mix",
    "lab-randconv",
)


def _opt(help: str, **kwargs):  # noqa: A002 - argparse's word
    """Field metadata for the command line: its help text, and e.g. choices."""
    return {"help": help, **kwargs}


@dataclass
class TrainConfig:
    """Everything a run depends on; saved in run.json so a run can be repeated."""

    data: str = field(metadata=_opt("class-per-folder data set"))
    out: str = field(default="runs/latest", metadata=_opt("run folder to write"))
    arch: str = field(
        default="seed-cnn", metadata=_opt("seed-cnn, efficientnet_lite0 or any timm model name")
    )
    epochs: int = field(default=10, metadata=_opt("at most this many epochs"))
    batch_size: int = field(default=32, metadata=_opt("images per step"))
    image_size: int = field(default=128, metadata=_opt("square input size in pixels"))
    start_size: int | None = field(
        default=None,
        metadata=_opt(
            "progressive resizing (not seed-cnn): train the first epoch at this size, growing "
            "to --image-size by the last (cheaper early epochs)"
        ),
    )
    val_fraction: float = field(default=0.2, metadata=_opt("share of images for validation"))
    test_fraction: float = field(default=0.1, metadata=_opt("share of images held out for test"))
    seed: int = field(default=0, metadata=_opt("fixes the split, the order and the augmentation"))
    split_seed: int | None = field(
        default=None,
        metadata=_opt(
            "fixes the split (and --max-per-class's sample) instead of --seed: runs that share "
            "it share their validation and test images and can be exported as one ensemble"
        ),
    )
    optimizer: str = field(
        default="auto",
        metadata=_opt(
            "auto: Adam for seed-cnn (as the original design), AdamW otherwise",
            choices=["auto", "adam", "adamw"],
        ),
    )
    lr: float = field(default=1e-3, metadata=_opt("peak learning rate"))
    weight_decay: float = field(default=1e-4, metadata=_opt("AdamW weight decay"))
    warmup_epochs: float = field(default=1.0, metadata=_opt("linear warm-up before cosine decay"))
    pretrained: bool = field(default=False, metadata=_opt("start from ImageNet weights"))
    weights: str | None = field(
        default=None,
        metadata=_opt("pretrained weights from this URL or file (implies --pretrained)"),
    )
    freeze_blocks: int = field(
        default=0,
        metadata=_opt(
            "keep the stem and the first N blocks at their pretrained weights (a cheaper "
            "backward pass; EfficientNet-style models)"
        ),
    )
    class_weights: bool = field(default=False, metadata=_opt("weight the loss by 1/frequency"))
    label_smoothing: float = field(default=0.0, metadata=_opt("cross-entropy label smoothing"))
    patience: int = field(default=5, metadata=_opt("early stopping on val macro-F1"))
    augment: bool = field(default=True, metadata=_opt("no training-time augmentation"))
    recipe: str = field(
        default="mild",
        metadata=_opt(
            "augmentation recipe: mild (light and colour by 5-10%%), or lab (other labs' stains, "
            "light, zoom and focus), or lab-cut (lab, and frames cut close round the cell: "
            "1.5-2x zoom), or lab-cut-mild (fewer frames, cut less close: up to 1.5x), or "
            "lab-strong / lab-grey / lab-grey-mild / lab-mix / lab-randconv (lab with stronger "
            "stain jitter, grey frames, fewer grey frames, another frame's colours, random "
            "convolutions); see training/augment.py",
            choices=list(RECIPE_NAMES),
        ),
    )
    framing: str = field(
        default="none",
        metadata=_opt(
            "cell: frame each image on its white cell (zoom-independent; serving does the same)",
            choices=["none", "cell"],
        ),
    )
    balance: str = field(
        default="none",
        metadata=_opt(
            "lab-class: draw every lab and class equally often (labs from the data's meta.csv)",
            choices=["none", "lab-class"],
        ),
    )
    mixstyle: float = field(
        default=0.0,
        metadata=_opt(
            "MixStyle: in training, mix each image's early feature statistics with another's "
            "at this probability (0-1; EfficientNet-style models)"
        ),
    )
    average_from: float | None = field(
        default=None,
        metadata=_opt(
            "average the weights of every step after this share of the run (0-1; a simple "
            "moving average, scored and saved in place of the last weights)"
        ),
    )
    max_per_class: int | None = field(
        default=None,
        metadata=_opt(
            "use at most N images per class (per lab and class when the data names labs)"
        ),
    )
    init: str | None = field(
        default=None, metadata=_opt("start from this run's best weights and keep its split")
    )
    extra_train: str | None = field(
        default=None,
        metadata=_opt(
            "class folders added to the training split only (e.g. cells cropped from your smears)"
        ),
    )
    extra_repeat: int = field(default=1, metadata=_opt("times each extra image is used per epoch"))
    device: str = field(default="auto", metadata=_opt("auto, cpu or cuda"))
    resume: bool = field(default=False, metadata=_opt("continue the run in --out"))
    overwrite: bool = field(default=False, metadata=_opt("replace an existing --out"))
    show_progress: bool = field(default=True, metadata={"cli": False})  # -q turns it off

    def check(self) -> None:
        """Validate at the edge; resolves ``optimizer='auto'``."""
        if self.epochs < 1 or self.batch_size < 1:
            raise HematoVisionError("--epochs and --batch-size must be at least 1")
        for f in fields(self):  # optimizer, recipe, framing, balance: the CLI's own choices
            allowed = f.metadata.get("choices")
            if allowed and getattr(self, f.name) not in allowed:
                name = f.name.replace("_", "-")
                raise HematoVisionError(f"--{name} must be one of {', '.join(allowed)}")
        if self.optimizer == "auto":
            self.optimizer = "adam" if self.arch == "seed-cnn" else "adamw"
        resized = self.start_size is not None
        for broken, message in (
            (self.lr <= 0, "--lr must be positive"),
            (self.val_fraction <= 0, "--val-fraction must be above 0: early stopping needs it"),
            (
                resized and not 32 <= self.start_size <= self.image_size,
                "--start-size must be between 32 and --image-size",
            ),
            (  # seed-cnn flattens a fixed size
                resized and self.arch == "seed-cnn",
                "--start-size needs a model with global pooling, not seed-cnn",
            ),
            (self.freeze_blocks < 0, "--freeze-blocks must be at least 0"),
            (not 0 <= self.mixstyle <= 1, "--mixstyle must be between 0 and 1"),
            (
                self.average_from is not None and not 0 <= self.average_from < 1,
                "--average-from must be at least 0 and below 1",
            ),
            (self.extra_repeat < 1, "--extra-repeat must be at least 1"),
        ):
            if broken:
                raise HematoVisionError(message)

    @property
    def data_seed(self) -> int:
        """The seed of the split and of the images kept per class."""
        return self.seed if self.split_seed is None else self.split_seed


# Settings that must not change between a run and its --resume.
RESUME_KEYS = (
    "data",
    "arch",
    "image_size",
    "val_fraction",
    "test_fraction",
    "seed",
    "split_seed",
    "max_per_class",
    "optimizer",
    "batch_size",
    "extra_train",
    "extra_repeat",
    "init",
    "framing",
    "balance",
    "recipe",
    "average_from",
    "mixstyle",
)
