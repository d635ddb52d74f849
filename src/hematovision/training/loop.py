"""The training loop: data -> model -> run folder (checkpoints, history, metrics, report).

``train`` only orchestrates; each step is a short function: prepare the run folder and the
data, build the optimiser and its schedule, restore a checkpoint, then ``train_one_epoch`` and
``evaluate`` until the epochs run out or validation stops improving, and finish the run.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import platform
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel

from .._version import __version__
from ..artifact import Provenance, RunDir, RunInfo
from ..errors import HematoVisionError, TrainingInterrupted
from ..evaluation import classification_metrics, write_report
from ..files import write_atomic
from ..models import (
    create_model,
    freeze_early_layers,
    model_info,
    predict_proba,
    preprocess_spec,
)
from ..preprocess import normalize
from ..progress import progress_bar
from .augment import augment_batch
from .config import RESUME_KEYS, TrainConfig
from .data import TrainingData, load_training_data, scan_training_folder
from .distributed import ONE_PROCESS, Processes
from .mixstyle import add_mixstyle

log = logging.getLogger("hematovision")


def train(cfg: TrainConfig | None = None, **kwargs) -> RunDir:
    """Train a classifier on a class-per-folder data set; returns the run folder.

    ``train(data="pbc", out="runs/a", arch="efficientnet_lite0", pretrained=True, epochs=5)``
    """
    cfg = cfg or TrainConfig(**kwargs)
    cfg.check()
    procs = Processes.from_env(cfg.device)  # under torchrun: one of several processes
    if not procs.is_main:
        cfg = replace(cfg, show_progress=False)  # one progress bar, rank 0's
    folder = scan_training_folder(cfg)
    torch.manual_seed(cfg.seed)  # the same initial weights in every process
    model = _build_model(cfg, len(folder.classes))  # before the run folder: bad --arch leaves none
    freeze_early_layers(model, cfg.freeze_blocks)
    add_mixstyle(model, cfg.mixstyle)  # training only: eval mode and the weights are untouched
    run = _prepare_run_dir(cfg) if procs.is_main else RunDir(cfg.out)
    procs.barrier()  # the folder is ready (and an old one removed) before anyone reads it
    spec = preprocess_spec(cfg.arch, cfg.image_size, cfg.framing)
    data = load_training_data(cfg, run, folder, spec)
    device = procs.device(cfg.device)
    model.to(device)
    share = math.ceil(len(data.x_train) / procs.world)
    steps_per_epoch = math.ceil(share / cfg.batch_size)
    optimizer, scheduler = build_optimizer(cfg, model, steps_per_epoch)
    average = WeightAverage.of(cfg, model, steps_per_epoch)
    state = restore(cfg, run, model, optimizer, scheduler, device, average)
    weight = _class_weights(cfg, data, device)
    net = procs.wrap(model)  # DDP averages the gradients of every process's share
    if not cfg.resume and procs.is_main:
        save_checkpoint(run, cfg, model, optimizer, scheduler, state, average)  # Ctrl-C resumes
    start = time.perf_counter()
    try:
        for epoch in range(state.epoch + 1, cfg.epochs + 1):
            if state.stale >= cfg.patience:
                log.info("early stopping: val macro-F1 did not improve for %d epochs", cfg.patience)
                break
            epoch_start = time.perf_counter()
            stats = train_one_epoch(
                net, data, optimizer, scheduler, cfg, epoch, device, weight, procs, average
            )
            scored = average.model() if average else model
            # every process scores the same images: early stopping decides alike everywhere
            val = evaluate(scored, *data.split_images("val"), data)
            if state.update(epoch, val["f1_macro"]) and procs.is_main:
                _save(run.best, {"model": scored.state_dict(), "epoch": epoch})
            state.history.append(
                {
                    "epoch": epoch,
                    **stats,
                    "val_loss": val["loss"],
                    "val_accuracy": val["accuracy"],
                    "val_f1_macro": val["f1_macro"],
                    "lr": optimizer.param_groups[0]["lr"],
                    "seconds": round(time.perf_counter() - epoch_start, 2),
                }
            )
            if procs.is_main:
                save_checkpoint(run, cfg, model, optimizer, scheduler, state, average)
                _write_history(run.history_file, state.history)
                _log_epoch(cfg, state)
    except KeyboardInterrupt:
        raise TrainingInterrupted(
            f"training interrupted; the checkpoint after epoch {state.epoch} is in {run}; "
            f"continue with the same command and --resume"
        ) from None
    procs.barrier()  # best.pt is written before rank 0 reads it back
    if procs.is_main:
        finish_run(cfg, run, model, data, state, device, time.perf_counter() - start)
    procs.close()
    return run


def train_one_epoch(
    model: nn.Module,
    data: TrainingData,
    optimizer,
    scheduler,
    cfg: TrainConfig,
    epoch: int,
    device: torch.device,
    weight: torch.Tensor | None = None,
    procs: Processes = ONE_PROCESS,
    average: WeightAverage | None = None,
) -> dict:
    """One pass over the training images in a seeded order (this process's share of it);
    returns loss, accuracy and speed over every process."""
    _train_mode(model)
    # seeded per epoch, so that a resumed run sees the same batches and augmentations
    gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    rng = np.random.default_rng([cfg.seed, epoch])
    n = len(data.x_train)
    # balanced: as many draws as images, each lab and class drawn equally often
    order = rng.permutation(n) if data.weights is None else rng.choice(n, n, p=data.weights)
    order = procs.shard(order)
    steps = math.ceil(len(order) / cfg.batch_size)
    size = epoch_image_size(cfg, epoch)
    seen, loss_sum, correct, start = 0, 0.0, 0, time.perf_counter()
    with progress_bar(f"epoch {epoch}/{cfg.epochs}", steps, enabled=cfg.show_progress) as bar:
        for step in range(steps):
            idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            batch = data.x_train[idx]
            x = (
                augment_batch(torch.from_numpy(batch), data.spec, gen, cfg.recipe)
                if cfg.augment
                else torch.from_numpy(normalize(batch, data.spec))
            )
            if size < cfg.image_size:  # a smaller image of the same augmented view
                x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
            x, y = x.to(device), torch.from_numpy(data.y_train[idx]).to(device)
            logits = model(x)
            loss = F.cross_entropy(logits, y, weight=weight, label_smoothing=cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()  # the schedule is per step: warm-up is a fraction of an epoch
            if average:
                average.step(scheduler.last_epoch)
            seen += len(idx)
            loss_sum += loss.item() * len(idx)
            correct += (logits.argmax(1) == y).sum().item()
            bar.advance(status=f"loss {loss_sum / seen:.3f} acc {correct / seen:.3f}")
    seen, loss_sum, correct = procs.sum(seen, loss_sum, correct)
    return {
        "train_loss": loss_sum / seen,
        "train_accuracy": correct / seen,
        "train_images_per_second": round(seen / (time.perf_counter() - start), 1),
        "image_size": size,
    }


def epoch_image_size(cfg: TrainConfig, epoch: int) -> int:
    """Progressive resizing (``start_size``): the input grows linearly from ``start_size`` in
    the first epoch to ``image_size`` in the last, in steps of 16 px. The last epoch trains at
    the size evaluation and serving use, so its batch statistics are those of that size."""
    if cfg.start_size is None or cfg.epochs == 1:
        return cfg.image_size
    t = (epoch - 1) / (cfg.epochs - 1)
    size = cfg.start_size + t * (cfg.image_size - cfg.start_size)
    return min(cfg.image_size, 16 * round(size / 16))


def evaluate(model: nn.Module, images: np.ndarray, labels: np.ndarray, data: TrainingData) -> dict:
    """Metrics of ``model`` on decoded images: eval mode, no augmentation."""
    return classification_metrics(labels, predict_proba(model, images, data.spec), data.classes)


def _train_mode(model: nn.Module) -> None:
    """Training mode, except that frozen BatchNorm layers keep their statistics as loaded."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
            p.requires_grad for p in module.parameters()
        ):
            module.eval()


