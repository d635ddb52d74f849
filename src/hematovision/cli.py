"""The ``hematovision`` command: a thin layer that parses arguments, calls the API and prints."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import os
import sys
import types
import typing
from datetime import timedelta
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from ._version import __version__
from .errors import HematoVisionError
from .files import FAST_PNG, IMAGE_SUFFIXES, output_folder  # a leaf: data.folders imports sklearn

out = Console(highlight=False)  # results: stdout
err = Console(stderr=True, highlight=False)  # messages: stderr


# ---------------------------------------------------------------- data
def cmd_data_synth(args) -> int:
    from .data import make_synthetic

    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    path = make_synthetic(
        args.out,
        classes,
        args.per_class,
        args.size,
        args.seed,
        overwrite=args.overwrite,
        show_progress=not args.quiet,
    )
    out.print(f"wrote {len(classes) * args.per_class} images of {', '.join(classes)} to {path}")
    return 0


def cmd_data_fetch(args) -> int:
    from .data import fetch

    info = fetch(
        args.name,
        args.dest,
        archive=args.archive,
        sha256=args.sha256,
        url=args.url,
        show_progress=not args.quiet,
    )
    out.print(f"{info['name']} installed in {info['path']}")
    out.print(
        f"archive SHA-256 {info['sha256']}"
        + (" (verified)" if info["verified"] else " (no published checksum; pin it with --sha256)")
    )
    out.print(f"licence {info['licence']}; cite: {info['citation']}")
    return 0


def cmd_data_combine(args) -> int:
    from .data.labs import combine_labs

    sources = {}
    for item in args.lab:
        lab, sep, folder = item.partition("=")
        if not sep or not lab or not folder:
            raise HematoVisionError(f"--lab takes NAME=FOLDER, not {item!r}")
        sources[lab] = folder
    path = combine_labs(
        args.out,
        sources,
        set(args.group_duplicates),
        overwrite=args.overwrite,
        show_progress=not args.quiet,
    )
    out.print(f"{len(sources)} labs linked into {path} (labs and groups in {path / 'meta.csv'})")
    return 0


def cmd_data_crops(args) -> int:
    from .smear.crops import bccd_white_cells

    counts = bccd_white_cells(args.bccd, args.out, args.parity, show_progress=not args.quiet)
    out.print(f"{sum(counts.values())} white cells in {args.out}: {counts}")
    return 0


def cmd_data_export_reviewed(args) -> int:
    from .adapt import export_reviewed

    counts = export_reviewed(_storage(args), args.out)
    out.print(f"{sum(counts.values())} reviewed cells in {args.out}: {counts}")
    return 0


def cmd_data_inspect(args) -> int:
    from .data import inspect_folder
    from .evaluation.metrics import format_metric as _fmt

    summary = inspect_folder(args.folder, show_progress=not args.quiet)
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        table = Table(title=f"{summary['root']}: {summary['total']} readable images")
        table.add_column("class")
        table.add_column("images", justify="right")
        table.add_column("share", justify="right")
        for c, n in summary["counts"].items():
            table.add_row(c, str(n), f"{100 * n / max(summary['total'], 1):.1f}%")
        out.print(table)
        ratio = summary["imbalance_ratio"]
        out.print(f"imbalance (largest / smallest class): {_fmt(ratio)}")
        out.print(
            "sizes: " + ", ".join(f"{s} ({n})" for s, n in list(summary["sizes"].items())[:5])
        )
        out.print("modes: " + ", ".join(f"{m} ({n})" for m, n in summary["modes"].items()))
        if summary["unreadable"]:
            out.print(f"[bold red]{len(summary['unreadable'])} unreadable file(s):[/]")
            for u in summary["unreadable"]:
                out.print(f"  {u['path']}: {u['error']}", markup=False)
        else:
            out.print("no unreadable files")
    return 0


# ---------------------------------------------------------------- train / evaluate
def print_metrics(metrics: dict, title: str) -> None:
    from .evaluation.metrics import SUMMARY_METRICS
    from .evaluation.metrics import format_metric as _fmt

    summary = Table(title=title)
    summary.add_column("metric")
    summary.add_column("value", justify="right")
    for k in SUMMARY_METRICS:
        summary.add_row(k, _fmt(metrics.get(k)))
    out.print(summary)
    per_class = Table(title="per class")
    for col in ("class", "precision", "recall", "F1", "support"):
        per_class.add_column(col, justify="left" if col == "class" else "right")
    for c, m in metrics["per_class"].items():
        per_class.add_row(
            c, _fmt(m["precision"]), _fmt(m["recall"]), _fmt(m["f1"]), str(m["support"])
        )
    out.print(per_class)
    cm = Table(title="confusion matrix (rows: true, columns: predicted)")
    cm.add_column("")
    for c in metrics["classes"]:
        cm.add_column(c[:6], justify="right")
    for c, row in zip(metrics["classes"], metrics["confusion_matrix"]):
        cm.add_row(c, *map(str, row))
    out.print(cm)


def cmd_train(args) -> int:
    from .training import TrainConfig, train

    cfg = config_from_args(TrainConfig, args, show_progress=not args.quiet)
    run = train(cfg)
    if os.environ.get("RANK", "0") != "0":
        return 0  # one of several torchrun processes: rank 0 reports
    metrics = run.metrics()
    shown = "test" if "test" in metrics else "val"
    print_metrics(metrics[shown], f"{cfg.arch}: {shown} split")
    out.print(f"run folder: {run}\nreport: {run.report}")
    return 0


def cmd_evaluate(args) -> int:
    from .training import evaluate_run

    metrics = evaluate_run(
        args.model, args.data, args.split, args.out, show_progress=not args.quiet
    )
    if args.json:
        print(json.dumps(metrics, indent=1))
    else:
        print_metrics(metrics, f"{Path(args.model).name} on {Path(args.data).name} ({args.split})")
        out.print(f"report: {metrics['report']}")
    return 0


# ---------------------------------------------------------------- export / predict
def cmd_export(args) -> int:
    from .export import export_run

    artifact = export_run(
        args.model,
        args.out,
        int8=args.int8,
        half_weights=args.half_weights,
        data_dir=args.data,
        overwrite=args.overwrite,
        show_progress=not args.quiet,
    )
    out.print(f"model artifact: {artifact.path}")
    out.print(f"checks: {json.dumps(artifact.checks)}")
    test = artifact.metrics.get("test")
    if test:
        out.print(
            f"test accuracy {test['accuracy']:.4f}, macro-F1 {test['f1_macro']:.4f}, "
            f"ECE {test['ece_before']:.4f} -> {test['ece_after']:.4f} after temperature "
            f"scaling (T={artifact.calibration.temperature:.3f})"
        )
    return 0


def expand_inputs(patterns: list[str]) -> list[str]:
    """Files as given, folders searched recursively for images, globs expanded; in order."""
    import glob

    found: list[str] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            found += sorted(
                str(p)
                for p in path.rglob("*")
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
        elif any(ch in pattern for ch in "*?["):
            found += sorted(glob.glob(pattern, recursive=True))
        else:
            found.append(pattern)
    return found


def _inputs_and_folder(patterns: list[str], folder: str | None) -> tuple[list[str], Path | None]:
    """The images to process, and the output folder (made) if one was asked for."""
    paths = expand_inputs(patterns)
    if not paths:
        raise HematoVisionError("no images found in the given paths")
    return paths, output_folder(folder) if folder else None


def _report_failures(failures: list[str], total: int) -> None:
    """Nothing could be read: one line and exit 2; some could not: one line each, then exit 1."""
    if failures and len(failures) == total:
        if total == 1:
            raise HematoVisionError(failures[0])
        raise HematoVisionError(f"none of the {total} images could be read (first: {failures[0]})")
    for message in failures:
        print(f"error: {message}", file=sys.stderr)


def cmd_predict(args) -> int:
    from .differential import ReferenceIntervals
    from .inference import Classifier

    if args.ray is not None:
        from .inference.ray_batch import predict_on_ray

        job = functools.partial(predict_on_ray, batch_size=args.batch_size)
        return _on_ray(args, args.paths, job, "images classified")
    # the intervals the differential is flagged against: a bad file stops here, before any work
    intervals = ReferenceIntervals.configured(args.reference_intervals)
    classifier = Classifier.load(
        args.model, precision=args.precision, tta=args.tta, engine=args.engine
    )
    paths, heat_dir = _inputs_and_folder(args.paths, args.heatmaps)
    results, failures = _classify_paths(classifier, paths, heat_dir, args)
    _report_failures(failures, len(paths))
    {
        "json": _print_predictions_json,
        "csv": _print_predictions_csv,
        "table": functools.partial(_print_predictions_table, intervals=intervals),
    }[args.format](results, classifier, args)
    return 1 if failures else 0


def _on_ray(args, patterns: list[str], job, done: str) -> int:
    """``predict --ray`` / ``smear --ray``: the job on Ray, then a summary; exit 1 when some
    images could not be read."""
    from .differential import display_name
    from .inference.ray_batch import TABLE_SUFFIXES, start_ray

    if not args.out:
        raise HematoVisionError("--ray writes its results into a folder: pass --out DIR")
    table = len(patterns) == 1 and Path(patterns[0]).suffix in TABLE_SUFFIXES
    inputs = patterns[0] if table else _inputs_and_folder(patterns, None)[0]
    start_ray(args.ray or None, quiet=args.quiet)
    summary = job(inputs, args.out, args.model, engine=args.engine)
    counts = ", ".join(f"{display_name(k)} {v}" for k, v in sorted(summary["labels"].items()))
    out.print(
        f"{summary['images'] - summary['failures']} {done} on Ray ({counts}); "
        f"{summary['failures']} could not be read.\nResults: {summary['parquet']} and "
        f"{summary['jsonl']}"
    )
    if summary["failures"] == summary["images"]:
        raise HematoVisionError(f"none of the {summary['images']} images could be read")
    return 1 if summary["failures"] else 0


def _classify_paths(classifier, paths: list[str], heat_dir: Path | None, args):
    """[(absolute path, Prediction)] and the error of each file that could not be read."""
    from .inference import heatmap_overlay
    from .progress import progress_bar

    results, failures = [], []
    predictions = classifier.iter_predict(
        paths, heatmaps=bool(heat_dir), batch_size=args.batch_size, errors="report"
    )
    enabled = not args.quiet and len(paths) > args.batch_size
    with progress_bar("classifying", len(paths), enabled=enabled) as bar:
        for n, (path, pred) in enumerate(zip(paths, predictions)):
            bar.advance()
            if not pred.ok:
                failures.append(pred.error)
                continue
            if heat_dir:
                name = f"{n:05d}_{Path(path).stem}_heatmap.png"
                heatmap_overlay(path, pred.heatmap).save(heat_dir / name, **FAST_PNG)
                pred.heatmap = None  # written: do not keep every map in memory
            results.append((str(Path(path).resolve()), pred))
    return results, failures


def _print_predictions_json(results, classifier, args) -> None:
    rows = [
        {"path": p, **pred.to_dict(), "top_k": [[c, v] for c, v in pred.top(args.top_k)]}
        for p, pred in results
    ]
    print(json.dumps(rows, indent=1))


def _print_predictions_csv(results, classifier, args) -> None:
    from .tables import write_predictions_csv

    records = ({"path": p, **pred.to_dict()} for p, pred in results)
    write_predictions_csv(sys.stdout, records, classifier.classes, keys=("path",))


def _print_predictions_table(results, classifier, args, intervals) -> None:
    from .differential import count_differential, display_name
    from .inference import new_lab_notice

    engine = classifier.engine_info()
    table = Table(
        title=f"{classifier.name} {classifier.version} ({classifier.precision}) "
        f"on {engine['name']} ({engine['precision']})"
    )
    for col in ("file", "class", "confidence", f"top {args.top_k}"):
        table.add_column(col)
    for p, pred in results:
        label = display_name(pred.label)
        label = f"{label} [yellow](to review)[/]" if pred.uncertain else label
        top = ", ".join(f"{c} {v:.2f}" for c, v in pred.top(args.top_k))
        table.add_row(p, label, f"{pred.confidence:.3f}", top)
    out.print(table)
    if len(results) > 1:
        cells = ((pred.label, pred.uncertain) for _, pred in results)
        print_differential(count_differential(cells, classifier.classes, intervals=intervals))
    _print_notice(new_lab_notice(pred.reasons for _, pred in results))


def _print_notice(notice: str | None) -> None:
    if notice:
        out.print(f"[yellow]{notice}[/]")


def print_differential(d) -> None:
    """The differential under the lab's rule (hematovision.differential), as a table."""
    from .differential import display_name, interval_text

    table = Table(title=f"differential over {d.counted} white cell(s)")
    for col in ("white cell", "count", "%", "reference", ""):
        table.add_column(col, justify="left" if col in ("white cell", "") else "right")
    for c, n in d.white_cells.items():
        reference = interval_text(d.intervals.of(c))
        table.add_row(display_name(c), str(n), f"{d.percent(c):.1f}", reference, d.flag(c) or "")
    out.print(table)
    nrbc = d.nrbc_per_100_white_cells
    out.print(
        f"nucleated red cells: {d.nucleated_red_cells}"
        + (f" ({nrbc:.1f} per 100 white cells)" if nrbc is not None else "")
        + (f" {d.flag('erythroblast')}" if d.flag("erythroblast") else "")
        + f"; platelets: {d.platelets}; to review (not counted): {d.to_review}"
        + f"\nreference intervals: {d.intervals.source}"
    )
    if d.outside_reference:
        names = ", ".join(display_name(c) for c in d.outside_reference)
        out.print(f"[yellow]outside the reference intervals: {names}[/]")


