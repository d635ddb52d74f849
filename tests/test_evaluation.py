import json
import shutil

import numpy as np
import pytest
from sklearn import metrics as skm

from hematovision.errors import HematoVisionError
from hematovision.evaluation import classification_metrics, expected_calibration_error
from hematovision.models import load_trained, predict_proba
from hematovision.preprocess import load_resized
from hematovision.training import evaluate_run


def test_ece_on_a_hand_computed_example():
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    y = np.array([0, 1, 0, 0])
    # bin 0.9: accuracy 0.5 vs confidence 0.9; bin 0.6: accuracy 1.0 vs 0.6
    assert expected_calibration_error(y, probs) == pytest.approx(0.5 * 0.4 + 0.5 * 0.4)


def test_metrics_agree_with_scikit_learn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    logits = rng.normal(size=(200, 3)) + 2 * np.eye(3)[y]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    m = classification_metrics(y, probs, ["a", "b", "c"])
    pred = probs.argmax(1)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["f1_macro"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m["loss"] == pytest.approx(skm.log_loss(y, probs))
    assert m["roc_auc_macro"] == pytest.approx(skm.roc_auc_score(y, probs, multi_class="ovr"))
    assert m["confusion_matrix"] == skm.confusion_matrix(y, pred).tolist()


def test_evaluate_run_matches_an_independent_computation(synth_run, synth_dir, tmp_path):
    metrics = evaluate_run(synth_run, synth_dir, "test", out_dir=tmp_path, show_progress=False)
    # independently: the manifest's test files, the run's weights, scikit-learn
    split = json.loads((synth_run / "split.json").read_text())
    test = [f for f in split["files"] if f["split"] == "test"]
    model, info = load_trained(synth_run)
    spec = info.preprocess
    images = np.stack([load_resized(synth_dir / f["path"], spec) for f in test])
    y = np.array([info.classes.index(f["label"]) for f in test])
    probs = predict_proba(model, images, spec)
    assert metrics["n"] == len(test)
    assert metrics["accuracy"] == pytest.approx(skm.accuracy_score(y, probs.argmax(1)))
    assert metrics["f1_macro"] == pytest.approx(skm.f1_score(y, probs.argmax(1), average="macro"))
    assert metrics["roc_auc_macro"] == pytest.approx(skm.roc_auc_score(y, probs[:, 1]))
    assert metrics["accuracy"] >= 0.85
    saved = json.loads((tmp_path / "eval-test.json").read_text())
    assert saved["accuracy"] == metrics["accuracy"]
    html = (tmp_path / "eval-test.html").read_text()
    assert "eval-test_confusion_matrix.png" in html and (tmp_path / "plots").is_dir()


def test_evaluate_refuses_a_class_the_model_does_not_know(synth_run, synth_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synth_dir, data)
    (data / "lymphocyte").rename(data / "monocyte")
    with pytest.raises(HematoVisionError, match="class\\(es\\) the model does not know: monocyte"):
        evaluate_run(synth_run, data, "all", out_dir=tmp_path, show_progress=False)


def test_evaluate_all_on_a_new_folder_with_a_subset_of_classes(synth_run, synth_dir, tmp_path):
    data = tmp_path / "only-neutrophils"
    shutil.copytree(synth_dir / "neutrophil", data / "Neutrophil")
    metrics = evaluate_run(synth_run, data, "all", out_dir=tmp_path, show_progress=False)
    assert metrics["n"] == 40 and metrics["per_class"]["lymphocyte"]["support"] == 0
    with pytest.raises(HematoVisionError, match="not in"):
        evaluate_run(synth_run, data, "test", out_dir=tmp_path, show_progress=False)
