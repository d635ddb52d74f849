"""Several runs exported as one model (a deep ensemble), with float16 weights."""

import json

import numpy as np
import onnx
import pytest
import torch
from scipy.special import softmax

from hematovision.cli import main
from hematovision.errors import HematoVisionError
from hematovision.inference import Classifier
from hematovision.models import load_trained, predict_proba
from hematovision.preprocess import load_resized, normalize
from hematovision.training import train

pytestmark = pytest.mark.slow


def _member(synth_dir, out, seed: int, split_seed: int | None):
    return train(
        data=str(synth_dir),
        out=str(out),
        arch="efficientnet_lite0",
        pretrained=True,
        epochs=1,
        image_size=64,
        batch_size=16,
        seed=seed,
        split_seed=split_seed,
        show_progress=False,
    )


@pytest.fixture(scope="module")
def members(synth_dir, tmp_path_factory):
    """Two runs on one split (seeds 0 and 1, the split of seed 0), and one on another split."""
    root = tmp_path_factory.mktemp("members")
    return [
        _member(synth_dir, root / "a", 0, None),
        _member(synth_dir, root / "b", 1, 0),
        _member(synth_dir, root / "other-split", 1, None),
    ]


def test_split_seed_shares_the_split_and_nothing_else(members):
    a, b, other = members
    assert b.split_file.read_text() == a.split_file.read_text()
    assert other.split_file.read_text() != a.split_file.read_text()
    weights = [torch.load(r.best, weights_only=True)["model"] for r in (a, b)]
    assert not torch.equal(weights[0]["classifier.weight"], weights[1]["classifier.weight"])


@pytest.fixture(scope="module")
def ensemble(members, tmp_path_factory):
    """The first two members exported as the README shows."""
    a, b, _ = members
    out = tmp_path_factory.mktemp("ensemble") / "artifact"
    assert main(["export", "--model", str(a), str(b), "--out", str(out), "--half-weights"]) == 0
    return out


def test_an_ensemble_exported_as_the_readme_shows_answers_the_mean_of_its_members(
    members, ensemble, synth_dir
):
    a, b, _ = members
    out = ensemble
    meta = json.loads((out / "model.json").read_text())
    assert meta["architecture"] == "ensemble-2xefficientnet_lite0"
    assert [m["run"] for m in meta["training"]["ensemble_members"]] == [str(a), str(b)]
    assert meta["checks"]["fp16_weights_max_abs_probability_difference"] < 0.02

    clf = Classifier.load(out, engine="onnxruntime")  # auto may compute in bfloat16
    paths = sorted(synth_dir.rglob("*.png"))[::8]
    predictions = clf.predict(paths, heatmaps=True)
    images = np.stack([load_resized(p, clf.spec) for p in paths])
    logits, params = [], 0
    for run in (a, b):
        model, info = load_trained(run)
        params += sum(p.numel() for p in model.parameters())
        with torch.no_grad():
            logits.append(model(torch.from_numpy(normalize(images, info.preprocess))).numpy())
    expected = softmax(np.mean(logits, axis=0) / clf.temperature, axis=1)
    ours = np.array([[p.probabilities[c] for c in clf.classes] for p in predictions])
    assert np.abs(ours - expected).max() < 0.02
    assert all(p.heatmap is not None and p.heatmap.shape == (64, 64) for p in predictions)

    # the weights in float16: about half the bytes of the members' float32 parameters
    assert (out / "model.onnx").stat().st_size < 0.6 * 4 * params


def test_an_ensemble_adapts_to_a_lab_as_one_network_does(ensemble, synth_dir, tmp_path):
    from hematovision.adapt import NeighbourSpace, adapt, anchor_features
    from hematovision.artifact import ModelArtifact

    adapted = adapt(ModelArtifact.load(ensemble), synth_dir, tmp_path / "adapted", force=True)
    held_out = adapted.metrics["adaptation"]["held_out"]
    assert held_out["n"] > 0 and held_out["accuracy_after"] >= held_out["accuracy_before"]
    clf = Classifier.load(adapted.path, engine="onnxruntime")
    assert (adapted.path / "model.onnx").stat().st_size < 1.1 * (
        ensemble / "model.onnx"
    ).stat().st_size
    assert all(p.ok for p in clf.predict(sorted(synth_dir.rglob("*.png"))[:4]))
    # the lab's cells joined the graph's anchors after the training images, so a second
    # adaptation keeps the model's answers on the same training images as the first
    base_anchors = anchor_features(ModelArtifact.load(ensemble))
    graph = onnx.load(str(adapted.path / "model.onnx")).graph
    assert NeighbourSpace.of(graph).size > len(base_anchors)
    assert np.array_equal(anchor_features(adapted), base_anchors)


def test_the_ensembles_logits_are_the_mean_of_its_members(members, synth_dir):
    a, b, _ = members
    ensemble, info = load_trained([a, b])
    images = np.stack([load_resized(p, info.preprocess) for p in sorted(synth_dir.rglob("*.png"))])
    with torch.no_grad():
        x = torch.from_numpy(normalize(images[:16], info.preprocess))
        mean = torch.stack([load_trained(r)[0](x) for r in (a, b)]).mean(0)
        assert torch.allclose(ensemble(x), mean, atol=1e-4)
    assert predict_proba(ensemble, images[:4], info.preprocess).shape == (4, 2)


def test_ensembles_that_cannot_be_made_are_refused_and_nothing_is_replaced(
    members, synth_run, tmp_path, capsys
):
    a, _, other = members
    out = tmp_path / "kept"
    out.mkdir()
    (out / "model.json").write_text("{}")
    for runs, message in (
        ([a, other], "different splits"),
        ([synth_run, synth_run], "each ending in one linear layer"),
    ):
        args = ["export", "--model", *map(str, runs), "--out", str(out), "--overwrite"]
        assert main(args) != 0
        assert message in capsys.readouterr().err
        assert (out / "model.json").read_text() == "{}"
    assert main(["export", "--model", str(a), str(other)]) != 0
    assert "--out" in capsys.readouterr().err
    with pytest.raises(HematoVisionError, match="different splits"):
        load_trained([other, a])