# ---------------------------------------------------------------- smear fields
def cmd_smear(args) -> int:
    from .differential import ReferenceIntervals
    from .smear import SmearParams, field_differential, load_smear_classifier

    if args.ray is not None:
        from .smear.ray_batch import analyze_on_ray

        return _on_ray(args, args.images, analyze_on_ray, "fields analysed")
    params = None if args.cell_size is None else SmearParams.for_cell_size(args.cell_size)
    intervals = ReferenceIntervals.configured(args.reference_intervals)
    classifier = load_smear_classifier(args.model, engine=args.engine)
    paths, out_dir = _inputs_and_folder(args.images, args.out)
    fields, failures = _analyse_paths(classifier, paths, params, out_dir, args)
    _report_failures(failures, len(paths))
    differential = field_differential(fields, classifier.classes, intervals)
    if out_dir:
        _write_smear_tables(out_dir, fields, differential)
    {"json": _print_smear_json, "csv": _print_smear_csv, "table": _print_smear_table}[args.format](
        fields, differential
    )
    return 1 if failures else 0


def _analyse_paths(classifier, paths, params, out_dir: Path | None, args):
    """Each readable field as a dict (``SmearField.to_dict``), and the error of each other."""
    from .progress import progress_bar
    from .smear import annotate
    from .smear.slide import analyze_any, overview

    fields, failures = [], []
    with progress_bar(
        "analysing fields", len(paths), enabled=not args.quiet and len(paths) > 1
    ) as bar:
        for n, path in enumerate(paths):
            bar.advance()
            try:  # larger than a field, or a whole-slide file: tile by tile
                found, slide = analyze_any(path, classifier, params, not args.quiet)
            except HematoVisionError as exc:
                failures.append(str(exc))
                continue
            field = found.to_dict()
            fields.append(field)
            if out_dir:
                picture = overview(path, field) if slide else annotate(path, field)
                kind = "overview" if slide else "annotated"
                picture.save(out_dir / f"{n:05d}_{Path(path).stem}_{kind}.png", **FAST_PNG)
            for warning in field["warnings"]:
                print(f"warning: {path}: {warning}", file=sys.stderr)
    return fields, failures


