"""HematoVision: blood-cell classification in microscope images.

The public API (heavy parts are imported on first use, so ``import hematovision`` is light):
    train(data=..., out=..., arch=...)      -> RunDir          (needs the train extra)
    evaluate(run, data, split="test")       -> metrics dict
    make_synthetic(out, classes, per_class) -> data folder
    inspect_folder(path)                    -> data summary
    Classifier.load().predict(images)       -> Prediction per image (ONNX Runtime, no torch)
    analyze_smear(field_image)              -> white cells (boxes, classes), red cells, platelets
"""

from ._version import __version__

__all__ = [
    "Classifier",
    "analyze_smear",
    "evaluate",
    "inspect_folder",
    "make_synthetic",
    "train",
    "__version__",
]


def __getattr__(name):
    # Classifier and analyze_smear are light (ONNX Runtime), imported on first use all the same
    if name == "Classifier":
        from .inference import Classifier

        return Classifier
    if name == "analyze_smear":
        from .smear import analyze_smear

        return analyze_smear
    raise AttributeError(f"module 'hematovision' has no attribute {name!r}")


def train(*args, **kwargs):
    """Train a model; see ``hematovision.training.TrainConfig`` for the settings."""
    from .training import train as _train

    return _train(*args, **kwargs)


def evaluate(run_dir, data_dir, split="test", **kwargs):
    """Evaluate a training run on a split of a data folder; see ``training.evaluate_run``."""
    from .training import evaluate_run

    return evaluate_run(run_dir, data_dir, split, **kwargs)


def make_synthetic(*args, **kwargs):
    """Write the simulated data set; see ``hematovision.data.synth.make_synthetic``."""
    from .data import make_synthetic as _make

    return _make(*args, **kwargs)


def inspect_folder(path, **kwargs):
    """Summarise a data folder; see ``hematovision.data.inspect.inspect_folder``."""
    from .data import inspect_folder as _inspect

    return _inspect(path, **kwargs)
