"""The lab workflow: samples, review and sign-off, accounts and roles on every route, the
append-only audit log, the FHIR report, the differential's intervals (test client, SQLite and
PostgreSQL), and the CLI for accounts as the README shows it."""

import io
import json
import subprocess
import sys
import time

import numpy as np
import pytest
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from hematovision.differential import (
    ADULT_INTERVALS,
    ReferenceIntervals,
    count_differential,
    percent_interval,
)
from hematovision.errors import HematoVisionError
from hematovision.inference import DEFAULT_MODEL, Classifier
from hematovision.inference.classifier import UNLIKE_TRAINING
from hematovision.web import create_app
from hematovision.web.config import WebSettings
from hematovision.web.resources import ACTIVE_CHECK_SECONDS
from hematovision.web.server import check_accounts, is_loopback

from conftest import DATA, require

SAMPLES = sorted((DEFAULT_MODEL.parent / "samples").glob("*.jpg"))
PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def classifier():
    return Classifier.load()


@pytest.fixture
def app(tmp_path, classifier, database_url):
    settings = WebSettings(data_dir=str(tmp_path / "data"), database_url=database_url)
    app = create_app(settings, classifier=classifier)
    app.config.update(TESTING=True, WTF_CSRF_ENABLED=False)
    return app


@pytest.fixture
def client(app):
    return app.test_client()


def storage_of(app):
    return app.extensions["hematovision.storage"]


def _files(paths):
    return {"file": [(io.BytesIO(p.read_bytes()), p.name) for p in paths]}


def new_sample(client, paths=SAMPLES[:6], headers=None, target=100) -> dict:
    r = client.post(
        "/api/v1/samples", json={"accession": "HV-0001", "target": target}, headers=headers
    )
    assert r.status_code == 201, r.get_json()
    sample = r.get_json()
    r = client.post(
        f"/api/v1/samples/{sample['id']}/cells",
        data=_files(paths),
        content_type="multipart/form-data",
        headers=headers,
    )
    assert r.status_code == 201, r.get_json()
    return r.get_json()


def review(client, sample, cell, headers=None, **decision):
    url = f"/api/v1/samples/{sample['id']}/cells/{cell['id']}/review"
    return client.post(url, json=decision, headers=headers)


# ---------------------------------------------------------------- differential
def test_the_intervals_are_exact_binomial_as_in_rumkes_tables():
    # Rümke's table for 100 cells: 50% -> 40-60, 10% -> 5-18, 0% -> 0-4
    assert percent_interval(50, 100) == pytest.approx((39.8, 60.2), abs=0.1)
    assert percent_interval(10, 100) == pytest.approx((4.9, 17.6), abs=0.1)
    assert percent_interval(0, 100) == (0.0, 3.6)
    assert percent_interval(200, 200)[1] == 100.0
    low200, high200 = percent_interval(20, 200)
    assert high200 - low200 < 17.6 - 4.9  # more cells, a narrower interval


def _intervals_file(tmp_path, text: str):
    path = tmp_path / "intervals.csv"
    path.write_text(text)
    return path


def test_a_differential_is_flagged_against_the_labs_reference_intervals(tmp_path):
    lab = ReferenceIntervals.read(
        _intervals_file(tmp_path, "class,low,high\nneutrophil,50,70\nbasophil,0,1\n")
    )
    cells = [("neutrophil", False)] * 70 + [("lymphocyte", False)] * 29 + [("basophil", False)]
    cells += [("basophil", True)] * 5  # to review: not counted
    d = count_differential(cells, intervals=lab)
    assert d.flag("neutrophil") is None and d.flag("basophil") is None  # 70% and 1%: the limits
    assert d.flag("lymphocyte") is None and d.outside_reference == []  # the lab sets none
    # 71 of 101 counted (70.3%) is above 70%, but not if the 5 to review are other white cells
    # (71 of 106): before review, a flag holds whatever they turn out to be
    d = count_differential(cells + [("neutrophil", False)], intervals=lab)
    assert d.percent("neutrophil") == 70.3 and d.flag("neutrophil") is None
    reviewed = [c for c in cells if not c[1]] + [(None, False)] * 5  # reviewed: debris
    d = count_differential(reviewed + [("neutrophil", False)], intervals=lab)
    assert d.flag("neutrophil") == "H" and d.outside_reference == ["neutrophil"]
    # 40 of 90 (44.4%) is below 50%; with 15 to review it could be 55 of 105, with 5 not
    low = [("neutrophil", False)] * 40 + [("lymphocyte", False)] * 50 + [("monocyte", True)] * 15
    d = count_differential(low, intervals=lab)
    assert d.percent("neutrophil") == 44.4 and d.flag("neutrophil") is None
    assert count_differential(low[:-10], intervals=lab).flag("neutrophil") == "L"
    body = d.to_dict()
    assert body["white_cells"]["neutrophil"]["reference"] == [50.0, 70.0]
    assert body["white_cells"]["lymphocyte"] == {**body["white_cells"]["lymphocyte"], "flag": None}
    assert body["reference_intervals"] == str(tmp_path / "intervals.csv")
    # the typical adult intervals by default: a third of the cells called basophils is "H",
    # no monocyte "L", and any nucleated red cell "H" (per 100 white cells)
    collapse = [("neutrophil", False)] * 60 + [("basophil", False)] * 35 + [("erythroblast", False)]
    d = count_differential(collapse + [("lymphocyte", False)] * 5)
    assert d.intervals is ADULT_INTERVALS
    assert d.outside_reference == ["basophil", "lymphocyte", "monocyte", "erythroblast"]
    assert [d.flag(c) for c in d.outside_reference] == ["H", "L", "L", "H"]
    assert count_differential([]).outside_reference == []  # nothing counted: nothing flagged


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "need a header 'class,low,high'"),
        ("label,min,max\nneutrophil,40,75\n", "need a header 'class,low,high'"),
        ("class,low,high\nneutrophil,forty,75\n", "line 2: low and high must be numbers"),
        ("class,low,high\nneutrophil,40,75\nmonocyte,10,2\n", "line 3: need 0 <= low <= high"),
        ("class,low,high\nneutrophil,40,175\n", "line 2: need 0 <= low <= high <= 100"),
        ("class,low,high\nneutrophil,40,75\nneutrophil,1,2\n", "line 3: a repeated class"),
        ("class,low,high\n,40,75\n", "line 2: no class name"),
        ("class,low,high\nerythroblast,0,inf\n", "line 2: need 0 <= low <= high"),
    ],
)
def test_a_bad_reference_intervals_file_says_which_line_and_why(tmp_path, text, message):
    with pytest.raises(HematoVisionError, match=message):
        ReferenceIntervals.read(_intervals_file(tmp_path, text))


