"""Batch inference on a real local Ray instance: the same answers as the local Classifier."""

import json

import pyarrow.parquet as pq
import pytest
import ray  # the test extra installs the ray extra: a missing Ray fails here, never skips

from hematovision.cli import main
from hematovision.errors import HematoVisionError
from hematovision.inference import Classifier


@pytest.fixture(scope="module")
def local_ray():
    from hematovision.inference.ray_batch import start_ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    start_ray()  # connected already: nothing to do
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def images(pbc_dir, tmp_path_factory):
    broken = tmp_path_factory.mktemp("bad") / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    paths = [p for c in sorted(pbc_dir.iterdir()) for p in sorted(c.glob("[!.]*.jpg"))[:5]]
    return [*paths[:20], broken, *paths[20:]]


def _rows(folder):
    table = pq.read_table(folder / "predictions.parquet")  # one file, written as results came
    return {row["path"]: row for row in table.to_pylist()}


def test_ray_results_equal_the_local_classifier_file_by_file(local_ray, images, tmp_path):
    from hematovision.inference.ray_batch import predict_on_ray

    summary = predict_on_ray(images, tmp_path / "out", engine="onnxruntime", batch_size=8)
    assert summary["images"] == len(images) and summary["failures"] == 1
    rows = _rows(tmp_path / "out")
    local = Classifier.load(engine="onnxruntime").predict(images, errors="report")
    assert len(rows) == len(images)
    for path, pred in zip(images, local):
        row = rows[str(path.resolve())]
        if not pred.ok:
            assert row["code"] == "unreadable_image" and row["label"] is None
            continue
        assert row["label"] == pred.label and row["uncertain"] == pred.uncertain
        assert row["confidence"] == pytest.approx(pred.confidence, abs=1e-6)
        assert row["probabilities"] == pytest.approx(pred.probabilities, abs=1e-6)
    lines = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").open()]
    assert sorted(r["path"] for r in lines) == sorted(rows)


def test_predict_cli_on_ray_reads_a_csv_list_and_exits_1_for_the_unreadable_one(
    local_ray, images, tmp_path, capsys
):
    listing = tmp_path / "images.csv"
    listing.write_text("path,note\n" + "".join(f"{p.resolve()},x\n" for p in images[15:25]))
    assert main(["-q", "predict", str(listing), "--ray", "--out", str(tmp_path / "o")]) == 1
    assert "9 images classified on Ray" in capsys.readouterr().out
    assert len(_rows(tmp_path / "o")) == 10


def test_ray_input_mistakes_are_one_line(local_ray, images, tmp_path, capsys):
    from hematovision.inference.ray_batch import read_paths

    assert main(["-q", "predict", str(images[0]), "--ray"]) == 2
    assert "pass --out DIR" in capsys.readouterr().err
    listing = tmp_path / "images.csv"
    listing.write_text("file\nx.jpg\n")
    with pytest.raises(HematoVisionError, match="no 'path' column"):
        read_paths(str(listing))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("kept")
    out = tmp_path / "full"
    assert main(["-q", "predict", str(images[0]), "--ray", "--out", str(out)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert (out / "x").read_text() == "kept"


def test_smear_fields_on_ray_equal_the_local_analysis(local_ray, bccd_dir, tmp_path, capsys):
    from hematovision.smear import analyze_smear, load_smear_classifier

    fields = sorted(bccd_dir.rglob("*.jpg"))[:6]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    args = [*map(str, fields), str(broken), "--ray", "--out", str(tmp_path / "o")]
    assert main(["-q", "smear", *args, "--engine", "onnxruntime"]) == 1
    assert "6 fields analysed on Ray" in capsys.readouterr().out
    rows = {r["path"]: r for r in pq.read_table(tmp_path / "o" / "fields.parquet").to_pylist()}
    assert rows[str(broken)]["code"] == "unreadable_image"
    classifier = load_smear_classifier(engine="onnxruntime")
    for path in fields:
        local, row = analyze_smear(path, classifier).to_dict(), rows[str(path.resolve())]
        assert [c["box"] for c in row["white_cells"]] == [c["box"] for c in local["white_cells"]]
        assert [c["label"] for c in row["white_cells"]] == [
            c["label"] for c in local["white_cells"]
        ]
        assert (row["red_cells"], row["platelets"]) == (local["red_cells"], local["platelets"])


def test_a_csv_of_uris_is_fetched_and_an_unreachable_one_is_a_row(local_ray, images, tmp_path):
    """URIs, served by a local HTTP server on 127.0.0.1 (no other network)."""
    import functools
    import http.server
    import shutil
    import threading

    from hematovision.inference.ray_batch import predict_on_ray

    served = tmp_path / "served"
    served.mkdir()
    for path in images[:4]:
        shutil.copy(path, served / path.name)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        uris = [f"{base}/{p.name}" for p in images[:4]] + [f"{base}/missing.jpg"]
        listing = tmp_path / "uris.csv"
        listing.write_text("path\n" + "".join(f"{u}\n" for u in uris) + f"{images[5]}\n")
        summary = predict_on_ray(str(listing), tmp_path / "out", engine="onnxruntime")
    finally:
        server.shutdown()
    rows = _rows(tmp_path / "out")
    assert summary["images"] == 6 and summary["failures"] == 1
    local = Classifier.load(engine="onnxruntime").predict(images[:4])
    for uri, pred in zip(uris, local):
        assert rows[uri]["label"] == pred.label
        assert rows[uri]["confidence"] == pytest.approx(pred.confidence, abs=1e-6)
    assert rows[uris[-1]]["code"] == "unreachable" and "404" in rows[uris[-1]]["error"]
    assert rows[str(images[5])]["label"] is not None  # a local path in the same list
