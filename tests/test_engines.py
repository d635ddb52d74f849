"""The two inference engines on the bundled model: the same answers, and the choice between them."""

import numpy as np
import pytest

from hematovision.cli import main
from hematovision.errors import HematoVisionError
from hematovision.inference import Classifier, engines


@pytest.fixture(scope="module")
def pbc_images(pbc_dir):
    """240 real PBC images, 30 per class."""
    return [p for c in sorted(pbc_dir.iterdir()) for p in sorted(c.glob("[!.]*.jpg"))[:30]]


def test_openvino_and_onnx_runtime_agree_on_real_cells(pbc_images):
    ort = Classifier.load(engine="onnxruntime")
    ov = Classifier.load(engine="openvino")
    assert (ort.engine.name, ov.engine.name) == ("onnxruntime", "openvino")
    a, b = ort.predict(pbc_images), ov.predict(pbc_images)
    agreement = np.mean([x.label == y.label for x, y in zip(a, b)])
    assert agreement >= 0.995, agreement
    # OpenVINO computes in bf16 on this CPU: confidences move a little (measured on 480
    # images: median 0.0001, 99th percentile 0.05), so a cell near the threshold may change flag
    gaps = [abs(x.confidence - y.confidence) for x, y in zip(a, b)]
    assert np.median(gaps) < 0.005 and np.percentile(gaps, 90) < 0.05, gaps
    assert np.mean([x.uncertain == y.uncertain for x, y in zip(a, b)]) >= 0.97


def test_auto_picks_openvino_only_where_it_is_installed_and_the_cpu_pays(monkeypatch):
    monkeypatch.setattr(engines, "openvino_installed", lambda: True)
    monkeypatch.setattr(engines, "cpu_flags", lambda: frozenset({"avx2", "avx512_bf16"}))
    assert engines.resolve_engine("auto") == "openvino"
    monkeypatch.setattr(engines, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert engines.resolve_engine("auto") == "onnxruntime"
    monkeypatch.setattr(engines, "openvino_installed", lambda: False)
    monkeypatch.setattr(engines, "cpu_flags", lambda: frozenset({"avx512_vnni"}))
    assert engines.resolve_engine("auto") == "onnxruntime"
    with pytest.raises(HematoVisionError, match=r"pip install 'hematovision\[openvino\]'"):
        engines.resolve_engine("openvino")
    with pytest.raises(HematoVisionError, match="unknown engine 'tensorrt'"):
        engines.resolve_engine("tensorrt")


def test_this_cpu_reports_its_flags():
    flags = engines.cpu_flags()
    assert "sse2" in flags or not flags  # x86 Linux lists its flags; elsewhere none are known


def _scrambled(run):
    """An engine that answers with its classes rotated: wrong on every image."""
    return lambda batch: [
        np.roll(out, 1, axis=1) if i == 0 else out for i, out in enumerate(run(batch))
    ]


def test_an_engine_that_disagrees_with_onnx_runtime_is_refused(monkeypatch):
    original = engines.OpenVinoEngine.__init__

    def broken_init(self, model, threads=None):
        original(self, model, threads)
        self.run = _scrambled(self.run)

    monkeypatch.setattr(engines.OpenVinoEngine, "__init__", broken_init)
    with pytest.raises(HematoVisionError, match=r"agrees with ONNX Runtime on 0\.0% of 24"):
        Classifier.load(engine="openvino")
    monkeypatch.setattr(engines, "openvino_installed", lambda: True)
    monkeypatch.setattr(engines, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    fallback = Classifier.load(engine="auto")  # auto: a warning, and ONNX Runtime instead
    assert fallback.engine.name == "onnxruntime"


def test_predict_cli_runs_on_either_engine_and_names_it(capsys):
    from hematovision.inference.classifier import SAMPLES

    sample = str(sorted(SAMPLES.glob("*.jpg"))[0])
    for engine in ("onnxruntime", "openvino"):
        assert main(["-q", "predict", sample, "--engine", engine, "--format", "json"]) == 0
        assert '"label": "basophil"' in capsys.readouterr().out
        assert main(["-q", "predict", sample, "--engine", engine]) == 0
        assert f"on {engine}" in capsys.readouterr().out


def test_an_engine_that_is_not_installed_is_one_line_and_exit_2(monkeypatch, capsys):
    from hematovision.inference.classifier import SAMPLES

    monkeypatch.setattr(engines, "openvino_installed", lambda: False)
    sample = str(sorted(SAMPLES.glob("*.jpg"))[0])
    assert main(["-q", "predict", sample, "--engine", "openvino"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'hematovision[openvino]'" in err and "Traceback" not in err


def test_batches_prepared_ahead_keep_order_and_failures_in_place(tmp_path):
    from hematovision.inference.classifier import SAMPLES

    samples = sorted(SAMPLES.glob("*.jpg"))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    images = [*samples[:7], broken, *samples[7:15], broken, *samples[15:]]
    clf = Classifier.load(engine="onnxruntime")
    batched = clf.predict(images, batch_size=4, errors="report")  # 7 batches, 2 failures
    alone = [clf.predict(image, errors="report")[0] for image in images]
    assert [p.label for p in batched] == [p.label for p in alone]
    assert [p.confidence for p in batched] == pytest.approx([p.confidence for p in alone])
    assert [i for i, p in enumerate(batched) if not p.ok] == [7, 16]
    with pytest.raises(HematoVisionError, match="broken.jpg"):
        clf.predict(images, batch_size=4)


def test_no_images_no_predictions():
    assert Classifier.load(engine="onnxruntime").predict([]) == []


def test_serve_refuses_an_engine_that_is_not_installed_before_starting(monkeypatch, capsys):
    monkeypatch.setattr(engines, "openvino_installed", lambda: False)
    assert main(["-q", "serve", "--engine", "openvino", "--port", "1"]) == 2
    assert "pip install 'hematovision[openvino]'" in capsys.readouterr().err