def test_the_labs_intervals_reach_the_api_page_fhir_and_pdf(tmp_path, classifier, database_url):
    from pypdf import PdfReader

    # every class's upper limit at 0 (erythroblasts: none): whatever is counted is "H"
    text = "class,low,high\n" + "".join(
        f"{c},0,0\n" for c in ("neutrophil", "lymphocyte", "monocyte", "eosinophil", "basophil")
    )
    path = _intervals_file(tmp_path, text)
    settings = WebSettings(
        data_dir=str(tmp_path / "data"), database_url=database_url, reference_intervals=str(path)
    )
    app = create_app(settings, classifier=classifier)
    app.config.update(TESTING=True, WTF_CSRF_ENABLED=False)
    client = app.test_client()
    sample = new_sample(client, SAMPLES[:12])
    d = sample["differential"]
    counted = [c for c, v in d["white_cells"].items() if v["count"] and c != "ig"]
    assert counted and d["reference_intervals"] == str(path)
    assert all(d["white_cells"][c]["flag"] == "H" for c in counted)
    assert d["white_cells"]["ig"]["reference"] is None and d["white_cells"]["ig"]["flag"] is None
    assert set(counted) <= set(d["outside_reference"])
    page = client.get(f"/samples/{sample['id']}").data.decode()
    assert 'id="outside-reference"' in page and 'id="outside-reference" hidden' not in page
    assert page.count('data-field="flag">H<') == len(counted)
    report = DiagnosticReport.model_validate(
        client.get(f"/api/v1/samples/{sample['id']}/fhir").get_json()
    )
    flagged = {o.id.removeprefix("obs-"): o for o in report.contained if o.interpretation}
    assert set(flagged) == set(counted)
    for o in flagged.values():
        assert o.interpretation[0].coding[0].code == "H"
        assert o.referenceRange[0].high.value == 0 and o.referenceRange[0].high.code == "%"
    pdf = PdfReader(io.BytesIO(client.get(f"/samples/{sample['id']}/report.pdf").data))
    text = " ".join(" ".join(page.extract_text().split()) for page in pdf.pages)
    assert "Outside the reference intervals:" in text and f"Reference intervals: {path}" in text


# ---------------------------------------------------------------- samples and review
def test_cells_and_fields_collect_in_a_sample_with_its_differential(client, bccd_dir):
    sample = new_sample(client)
    d = sample["differential"]
    assert len(sample["cells"]) == 6 and d["target"] == 100
    listed = client.get("/api/v1/samples").get_json()
    assert listed["total"] == 1 and listed["samples"][0]["differential"] == d
    assert d["white_cells_counted"] + d["to_review"] + d["nucleated_red_cells"]["count"] <= 6
    assert d["progress"] == round(d["white_cells_counted"] / 100, 3)
    for value in d["white_cells"].values():
        low, high = value["ci95"]
        assert low <= value["percent"] <= high
    field = sorted((bccd_dir / "JPEGImages").glob("*.jpg"))[0]
    r = client.post(
        f"/api/v1/samples/{sample['id']}/fields",
        data=_files([field]),
        content_type="multipart/form-data",
    )
    assert r.status_code == 201
    after = r.get_json()
    smear_cells = [c for c in after["cells"] if c["source"] == "smear"]
    assert smear_cells and all(len(c["box"]) == 4 for c in smear_cells)
    # a cell keeps why the model flagged it, from a field as from a single image
    for c in after["cells"]:
        assert isinstance(c["model"]["reasons"], list)
        assert bool(c["model"]["reasons"]) == c["model"]["uncertain"], c
    picture = client.get(f"/samples/{sample['id']}/cells/{smear_cells[0]['id']}.jpg")
    assert picture.status_code == 200 and picture.data[:3] == b"\xff\xd8\xff"
    for cell in (smear_cells[0], after["cells"][0]):  # a smear cell's crop, a single cell
        heat = client.get(f"/samples/{sample['id']}/cells/{cell['id']}/heatmap.jpg")
        assert heat.status_code == 200 and heat.data[:3] == b"\xff\xd8\xff"


