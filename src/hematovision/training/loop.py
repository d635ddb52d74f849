"""The training loop: data -> model -> run folder (checkpoints, history, metrics, report)."""

from __future__ import annotations

import csv
import json
import logging
import math
import platform
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import __version__
from ..data import DecodeCache, SplitManifest, decode_folder, scan_folder
from ..errors import HematoVisionError, TrainingInterrupted
from ..evaluation import classification_metrics, write_report
from ..models import create_model, model_info, pick_device, predict_proba, preprocess_spec
from ..preprocess import normalize
from ..progress import progress_bar
from .augment import augment_batch

log = logging.getLogger("hematovision")


@dataclass
class TrainConfig:
    """Everything a run depends on; saved in model.json so a run can be repeated."""

    data: str
    out: str
    arch: str = "seed-cnn"
    epochs: int = 10
    batch_size: int = 32
    image_size: int = 128
    val_fraction: float = 0.2
    test_fraction: float = 0.1
    seed: int = 0
    optimizer: str = "auto"          # auto: Adam for seed-cnn (the original design), else AdamW
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    pretrained: bool = False
    weights: str | None = None
    class_weights: bool = False
    label_smoothing: float = 0.0
    patience: int = 5
    augment: bool = True
    max_per_class: int | None = None
    init: str | None = None          # start from this run's best weights, on its split
    extra_train: str | None = None   # class folders added to the training split only
    extra_repeat: int = 1            # ... each image this many times per epoch
    device: str = "auto"
    resume: bool = False
    overwrite: bool = False
    show_progress: bool = True
    extra: dict = field(default_factory=dict)

    def check(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise HematoVisionError("--epochs and --batch-size must be at least 1")
        if self.optimizer not in ("auto", "adam", "adamw"):
            raise HematoVisionError("--optimizer must be auto, adam or adamw")
        if self.optimizer == "auto":
            self.optimizer = "adam" if self.arch == "seed-cnn" else "adamw"
        if self.lr <= 0:
            raise HematoVisionError("--lr must be positive")
        if self.val_fraction <= 0:
            raise HematoVisionError("--val-fraction must be above 0: early stopping needs it")


# Settings that must not change between a run and its --resume.
_RESUME_KEYS = ("data", "arch", "image_size", "val_fraction", "test_fraction", "seed",
                "max_per_class", "optimizer", "batch_size", "extra_train", "extra_repeat", "init")


def _prepare_out_dir(cfg: TrainConfig) -> Path:
    out = Path(cfg.out)
    if cfg.resume:
        if not (out / "checkpoint.pt").is_file():
            raise HematoVisionError(f"nothing to resume: {out / 'checkpoint.pt'} not found")
        return out
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not cfg.overwrite:
            raise HematoVisionError(f"output folder {out} exists; pass --overwrite to replace it "
                                    f"or --resume to continue it")
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out


def _limit_per_class(folder, n: int | None, seed: int):
    if not n:
        return folder
    rng = np.random.default_rng(seed)
    keep = np.zeros(len(folder), bool)
    for c in range(len(folder.classes)):
        idx = np.flatnonzero(folder.labels == c)
        keep[rng.permutation(idx)[:n]] = True
    return folder.subset(keep)


def _thin(indices: np.ndarray, labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """At most ``per_class`` of ``indices`` per label, chosen by ``seed``, in order."""
    rng = np.random.default_rng(seed)
    return np.sort(np.concatenate([rng.permutation(indices[labels[indices] == c])[:per_class]
                                   for c in np.unique(labels[indices])]))


def _extra_training_images(cfg: "TrainConfig", spec, classes: list[str]):
    """Images for the training split only (e.g. cells cropped from another lab's smears: they
    teach the model that lab's look and never enter validation or test)."""
    extra = decode_folder(scan_folder(cfg.extra_train), spec, DecodeCache.default(),
                          show_progress=cfg.show_progress)
    unknown = sorted(set(extra.folder.classes) - set(classes))
    if unknown:
        raise HematoVisionError(f"--extra-train has class(es) not in --data: {', '.join(unknown)}")
    labels = np.array([classes.index(extra.folder.classes[y]) for y in extra.folder.labels])
    files = [{"path": extra.folder.relative(p), "label": classes[y], "sha256": h}
             for p, y, h in zip(extra.folder.paths, labels, extra.sha256)]
    return extra.arrays, labels, files


def _lr_schedule(warmup_steps: int, total_steps: int):
    """Linear warm-up, then cosine decay to zero."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


def _save(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)  # a kill mid-write never leaves a broken checkpoint


def _write_history(path: Path, history: list[dict]) -> None:
    if not history:
        return
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


def train(cfg: TrainConfig | None = None, **kwargs) -> Path:
    """Train a classifier on a class-per-folder data set; returns the run folder.

    ``train(data="pbc", out="runs/a", arch="efficientnet_lite0", pretrained=True, epochs=5)``
    """
    cfg = cfg or TrainConfig(**kwargs)
    cfg.check()
    # Continuing from a run keeps that run's split, so its validation and test images stay
    # unseen; --max-per-class then thins only the training split.
    folder = scan_folder(cfg.data)
    if not cfg.init:
        folder = _limit_per_class(folder, cfg.max_per_class, cfg.seed)
    if len(folder.classes) < 2:
        raise HematoVisionError(f"only one class ({folder.classes[0]}) in {cfg.data}; "
                                f"a classifier needs at least two class folders")
    spec = preprocess_spec(cfg.arch, cfg.image_size)
    torch.manual_seed(cfg.seed)
    # on --resume or --init a checkpoint holds the weights: no need to fetch pretrained ones
    starts_from_run = bool(cfg.resume or cfg.init)
    model = create_model(cfg.arch, len(folder.classes), cfg.pretrained and not starts_from_run,
                         cfg.image_size, None if starts_from_run else cfg.weights)
    out = _prepare_out_dir(cfg)

    t0 = time.perf_counter()
    decoded = decode_folder(folder, spec, DecodeCache.default(), show_progress=cfg.show_progress)
    decode_seconds = time.perf_counter() - t0
    classes = decoded.folder.classes

    manifest_path = out / "split.json"
    if cfg.resume:
        manifest = SplitManifest.load(manifest_path)
    elif cfg.init:
        manifest = SplitManifest.load(Path(cfg.init) / "split.json")
        if manifest.classes != classes:
            raise HematoVisionError(f"--init run has classes {manifest.classes}, the data {classes}")
        manifest.save(manifest_path)
        model.load_state_dict(torch.load(Path(cfg.init) / "best.pt", map_location="cpu",
                                         weights_only=True)["model"])
    else:
        manifest = SplitManifest.build(decoded.folder, decoded.sha256, cfg.val_fraction,
                                       cfg.test_fraction, cfg.seed)
        manifest.save(manifest_path)
    index = {decoded.folder.relative(p): i for i, p in enumerate(decoded.folder.paths)}
    try:
        split_idx = {s: np.array([index[f["path"]] for f in manifest.entries(s)], dtype=np.int64)
                     for s in ("train", "val", "test")}
    except KeyError as exc:
        raise HematoVisionError(f"the data changed since this run started: {exc} is missing") from None
    labels = decoded.folder.labels
    if cfg.init and cfg.max_per_class:
        split_idx["train"] = _thin(split_idx["train"], labels, cfg.max_per_class, cfg.seed)
    x_train, y_train = decoded.arrays[split_idx["train"]], labels[split_idx["train"]]
    extra_files = []
    if cfg.extra_train:
        extra_x, extra_y, extra_files = _extra_training_images(cfg, spec, classes)
        x_train = np.concatenate([x_train] + [extra_x] * cfg.extra_repeat)
        y_train = np.concatenate([y_train] + [extra_y] * cfg.extra_repeat)
    x_val, y_val = decoded.arrays[split_idx["val"]], labels[split_idx["val"]]

    device = pick_device(cfg.device)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        optimizer = torch.optim.Adam(params, lr=cfg.lr)
    else:
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(x_train) / cfg.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_schedule(
        max(1, int(cfg.warmup_epochs * steps_per_epoch)), cfg.epochs * steps_per_epoch))
    weight = None
    if cfg.class_weights:
        counts = np.bincount(y_train, minlength=len(classes)).astype(np.float64)
        weight = torch.tensor(len(y_train) / (len(classes) * np.maximum(counts, 1)),
                              dtype=torch.float32, device=device)

    start_epoch, history, best_f1, stale = 1, [], -1.0, 0
    if cfg.resume:
        state = torch.load(out / "checkpoint.pt", map_location=device, weights_only=True)
        changed = [k for k in _RESUME_KEYS if state["config"].get(k) != getattr(cfg, k)]
        if changed:
            raise HematoVisionError(f"cannot resume with different settings: {', '.join(changed)}")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, history = state["epoch"] + 1, state["history"]
        best_f1, stale = state["best_f1"], state["stale"]
        log.info("resuming %s after epoch %d", out, state["epoch"])

    def checkpoint(epoch: int) -> None:
        _save(out / "checkpoint.pt", {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "epoch": epoch, "history": history,
            "best_f1": best_f1, "stale": stale, "config": asdict(cfg)})

    if not cfg.resume:
        checkpoint(0)  # Ctrl-C during the first epoch still leaves something to resume
    train_start = time.perf_counter()
    epoch = start_epoch - 1
    try:
        for epoch in range(start_epoch, cfg.epochs + 1):
            if stale >= cfg.patience:
                break
            model.train()
            gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
            order = np.random.default_rng([cfg.seed, epoch]).permutation(len(x_train))
            seen, loss_sum, correct = 0, 0.0, 0
            epoch_start = time.perf_counter()
            with progress_bar(f"epoch {epoch}/{cfg.epochs}", steps_per_epoch,
                              enabled=cfg.show_progress) as bar:
                for b in range(steps_per_epoch):
                    idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
                    if cfg.augment:
                        x = augment_batch(torch.from_numpy(x_train[idx]), spec, gen)
                    else:
                        x = torch.from_numpy(normalize(x_train[idx], spec))
                    x, y = x.to(device), torch.from_numpy(y_train[idx]).to(device)
                    logits = model(x)
                    loss = F.cross_entropy(logits, y, weight=weight,
                                           label_smoothing=cfg.label_smoothing)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    scheduler.step()
                    seen += len(idx)
                    loss_sum += loss.item() * len(idx)
                    correct += (logits.argmax(1) == y).sum().item()
                    bar.advance(status=f"loss {loss_sum / seen:.3f} acc {correct / seen:.3f}")
            train_seconds = time.perf_counter() - epoch_start
            val = classification_metrics(y_val, predict_proba(model, x_val, spec), classes)
            improved = val["f1_macro"] > best_f1
            if improved:
                best_f1, stale = val["f1_macro"], 0
                _save(out / "best.pt", {"model": model.state_dict(), "epoch": epoch})
            else:
                stale += 1
            history.append({
                "epoch": epoch, "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
                "val_loss": val["loss"], "val_accuracy": val["accuracy"],
                "val_f1_macro": val["f1_macro"], "lr": optimizer.param_groups[0]["lr"],
                "seconds": round(time.perf_counter() - epoch_start, 2),
                "train_images_per_second": round(seen / train_seconds, 1)})
            checkpoint(epoch)
            _write_history(out / "history.csv", history)
            log.info("epoch %d/%d  train loss %.4f acc %.4f | val loss %.4f acc %.4f macro-F1 %.4f%s",
                     epoch, cfg.epochs, loss_sum / seen, correct / seen, val["loss"],
                     val["accuracy"], val["f1_macro"], "  (best)" if improved else "")
    except KeyboardInterrupt:
        raise TrainingInterrupted(
            f"training interrupted; the checkpoint after epoch {epoch - 1 if epoch else 0} is in "
            f"{out}; continue with the same command and --resume") from None
    if stale >= cfg.patience:
        log.info("early stopping: validation macro-F1 did not improve for %d epochs", cfg.patience)

    train_wall = time.perf_counter() - train_start
    best = torch.load(out / "best.pt", map_location=device, weights_only=True)
    model.load_state_dict(best["model"])
    results = {"best_epoch": best["epoch"], "epochs_run": len(history),
               "decode_seconds": round(decode_seconds, 2), "train_seconds": round(train_wall, 2)}
    for split in ("val", "test"):
        if len(split_idx[split]):
            probs = predict_proba(model, decoded.arrays[split_idx[split]], spec)
            results[split] = classification_metrics(labels[split_idx[split]], probs, classes)
            np.save(out / f"{split}_probs.npy", probs)
    (out / "metrics.json").write_text(json.dumps(results, indent=1))

    meta = {
        "format": "hematovision-run/1",
        "classes": classes,
        "architecture": cfg.arch,
        "input_size": cfg.image_size,
        "preprocess": spec.to_dict(),
        "training": asdict(cfg),
        "data": {"root": manifest.data_root, "manifest_sha256": manifest.sha256,
                 "extra_train": {"root": cfg.extra_train, "files": extra_files} if extra_files else None,
                 "counts": manifest.counts(),
                 "skipped_files": [str(p) for p, _ in decoded.folder.skipped]},
        "metrics": {s: {k: results[s][k] for k in ("accuracy", "f1_macro", "loss", "ece", "n")}
                    for s in ("val", "test") if s in results},
        "licence": model_info(cfg.arch).licence,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "software": {"hematovision": __version__, "torch": torch.__version__,
                     "python": platform.python_version()},
    }
    (out / "model.json").write_text(json.dumps(meta, indent=1))
    shown = "test" if "test" in results else "val"
    report_probs = np.load(out / f"{shown}_probs.npy")
    write_report(out, f"HematoVision run: {cfg.arch} on {Path(cfg.data).name} ({shown} split)",
                 results[shown], labels[split_idx[shown]], report_probs, history,
                 details={"architecture": cfg.arch, "input size": cfg.image_size,
                          "epochs run": len(history), "best epoch": best["epoch"],
                          "training time (s)": round(train_wall, 1), "device": str(device),
                          "split manifest": manifest.sha256[:16]})
    return out
