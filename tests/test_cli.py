"""The command line: output formats, one-line errors, exit codes."""

import csv
import json
import os
import subprocess
import sys

import pytest

from hematovision.cli import main
from hematovision.inference import DEFAULT_MODEL


def _err_lines(capsys):
    captured = capsys.readouterr()
    return captured, [line for line in captured.err.splitlines() if line.strip()]


def test_data_synth_and_inspect_json(tmp_path, capsys):
    assert (
        main(["-q", "data", "synth", str(tmp_path / "s"), "--per-class", "4", "--size", "64"]) == 0
    )
    capsys.readouterr()
    assert main(["-q", "data", "inspect", str(tmp_path / "s"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["counts"] == {"lymphocyte": 4, "neutrophil": 4}
    assert summary["sizes"] == {"64x64": 8}


def test_inspect_table_lists_unreadable_files(tmp_path, capsys):
    main(["-q", "data", "synth", str(tmp_path / "s"), "--per-class", "2", "--size", "64"])
    (tmp_path / "s" / "neutrophil" / "._meta.jpg").write_bytes(b"\x00\x05\x16\x07")
    capsys.readouterr()
    assert main(["-q", "data", "inspect", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "1 unreadable file" in out and "neutrophil/._meta.jpg" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--data", "{tmp}/missing"], "data folder not found"),
        (["train", "--data", "{tmp}/one", "--out", "{tmp}/r"], "only one class"),
        (
            ["train", "--data", "{synth}", "--arch", "resnet5O", "--out", "{tmp}/r"],
            "unknown architecture",
        ),
        (["train", "--data", "{synth}", "--image-size", "8", "--out", "{tmp}/r"], "too small"),
        (["train", "--data", "{synth}", "--out", "{run}"], "exists; pass --overwrite"),
        (["evaluate", "--model", "{tmp}", "--data", "{synth}"], "not a training run"),
        (["data", "inspect", "{tmp}/missing"], "not found"),
        (
            ["data", "fetch", "pbc", "--dest", "{tmp}/d", "--archive", "{tmp}/none.zip"],
            "archive not found",
        ),
    ],
)
def test_bad_input_gives_one_clear_line_and_exit_2(
    args, message, tmp_path, synth_dir, synth_run, capsys
):
    (tmp_path / "one" / "lymphocyte").mkdir(parents=True)
    (tmp_path / "one" / "lymphocyte" / "a.png").write_bytes(
        next((synth_dir / "lymphocyte").iterdir()).read_bytes()
    )
    argv = [a.format(tmp=tmp_path, synth=synth_dir, run=synth_run) for a in args]
    assert main(["-q", *argv]) == 2
    captured, lines = _err_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert "Traceback" not in captured.err


def test_evaluate_json_output(synth_run, synth_dir, capsys):
    assert (
        main(
            [
                "-q",
                "evaluate",
                "--model",
                str(synth_run),
                "--data",
                str(synth_dir),
                "--split",
                "val",
                "--json",
            ]
        )
        == 0
    )
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["split"] == "val" and metrics["accuracy"] >= 0.85
    assert set(metrics["per_class"]) == {"lymphocyte", "neutrophil"}


def test_console_script_module_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "hematovision", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stdout.startswith("hematovision ")


def _run(*args, cwd=None):
    """The command as the README shows it, in a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "hematovision", *args], capture_output=True, text=True, cwd=cwd
    )


@pytest.mark.parametrize(
    "args, env, message",
    [
        (["predict", "{sample}", "--heatmaps", "{file}"], {}, "exists and is not a folder"),
        (["smear", "{field}", "--out", "{file}"], {}, "exists and is not a folder"),
        (["adapt", "--data", "{tmp}", "--out", "{file}"], {}, "exists and is not a folder"),
        (["data", "synth", "{file}"], {}, "exists and is not a folder"),
        (["data", "crops", "{tmp}", "{tmp}/cells"], {}, "is not a BCCD folder"),
        (["predict", "{sample}", "--top-k", "0"], {}, "--top-k: must be at least 1, not 0"),
        (["serve", "--port", "99999"], {}, "--port: must be from 1 to 65535"),
        (["serve", "--workers", "0"], {}, "--workers: must be at least 1"),
        (["serve", "--port", "5997"], {"HEMATOVISION_MAX_UPLOAD_MB": "-1"}, "more than 0"),
        (["serve", "--port", "5997"], {"HEMATOVISION_STORE_IMAGES": "maybe"}, "is not yes or no"),
        (["users", "list"], {"HEMATOVISION_DATA_DIR": "{file}"}, "as the data folder: File exists"),
    ],
)
def test_bad_folders_numbers_and_settings_are_refused_in_one_line_before_any_work(
    args, env, message, tmp_path, bccd_dir
):
    (tmp_path / "notes.txt").write_text("not a folder")
    names = {
        "tmp": tmp_path,
        "file": tmp_path / "notes.txt",
        "sample": next((DEFAULT_MODEL.parent / "samples").glob("*.jpg")),
        "field": next((bccd_dir / "JPEGImages").glob("*.jpg")),
    }
    result = subprocess.run(
        [sys.executable, "-m", "hematovision", *(a.format(**names) for a in args)],
        env={
            **os.environ,
            "HEMATOVISION_DATA_DIR": str(tmp_path / "data"),
            **{k: v.format(**names) for k, v in env.items()},
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert message in result.stderr.strip().splitlines()[-1]
    assert (tmp_path / "notes.txt").read_text() == "not a folder"  # nothing replaced
    assert not (tmp_path / "cells").exists()  # nothing made


def test_a_file_system_error_no_check_foresaw_is_one_line_and_exit_1(monkeypatch, capsys):
    def denied(args):
        raise PermissionError(13, "Permission denied", "/srv/lab/out")

    monkeypatch.setattr("hematovision.cli.cmd_storage_check", denied)
    assert main(["-q", "storage", "check"]) == 1
    captured, lines = _err_lines(capsys)
    assert lines == ["error: Permission denied: /srv/lab/out"]


def test_predict_a_missing_file_is_one_line_and_exit_2():
    result = _run("predict", "/nonexistent/x.jpg")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == ["error: /nonexistent/x.jpg: file not found"]


def test_predict_when_nothing_is_readable_is_one_line_and_exit_2(tmp_path):
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / name).write_text("not a picture")
    result = _run("predict", str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg"))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and result.stdout == "" and len(lines) == 1
    assert lines[0].startswith("error: none of the 2 images could be read")


def test_smear_on_a_text_file_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "notes.jpg").write_text("meeting notes")
    result = _run("smear", str(tmp_path / "notes.jpg"))
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "notes.jpg" in lines[0]


def test_predict_table_counts_the_differential_under_the_lab_rule():
    from hematovision.inference import DEFAULT_MODEL

    samples = sorted((DEFAULT_MODEL.parent / "samples").glob("*.jpg"))
    picked = [str(p) for p in samples if p.name.startswith(("basophil", "erythroblast"))]
    result = _run("-q", "predict", *picked)
    assert result.returncode == 0
    assert "differential over 3 white cell(s)" in result.stdout
    assert "nucleated red cells: 3 (100.0 per 100 white cells)" in result.stdout


def test_smear_flags_its_differential_against_the_labs_reference_intervals(tmp_path):
    from hematovision.inference import DEFAULT_MODEL

    samples = sorted((DEFAULT_MODEL.parent / "samples").glob("*.jpg"))
    fields = [str(p) for p in samples if p.name.startswith(("neutrophil", "lymphocyte"))]

    def differential(*extra) -> dict:
        out = tmp_path / f"out{len(extra)}"
        result = _run("-q", "smear", *fields, "--out", str(out), *extra)
        assert result.returncode == 0, result.stderr
        with open(out / "differential.csv", newline="") as fh:
            return {row["class"]: row for row in csv.DictReader(fh)}

    # three neutrophils and three lymphocytes against the typical adult intervals
    rows = differential()
    assert rows["neutrophil"]["count"] == rows["lymphocyte"]["count"] == "3"
    assert (rows["lymphocyte"]["reference_high"], rows["lymphocyte"]["flag"]) == ("45.0", "H")
    assert (rows["monocyte"]["flag"], rows["neutrophil"]["flag"]) == ("L", "")
    # the lab's own: neutrophils 60-80% (50% is low); the classes it leaves out are not flagged
    lab = tmp_path / "lab.csv"
    lab.write_text("class,low,high\nneutrophil,60,80\n")
    rows = differential("--reference-intervals", str(lab))
    assert (rows["neutrophil"]["reference_low"], rows["neutrophil"]["flag"]) == ("60.0", "L")
    assert rows["lymphocyte"]["flag"] == rows["monocyte"]["flag"] == ""
    assert rows["lymphocyte"]["reference_low"] == ""
    # a bad file: one line and exit 2 before any field is read or anything written
    lab.write_text("class,low,high\nneutrophil,80,60\n")
    result = _run(
        "-q", "smear", *fields, "--out", str(tmp_path / "bad"), "--reference-intervals", str(lab)
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"error: {lab}, line 2: need 0 <= low <= high <= 100, got 80.0-60.0"
    ]
    assert not (tmp_path / "bad").exists()


def test_predict_tells_a_lab_when_most_of_its_cells_are_flagged(tissue_tiles):
    from hematovision.inference import DEFAULT_MODEL

    result = _run("-q", "predict", str(tissue_tiles[0].parent))
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())  # rich wraps long lines
    assert "20 of 20 cells are flagged for review (20 unlike the images the model" in text
    assert "hematovision adapt" in text
    # the bundled model's own samples (PBC, the lab it was trained on): no such notice
    samples = sorted(str(p) for p in (DEFAULT_MODEL.parent / "samples").glob("*.jpg"))
    result = _run("-q", "predict", *samples)
    assert result.returncode == 0 and len(samples) >= 20
    assert "cells are flagged for review" not in " ".join(result.stdout.split())


def test_smear_tells_a_lab_when_most_of_its_white_cells_are_flagged(bccd_dir):
    # BCCD's held-out fields: a lab the bundled model trained on only in part (the even
    # fields), most of whose white cells it flags for review
    fields = [str(p) for p in sorted((bccd_dir / "JPEGImages").glob("*.jpg"))[1:60:2]]
    result = _run("-q", "smear", *fields, "--format", "json")
    assert result.returncode == 0, result.stderr
    cells = [c for f in json.loads(result.stdout)["fields"] for c in f["white_cells"]]
    flagged = [c for c in cells if c["uncertain"]]
    assert len(cells) >= 20 and 2 * len(flagged) >= len(cells)
    assert all(c["reasons"] for c in flagged) and not any(
        c["reasons"] for c in cells if c not in flagged
    )
    result = _run("-q", "smear", *fields)
    text = " ".join(result.stdout.split())
    assert f"{len(flagged)} of {len(cells)} cells are flagged for review" in text
    assert "hematovision adapt" in text


def test_export_help_states_the_tolerance_the_export_checks(capsys, monkeypatch):
    """The CLI builds its help without importing torch: its copy of the limit must agree."""
    from hematovision.export.onnx_export import FP16_WEIGHTS_TOLERANCE

    monkeypatch.setenv("COLUMNS", "300")  # argparse wraps at the terminal's width
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    assert f"(probabilities within {FP16_WEIGHTS_TOLERANCE:g})" in capsys.readouterr().out