def test_a_sample_mostly_flagged_tells_the_lab_what_to_do(client, app, tissue_tiles):
    sample = new_sample(client, tissue_tiles)
    assert all(UNLIKE_TRAINING in c["model"]["reasons"] for c in sample["cells"])
    page = client.get(f"/samples/{sample['id']}").data.decode()
    assert 'id="new-lab"' in page
    assert "20 of 20 cells are flagged for review (20 unlike the images" in page
    # cells stored before their reasons were kept count by their flag alone
    with storage_of(app).engine.begin() as c:
        c.execute(text("UPDATE sample_cells SET reasons = NULL"))
    page = client.get(f"/samples/{sample['id']}").data.decode()
    assert "20 of 20 cells are flagged for review (0 unlike the images" in page
    assert all(c["model"]["reasons"] is None for c in _sample_json(client, sample)["cells"])
    # the lab the model was trained on (PBC, the bundled samples): no notice
    own = new_sample(client, SAMPLES[:24])
    assert len(own["cells"]) == 24
    assert 'id="new-lab"' not in client.get(f"/samples/{own['id']}").data.decode()


def _sample_json(client, sample) -> dict:
    return client.get(f"/api/v1/samples/{sample['id']}").get_json()


def test_a_correction_changes_the_count_and_is_kept_with_who_when_and_model(client, app):
    sample = new_sample(client)
    cell = sample["cells"][0]
    before = sample["differential"]
    new_label = "monocyte" if cell["label"] != "monocyte" else "lymphocyte"
    r = review(client, sample, cell, action="reclassify", label=new_label)
    assert r.status_code == 200
    after = r.get_json()["differential"]
    assert after["white_cells"][new_label]["count"] >= before["white_cells"][new_label]["count"]
    r = review(client, sample, sample["cells"][1], action="exclude", exclusion="debris")
    excluded = next(c for c in r.get_json()["cells"] if c["id"] == sample["cells"][1]["id"])
    assert excluded["status"] == "excluded"
    corrections = storage_of(app).samples.corrections(sample["id"])
    assert [c.action for c in corrections] == ["reclassify", "exclude"]
    first = corrections[0]
    assert (first.old_label, first.new_label, first.by) == (cell["label"], new_label, "local")
    assert first.model_version == Classifier.load().version and first.at is not None
    assert review(client, sample, cell, action="reclassify", label="blast").status_code == 400
    assert review(client, sample, cell, action="exclude", exclusion="cat").status_code == 400
    assert review(client, sample, {"id": 999999}, action="confirm").status_code == 404


def test_sign_locks_and_an_amendment_makes_a_new_version_with_its_reason(client):
    sample = new_sample(client)
    cell = sample["cells"][0]
    signed = client.post(f"/api/v1/samples/{sample['id']}/sign").get_json()
    assert signed["status"] == "signed" and signed["versions"][0]["signed_by"] == "local"
    assert review(client, sample, cell, action="confirm").status_code == 409
    r = client.post(
        f"/api/v1/samples/{sample['id']}/cells",
        data=_files(SAMPLES[:1]),
        content_type="multipart/form-data",
    )
    assert r.status_code == 409  # no cell is added to a signed sample
    assert client.post(f"/api/v1/samples/{sample['id']}/amend", json={}).status_code == 400
    r = client.post(f"/api/v1/samples/{sample['id']}/amend", json={"reason": "wrong class"})
    assert r.get_json()["status"] == "amending" and r.get_json()["version"] == 2
    assert review(client, sample, cell, action="exclude", exclusion="smudge").status_code == 200
    final = client.post(f"/api/v1/samples/{sample['id']}/sign").get_json()
    assert [v["version"] for v in final["versions"]] == [1, 2]
    assert final["versions"][1]["amend_reason"] == "wrong class"
    v1, v2 = (v["differential"] for v in final["versions"])
    assert v1 != v2  # the first version is kept as it was signed
    page = client.get(f"/samples/{sample['id']}").data.decode()
    assert "amended: wrong class" in page and 'data-locked="true"' in page


def test_a_deleted_sample_needs_a_reason_and_stays_in_the_database(client, app):
    sample = new_sample(client, SAMPLES[:1])
    assert client.delete(f"/api/v1/samples/{sample['id']}").status_code == 400
    assert client.delete(f"/api/v1/samples/{sample['id']}?reason=duplicate").status_code == 204
    assert client.get(f"/api/v1/samples/{sample['id']}").status_code == 404
    assert client.get(f"/samples/{sample['id']}").status_code == 404
    with storage_of(app).engine.connect() as c:
        row = c.execute(text("SELECT delete_reason FROM samples")).one()
    assert row.delete_reason == "duplicate"


# ---------------------------------------------------------------- FHIR and report
def test_the_fhir_report_validates_and_switches_codes_at_sign_off(client):
    sample = new_sample(client)
    before = client.get(f"/api/v1/samples/{sample['id']}/fhir")
    assert before.status_code == 200 and before.mimetype == "application/fhir+json"
    report = DiagnosticReport.model_validate(before.get_json())  # the FHIR R4 model
    assert report.status == "preliminary" and report.code.coding[0].code == "69738-3"
    codes = {o.code.coding[0].code for o in report.contained}
    assert "770-8" in codes and all(o.valueQuantity.code == "%" for o in report.contained[:6])
    client.post(f"/api/v1/samples/{sample['id']}/sign")
    after = DiagnosticReport.model_validate(client.get(f"/samples/{sample['id']}/fhir.json").json)
    assert after.status == "final" and after.code.coding[0].code == "24318-8"
    assert "26511-6" in {o.code.coding[0].code for o in after.contained}
    assert after.resultsInterpreter[0].display == "local"
    page = client.get(f"/samples/{sample['id']}/report").data.decode()
    assert "signed by <strong>local</strong>" in page and "95% interval" in page


