"""Training on packed cells, for benchmarks that pack here (framing needs the data, 2 cores
suffice) and train where a GPU is (no data, no network there): framed cells as JPEG blobs in
one .npz, ImageNet weights as float16, and the bundled model's loop with the augmentation
spread over worker processes."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from hematovision.models import create_model
from hematovision.preprocess import PreprocessSpec, normalize
from hematovision.training.augment import augment_batch
from hematovision.training.loop import lr_schedule

ARCH = "efficientnet_lite0"
WEIGHTS = "imagenet_fp16.pt"


def write_jpegs(path: Path, arrays, labels, **columns) -> None:
    """NHWC uint8 ``arrays`` as JPEG (quality 90) with their labels and any other columns."""
    blobs = []
    for array in arrays:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, "JPEG", quality=90)
        blobs.append(buffer.getvalue())
    offsets = np.cumsum([0] + [len(b) for b in blobs])
    data = np.frombuffer(b"".join(blobs), np.uint8)
    extra = {k: np.asarray(v) for k, v in columns.items()}
    np.savez(path, data=data, offsets=offsets, labels=np.array(labels), **extra)


def read_jpegs(path: Path) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(images NHWC uint8, labels, the other columns) of ``write_jpegs``'s file."""
    saved = np.load(path)
    raw, offsets = saved["data"].tobytes(), saved["offsets"]
    arrays = [
        np.asarray(Image.open(io.BytesIO(raw[a:b])).convert("RGB"))
        for a, b in zip(offsets[:-1], offsets[1:])
    ]
    columns = {k: saved[k] for k in saved.files if k not in ("data", "offsets", "labels")}
    return torch.from_numpy(np.stack(arrays)), torch.from_numpy(saved["labels"]).long(), columns


def save_imagenet_weights(out: Path) -> None:
    """The backbone's ImageNet weights (no head) as float16, for a machine without them."""
    model = create_model(ARCH, num_classes=8, pretrained=True)
    weights = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    torch.save({k: v for k, v in weights.items() if not k.startswith("classifier.")}, out / WEIGHTS)


class _AugmentedBatches(torch.utils.data.Dataset):
    """The batches of every epoch in turn (``orders``: one permutation per epoch), each
    augmented in a worker with its own seeded generator (the same batches whatever the
    number of workers)."""

    def __init__(self, x, y, orders, batch, spec, recipe, seed):
        self.x, self.y, self.orders, self.batch = x, y, orders, batch
        self.spec, self.recipe, self.seed = spec, recipe, seed
        self.steps = len(x) // batch  # per epoch; the last partial batch is dropped

    def __len__(self):
        return len(self.orders) * self.steps

    def __getitem__(self, i):
        epoch, step = divmod(i, self.steps)
        chosen = self.orders[epoch][step * self.batch : (step + 1) * self.batch]
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        return augment_batch(self.x[chosen], self.spec, gen, self.recipe), self.y[chosen]


def fit(
    x, y, spec: PreprocessSpec, weights: dict, recipe: str, seed: int, device: str, *,
    epochs: int = 8, batch: int = 32, lr: float = 1e-3, workers: int = 0,
):  # fmt: skip
    """The bundled model's recipe on (x, y): AdamW, warm-up for one epoch, then cosine decay,
    label smoothing 0.1."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = create_model(ARCH, num_classes=8, pretrained=False)
    model.load_state_dict({k: v.float() for k, v in weights.items()}, strict=False)
    model.to(device)
    steps_per_epoch = len(x) // batch
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_schedule(steps_per_epoch, epochs * steps_per_epoch)
    )
    orders = [torch.randperm(len(x), generator=gen) for _ in range(epochs)]
    batches = _AugmentedBatches(x, y, orders, batch, spec, recipe, seed)
    loader = torch.utils.data.DataLoader(
        batches, batch_size=None, num_workers=workers, prefetch_factor=4 if workers else None
    )
    model.train()
    for inputs, labels in loader:
        loss = F.cross_entropy(model(inputs.to(device)), labels.to(device), label_smoothing=0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return model.eval()


@torch.no_grad()
def logits_and_features(model, x, spec: PreprocessSpec, device: str):
    """(logits, pooled features) as NumPy arrays, for NHWC uint8 images."""
    logits, features = [], []
    for start in range(0, len(x), 256):
        inputs = torch.from_numpy(normalize(x[start : start + 256].numpy(), spec)).to(device)
        fmap = model.forward_features(inputs)
        logits.append(model.forward_head(fmap).float().cpu())
        features.append(fmap.mean((2, 3)).float().cpu())
    return torch.cat(logits).numpy(), torch.cat(features).numpy()