def _write_smear_tables(out_dir: Path, fields, differential) -> None:
    """--out: one CSV per table, beside the annotated fields."""
    from .tables import write_differential_csv, write_smear_cells_csv

    with open(out_dir / "cells.csv", "w", newline="") as fh:
        write_smear_cells_csv(fh, fields)
    with open(out_dir / "differential.csv", "w", newline="") as fh:
        write_differential_csv(fh, differential)


def _print_smear_json(fields, differential) -> None:
    body = {"fields": fields, "differential": differential.to_dict()}
    print(json.dumps(body, indent=1))


def _print_smear_csv(fields, differential) -> None:
    from .tables import write_smear_cells_csv

    write_smear_cells_csv(sys.stdout, fields)  # the differential: --out DIR/differential.csv


def _print_smear_table(fields, differential) -> None:
    from .differential import display_name
    from .smear import fields_notice

    table = Table(title=f"{len(fields)} field(s)")
    for col in (
        "field",
        "white cells (numbered as on the annotated field)",
        "red cells",
        "platelets",
    ):
        table.add_column(col)
    for f in fields:
        cells = ", ".join(
            f"{n}. {display_name(c['label'])}" + (" (to review)" if c["uncertain"] else "")
            for n, c in enumerate(f["white_cells"], start=1)
        )
        table.add_row(
            Path(f["path"]).name, cells or "none", str(f["red_cells"]), str(f["platelets"])
        )
    out.print(table)
    print_differential(differential)
    _print_notice(fields_notice(fields))


