"""The web application through Flask's test client: every route and error path."""

import io
import re
import threading

import pytest
from PIL import Image

from hematovision.inference import DEFAULT_MODEL, Classifier
from hematovision.web import create_app
from hematovision.web.config import WebSettings

SAMPLES = sorted((DEFAULT_MODEL.parent / "samples").glob("*.jpg"))


@pytest.fixture(scope="module")
def classifier():
    return Classifier.load()


@pytest.fixture
def app(tmp_path, classifier, database_url):
    settings = WebSettings(
        data_dir=str(tmp_path / "data"), max_upload_mb=2, database_url=database_url
    )
    app = create_app(settings, classifier=classifier)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def client(app):
    return app.test_client()


def _post(client, files, url="/api/v1/predictions", **kwargs):
    data = {"file": [(io.BytesIO(content), name) for name, content in files]}
    return client.post(url, data=data, content_type="multipart/form-data", **kwargs)


def _sample(i=0):
    return SAMPLES[i].name, SAMPLES[i].read_bytes()


def _png(size=(64, 64), colour=(200, 100, 150), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, colour).save(buf, format="PNG")
    return buf.getvalue()


def _csrf(html: bytes) -> str:
    return re.search(rb'name="csrf_token" value="([^"]+)"', html).group(1).decode()


# ---------------------------------------------------------------- REST API
def test_post_predictions_classifies_stores_and_answers(client):
    r = _post(client, [_sample(0), _sample(3)])
    assert r.status_code == 201
    body = r.get_json()
    assert body["model"]["name"].startswith("hematovision-") and body["model"]["version"]
    assert [p["filename"] for p in body["predictions"]] == [SAMPLES[0].name, SAMPLES[3].name]
    for p, path in zip(body["predictions"], (SAMPLES[0], SAMPLES[3])):
        assert p["label"] == path.name.rsplit("_", 2)[0]
        assert 0 <= p["confidence"] <= 1 and isinstance(p["uncertain"], bool)
        assert sum(p["probabilities"].values()) == pytest.approx(1, abs=1e-4)
    got = client.get(f"/api/v1/predictions/{body['predictions'][0]['id']}").get_json()
    assert got["label"] == body["predictions"][0]["label"]
    assert client.get(r.headers["Location"]).status_code == 200


def test_list_and_delete_predictions(client):
    for i in range(3):
        _post(client, [_sample(i)])
    page = client.get("/api/v1/predictions?limit=2&offset=0").get_json()
    assert page["total"] == 3 and len(page["predictions"]) == 2 and page["limit"] == 2
    assert page["predictions"][0]["id"] > page["predictions"][1]["id"]  # newest first
    rest = client.get("/api/v1/predictions?limit=2&offset=2").get_json()
    assert len(rest["predictions"]) == 1
    victim = page["predictions"][0]["id"]
    r = client.delete(f"/api/v1/predictions/{victim}")
    assert r.status_code == 400 and "reason" in r.get_json()["error"]["message"]
    assert client.delete(f"/api/v1/predictions/{victim}?reason=duplicate").status_code == 204
    assert client.get(f"/api/v1/predictions/{victim}").status_code == 404
    assert client.delete(f"/api/v1/predictions/{victim}?reason=again").status_code == 404
    assert client.get("/api/v1/predictions").get_json()["total"] == 2
    r = client.get("/api/v1/predictions?limit=abc")
    assert r.status_code == 400 and r.get_json()["error"]["code"] == "bad_request"


@pytest.mark.parametrize(
    "files, status, code",
    [
        ([], 400, "no_file"),
        ([("notes.jpg", b"just some text, not a picture")], 415, "unsupported_media_type"),
        ([("broken.jpg", b"\xff\xd8\xff\xe0 truncated jpeg")], 400, "unreadable_image"),
        ([("tiny.png", None)], 400, "unreadable_image"),
        ([("empty.png", b"")], 400, "empty_file"),
    ],
)
def test_bad_uploads_are_json_errors_and_store_nothing(client, files, status, code):
    files = [(n, _png((4, 4)) if c is None else c) for n, c in files]
    r = _post(client, files)
    assert r.status_code == status
    assert r.get_json()["error"]["code"] == code and r.get_json()["error"]["message"]
    assert client.get("/api/v1/predictions").get_json()["total"] == 0


def test_a_bad_file_in_a_batch_is_listed_and_the_good_ones_classified(client):
    """10 good images and a text file: the 10 are classified, the text file is listed (issue 9)."""
    good = [_sample(i) for i in range(0, 20, 2)]
    r = _post(client, [*good, ("x.jpg", b"nope")])
    assert r.status_code == 201
    body = r.get_json()
    assert [p["filename"] for p in body["predictions"]] == [n for n, _ in good]
    assert body["rejected"] == [
        {
            "filename": "x.jpg",
            "code": "unsupported_media_type",
            "message": "x.jpg: not an image; send JPEG, PNG, GIF, BMP, TIFF or WebP",
        }
    ]
    assert client.get("/api/v1/predictions").get_json()["total"] == 10
    page = client.get(f"/results/{body['upload_id']}").data.decode()
    assert 'id="rejected"' in page and "x.jpg: not an image" in page