def test_a_samples_cells_keep_their_pictures_when_their_results_are_purged(app, client):
    sample = new_sample(client, SAMPLES[:3])
    for p in client.get("/api/v1/predictions").get_json()["predictions"]:
        assert client.delete(f"/api/v1/predictions/{p['id']}?reason=test").status_code == 204
    storage = storage_of(app)
    assert storage.purge_deleted()["predictions"] == 3
    assert storage.check().orphan_files == []  # the cells' images are in use, not orphans
    cells = client.get(f"/api/v1/samples/{sample['id']}").get_json()["cells"]
    for cell in cells:
        picture = client.get(f"/samples/{sample['id']}/cells/{cell['id']}.jpg")
        assert picture.status_code == 200 and picture.mimetype == "image/jpeg"
    assert client.get(f"/samples/{sample['id']}/report.pdf").status_code == 200


def test_the_pdf_report_has_the_differential_signature_and_cells(client):
    from pypdf import PdfReader

    sample = new_sample(client, SAMPLES[:12])
    differential = client.get(f"/api/v1/samples/{sample['id']}").get_json()["differential"]
    unsigned = client.get(f"/samples/{sample['id']}/report.pdf")
    assert unsigned.status_code == 200 and unsigned.mimetype == "application/pdf"
    assert "-unsigned.pdf" in unsigned.headers["Content-Disposition"]
    assert "Not signed" in PdfReader(io.BytesIO(unsigned.data)).pages[0].extract_text()
    client.post(f"/api/v1/samples/{sample['id']}/sign")
    signed = client.get(f"/samples/{sample['id']}/report.pdf")
    assert f"{sample['id']}-v1.pdf" in signed.headers["Content-Disposition"]
    pdf = PdfReader(io.BytesIO(signed.data))
    assert pdf.metadata.title == "White-cell differential - HV-0001"
    text = " ".join(" ".join(page.extract_text().split()) for page in pdf.pages)
    assert "signed by local" in text and "Model hematovision-efficientnet_lite0" in text
    for label, v in differential["white_cells"].items():
        interval = "{:.1f}-{:.1f}".format(*v["ci95"])
        assert f"{v['count']} {v['percent']:.1f} {interval}" in text, label
    assert sum(len(page.images) for page in pdf.pages) == 12  # every cell's picture
    assert client.get("/samples/" + "0" * 20 + "/report.pdf").status_code == 404


# ---------------------------------------------------------------- accounts and roles
@pytest.fixture
def accounts(app):
    """Three accounts (accounts are then on) and a personal token for each."""
    users = storage_of(app).users
    tokens = {}
    for role in ("admin", "technologist", "viewer"):
        users.add(role, PASSWORD, role)
        tokens[role] = {"Authorization": f"Bearer {users.new_token(role)}"}
    return tokens


def login(client, name):
    r = client.post("/login", data={"username": name, "password": PASSWORD})
    assert r.status_code == 303, r.data


def test_logged_out_nobody_sees_any_page_image_or_api_route(app, client, accounts):
    sample = new_sample(client, SAMPLES[:1], headers=accounts["technologist"])
    cell_id = sample["cells"][0]["id"]
    sha = storage_of(app).samples.get(sample["id"]).cells[0].image_sha256
    values = {"public_id": sample["id"], "cell_id": cell_id, "sha256": sha, "kind": "cells"}
    values.update(action="token", username="admin")
    adapter = app.url_map.bind("localhost")
    public = {"auth.login", "api.healthz", "api.openapi", "pages.vendor", "static"}
    checked = 0
    for rule in app.url_map.iter_rules():
        if rule.endpoint in public:
            continue
        url = adapter.build(rule.endpoint, {a: values.get(a, 1) for a in rule.arguments})
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            r = client.open(url, method=method)
            expected = 401 if url.startswith("/api/") else 302
            assert r.status_code == expected, (method, url, r.status_code)
            if expected == 302:
                assert "/login" in r.headers["Location"]
            checked += 1
    assert checked >= 40
    assert client.get("/healthz").status_code == 200


def test_roles_viewer_reads_technologist_reviews_admin_administers(client, accounts):
    sample = new_sample(client, SAMPLES[:2], headers=accounts["technologist"])
    cell = sample["cells"][0]
    viewer, tech, admin = accounts["viewer"], accounts["technologist"], accounts["admin"]
    assert client.get(f"/api/v1/samples/{sample['id']}", headers=viewer).status_code == 200
    assert review(client, sample, cell, headers=viewer, action="confirm").status_code == 403
    r = client.post("/api/v1/samples", json={"accession": "X"}, headers=viewer)
    assert r.status_code == 403
    assert review(client, sample, cell, headers=tech, action="confirm").status_code == 200
    login(client, "viewer")
    page = client.get(f"/samples/{sample['id']}").data.decode()
    assert 'data-locked="true"' in page and "viewer (viewer)" in page
    assert client.post(f"/samples/{sample['id']}/sign").status_code == 403
    assert client.get("/admin/audit").status_code == 403
    login(client, "technologist")
    assert client.get("/admin/users").status_code == 403
    r = client.post(f"/samples/{sample['id']}/sign")
    assert r.status_code == 303
    signed = client.get(f"/api/v1/samples/{sample['id']}", headers=admin).get_json()
    assert signed["versions"][0]["signed_by"] == "technologist"
    login(client, "admin")
    log = client.get("/admin/audit").data.decode()
    assert "signed" in log and "corrected" in log and "technologist" in log
    assert "viewed" in log and client.get("/admin/users").status_code == 200