# ---------------------------------------------------------------- serve
def cmd_serve(args) -> int:
    from .web.server import serve

    serve(
        model=args.model,
        host=args.host,
        port=args.port,
        workers=args.workers,
        data_dir=args.data_dir,
        database_url=args.database_url,
        max_upload_mb=args.max_upload_mb,
        store_images=False if args.no_store_images else None,
        threads=args.threads,
        engine=args.engine,
        reference_intervals=args.reference_intervals,
    )
    return 0


# ---------------------------------------------------------------- storage
def cmd_storage_check(args) -> int:
    report = _storage(args).check(repair=args.repair, grace_seconds=args.grace)
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        found = {
            "image files no record uses": report.orphan_files,
            "images records use that are missing": report.missing_files,
            "temporary files of interrupted writes": report.temporary_files,
        }
        for name, items in found.items():
            out.print(f"{len(items)} {name}" + (": " + ", ".join(items[:5]) if items else ""))
        verdict = "all consistent" if report.ok else "run with --repair to fix"
        out.print("repaired" if report.repaired else verdict)
    return 0 if report.ok or report.repaired else 1


def cmd_storage_purge(args) -> int:
    if not args.older_than >= 0:  # also refuses NaN
        raise HematoVisionError("--older-than must be a number of days, 0 or more")
    storage = _storage(args)
    erased = storage.purge_deleted(timedelta(days=args.older_than))
    storage.audit.record("cli", "purged", "storage", older_than_days=args.older_than, **erased)
    out.print(
        f"erased {erased['predictions']} deleted results and {erased['smear_analyses']} "
        f"deleted smear analyses (deleted over {args.older_than:g} days ago) and their images"
    )
    return 0