# ---------------------------------------------------------------- set-up
def _build_model(cfg: TrainConfig, num_classes: int) -> nn.Module:
    # on --resume or --init a checkpoint holds the weights: no need to fetch pretrained ones
    from_run = bool(cfg.resume or cfg.init)
    return create_model(
        cfg.arch,
        num_classes,
        cfg.pretrained and not from_run,
        cfg.image_size,
        None if from_run else cfg.weights,
    )


def _prepare_run_dir(cfg: TrainConfig) -> RunDir:
    run = RunDir(cfg.out)
    out = run.path
    if cfg.resume:
        if not run.checkpoint.is_file():
            raise HematoVisionError(f"nothing to resume: {run.checkpoint} not found")
        return run
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not cfg.overwrite:
            raise HematoVisionError(
                f"output folder {out} exists; pass --overwrite to replace it "
                f"or --resume to continue it"
            )
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return run


def lr_schedule(warmup_steps: int, total_steps: int):
    """Linear warm-up, then cosine decay to zero: a factor of the peak rate per step."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def build_optimizer(cfg: TrainConfig, model: nn.Module, steps_per_epoch: int):
    """Adam or AdamW, with the warm-up + cosine schedule over every step of the run."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        optimizer = torch.optim.Adam(params, lr=cfg.lr)
    else:
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = max(1, int(cfg.warmup_epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_schedule(warmup, cfg.epochs * steps_per_epoch)
    )
    return optimizer, scheduler


def _class_weights(cfg: TrainConfig, data: TrainingData, device) -> torch.Tensor | None:
    """Loss weights of 1/frequency per class (--class-weights), normalised to mean 1."""
    if not cfg.class_weights:
        return None
    n = len(data.classes)
    counts = np.bincount(data.y_train, minlength=n).astype(np.float64)
    return torch.tensor(
        len(data.y_train) / (n * np.maximum(counts, 1)), dtype=torch.float32, device=device
    )


class WeightAverage:
    """The mean of the weights after every step from ``start_step`` on (--average-from).

    Averaging the weights along the end of a run (Izmailov et al., 2018) lands in a flatter
    region of the loss, which Arpit et al. (2022) found to carry better to unseen domains than
    the last weights. BatchNorm statistics are averaged with them.
    """

    def __init__(self, model: nn.Module, start_step: int):
        self.source, self.start_step = model, start_step
        self.averaged = AveragedModel(model, use_buffers=True)

    @classmethod
    def of(cls, cfg: TrainConfig, model: nn.Module, steps_per_epoch: int):
        if cfg.average_from is None:
            return None
        return cls(model, int(cfg.average_from * cfg.epochs * steps_per_epoch))

    def step(self, step: int) -> None:
        if step >= self.start_step:
            self.averaged.update_parameters(self.source)

    def model(self) -> nn.Module:
        """The averaged weights once there are any, else the model's own."""
        return self.averaged.module if self.averaged.n_averaged > 0 else self.source


# ---------------------------------------------------------------- checkpoints
@dataclass
class TrainState:
    """Where the run is: the last finished epoch, the history and early-stopping counters."""

    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    best_f1: float = -1.0
    stale: int = 0

    def update(self, epoch: int, f1: float) -> bool:
        """Record a finished epoch's val macro-F1; True when it is the best so far."""
        self.epoch = epoch
        improved = f1 > self.best_f1
        self.best_f1, self.stale = (f1, 0) if improved else (self.best_f1, self.stale + 1)
        return improved


def _save(path: Path, obj: dict) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_atomic(path, buffer.getvalue())  # a kill mid-write never leaves a broken checkpoint


def save_checkpoint(
    run: RunDir, cfg: TrainConfig, model, optimizer, scheduler, state: TrainState, average=None
) -> None:
    _save(
        run.checkpoint,
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": state.epoch,
            "history": state.history,
            "best_f1": state.best_f1,
            "stale": state.stale,
            "config": asdict(cfg),
            **({"average": average.averaged.state_dict()} if average else {}),
        },
    )


