import csv
import json

import numpy as np
import pytest

import hematovision.training.loop as loop
from hematovision.errors import HematoVisionError, TrainingInterrupted
from hematovision.training import TrainConfig, train

pytestmark = pytest.mark.slow


def test_seed_cnn_learns_the_synthetic_set(synth_run):
    metrics = json.loads((synth_run / "metrics.json").read_text())
    # two classes: chance is 0.5
    assert metrics["val"]["accuracy"] >= 0.85
    assert metrics["test"]["accuracy"] >= 0.85
    assert metrics["epochs_run"] == 3


def test_run_folder_holds_everything(synth_run):
    for name in (
        "best.pt",
        "checkpoint.pt",
        "run.json",
        "history.csv",
        "metrics.json",
        "split.json",
        "report.html",
        "plots/training_curves.png",
        "plots/report_confusion_matrix.png",
        "plots/report_roc.png",
        "plots/report_per_class.png",
    ):
        assert (synth_run / name).is_file(), name
    meta = json.loads((synth_run / "run.json").read_text())
    assert meta["classes"] == ["lymphocyte", "neutrophil"]
    assert meta["architecture"] == "seed-cnn" and meta["input_size"] == 64
    assert meta["preprocess"]["mean"] == [0.0, 0.0, 0.0]
    split = json.loads((synth_run / "split.json").read_text())
    assert meta["data"]["manifest_sha256"] == split["sha256"]
    assert meta["training"]["epochs"] == 3 and "accuracy" in meta["metrics"]["test"]
    with open(synth_run / "history.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert '<img src="plots/training_curves.png"' in (synth_run / "report.html").read_text()


def test_existing_output_needs_overwrite_and_one_class_is_refused(synth_dir, synth_run, tmp_path):
    with pytest.raises(HematoVisionError, match="exists; pass --overwrite"):
        train(data=str(synth_dir), out=str(synth_run), epochs=1, show_progress=False)
    one = tmp_path / "one"
    (one / "lymphocyte").mkdir(parents=True)
    for p in sorted((synth_dir / "lymphocyte").iterdir())[:4]:
        (one / "lymphocyte" / p.name).write_bytes(p.read_bytes())
    with pytest.raises(HematoVisionError, match="only one class"):
        train(data=str(one), out=str(tmp_path / "r"), epochs=1, show_progress=False)


def _interrupt_at(monkeypatch, batch: int):
    """Ctrl-C as the ``batch``-th batch of training is augmented (4 batches an epoch on the
    synthetic set); returns the real ``augment_batch`` to put back."""
    real_augment, calls = loop.augment_batch, {"n": 0}

    def interrupting_augment(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == batch:
            raise KeyboardInterrupt
        return real_augment(*args, **kwargs)

    monkeypatch.setattr(loop, "augment_batch", interrupting_augment)
    return real_augment


def test_interrupt_leaves_a_resumable_checkpoint(synth_dir, tmp_path, monkeypatch):
    out = tmp_path / "run"
    common = dict(
        data=str(synth_dir),
        out=str(out),
        arch="seed-cnn",
        image_size=64,
        batch_size=16,
        epochs=3,
        seed=1,
        show_progress=False,
    )
    real_augment = _interrupt_at(monkeypatch, 6)  # in the second epoch
    with pytest.raises(TrainingInterrupted, match="--resume"):
        train(**common)
    monkeypatch.setattr(loop, "augment_batch", real_augment)
    with pytest.raises(HematoVisionError, match="different settings: seed"):
        train(**{**common, "seed": 2, "resume": True})
    train(**common, resume=True)
    with open(out / "history.csv") as fh:
        assert [int(r["epoch"]) for r in csv.DictReader(fh)] == [1, 2, 3]


def test_weight_average_is_the_mean_of_the_steps_from_its_start():
    import torch

    model = torch.nn.Linear(1, 1, bias=False)
    average = loop.WeightAverage(model, start_step=2)
    assert average.model() is model  # nothing averaged yet: the model's own weights
    for step in (1, 2, 3, 4):
        model.weight.data.fill_(float(step))
        average.step(step)
    assert average.model() is not model
    assert average.model().weight.item() == pytest.approx(3.0)  # steps 2, 3 and 4
    assert model.weight.item() == 4.0  # the model trains on from its own weights


def test_weights_averaged_over_the_end_of_a_run_survive_a_resume(synth_dir, tmp_path, monkeypatch):
    import torch

    common = dict(
        data=str(synth_dir),
        arch="seed-cnn",
        image_size=64,
        batch_size=16,
        epochs=3,
        seed=1,
        average_from=0.5,
        show_progress=False,
    )
    scored, real_evaluate = [], loop.evaluate

    def recording_evaluate(model, *args):
        scored.append(model)
        return real_evaluate(model, *args)

    monkeypatch.setattr(loop, "evaluate", recording_evaluate)
    whole = train(**common, out=str(tmp_path / "whole"))
    real_augment = _interrupt_at(monkeypatch, 11)  # in epoch 3, 4 steps of the average taken
    with pytest.raises(TrainingInterrupted):
        train(**common, out=str(tmp_path / "resumed"))
    monkeypatch.setattr(loop, "augment_batch", real_augment)
    with pytest.raises(HematoVisionError, match="different settings: average_from"):
        train(**{**common, "average_from": 0.2}, out=str(tmp_path / "resumed"), resume=True)
    resumed = train(**common, out=str(tmp_path / "resumed"), resume=True)

    last = torch.load(whole / "checkpoint.pt", weights_only=True)
    # 4 steps an epoch, 12 in all: averaged from the 6th step on
    assert int(last["average"]["n_averaged"]) == 7
    # epoch 1 is scored on the model's weights, epochs 2 and 3 on the average
    assert scored[0] is not scored[1] and scored[1] is scored[2]
    averaged = {k.removeprefix("module."): v for k, v in last["average"].items()}
    final = scored[2].state_dict()
    assert all(torch.allclose(v, averaged[k]) for k, v in final.items())
    assert any(not torch.equal(v, last["model"][k]) for k, v in final.items())
    assert np.allclose(
        np.load(whole / "test_probs.npy"), np.load(resumed / "test_probs.npy"), atol=1e-5
    )
    with pytest.raises(HematoVisionError, match="--average-from must be at least 0 and below 1"):
        train(**{**common, "average_from": 1.0}, out=str(tmp_path / "bad"))


def test_mixstyle_mixes_early_feature_statistics_in_training_only(synth_dir, tmp_path):
    import torch

    from hematovision.training.mixstyle import add_mixstyle

    class Stages(torch.nn.Module):  # three stages that pass their input on
        def __init__(self):
            super().__init__()
            self.blocks = torch.nn.Sequential(*(torch.nn.Identity() for _ in range(3)))

        def forward(self, x):
            return self.blocks(x)

    torch.manual_seed(0)
    x = torch.randn(6, 4, 8, 8) * torch.arange(1, 7.0)[:, None, None, None] + 10
    model = Stages()
    handles = add_mixstyle(model, p=1.0, stages=1)
    assert model.eval()(x).equal(x)  # evaluation and export see the images as they are
    mixed = model.train()(x)
    mean, std = x.mean((2, 3)), x.std((2, 3))
    new_mean, new_std = mixed.mean((2, 3)), mixed.std((2, 3))
    assert not torch.allclose(new_mean, mean)
    # each image's statistics lie between the batch's, its content (normalised) is unchanged
    assert (new_mean >= mean.min(0).values - 1e-4).all()
    assert (new_mean <= mean.max(0).values + 1e-4).all()
    normalised = (x - mean[..., None, None]) / std[..., None, None]
    new_normalised = (mixed - new_mean[..., None, None]) / new_std[..., None, None]
    assert torch.allclose(normalised, new_normalised, atol=1e-3)
    assert model(x[:1]).equal(x[:1])  # one image has no other to mix with
    for handle in handles:
        handle.remove()
    assert add_mixstyle(model, p=0.0) == []
    with pytest.raises(HematoVisionError, match="--mixstyle must be between 0 and 1"):
        train(data=str(synth_dir), out=str(tmp_path / "a"), mixstyle=1.5)
    with pytest.raises(HematoVisionError, match="--mixstyle needs a model with stages"):
        train(data=str(synth_dir), out=str(tmp_path / "b"), arch="seed-cnn", mixstyle=0.5)


def test_resume_without_a_checkpoint_is_a_clear_error(synth_dir, tmp_path):
    with pytest.raises(HematoVisionError, match="nothing to resume"):
        train(data=str(synth_dir), out=str(tmp_path / "none"), resume=True, show_progress=False)


def test_same_seed_same_split_and_same_result(synth_dir, synth_run, tmp_path):
    again = train(
        data=str(synth_dir),
        out=str(tmp_path / "again"),
        arch="seed-cnn",
        epochs=3,
        image_size=64,
        batch_size=16,
        seed=0,
        show_progress=False,
    )
    a = json.loads((synth_run / "split.json").read_text())
    b = json.loads((again / "split.json").read_text())
    assert a["sha256"] == b["sha256"]
    assert np.allclose(
        np.load(synth_run / "test_probs.npy"), np.load(again / "test_probs.npy"), atol=1e-5
    )


@pytest.mark.pbc
def test_transfer_learning_on_real_pbc_beats_chance(pbc_dir, tmp_path):
    """A short EfficientNet-Lite0 run on a small subset of the real PBC images, with the stem
    and the first two blocks frozen (they keep their ImageNet weights and statistics) and
    progressive resizing (80 px growing to the final 96)."""
    import torch

    from hematovision.models import create_model

    run = train(
        data=str(pbc_dir),
        out=str(tmp_path / "pbc"),
        arch="efficientnet_lite0",
        pretrained=True,
        epochs=3,
        max_per_class=40,
        val_fraction=0.2,
        test_fraction=0.25,
        lr=2e-3,
        image_size=96,
        freeze_blocks=2,
        start_size=80,
        seed=0,
        show_progress=False,
    )
    with open(run.history_file) as fh:
        assert [int(h["image_size"]) for h in csv.DictReader(fh)] == [80, 96, 96]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["n"] == 80
    assert metrics["test"]["accuracy"] >= 0.5  # 8 classes: chance is 0.125
    trained = torch.load(run.best, weights_only=True)["model"]
    start = create_model("efficientnet_lite0", 8, True, 96).state_dict()
    frozen = [k for k in start if k.startswith(("conv_stem.", "bn1.", "blocks.0.", "blocks.1."))]
    assert frozen and all(torch.equal(trained[k], start[k]) for k in frozen)
    assert not torch.equal(trained["blocks.2.0.conv_pw.weight"], start["blocks.2.0.conv_pw.weight"])
    assert not torch.equal(trained["bn2.running_mean"], start["bn2.running_mean"])


def test_freeze_blocks_is_checked_at_the_edge(synth_dir, tmp_path):
    for arch, blocks, message in (
        ("seed-cnn", 1, "needs a model with a stem and blocks"),
        ("efficientnet_lite0", 9, "between 0 and 7"),
    ):
        with pytest.raises(HematoVisionError, match=message):
            train(data=str(synth_dir), out=str(tmp_path / arch), arch=arch, freeze_blocks=blocks)


def test_progressive_resizing_grows_to_the_image_size_and_is_checked(synth_dir, tmp_path):
    def sizes(**settings):
        cfg = TrainConfig("d", **settings)
        return [loop.epoch_image_size(cfg, e) for e in range(1, cfg.epochs + 1)]

    assert sizes(epochs=4, start_size=96) == [96, 112, 112, 128]  # ends at the serving size
    assert sizes(epochs=1, start_size=96) == [128]
    assert sizes(epochs=3) == [128, 128, 128]
    for arch, start, message in (
        ("efficientnet_lite0", 160, "between 32 and --image-size"),
        ("seed-cnn", 64, "needs a model with global pooling"),
    ):
        with pytest.raises(HematoVisionError, match=message):
            train(data=str(synth_dir), out=str(tmp_path / arch), arch=arch, start_size=start)


def test_init_keeps_the_split_and_extra_images_only_train(synth_dir, synth_run, tmp_path):
    from hematovision.data import make_synthetic

    extra = make_synthetic(tmp_path / "extra", ("lymphocyte",), 5, 64, seed=7, show_progress=False)
    run = train(
        data=str(synth_dir),
        out=str(tmp_path / "ft"),
        init=str(synth_run),
        extra_train=str(extra),
        extra_repeat=2,
        epochs=1,
        image_size=64,
        batch_size=16,
        lr=1e-4,
        show_progress=False,
    )
    before = json.loads((synth_run / "split.json").read_text())
    after = json.loads((run / "split.json").read_text())
    assert after["sha256"] == before["sha256"]  # the earlier run's test images stay unseen
    meta = json.loads((run / "run.json").read_text())
    assert len(meta["data"]["extra_train"]["files"]) == 5
    assert json.loads((run / "metrics.json").read_text())["test"]["accuracy"] >= 0.85
    odd = tmp_path / "odd"
    make_synthetic(odd, ("monocyte",), 2, 64, show_progress=False)
    with pytest.raises(HematoVisionError, match="not in --data: monocyte"):
        train(
            data=str(synth_dir),
            out=str(tmp_path / "ft2"),
            init=str(synth_run),
            extra_train=str(odd),
            epochs=1,
            image_size=64,
            show_progress=False,
        )


def test_train_runs_unchanged_under_torchrun_on_cpu_and_resumes(synth_dir, tmp_path):
    """Two processes (gloo, DistributedDataParallel), as the README's torchrun command."""
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp"
    command = [
        *(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"),
        *("-m", "hematovision", "-q", "train", "--data", str(synth_dir), "--arch", "seed-cnn"),
        *("--image-size", "64", "--batch-size", "8", "--out", str(out)),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(*extra):
        done = subprocess.run(
            [*command, *extra], env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    first = run("--epochs", "2")
    assert first.count("run folder:") == 1  # rank 0 reports, once
    with open(out / "history.csv") as fh:
        assert [r["epoch"] for r in csv.DictReader(fh)] == ["1", "2"]
    run("--epochs", "5", "--resume")
    with open(out / "history.csv") as fh:
        history = list(csv.DictReader(fh))
    assert [r["epoch"] for r in history] == ["1", "2", "3", "4", "5"]
    # the loss and accuracy of an epoch count both processes' shares: every training image
    assert float(history[-1]["train_loss"]) < float(history[0]["train_loss"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["val"]["accuracy"] >= 0.75 and metrics["epochs_run"] == 5
    assert {"best.pt", "checkpoint.pt", "run.json", "split.json", "report.html"} <= {
        p.name for p in out.iterdir()
    }


@pytest.mark.parametrize(
    "setting",
    [("optimizer", "sgd"), ("recipe", "heavy"), ("framing", "nucleus"), ("balance", "lab")],
)
def test_the_api_refuses_a_setting_outside_the_clis_choices(setting):
    from hematovision.training import TrainConfig

    name, value = setting
    with pytest.raises(HematoVisionError, match=f"--{name} must be one of "):
        TrainConfig(data="d", out="o", **{name: value}).check()