# ---------------------------------------------------------------- adapt
def cmd_adapt(args) -> int:
    from .adapt import adapt
    from .artifact import ModelArtifact
    from .inference import DEFAULT_MODEL

    if not 0.05 <= args.held_out <= 0.9:
        raise HematoVisionError("--held-out must be between 0.05 and 0.9")
    output_folder(args.out, empty=True, make=False)  # before minutes of work
    base = ModelArtifact.load(args.model or DEFAULT_MODEL)
    artifact = adapt(
        base,
        args.data,
        args.out,
        held_out=args.held_out,
        force=args.force,
        show_progress=not args.quiet,
    )
    held = artifact.metrics["adaptation"]["held_out"]
    after = held["accuracy_after_tta" if artifact.tta else "accuracy_after"]
    views = "; it predicts with the 8 flips and turns (--no-tta: one view)" if artifact.tta else ""
    out.print(
        f"{artifact.path}: {artifact.name} {artifact.version}; held-out accuracy "
        f"{held['accuracy_before']:.1%} -> {after:.1%} ({held['n']} cells){views}; "
        f"flagged as unlike the training images {held['far_before']:.0%} -> "
        f"{held['far_after']:.0%}"
    )
    return 0


# ---------------------------------------------------------------- model versions
def cmd_models_add(args) -> int:
    from .artifact import ModelArtifact

    storage = _storage(args)
    artifact = ModelArtifact.load(args.folder).check()
    slug = storage.models.register(Path(args.folder), artifact.name, artifact.version)
    storage.audit.record("cli", "registered", f"model:{slug}")
    if args.activate:
        storage.models.activate(slug, "cli")
        storage.audit.record("cli", "activated", f"model:{slug}")
    out.print(f"registered {slug}" + (" and activated it" if args.activate else ""))
    return 0


def cmd_models_list(args) -> int:
    storage = _storage(args)
    active = storage.models.active() or None
    for slug in storage.models.slugs():
        out.print(f"{'*' if slug == active else ' '} {slug}")
    if active is None:
        out.print("* the configured model (--model, else the bundled one) is active")
    return 0


def cmd_models_activate(args) -> int:
    storage = _storage(args)
    slug = "" if args.slug == "configured" else args.slug
    storage.models.activate(slug, "cli")
    storage.audit.record("cli", "activated", f"model:{args.slug}")
    out.print(f"activated {args.slug}: the web app's workers follow within a second")
    return 0


# ---------------------------------------------------------------- users
def _storage(args):
    """The web app's storage, from --data-dir/--database-url over the environment."""
    from .storage import Storage
    from .web.config import WebSettings

    settings = WebSettings.from_env(data_dir=args.data_dir, database_url=args.database_url)
    storage = Storage(settings.database_url, settings.data_dir)
    storage.migrate()
    return storage


def _new_password(args) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    import getpass

    first = getpass.getpass(f"password for {args.name}: ")
    if first != getpass.getpass("again: "):
        raise HematoVisionError("the two passwords differ")
    return first


def cmd_users_add(args) -> int:
    storage = _storage(args)
    user = storage.users.add(args.name, _new_password(args), args.role)
    storage.audit.record("cli", "user_added", f"user:{user.username}", role=user.role)
    out.print(f"added {user.username} ({user.role}); accounts are on: log in at /login")
    return 0


def cmd_users_list(args) -> int:
    users = [u.to_dict() for u in _storage(args).users.list()]
    if args.json:
        print(json.dumps(users, indent=1))
        return 0
    for u in users:
        state = "active" if u["active"] else "disabled"
        out.print(f"{u['username']:<24} {u['role']:<13} {state:<9} token: {u['has_token']}")
    if not users:
        out.print("no account: the web app runs single-user, on 127.0.0.1 only")
    return 0