def restore(
    cfg: TrainConfig, run: RunDir, model, optimizer, scheduler, device, average=None
) -> TrainState:
    """Continue a checkpoint (--resume, same settings) or start from a run's weights (--init)."""
    if cfg.resume:
        saved = torch.load(run.checkpoint, map_location=device, weights_only=True)
        # a key an older checkpoint lacks had its default then
        changed = [
            k
            for k in RESUME_KEYS
            if saved["config"].get(k, getattr(TrainConfig, k, None)) != getattr(cfg, k)
        ]
        if changed:
            raise HematoVisionError(f"cannot resume with different settings: {', '.join(changed)}")
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        if average:
            average.averaged.load_state_dict(saved["average"])
        log.info("resuming %s after epoch %d", run, saved["epoch"])
        return TrainState(saved["epoch"], saved["history"], saved["best_f1"], saved["stale"])
    if cfg.init:
        init = RunDir(cfg.init).require()
        model.load_state_dict(torch.load(init.best, map_location="cpu", weights_only=True)["model"])
    return TrainState()


def _write_history(path: Path, history: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        # every key of every epoch: a run resumed across versions may add a column
        writer = csv.DictWriter(fh, fieldnames=list(dict.fromkeys(k for h in history for k in h)))
        writer.writeheader()
        writer.writerows(history)


def _log_epoch(cfg: TrainConfig, state: TrainState) -> None:
    h = state.history[-1]
    log.info(
        "epoch %d/%d  train loss %.4f acc %.4f | val loss %.4f acc %.4f macro-F1 %.4f%s",
        h["epoch"],
        cfg.epochs,
        h["train_loss"],
        h["train_accuracy"],
        h["val_loss"],
        h["val_accuracy"],
        h["val_f1_macro"],
        "  (best)" if state.stale == 0 else "",
    )


# ---------------------------------------------------------------- the end of a run
def finish_run(
    cfg: TrainConfig,
    run: RunDir,
    model: nn.Module,
    data: TrainingData,
    state: TrainState,
    device,
    train_seconds: float,
) -> RunDir:
    """Score the best weights on val and test; write metrics.json, run.json and the report."""
    best = torch.load(run.best, map_location=device, weights_only=True)
    model.load_state_dict(best["model"])
    results = {
        "best_epoch": best["epoch"],
        "epochs_run": len(state.history),
        "decode_seconds": round(data.decode_seconds, 2),
        "train_seconds": round(train_seconds, 2),
    }
    probs = {}
    for split in ("val", "test"):
        if len(data.split[split]):
            images, labels = data.split_images(split)
            probs[split] = predict_proba(model, images, data.spec)
            results[split] = classification_metrics(labels, probs[split], data.classes)
            labs = data.labs[data.split[split]]
            if len(set(labs)) > 1:
                results[split]["per_lab"] = per_lab_metrics(labels, probs[split], labs)
            np.save(run.probs_file(split), probs[split])
    run.write_metrics(results)
    run.write_info(_run_info(cfg, data, results))
    shown = "test" if "test" in results else "val"
    write_report(
        run.path,
        f"HematoVision run: {cfg.arch} on {Path(cfg.data).name} ({shown} split)",
        results[shown],
        data.split_images(shown)[1],
        probs[shown],
        state.history,
        details={
            "architecture": cfg.arch,
            "input size": cfg.image_size,
            "epochs run": len(state.history),
            "best epoch": best["epoch"],
            "training time (s)": round(train_seconds, 1),
            "device": str(device),
            "split manifest": data.manifest.sha256[:16],
        },
    )
    return run


def per_lab_metrics(labels: np.ndarray, probs: np.ndarray, labs: np.ndarray) -> dict:
    """Accuracy and count of each lab's images (a run over several labs)."""
    correct = probs.argmax(1) == labels
    return {
        str(lab): {"n": int((labs == lab).sum()), "accuracy": float(correct[labs == lab].mean())}
        for lab in sorted(set(labs))
    }


def _run_info(cfg: TrainConfig, data: TrainingData, results: dict) -> RunInfo:
    manifest = data.manifest
    extra = {"root": cfg.extra_train, "files": data.extra_files} if data.extra_files else None
    provenance = Provenance(
        training=asdict(cfg),
        data={
            "root": manifest.data_root,
            "manifest_sha256": manifest.sha256,
            "extra_train": extra,
            "counts": manifest.counts(),
            "skipped_files": data.skipped,
        },
        licence=model_info(cfg.arch).licence,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        software={
            "hematovision": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    )
    metrics = {
        s: {k: results[s][k] for k in ("accuracy", "f1_macro", "loss", "ece", "n")}
        for s in ("val", "test")
        if s in results
    }
    return RunInfo(data.classes, cfg.arch, data.spec, metrics, provenance)