def test_a_wrong_password_a_disabled_user_and_an_old_token_are_refused(app, client, accounts):
    r = client.post("/login", data={"username": "viewer", "password": "nope"})
    assert r.status_code == 401 and b"wrong password" in r.data
    r = client.post(
        "/login?next=//evil.example/", data={"username": "viewer", "password": PASSWORD}
    )
    assert r.headers["Location"] == "/"  # never an open redirect
    storage_of(app).users.set_active("viewer", False)
    assert client.get("/api/v1/samples", headers=accounts["viewer"]).status_code == 401
    r = client.post("/login", data={"username": "viewer", "password": PASSWORD})
    assert r.status_code == 401
    old = accounts["admin"]
    storage_of(app).users.new_token("admin")
    assert client.get("/api/v1/samples", headers=old).status_code == 401


def test_the_audit_log_is_append_only_in_the_database(app, client):
    new_sample(client, SAMPLES[:1])
    upload = client.post("/api/v1/predictions", data=_files(SAMPLES[1:2])).get_json()
    client.get(f"/results/{upload['upload_id']}")
    prediction = upload["predictions"][0]["id"]
    assert client.delete(f"/api/v1/predictions/{prediction}").status_code == 400  # why?
    assert client.delete(f"/api/v1/predictions/{prediction}?reason=mislabelled").status_code == 204
    storage = storage_of(app)
    events, total = storage.audit.list()
    assert {"created", "added", "viewed", "deleted"} <= {e.action for e in events}
    deleted = [e for e in events if e.target == f"prediction:{prediction}"]
    assert [e.detail.get("reason") for e in deleted] == ["mislabelled"]
    for statement in ("UPDATE audit_events SET actor = 'x'", "DELETE FROM audit_events"):
        with pytest.raises(DBAPIError, match="append-only"), storage.engine.begin() as c:
            c.execute(text(statement))
    assert storage.audit.list()[1] == total


def test_passwords_are_argon2_hashes(app):
    user = storage_of(app).users.add("ana", PASSWORD, "viewer")
    assert user.password_hash.startswith("$argon2id$") and PASSWORD not in user.password_hash
    with pytest.raises(Exception, match="at least 8"):
        storage_of(app).users.add("bob", "short", "viewer")
    with pytest.raises(Exception, match="exists already"):
        storage_of(app).users.add("ana", PASSWORD, "viewer")


# ---------------------------------------------------------------- single-user mode and CLI
def test_without_accounts_serve_only_listens_on_loopback(app):
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    storage = storage_of(app)
    check_accounts(storage, "127.0.0.1")
    with pytest.raises(Exception, match="users add NAME --role admin"):
        check_accounts(storage, "0.0.0.0")
    storage.users.add("admin", PASSWORD, "admin")
    check_accounts(storage, "0.0.0.0")  # accounts on: any address