def cmd_users_set_active(args) -> int:
    storage = _storage(args)
    active = args.users_command == "enable"
    storage.users.set_active(args.name, active)
    storage.audit.record("cli", "user_enabled" if active else "user_disabled", f"user:{args.name}")
    out.print(f"{args.name} {'enabled' if active else 'disabled'}")
    return 0


def cmd_users_token(args) -> int:
    storage = _storage(args)
    token = storage.users.new_token(args.name)
    storage.audit.record("cli", "token_issued", f"user:{args.name}")
    print(token)  # shown once: only its hash is kept
    return 0


# ---------------------------------------------------------------- parser
def _option_type(hint):
    """``int | None`` -> int: the type argparse converts the option's text with."""
    if isinstance(hint, types.UnionType):
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def add_config_arguments(parser: argparse.ArgumentParser, config_type) -> None:
    """One option per field of a config dataclass, with the field's own default, type, help and
    choices; a boolean that defaults to True becomes ``--no-<name>``."""
    hints = typing.get_type_hints(config_type)
    for f in dataclasses.fields(config_type):
        if not f.metadata.get("cli", True):
            continue
        name, kind = f.name.replace("_", "-"), _option_type(hints[f.name])
        options = {"dest": f.name, "help": f.metadata.get("help")}
        if kind is bool:
            flag = f"--no-{name}" if f.default else f"--{name}"
            parser.add_argument(
                flag, action="store_false" if f.default else "store_true", **options
            )
        elif f.default is dataclasses.MISSING:
            parser.add_argument(f"--{name}", type=kind, required=True, **options)
        else:
            parser.add_argument(
                f"--{name}",
                type=kind,
                default=f.default,
                choices=f.metadata.get("choices"),
                **options,
            )