def test_too_large_upload_is_413(client):
    r = _post(client, [("big.png", b"\x89PNG\r\n\x1a\n" + b"\0" * (3 * 2**20))])
    assert r.status_code == 413 and r.get_json()["error"]["code"] == "request_entity_too_large"


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_decompression_bomb_is_refused(client):
    buf = io.BytesIO()
    Image.new("1", (9000, 9000)).save(buf, format="PNG")  # tiny file, 81 million pixels
    r = _post(client, [("bomb.png", buf.getvalue())])
    assert r.status_code == 413 and r.get_json()["error"]["code"] == "image_too_large"


def test_exif_orientation_is_honoured(client):
    img = Image.new("RGB", (200, 100), (180, 120, 160))
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif)
    p = _post(client, [("rotated.jpg", buf.getvalue())]).get_json()["predictions"][0]
    assert (p["width"], p["height"]) == (100, 200)


def test_not_found_is_json_on_the_api_and_html_on_pages(client):
    r = client.get("/api/v1/predictions/999")
    assert r.status_code == 404 and r.get_json()["error"]["code"] == "not_found"
    r = client.get("/results/999")
    assert r.status_code == 404 and b"Error 404" in r.data and b"Traceback" not in r.data


def test_token_protects_the_api(tmp_path, classifier):
    app = create_app(
        WebSettings(data_dir=str(tmp_path / "d"), api_token="s3cret"), classifier=classifier
    )
    client = app.test_client()
    r = _post(client, [_sample(0)])
    assert r.status_code == 401 and r.get_json()["error"]["code"] == "unauthorized"
    assert (
        client.get("/api/v1/predictions", headers={"Authorization": "Bearer wrong"}).status_code
        == 401
    )
    ok = _post(client, [_sample(0)], headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 201
    assert client.get("/healthz").status_code == 200


def test_model_health_and_openapi(client):
    from openapi_spec_validator import validate

    model = client.get("/api/v1/model").get_json()
    test = model["metrics"]["test"]
    assert (
        len(model["classes"]) == 8 and test.get("per_lab", {}).get("pbc", test)["accuracy"] >= 0.985
    )
    health = client.get("/healthz").get_json()
    assert health["status"] == "ok" and health["database"] == "ok"
    assert health["disk"]["status"] == "ok" and health["disk"]["free_mb"] > 0
    assert health["model"] == {"name": model["name"], "version": model["version"]}
    spec = client.get("/api/v1/openapi.json").get_json()
    validate(spec)
    assert {
        "/api/v1/predictions",
        "/api/v1/predictions/{prediction_id}",
        "/api/v1/model",
        "/healthz",
    } <= set(spec["paths"])


# ---------------------------------------------------------------- pages
def test_pages_render_with_security_headers(client):
    for url in ("/", "/history", "/model"):
        r = client.get(url)
        assert r.status_code == 200, url
        csp = r.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert b"<script>" not in r.data  # no inline script at all
    index = client.get("/").data
    assert index.count(b"/examples/") >= 24 and b"/vendor/bootstrap/css/bootstrap.min.css" in index
    assert client.get("/vendor/bootstrap/css/bootstrap.min.css").status_code == 200
    assert client.get("/model/confusion.png").headers["Content-Type"] == "image/png"


def test_upload_form_needs_csrf_and_shows_the_result(client):
    name, data = _sample(5)
    r = client.post(
        "/upload", data={"file": (io.BytesIO(data), name)}, content_type="multipart/form-data"
    )
    assert r.status_code == 400 and b"CSRF" in r.data
    token = _csrf(client.get("/").data)
    r = client.post(
        "/upload",
        data={"csrf_token": token, "file": (io.BytesIO(data), name)},
        content_type="multipart/form-data",
    )
    assert r.status_code == 303
    page = client.get(r.headers["Location"]).data.decode()
    expected = name.rsplit("_", 2)[0]
    assert f'<span class="label">{expected}</span>' in page
    assert "/heatmap/" in page and "Show heatmap" in page
    sha = re.search(r"/images/([0-9a-f]{64})/heatmap/", page).group(1)
    heat = client.get(re.search(r'src="(/images/[0-9a-f]{64}/heatmap/[^"]+)"', page).group(1))
    assert heat.status_code == 200 and heat.headers["Content-Type"] == "image/jpeg"
    assert Image.open(io.BytesIO(heat.data)).size == Image.open(io.BytesIO(data)).size
    assert client.get(f"/images/{sha}").data == data


def test_upload_form_error_is_shown_not_raised(client):
    token = _csrf(client.get("/").data)
    r = client.post(
        "/upload",
        data={"csrf_token": token, "file": (io.BytesIO(b"text"), "a.jpg")},
        content_type="multipart/form-data",
    )
    assert r.status_code == 415 and b"not an image" in r.data


def test_try_a_sample(client):
    token = _csrf(client.get("/").data)
    r = client.post(f"/examples/{SAMPLES[0].name}/try", data={"csrf_token": token})
    assert r.status_code == 303
    assert SAMPLES[0].name.rsplit("_", 2)[0] in client.get(r.headers["Location"]).data.decode()
    assert (
        client.post("/examples/../../etc/passwd/try", data={"csrf_token": token}).status_code == 404
    )


def test_batch_result_has_differential_and_csv(client):
    r = _post(client, [_sample(0), _sample(1), _sample(12)])
    upload = r.get_json()["upload_id"]
    page = client.get(f"/results/{upload}").data.decode()
    assert 'id="differential"' in page and "Reference intervals: typical adult" in page
    lines = client.get(f"/results/{upload}.csv").data.decode().splitlines()
    assert lines[0].startswith("id,filename,label,confidence,uncertain,") and len(lines) == 4
    rows = client.get(f"/results/{upload}/differential.csv").data.decode().splitlines()
    assert rows[0] == "class,count,percent,reference_low,reference_high,flag"
    counts = {row.split(",")[0]: int(row.split(",")[1]) for row in rows[1:]}
    assert counts["white cells counted"] == 3 and counts[SAMPLES[0].name.rsplit("_", 2)[0]] >= 2
    assert counts["basophil"] + counts["lymphocyte"] == 3  # the three samples' classes


def test_history_pages_filters_and_deletes(client):
    for i in range(0, 24, 3):
        _post(client, [_sample(i)])
    page = client.get("/history").data.decode()
    assert page.count("/thumb") == 8
    label = SAMPLES[0].name.rsplit("_", 2)[0]
    filtered = client.get(f"/history?label={label}").data.decode()
    assert filtered.count("/thumb") == 1
    prediction_id = client.get("/api/v1/predictions?limit=1").get_json()["predictions"][0]["id"]
    token = _csrf(page.encode())
    r = client.post(f"/history/{prediction_id}/delete", data={"csrf_token": token, "reason": "x"})
    assert r.status_code == 303
    assert client.get("/api/v1/predictions").get_json()["total"] == 7
    assert client.get("/images/" + "0" * 64 + "/thumb").status_code == 404


def test_user_strings_are_escaped(client):
    name = "<script>alert(1)</script>.png"
    r = _post(client, [(name, SAMPLES[0].read_bytes())])
    assert r.status_code == 201
    upload = r.get_json()["upload_id"]
    for url in (f"/results/{upload}", "/history"):
        html = client.get(url).data.decode()
        assert "<script>alert(1)</script>" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;.png" in html


def test_no_store_images_keeps_results_only(tmp_path, classifier):
    app = create_app(
        WebSettings(data_dir=str(tmp_path / "d"), store_images=False), classifier=classifier
    )
    client = app.test_client()
    body = _post(client, [_sample(0)]).get_json()
    assert body["predictions"][0]["label"]
    assert not list((tmp_path / "d").glob("images/*/*"))
    page = client.get(f"/results/{body['upload_id']}").data
    assert b"image not stored" in page


def test_records_survive_a_restart(tmp_path, classifier):
    settings = WebSettings(data_dir=str(tmp_path / "d"))
    first = create_app(settings, classifier=classifier).test_client()
    ids = [_post(first, [_sample(i)]).get_json()["predictions"][0]["id"] for i in range(2)]
    second = create_app(settings, classifier=classifier).test_client()  # migrations run again
    assert [p["id"] for p in second.get("/api/v1/predictions").get_json()["predictions"]] == ids[
        ::-1
    ]


def test_eight_threads_posting_at_once_lose_no_record(app):
    errors, ids = [], []

    def worker(i):
        client = app.test_client()
        for k in range(3):
            r = _post(client, [_sample((i + k) % len(SAMPLES))])
            if r.status_code != 201:
                errors.append(r.status_code)
            else:
                ids.append(r.get_json()["predictions"][0]["id"])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(set(ids)) == 24
    assert app.test_client().get("/api/v1/predictions?limit=100").get_json()["total"] == 24


def test_too_many_files_in_one_request(tmp_path, classifier):
    settings = WebSettings(data_dir=str(tmp_path / "d"))
    settings.max_files = 2
    client = create_app(settings, classifier=classifier).test_client()
    r = _post(client, [_sample(0), _sample(1), _sample(2)])
    assert r.status_code == 400 and r.get_json()["error"]["code"] == "too_many_files"


def test_a_result_mostly_flagged_tells_the_lab_what_to_do(client, tissue_tiles):
    tiles = [(p.name, p.read_bytes()) for p in tissue_tiles]
    upload = _post(client, tiles).get_json()["upload_id"]
    page = client.get(f"/results/{upload}").data.decode()
    assert 'id="new-lab"' in page and "20 of 20 cells are flagged for review" in page
    upload = _post(client, [_sample(i) for i in range(20)]).get_json()["upload_id"]
    assert 'id="new-lab"' not in client.get(f"/results/{upload}").data.decode()