def run_cli(*args, stdin=None):
    return subprocess.run(
        [sys.executable, "-m", "hematovision", "-q", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_users_on_the_command_line_as_the_readme_shows(tmp_path):
    data = ["--data-dir", str(tmp_path / "data")]
    r = run_cli("serve", "--host", "0.0.0.0", "--port", "5999", *data)
    assert r.returncode != 0 and "users add NAME --role admin" in r.stderr
    assert "Traceback" not in r.stderr
    r = run_cli("users", "add", "ana", "--role", "admin", "--password-stdin", *data, stdin=PASSWORD)
    assert r.returncode == 0, r.stderr
    r = run_cli("users", "add", "ana", "--role", "admin", "--password-stdin", *data, stdin=PASSWORD)
    assert r.returncode != 0 and "exists already" in r.stderr
    r = run_cli("users", "add", "bo", "--role", "boss", "--password-stdin", *data, stdin=PASSWORD)
    assert r.returncode == 2  # argparse: not a role
    token = run_cli("users", "token", "ana", *data).stdout.strip()
    assert len(token) >= 40
    assert run_cli("users", "disable", "ana", *data).returncode == 0
    listed = json.loads(run_cli("users", "list", "--json", *data).stdout)
    assert [(u["username"], u["role"], u["active"]) for u in listed] == [("ana", "admin", False)]
    r = run_cli("users", "disable", "nobody", *data)
    assert r.returncode != 0 and "no user nobody" in r.stderr


def test_a_database_command_says_once_that_it_made_the_schema_and_nothing_of_alembic(tmp_path):
    command = [sys.executable, "-m", "hematovision", "users", "list"]
    data = ["--data-dir", str(tmp_path / "data")]
    first, second = (
        subprocess.run(command + data, capture_output=True, text=True, timeout=120)
        for _ in range(2)
    )
    assert first.returncode == second.returncode == 0, first.stderr
    assert "database schema new -> " in first.stderr
    assert "alembic" not in first.stderr and "setup plugin" not in first.stderr
    assert second.stderr == ""  # the schema is current: nothing to say


def test_account_and_model_commands_start_without_the_model_runtimes():
    code = (
        "import sys, hematovision.cli, hematovision.web.config, hematovision.storage\n"
        "print(sorted(m for m in ('numpy', 'scipy', 'onnxruntime', 'openvino', 'skimage', 'PIL')"
        " if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


# ---------------------------------------------------------------- lab adaptation
def test_reviewed_cells_of_signed_samples_export_as_a_data_set(client, app, tmp_path, bccd_dir):
    signed = new_sample(client, SAMPLES[:6])
    field = sorted((bccd_dir / "JPEGImages").glob("*.jpg"))[0]
    client.post(
        f"/api/v1/samples/{signed['id']}/fields",
        data=_files([field]),
        content_type="multipart/form-data",
    )
    cells = client.get(f"/api/v1/samples/{signed['id']}").get_json()["cells"]
    smear = next(c for c in cells if c["source"] == "smear")
    review(client, signed, cells[0], action="reclassify", label="monocyte")
    review(client, signed, cells[1], action="confirm")
    review(client, signed, cells[2], action="exclude", exclusion="debris")
    review(client, signed, smear, action="reclassify", label="lymphocyte")
    client.post(f"/api/v1/samples/{signed['id']}/sign")
    unsigned = new_sample(client, SAMPLES[6:8])
    review(client, unsigned, unsigned["cells"][0], action="confirm")  # not signed: not exported
    out = tmp_path / "reviewed"
    where = ["--data-dir", str(tmp_path / "data"), "--database-url", storage_of(app).url]
    r = run_cli("data", "export-reviewed", str(out), *where)
    assert r.returncode == 0, r.stderr
    exported = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert len(exported) == 3  # reviewed, not excluded, of the signed sample only
    assert f"monocyte/{signed['id']}-{cells[0]['id']}.png" in exported
    assert f"lymphocyte/{signed['id']}-{smear['id']}.png" in exported
    provenance = (out / "provenance.csv").read_text()
    assert "reclassified" in provenance and "local" in provenance and "HV-0001" in provenance
    assert (out / "meta.csv").read_text().count(f",{signed['id']}\n") == 3  # one group


@pytest.fixture(scope="module")
def shifted_lab(tmp_path_factory):
    """A lab the model never saw: LISC cells with red and blue swapped (a strong stain and
    camera shift), 30 per class, near-duplicate crops of one cell grouped in meta.csv."""
    from PIL import Image

    from hematovision.data.duplicates import near_duplicate_groups

    lisc = DATA / "lisc"
    require(lisc.is_dir(), f"the LISC data in {lisc}")
    out = tmp_path_factory.mktemp("shifted-lab")
    sources = []
    for folder in sorted(p for p in lisc.iterdir() if p.is_dir()):
        for path in sorted(folder.glob("*.jpg"))[:30]:
            r, g, b = Image.open(path).convert("RGB").split()
            (out / folder.name).mkdir(exist_ok=True)
            Image.merge("RGB", (b, g, r)).save(out / folder.name / f"{path.stem}.png")
            sources.append(out / folder.name / f"{path.stem}.png")
    groups = near_duplicate_groups(sources)
    rows = ["path,lab,group"] + [
        f"{p.relative_to(out).as_posix()},shifted,{g}" for p, g in zip(sources, groups)
    ]
    (out / "meta.csv").write_text("\n".join(rows) + "\n")
    return out


@pytest.fixture(scope="module")
def adapted_cli(shifted_lab, tmp_path_factory):
    """``hematovision adapt`` on the shifted lab, as the README shows it: run once per module
    (about 40 s on 2 cores); the tests that register the model copy it, never change it."""
    out = tmp_path_factory.mktemp("adapted") / "model"
    return out, run_cli("adapt", "--data", str(shifted_lab), "--out", str(out))


def test_adapt_on_a_new_labs_cells_improves_its_held_out_score(shifted_lab, adapted_cli):
    out, r = adapted_cli
    assert r.returncode == 0, r.stderr
    card = json.loads((out / "model.json").read_text())
    held = card["metrics"]["adaptation"]["held_out"]
    assert held["n"] >= 20 and held["accuracy_after"] >= held["accuracy_before"] + 0.2
    # it predicts with the 8 views unless one view did better on the held-out cells
    assert card["tta"] == held["tta"] == (held["accuracy_after_tta"] >= held["accuracy_after"])
    assert Classifier.load(out).tta == card["tta"]
    shown = held["accuracy_after_tta" if card["tta"] else "accuracy_after"]
    assert f"-> {shown:.1%}" in r.stdout
    # its held-out cells, before and after, as confusion matrices and their plot
    for when, accuracy in (("before", held["accuracy_before"]), ("after", shown)):
        confusion = np.asarray(held[f"confusion_{when}"])
        assert confusion.sum() == held["n"]
        assert np.trace(confusion) / held["n"] == pytest.approx(accuracy)
    assert (out / card["files"]["adaptation"]["path"]).read_bytes().startswith(b"\x89PNG")
    adaptation = card["metrics"]["adaptation"]
    assert len(adaptation["pull_log_loss"]) == 3  # the pull chosen on the lab's cells
    assert adaptation["pull_log_loss"][f"{adaptation['pull']:g}"] == min(
        adaptation["pull_log_loss"].values()
    )
    assert card["version"].startswith(Classifier.load().version + "+lab.")
    assert card["ood_threshold"] >= Classifier.load().ood_threshold  # widened, never narrowed
    # its held-out cells: fewer of them flagged as unlike the training images, and said so
    assert held["far_after"] < held["far_before"]
    assert f"unlike the training images {held['far_before']:.0%} -> {held['far_after']:.0%}" in (
        r.stdout
    )
    base, adapted = Classifier.load(), Classifier.load(out)
    cells = sorted(shifted_lab.rglob("*.png"))[::7]
    flagged = [sum(p.uncertain for p in c.predict(cells)) for c in (base, adapted)]
    assert flagged[1] < flagged[0]  # its own cells are no longer all "unlike the training"
    assert (out / "anchors.npz").is_file()  # kept for the next adaptation
    assert card["data"]["adapted_from"]["version"] == Classifier.load().version
    # an ordinary artifact: predict --model takes it
    image = next((shifted_lab / "lymphocyte").glob("*.png"))
    r = run_cli("predict", "--model", str(out), "--format", "json", str(image))
    assert r.returncode == 0 and json.loads(r.stdout)[0]["label"] in card["classes"]
    again = run_cli("adapt", "--data", str(shifted_lab), "--out", str(out))
    assert again.returncode != 0 and "not empty" in again.stderr


def test_the_pull_is_chosen_by_cross_validation_and_ties_keep_the_strongest(monkeypatch):
    from hematovision import adapt as adaptation
    from hematovision.adapt import PULL, PULL_CHOICES, choose_pull

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 20)
    views = rng.normal(0, 0.1, (40, 8, 6)).astype(np.float32)
    views[:, :, 0] += np.where(labels == 0, 3.0, -3.0)[:, None]  # one clear direction
    w0, b0 = np.zeros((2, 6), np.float32), np.zeros(2, np.float32)
    pull, losses = choose_pull(views, labels, np.arange(40), w0, b0, None)
    assert set(losses) == set(PULL_CHOICES)
    # a base that knows nothing: the weakest pull fits the clear direction best
    assert pull == min(PULL_CHOICES) and losses[pull] < min(losses[max(PULL_CHOICES)], 0.5)
    assert choose_pull(views[:3], labels[:3], np.arange(3), w0, b0, None) == (PULL, {})
    # every choice as good (here: each fit gives one and the same head): the nearest the base
    monkeypatch.setattr(adaptation, "fit_views", lambda v, y, w0, b0, *rest: (w0 + 1, b0))
    pull, losses = choose_pull(views, labels, np.arange(40), w0, b0, None)
    assert pull == max(PULL_CHOICES) and len(set(losses.values())) == 1


def _spaces():
    """The two distance scores adapt knows, as small hand-made graphs' initializers."""
    from onnx import numpy_helper

    from hematovision.adapt import CentreSpace, NeighbourSpace
    from hematovision.artifact import unit_rows

    centres = np.full((2, 16), 50.0, np.float32) * np.eye(2, 16, dtype=np.float32)
    anchors = unit_rows(np.random.default_rng(1).normal(0, 1, (30, 16))).astype(np.float16)
    return [
        CentreSpace(np.zeros(16), np.eye(16), numpy_helper.from_array(centres, "centres")),
        NeighbourSpace(numpy_helper.from_array(anchors, "anchors")),
    ]


@pytest.mark.parametrize("space", _spaces(), ids=["class centres", "nearest anchors"])
def test_a_labs_distance_threshold_comes_from_its_cells_measured_without_them(space):
    from dataclasses import replace

    from hematovision.adapt import LAB_OOD_PERCENTILE, adapted_calibration, out_of_fold_distances
    from hematovision.artifact import Calibration

    rng = np.random.default_rng(0)
    labels, groups = np.repeat([0, 1], 20), np.arange(40) // 2  # two crops of each cell
    cells = rng.normal(0, 1, (20, 16))[groups] + np.where(labels == 0, 5.0, -5.0)[:, None]
    views = (cells[:, None] + rng.normal(0, 0.1, (40, 8, 16))).astype(np.float32)
    known = out_of_fold_distances(space, views, labels, groups)
    in_sample = space.distances(space.with_lab(views[:, 0], labels), views).mean(1)
    assert known.shape == in_sample.shape == (40,)
    # each cell's own centre (or its own crops, among the neighbours) left out: farther
    assert (known > in_sample).all()
    base = Calibration(1.0, 0.5, float(known.min()) / 2)  # narrower than the lab's cells need
    widened = adapted_calibration(base, known)
    assert widened.ood_threshold == pytest.approx(np.percentile(known, LAB_OOD_PERCENTILE))
    wide = replace(base, ood_threshold=1e3)
    assert adapted_calibration(wide, known) == wide  # never narrowed
    assert out_of_fold_distances(space, views[:6], labels[:6], groups[:6]).size == 0


def test_adapt_shows_its_progress(shifted_lab, tmp_path, monkeypatch):
    import contextlib
    import shutil

    from hematovision import adapt as adaptation
    from hematovision.adapt import PULL_CHOICES, PULL_FOLDS
    from hematovision.artifact import ModelArtifact

    for label in ("lymphocyte", "neutrophil"):
        (tmp_path / "cells" / label).mkdir(parents=True)
        for image in sorted((shifted_lab / label).glob("*.png"))[:6]:
            shutil.copy(image, tmp_path / "cells" / label)
    bars = {}

    @contextlib.contextmanager
    def recording_bar(description, total, enabled=True, status=""):
        bars[description] = {"total": total, "done": 0, "enabled": enabled}

        class Bar:
            def advance(self, n=1, **fields):
                bars[description]["done"] += n

        yield Bar()

    monkeypatch.setattr(adaptation, "progress_bar", recording_bar)
    base = ModelArtifact.load(DEFAULT_MODEL)
    adaptation.adapt(base, tmp_path / "cells", tmp_path / "out", force=True, show_progress=True)
    assert bars["embedding the cells"] == {"total": 12, "done": 12, "enabled": True}
    fits = len(PULL_CHOICES) * PULL_FOLDS + 1  # the cross-validation's, then the chosen one
    assert bars["fitting the head"] == {"total": fits, "done": fits, "enabled": True}


def test_adapt_refuses_a_worse_model_and_unknown_classes(shifted_lab, tmp_path, monkeypatch):
    from hematovision import adapt as adaptation
    from hematovision.artifact import ModelArtifact
    from hematovision.errors import HematoVisionError

    base = ModelArtifact.load(DEFAULT_MODEL)
    # a fit gone wrong (the head's weights negated): refused, nothing written
    monkeypatch.setattr(adaptation, "fit_head", lambda x, y, w0, b0, *rest: (-w0, b0))
    with pytest.raises(HematoVisionError, match="worse on the held-out"):
        adaptation.adapt(base, shifted_lab, tmp_path / "a")
    assert not (tmp_path / "a" / "model.json").exists()
    odd = tmp_path / "odd" / "blast"
    odd.mkdir(parents=True)
    (odd / "x.png").write_bytes((shifted_lab / "meta.csv").read_bytes())
    r = run_cli("adapt", "--data", str(odd.parent), "--out", str(tmp_path / "b"))
    assert r.returncode != 0 and "blast" in r.stderr and "Traceback" not in r.stderr


def test_admins_activate_a_model_version_and_roll_back(app, client, adapted_cli, tmp_path):
    from hematovision.artifact import ModelArtifact

    out, made = adapted_cli
    assert made.returncode == 0, made.stderr
    adapted = ModelArtifact.load(out)
    where = ["--data-dir", str(tmp_path / "data"), "--database-url", storage_of(app).url]
    r = run_cli("models", "add", str(out), *where)
    assert r.returncode == 0, r.stderr
    slug = storage_of(app).models.slugs()[0]
    storage_of(app).users.add("admin", PASSWORD, "admin")
    storage_of(app).users.add("tech", PASSWORD, "technologist")
    login(client, "tech")
    assert client.post("/admin/models/activate", data={"slug": slug}).status_code == 403
    login(client, "admin")
    page = client.get("/admin/models").data.decode()
    assert adapted.version in page and "held out" in page
    far = adapted.metrics["adaptation"]["held_out"]
    assert f"unlike the training images {far['far_before']:.0%} → {far['far_after']:.0%}" in page
    assert client.post("/admin/models/activate", data={"slug": "nope"}).status_code == 404
    assert client.post("/admin/models/activate", data={"slug": slug}).status_code == 303

    def classify() -> str:
        time.sleep(ACTIVE_CHECK_SECONDS + 0.1)  # a worker looks again at most once a second
        r = client.post("/api/v1/predictions", data=_files(SAMPLES[:1]), headers=token)
        return r.get_json()["predictions"][0]["model"]["version"]

    token = {"Authorization": f"Bearer {storage_of(app).users.new_token('admin')}"}
    assert classify() == adapted.version  # every prediction records the version that made it
    held = adapted.metrics["adaptation"]["held_out"]
    card = client.get("/model").data.decode()  # the model card says what the lab's cells gave
    assert "Adapted to this lab" in card and f"{100 * held['accuracy_before']:.1f}% before" in card
    assert client.get("/model/adaptation.png").data.startswith(b"\x89PNG")
    assert client.post("/admin/models/activate", data={"slug": ""}).status_code == 303
    assert classify() == Classifier.load().version  # rolled back to the configured model
    assert "Adapted to this lab" not in client.get("/model").data.decode()
    assert client.get("/model/adaptation.png").status_code == 404
    history = client.get("/admin/models").data.decode()
    assert history.count(" by admin") == 2


def test_admins_manage_accounts_on_the_users_page(app, client, accounts):
    login(client, "admin")
    form = {"username": "nina", "password": PASSWORD, "role": "viewer"}
    assert client.post("/admin/users", data=form).status_code == 303
    assert client.post("/admin/users", data=form).status_code == 400  # exists already
    assert (
        client.post("/admin/users", data={**form, "username": "x", "password": "s"}).status_code
        == 400
    )
    page = client.post("/admin/users/nina/token").data.decode()
    token = page.split("<code>")[1].split("</code>")[0]
    assert (
        client.get("/api/v1/samples", headers={"Authorization": f"Bearer {token}"}).status_code
        == 200
    )
    assert client.post("/admin/users/nina/disable").status_code == 303
    assert (
        client.get("/api/v1/samples", headers={"Authorization": f"Bearer {token}"}).status_code
        == 401
    )
    assert client.post("/admin/users/nobody/disable").status_code == 404
    login(client, "technologist")
    assert client.post("/admin/users", data={**form, "username": "eve"}).status_code == 403
    events = {e.action for e in storage_of(app).audit.list()[0]}
    assert {"user_added", "token_issued", "user_disabled"} <= events