def config_from_args(config_type, args: argparse.Namespace, **extra):
    """The config dataclass from parsed options (``add_config_arguments``) and ``extra``."""
    names = {f.name for f in dataclasses.fields(config_type)}
    return config_type(**{k: v for k, v in vars(args).items() if k in names}, **extra)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hematovision", description="Blood-cell classification in microscope images."
    )
    p.add_argument("--version", action="version", version=f"hematovision {__version__}")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or logs")
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="create, fetch and inspect data sets")
    dsub = data.add_subparsers(dest="data_command", required=True)
    s = dsub.add_parser("synth", help="write the simulated data set")
    s.add_argument("out", help="output folder")
    s.add_argument(
        "--classes",
        default="lymphocyte,neutrophil",
        help="comma-separated (lymphocyte, neutrophil, eosinophil, monocyte, basophil, platelet)",
    )
    s.add_argument("--per-class", type=int, default=50)
    s.add_argument("--size", type=int, default=128)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=cmd_data_synth)
    f = dsub.add_parser("fetch", help="download and install a public data set")
    f.add_argument("name", choices=["pbc", "bccd"])
    f.add_argument("--dest", required=True, help="folder to install into (as DEST/NAME)")
    f.add_argument("--archive", help="install from an archive already downloaded")
    f.add_argument("--sha256", help="expected SHA-256 of the archive")
    f.add_argument("--url", help="download from this address instead (a mirror)")
    f.set_defaults(func=cmd_data_fetch)
    i = dsub.add_parser("inspect", help="class balance, image sizes, unreadable files")
    i.add_argument("folder")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_data_inspect)
    cb = dsub.add_parser("combine", help="link several labs' class folders into one data set")
    cb.add_argument("out", help="the combined folder (symbolic links and meta.csv)")
    cb.add_argument(
        "--lab",
        action="append",
        required=True,
        metavar="NAME=FOLDER",
        help="a lab's class-per-folder set (repeat per lab)",
    )
    cb.add_argument(
        "--group-duplicates",
        action="append",
        default=[],
        metavar="NAME",
        help="group this lab's near-duplicate crops of one cell (e.g. lisc)",
    )
    cb.add_argument("--overwrite", action="store_true")
    cb.set_defaults(func=cmd_data_combine)
    cr = dsub.add_parser("crops", help="white cells cut from BCCD's labelled smear fields")
    cr.add_argument("bccd", help="the BCCD folder (JPEGImages, Annotations, labels.csv)")
    cr.add_argument("out", help="class-per-folder output")
    cr.add_argument(
        "--parity",
        choices=["even", "odd", "all"],
        default="even",
        help="even: the fields the detector was tuned on (odd ones stay held out)",
    )
    cr.set_defaults(func=cmd_data_crops)
    er = dsub.add_parser(
        "export-reviewed", help="the reviewed cells of signed samples, class per folder"
    )
    er.add_argument("out", help="class-per-folder output (with meta.csv and provenance.csv)")
    _storage_options(er)
    er.set_defaults(func=cmd_data_export_reviewed)

    from .training.config import TrainConfig  # torch-free

    t = sub.add_parser(
        "train",
        help="train a classifier on a class-per-folder data set",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_config_arguments(t, TrainConfig)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="score a trained run on a data folder")
    e.add_argument("--model", required=True, help="run folder")
    e.add_argument("--data", required=True)
    e.add_argument("--split", default="test", choices=["train", "val", "test", "all"])
    e.add_argument("--out", help="where to write eval-<split>.json/.html (default: the run)")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_evaluate)

    x = sub.add_parser("export", help="export a run to ONNX: the model artifact folder")
    x.add_argument(
        "--model",
        required=True,
        nargs="+",
        help="run folder; several runs of one split: one ensemble (the mean of their logits)",
    )
    x.add_argument("--out", help="artifact folder (default: RUN/artifact; needed for an ensemble)")
    x.add_argument("--int8", action="store_true", help="also write a quantised model.int8.onnx")
    x.add_argument(
        "--half-weights",
        action="store_true",
        help="store the convolutions' weights in float16: about half the file, computed in "
        "float32 (probabilities within 0.02)",
    )
    x.add_argument("--data", help="the training data, if it moved since training")
    x.add_argument("--overwrite", action="store_true")
    x.set_defaults(func=cmd_export)

    r = sub.add_parser("predict", help="classify cell images (default: the bundled model)")
    r.add_argument("paths", nargs="+", help="files, folders (recursive) or globs")
    r.add_argument("--model", help="model artifact folder (default: the bundled model)")
    r.add_argument("--format", choices=["table", "csv", "json"], default="table")
    r.add_argument("--top-k", type=whole_number(1), default=3)
    r.add_argument("--heatmaps", help="write heatmap overlays (PNG) into this folder")
    r.add_argument("--batch-size", type=whole_number(1), default=32)
    r.add_argument(
        "--precision", choices=["fp32", "int8"], help="default: fp32 where the model has it"
    )
    r.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        help="test-time augmentation: average the 8 flips and turns of each cell (8x slower) "
        "and flag cells on which they disagree (default: as the model says; adapted models "
        "use it where it paid on their held-out cells)",
    )
    _engine_option(r)
    _ray_option(r)
    r.add_argument("--out", help="with --ray: the folder for the results")
    _intervals_option(r)
    r.set_defaults(func=cmd_predict)

    m = sub.add_parser("smear", help="find, classify and count the white cells of smear fields")
    m.add_argument("images", nargs="+", help="field images, folders (recursive) or globs")
    m.add_argument("--model", help="model artifact folder (default: the bundled model)")
    m.add_argument(
        "--out",
        help="write each annotated field (PNG), cells.csv and differential.csv into this folder",
    )
    m.add_argument("--format", choices=["table", "csv", "json"], default="table")
    m.add_argument(
        "--cell-size",
        type=float,
        help="width of a white cell in pixels (default: each field's own, from the size of its "
        "red cells; BCCD's 640x480 fields at 100x: 200)",
    )
    _engine_option(m)
    _ray_option(m)
    _intervals_option(m)
    m.set_defaults(func=cmd_smear)

    w = sub.add_parser("serve", help="run the web application (production server)")
    w.add_argument("--model", help="model artifact folder (default: the bundled model)")
    w.add_argument("--host", default="127.0.0.1")
    w.add_argument("--port", type=whole_number(1, 65535), default=5000)
    w.add_argument("--workers", type=whole_number(1), default=2)
    w.add_argument("--data-dir", help="database, images (env HEMATOVISION_DATA_DIR)")
    w.add_argument("--database-url", help="any SQLAlchemy URL (env HEMATOVISION_DATABASE_URL)")
    w.add_argument("--max-upload-mb", type=float, help="env HEMATOVISION_MAX_UPLOAD_MB")
    w.add_argument("--no-store-images", action="store_true", help="keep results, not images")
    w.add_argument(
        "--threads", type=whole_number(1), help="threads per worker (env HEMATOVISION_THREADS)"
    )
    _engine_option(w, default=None, env=" (env HEMATOVISION_ENGINE)")
    _intervals_option(w)
    w.set_defaults(func=cmd_serve)

    st = sub.add_parser("storage", help="the web app's database and image store")
    ssub = st.add_subparsers(dest="storage_command", required=True)
    c = ssub.add_parser("check", help="find orphan or missing image files (and --repair them)")
    _storage_options(c)
    c.add_argument("--repair", action="store_true", help="delete orphans and temporary files")
    c.add_argument(
        "--grace",
        type=float,
        default=600,
        help="seconds: newer files may belong to a request in flight",
    )
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_storage_check)
    pu = ssub.add_parser("purge", help="erase deleted results and free their images")
    _storage_options(pu)
    pu.add_argument(
        "--older-than", type=float, default=30, help="days since their deletion (default 30)"
    )
    pu.set_defaults(func=cmd_storage_purge)
    _users_parser(sub)
    _models_parser(sub)
    ad = sub.add_parser("adapt", help="a model taught a lab's own cells (refits its head)")
    ad.add_argument("--data", required=True, help="class-per-folder cells of the lab")
    ad.add_argument("--out", required=True, help="the new model artifact folder")
    ad.add_argument("--model", help="the base artifact (default: the bundled model)")
    ad.add_argument("--held-out", type=float, default=0.3, help="fraction kept to score it")
    ad.add_argument("--force", action="store_true", help="write it even if it scores worse")
    ad.set_defaults(func=cmd_adapt)
    return p


