import http.server
import io
import threading

import numpy as np
import pytest
import timm
import torch

from hematovision.errors import HematoVisionError
from hematovision.models import create_model, model_info, preprocess_spec


def test_seed_cnn_is_the_original_sequential_design():
    model = create_model("seed-cnn", 2, input_size=128)
    kinds = [type(m).__name__ for m in model.modules()]
    for layer in ("Conv2d", "MaxPool2d", "Flatten", "Linear", "Dropout"):
        assert layer in kinds
    assert model(torch.zeros(3, 3, 128, 128)).shape == (3, 2)
    assert preprocess_spec("seed-cnn", 128).mean == (0.0, 0.0, 0.0)  # plain [0, 1] scaling


def test_unknown_architecture_is_a_clear_error_with_suggestions():
    with pytest.raises(HematoVisionError, match="unknown architecture 'resnet5O'.*resnet50"):
        model_info("resnet5O")


def test_too_small_input_is_refused():
    with pytest.raises(HematoVisionError, match="too small"):
        create_model("seed-cnn", 2, input_size=16)


def test_timm_architecture_by_name():
    model = create_model("mobilenetv2_100", 5)
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 5)


@pytest.fixture
def weights_server(monkeypatch, tmp_path):
    """A local HTTP server with one timm resnet18 state dict at /resnet18.pth, 404 elsewhere."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    source = timm.create_model("resnet18", num_classes=1000)
    buf = io.BytesIO()
    torch.save(source.state_dict(), buf)
    payload = buf.getvalue()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            if self.path != "/resnet18.pth":
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}", source
    httpd.shutdown()


def test_pretrained_weights_are_downloaded_and_loaded(weights_server):
    base, source = weights_server
    model = create_model("resnet18", 3, weights=f"{base}/resnet18.pth")
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    assert model.fc.out_features == 3


def test_pretrained_weights_that_cannot_be_had_fail_clearly(weights_server):
    base, _ = weights_server
    with pytest.raises(HematoVisionError, match="cannot load ImageNet weights for resnet18.*404"):
        create_model("resnet18", 3, weights=f"{base}/missing.pth")


def test_offline_efficientnet_lite0_weights_match_the_reference_implementation():
    """Every tensor is loaded (strict), and the network computes what the reference does."""
    import efficientnet_lite_pytorch as reference_pkg  # in the test extra

    from hematovision.models.efficientnet_lite import weights_file

    ours = create_model("efficientnet_lite0", 1000, pretrained=True).eval()
    # put the ImageNet head back: create_model replaced it with a fresh one
    state = torch.load(weights_file(), map_location="cpu", weights_only=True)
    ours.classifier.load_state_dict({"weight": state["_fc.weight"], "bias": state["_fc.bias"]})
    reference = reference_pkg.EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=str(weights_file())
    ).eval()
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 3, 128, 128)).astype(np.float32))
    with torch.no_grad():
        diff = (ours(x) - reference(x)).abs().max().item()
    assert diff < 1e-4
    untrained = create_model("efficientnet_lite0", 1000, pretrained=False).eval()
    with torch.no_grad():
        assert (untrained(x) - reference(x)).abs().max().item() > 1e-2
