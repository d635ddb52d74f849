"""Export (ONNX fp32 + int8, self-checks, calibration) and the Classifier on a trained run."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hematovision.adapt import anchor_features
from hematovision.artifact import ModelArtifact
from hematovision.cli import main
from hematovision.errors import HematoVisionError
from hematovision.export import choose_confidence_threshold, export_run, fit_temperature, softmax
from hematovision.export.calibration import CONFIDENCE_FLOOR
from hematovision.inference import DEFAULT_MODEL, Classifier, heatmap_overlay

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def artifact(synth_run, tmp_path_factory):
    return export_run(
        synth_run, tmp_path_factory.mktemp("artifact") / "a", int8=True, show_progress=False
    ).path


def test_artifact_holds_models_checks_and_calibration(artifact):
    meta = json.loads((artifact / "model.json").read_text())
    assert (artifact / "model.onnx").is_file() and (artifact / "model.int8.onnx").is_file()
    assert meta["checks"]["fp32_max_abs_probability_difference"] < 1e-4
    assert meta["checks"]["int8_top1_agreement"] >= 0.995
    assert meta["classes"] == ["lymphocyte", "neutrophil"] and meta["input_size"] == 64
    assert meta["temperature"] > 0 and CONFIDENCE_FLOOR <= meta["confidence_threshold"] <= 0.99
    assert {"ece_before", "ece_after"} <= set(meta["metrics"]["val"])
    assert len(meta["files"]["onnx"]["sha256"]) == 64
    with np.load(artifact / meta["files"]["anchors"]["path"]) as anchors:  # for hematovision adapt
        assert anchors["norms"].shape[0] >= 2 and set(anchors["labels"]) == {0, 1}
        assert "features" not in anchors  # the graph holds their directions: stored once


def test_classifier_accepts_paths_pil_and_arrays_alike(artifact, synth_dir):
    clf = Classifier.load(artifact)
    path = sorted((synth_dir / "neutrophil").iterdir())[0]
    pil = Image.open(path)
    arr = np.asarray(pil)
    a, b, c = clf.predict([path, pil, arr])
    assert a.label == b.label == c.label
    assert a.probabilities == pytest.approx(b.probabilities) == c.probabilities
    assert sum(a.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert set(a.to_dict()) == {"label", "confidence", "uncertain", "reasons", "probabilities"}


def test_the_exported_graph_takes_pixels_and_normalises_them_itself(artifact):
    import onnx

    graph = onnx.load(str(artifact / "model.onnx")).graph
    (tensor,) = graph.input
    assert tensor.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_value for d in tensor.type.tensor_type.shape.dim][1:] == [64, 64, 3]
    assert json.loads((artifact / "model.json").read_text())["preprocess"]["input"] == "uint8"


def test_the_distance_score_is_the_kth_nearest_anchor(artifact, synth_run, synth_dir):
    """The graph's "ood" output: cosine distance to the 10th nearest of the anchors (training
    images' features, stored once in float16: the graph their directions, anchors.npz their
    lengths), and noise lies farther."""
    import onnx
    from onnx import numpy_helper

    from hematovision.artifact import NEIGHBOUR_K, neighbour_distances, unit_rows
    from hematovision.export.graph import pooled_features
    from hematovision.models import load_trained
    from hematovision.preprocess import model_view, resize, to_rgb

    clf = Classifier.load(artifact, engine="onnxruntime")  # the reference engine, in fp32
    graph = onnx.load(str(artifact / "model.onnx")).graph
    (stored,) = [i for i in graph.initializer if i.name == "anchors"]
    anchors = anchor_features(ModelArtifact.load(artifact))  # what adapt keeps answers on
    assert stored.data_type == onnx.TensorProto.FLOAT16 and len(anchors) > NEIGHBOUR_K
    assert np.allclose(numpy_helper.to_array(stored), unit_rows(anchors), atol=2e-3)
    model, info = load_trained(synth_run)
    every = sorted(synth_dir.glob("*/*"))  # the training images among them
    pixels = np.stack([resize(model_view(to_rgb(p), clf.spec)[0], clf.spec) for p in every])
    features = pooled_features(model, pixels, info.preprocess)  # as training computes them
    nearest = np.linalg.norm(anchors[:, None] - features[None], axis=-1).min(1)
    # anchors are training images' features, lengths and all: each is found again
    assert np.max(nearest / np.linalg.norm(anchors, axis=1)) < 5e-3
    cells = [i for i, p in enumerate(every) if p.parent.name == "lymphocyte"][:6]
    ood = clf.predict_arrays(pixels[cells])[2]
    assert np.allclose(ood, neighbour_distances(unit_rows(anchors), features[cells]), atol=2e-3)
    noise = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), np.uint8)
    far = clf.predict(list(noise))
    assert min(clf.predict_arrays(noise)[2]) > max(ood)
    assert all("unlike the training images" in " ".join(p.reasons) for p in far)


def test_too_few_training_images_for_the_distance_score_is_a_clear_error():
    from hematovision.export import ServingGraph
    from hematovision.models import create_model
    from hematovision.preprocess import PreprocessSpec

    net = create_model("seed-cnn", 2, input_size=64)
    with pytest.raises(HematoVisionError, match="needs at least 10"):
        ServingGraph(net, np.ones((9, 32)), PreprocessSpec(input_size=64))


def test_temperature_is_applied_to_the_probabilities(artifact, synth_dir):
    import onnxruntime as ort

    from hematovision.preprocess import load_resized

    clf = Classifier.load(artifact, engine="onnxruntime")
    path = sorted((synth_dir / "lymphocyte").iterdir())[0]
    session = ort.InferenceSession(str(artifact / "model.onnx"))
    logits = session.run(["logits"], {"input": load_resized(path, clf.spec)[None]})[0]
    expected = softmax(logits, clf.temperature)[0]
    got = clf.predict(path)[0]
    assert [got.probabilities[c] for c in clf.classes] == pytest.approx(expected.tolist(), abs=1e-6)


def test_int8_model_agrees_with_fp32(artifact, synth_dir):
    fp32, int8 = Classifier.load(artifact), Classifier.load(artifact, precision="int8")
    paths = sorted(synth_dir.rglob("*.png"))[:30]
    agree = np.mean([a.label == b.label for a, b in zip(fp32.predict(paths), int8.predict(paths))])
    assert agree >= 0.9


def test_heatmap_has_the_image_size_and_overlays(artifact, synth_dir):
    clf = Classifier.load(artifact)
    img = Image.open(sorted((synth_dir / "lymphocyte").iterdir())[0]).resize((90, 70))
    pred = clf.predict(img, heatmaps=True)[0]
    assert pred.heatmap.shape == (70, 90)
    assert pred.heatmap.min() >= 0 and pred.heatmap.max() <= 1
    assert heatmap_overlay(img, pred.heatmap).size == (90, 70)


def test_tampered_artifact_and_missing_model_are_clear_errors(artifact, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(artifact, copy)
    with open(copy / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(HematoVisionError, match="does not match the hash"):
        Classifier.load(copy)
    with pytest.raises(HematoVisionError, match="not a model artifact"):
        Classifier.load(tmp_path)


def test_export_refuses_to_overwrite(artifact, synth_run):
    with pytest.raises(HematoVisionError, match="exists; pass --overwrite"):
        export_run(synth_run, artifact, show_progress=False)


def test_calibration_helpers():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 500)
    logits = 3 * (np.eye(3)[y] + rng.normal(0, 0.7, (500, 3)))  # over-confident
    t = fit_temperature(logits, y)
    assert t > 1
    probs = softmax(logits, t)
    threshold = choose_confidence_threshold(probs, y)
    kept = probs.max(1) >= threshold
    assert threshold == 0.99 or (probs.argmax(1) == y)[kept].mean() >= 0.995
    assert threshold >= CONFIDENCE_FLOOR  # a new lab is wrong more often than validation says
    sure = np.eye(3)[y] * 0.98 + 0.02 / 3  # right and sure: validation allows any threshold
    assert choose_confidence_threshold(sure, y) == CONFIDENCE_FLOOR


def test_predict_cli_formats_and_exit_codes(artifact, synth_dir, tmp_path, capsys):
    files = [str(p) for p in sorted((synth_dir / "lymphocyte").iterdir())[:2]]
    assert (
        main(
            [
                "-q",
                "predict",
                "--model",
                str(artifact),
                *files,
                "--format",
                "json",
                "--heatmaps",
                str(tmp_path / "heat"),
            ]
        )
        == 0
    )
    rows = json.loads(capsys.readouterr().out)
    assert [r["path"] for r in rows] == [str(Path(f).resolve()) for f in files]
    assert set(rows[0]) >= {"path", "label", "confidence", "uncertain", "probabilities"}
    assert len(list((tmp_path / "heat").glob("*.png"))) == 2

    assert (
        main(
            [
                "-q",
                "predict",
                "--model",
                str(artifact),
                str(synth_dir / "neutrophil"),
                "--format",
                "csv",
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "path,label,confidence,uncertain,lymphocyte,neutrophil" and len(lines) == 41

    bad = tmp_path / "text.jpg"
    bad.write_text("hello")
    assert (
        main(["-q", "predict", "--model", str(artifact), files[0], str(bad), "--format", "json"])
        == 1
    )
    captured = capsys.readouterr()
    assert "text.jpg: not an image file" in captured.err
    assert [Path(r["path"]).name for r in json.loads(captured.out)] == ["lymphocyte_0000.png"]


def test_serving_never_imports_torch(tmp_path):
    code = (
        "import sys, hematovision.inference, hematovision.cli, hematovision.web.server\n"
        "from hematovision.web import create_app\n"
        "from hematovision.web.config import WebSettings\n"
        f"app = create_app(WebSettings(data_dir={str(tmp_path)!r}))\n"
        "app.test_client().get('/model/confusion.png')\n"
        "print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


def test_predict_on_the_bundled_model_imports_no_training_library(tmp_path):
    # scikit-learn (splits) and pandas under it took 1.7 s of a 2.7-s `predict` of one image
    sample = next(DEFAULT_MODEL.parent.joinpath("samples").glob("*.jpg"))
    code = (
        "import sys\n"
        "from hematovision.cli import main\n"
        f"assert main(['-q', 'predict', {str(sample)!r}, '--format', 'json']) == 0\n"
        "print(sorted(m for m in ('sklearn', 'pandas', 'torch', 'matplotlib') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout + result.stderr


def test_static_padding_keeps_the_outputs_and_removes_the_shape_arithmetic(tmp_path):
    import onnx
    import torch

    from hematovision.export.graph import with_static_padding
    from hematovision.models import create_model

    model = create_model("efficientnet_lite0", 3, pretrained=False).eval()  # timm Conv2dSame
    static = with_static_padding(model, 96)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert torch.allclose(model(x), static(x), atol=1e-5)
    ops = {}
    for name, net in (("dynamic", model), ("static", static)):
        path = tmp_path / f"{name}.onnx"
        torch.onnx.export(
            net,
            (x,),
            str(path),
            opset_version=17,
            dynamo=False,
            input_names=["input"],
            dynamic_axes={"input": {0: "batch"}},
        )
        ops[name] = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert "Shape" in ops["dynamic"] and "Shape" not in ops["static"]
    assert len(ops["static"]) < len(ops["dynamic"])


def test_a_batch_mostly_unlike_the_training_images_gets_the_new_lab_notice():
    from hematovision.inference import new_lab_notice
    from hematovision.inference.classifier import UNLIKE_TRAINING

    low = "confidence below 0.97"
    notice = new_lab_notice([[UNLIKE_TRAINING]] * 4 + [[low]] * 6 + [[]] * 10)
    assert "10 of 20 cells are flagged for review (4 unlike the images" in notice
    assert new_lab_notice([[UNLIKE_TRAINING]] * 9 + [[]] * 11) is None  # under half
    assert new_lab_notice([[low]] * 19) is None  # too few cells to say