def _users_parser(sub) -> None:
    u = sub.add_parser("users", help="accounts of the web app (on once the first one exists)")
    usub = u.add_subparsers(dest="users_command", required=True)
    add = usub.add_parser("add", help="a new account (asks for its password)")
    add.add_argument("name")
    add.add_argument("--role", choices=["admin", "technologist", "viewer"], required=True)
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    add.set_defaults(func=cmd_users_add)
    ls = usub.add_parser("list", help="every account, its role and state")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_users_list)
    for verb, text in (("disable", "no more logins or tokens"), ("enable", "allow again")):
        v = usub.add_parser(verb, help=f"{text} for an account")
        v.add_argument("name")
        v.set_defaults(func=cmd_users_set_active)
    tok = usub.add_parser("token", help="a new personal API token (replaces the old one)")
    tok.add_argument("name")
    tok.set_defaults(func=cmd_users_token)
    for parser in (add, ls, tok, *[usub.choices[v] for v in ("disable", "enable")]):
        _storage_options(parser)


def _models_parser(sub) -> None:
    mo = sub.add_parser("models", help="model versions of the web app (register, activate)")
    msub = mo.add_subparsers(dest="models_command", required=True)
    add = msub.add_parser("add", help="register a model artifact folder (it is copied)")
    add.add_argument("folder")
    add.add_argument("--activate", action="store_true", help="and classify with it from now")
    add.set_defaults(func=cmd_models_add)
    ls = msub.add_parser("list", help="registered models; * marks the active one")
    ls.set_defaults(func=cmd_models_list)
    act = msub.add_parser("activate", help="classify with a registered model (or 'configured')")
    act.add_argument("slug")
    act.set_defaults(func=cmd_models_activate)
    for parser in (add, ls, act):
        _storage_options(parser)


def _storage_options(parser) -> None:
    parser.add_argument("--data-dir", help="the web app's data (env HEMATOVISION_DATA_DIR)")
    parser.add_argument("--database-url", help="env HEMATOVISION_DATABASE_URL")


def _intervals_option(parser) -> None:
    parser.add_argument(
        "--reference-intervals",
        metavar="CSV",
        help="the lab's reference intervals, a CSV file class,low,high in percent "
        "(env HEMATOVISION_REFERENCE_INTERVALS; default: typical adult intervals)",
    )


def _ray_option(parser) -> None:
    parser.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="run on Ray (a local instance, or the cluster at ADDRESS) and write Parquet and "
        "JSON Lines into --out; the inputs may also be one .parquet/.csv (a 'path' column) or "
        ".txt (one path a line) list of images",
    )


def whole_number(least: int, most: int | None = None):
    """An argparse type: a whole number from ``least`` to ``most``; anything else is refused
    with argparse's usage line and exit status 2."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < least or (most is not None and value > most):
            limits = f"from {least} to {most}" if most is not None else f"at least {least}"
            raise argparse.ArgumentTypeError(f"must be {limits}, not {value}")
        return value

    return parse


def _engine_option(parser, default: str | None = "auto", env: str = "") -> None:
    parser.add_argument(
        "--engine",
        choices=["auto", "onnxruntime", "openvino"],
        default=default,
        help="inference engine; auto: OpenVINO where it is installed and the CPU has bf16 or "
        f"VNNI, else ONNX Runtime{env}",
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=err, show_path=False, show_time=False)],
        force=True,
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)  # Storage.migrate says what changed
    try:
        return args.func(args)
    except HematoVisionError as exc:
        print(f"error: {exc}", file=sys.stderr)  # one line, never wrapped
        return exc.exit_code
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading
        return 1
    except OSError as exc:  # a path the checks above did not foresee: one line, not a traceback
        where = f": {exc.filename}" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
