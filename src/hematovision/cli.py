"""The ``hematovision`` command: a thin layer that parses arguments, calls the API and prints."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from . import __version__
from .errors import HematoVisionError

out = Console(highlight=False)            # results: stdout
err = Console(stderr=True, highlight=False)  # messages: stderr


def _fmt(v) -> str:
    return "—" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))


# ---------------------------------------------------------------- data
def cmd_data_synth(args) -> int:
    from .data import make_synthetic
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    path = make_synthetic(args.out, classes, args.per_class, args.size, args.seed,
                          overwrite=args.overwrite, show_progress=not args.quiet)
    out.print(f"wrote {len(classes) * args.per_class} images of {', '.join(classes)} to {path}")
    return 0


def cmd_data_fetch(args) -> int:
    from .data import fetch
    info = fetch(args.name, args.dest, archive=args.archive, sha256=args.sha256, url=args.url,
                 show_progress=not args.quiet)
    out.print(f"{info['name']} installed in {info['path']}")
    out.print(f"archive SHA-256 {info['sha256']}" + (" (verified)" if info["verified"] else
                                                     " (no published checksum; pin it with --sha256)"))
    out.print(f"licence {info['licence']}; cite: {info['citation']}")
    return 0


def cmd_data_inspect(args) -> int:
    from .data import inspect_folder
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
        out.print("sizes: " + ", ".join(f"{s} ({n})" for s, n in list(summary["sizes"].items())[:5]))
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
    summary = Table(title=title)
    summary.add_column("metric")
    summary.add_column("value", justify="right")
    for k in ("n", "accuracy", "loss", "precision_macro", "recall_macro", "f1_macro",
              "f1_weighted", "roc_auc_macro", "ece"):
        summary.add_row(k, _fmt(metrics.get(k)))
    out.print(summary)
    per_class = Table(title="per class")
    for col in ("class", "precision", "recall", "F1", "support"):
        per_class.add_column(col, justify="left" if col == "class" else "right")
    for c, m in metrics["per_class"].items():
        per_class.add_row(c, _fmt(m["precision"]), _fmt(m["recall"]), _fmt(m["f1"]),
                          str(m["support"]))
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
    cfg = TrainConfig(
        data=args.data, out=args.out, arch=args.arch, epochs=args.epochs,
        batch_size=args.batch_size, image_size=args.image_size, val_fraction=args.val_fraction,
        test_fraction=args.test_fraction, seed=args.seed, optimizer=args.optimizer, lr=args.lr,
        weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs, pretrained=args.pretrained, weights=args.weights,
        class_weights=args.class_weights, label_smoothing=args.label_smoothing,
        patience=args.patience, augment=not args.no_augment, max_per_class=args.max_per_class,
        extra_train=args.extra_train, extra_repeat=args.extra_repeat, init=args.init,
        device=args.device, resume=args.resume, overwrite=args.overwrite,
        show_progress=not args.quiet)
    run = train(cfg)
    metrics = json.loads((run / "metrics.json").read_text())
    shown = "test" if "test" in metrics else "val"
    print_metrics(metrics[shown], f"{cfg.arch}: {shown} split")
    out.print(f"run folder: {run}\nreport: {run / 'report.html'}")
    return 0


def cmd_evaluate(args) -> int:
    from .evaluation import evaluate_run
    metrics = evaluate_run(args.model, args.data, args.split, args.out, show_progress=not args.quiet)
    if args.json:
        print(json.dumps(metrics, indent=1))
    else:
        print_metrics(metrics, f"{Path(args.model).name} on {Path(args.data).name} ({args.split})")
        out.print(f"report: {metrics['report']}")
    return 0


# ---------------------------------------------------------------- export / predict
def cmd_export(args) -> int:
    from .export import export_run
    path = export_run(args.model, args.out, int8=args.int8, data_dir=args.data,
                      overwrite=args.overwrite, show_progress=not args.quiet)
    meta = json.loads((path / "model.json").read_text())
    out.print(f"model artifact: {path}")
    out.print(f"checks: {json.dumps(meta['checks'])}")
    test = meta["metrics"].get("test")
    if test:
        out.print(f"test accuracy {test['accuracy']:.4f}, macro-F1 {test['f1_macro']:.4f}, "
                  f"ECE {test['ece_before']:.4f} -> {test['ece_after']:.4f} after temperature "
                  f"scaling (T={meta['temperature']:.3f})")
    return 0


def expand_inputs(patterns: list[str]) -> list[str]:
    """Files as given, folders searched recursively for images, globs expanded; in order."""
    import glob

    from .data.folders import IMAGE_SUFFIXES
    found: list[str] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            found += sorted(str(p) for p in path.rglob("*")
                            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
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
    out_dir = Path(folder) if folder else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    return paths, out_dir


def cmd_predict(args) -> int:
    from .inference import Classifier, heatmap_overlay
    from .preprocess import to_rgb
    from .progress import progress_bar

    classifier = Classifier.load(args.model, precision=args.precision)
    paths, heat_dir = _inputs_and_folder(args.paths, args.heatmaps)
    results, failures = [], 0
    with progress_bar("classifying", len(paths),
                      enabled=not args.quiet and len(paths) > args.batch_size) as bar:
        for start in range(0, len(paths), args.batch_size):
            readable = []
            for p in paths[start:start + args.batch_size]:
                try:
                    readable.append((p, to_rgb(p)))
                except HematoVisionError as exc:
                    failures += 1
                    print(f"error: {exc}", file=sys.stderr)
            if readable:
                preds = classifier.predict([img for _, img in readable], heatmaps=bool(heat_dir),
                                           batch_size=args.batch_size)
                for n, ((p, img), pred) in enumerate(zip(readable, preds)):
                    if heat_dir:
                        name = f"{start + n:05d}_{Path(p).stem}_heatmap.png"
                        heatmap_overlay(img, pred.heatmap).save(heat_dir / name)
                    results.append((p, pred))
            bar.advance(len(paths[start:start + args.batch_size]))
    if args.format == "json":
        print(json.dumps([{"path": str(Path(p).resolve()), **pred.to_dict(),
                           "top_k": [[c, v] for c, v in pred.top(args.top_k)]}
                          for p, pred in results], indent=1))
    elif args.format == "csv":
        import csv
        writer = csv.writer(sys.stdout)
        writer.writerow(["path", "label", "confidence", "uncertain", *classifier.classes])
        for p, pred in results:
            writer.writerow([str(Path(p).resolve()), pred.label, f"{pred.confidence:.6f}",
                             int(pred.uncertain),
                             *(f"{pred.probabilities[c]:.6f}" for c in classifier.classes)])
    else:
        table = Table(title=f"{classifier.name} {classifier.version} ({classifier.precision})")
        for col in ("file", "class", "confidence", f"top {args.top_k}"):
            table.add_column(col)
        for p, pred in results:
            label = f"{pred.label} [yellow](uncertain)[/]" if pred.uncertain else pred.label
            top = ", ".join(f"{c} {v:.2f}" for c, v in pred.top(args.top_k))
            table.add_row(p, label, f"{pred.confidence:.3f}", top)
        out.print(table)
    return 0 if failures == 0 else 1


# ---------------------------------------------------------------- smear fields
def cmd_smear(args) -> int:
    from .progress import progress_bar
    from .smear import SmearParams, analyze_smear, annotate, differential, load_smear_classifier

    if args.cell_size < 20:
        raise HematoVisionError("--cell-size must be at least 20 pixels")
    classifier = load_smear_classifier(args.model)
    params = SmearParams.for_cell_size(args.cell_size)
    paths, out_dir = _inputs_and_folder(args.images, args.out)
    fields, failures = [], 0
    with progress_bar("analysing fields", len(paths), enabled=not args.quiet and len(paths) > 1) as bar:
        for n, path in enumerate(paths):
            try:
                result = analyze_smear(path, classifier, params)
            except HematoVisionError as exc:
                failures += 1
                print(f"error: {exc}", file=sys.stderr)
            else:
                fields.append(result)
                if out_dir:
                    annotate(path, result).save(out_dir / f"{n:05d}_{Path(path).stem}_annotated.png")
                for warning in result.warnings:
                    print(f"warning: {path}: {warning}", file=sys.stderr)
            bar.advance()
    diff = differential(fields, classifier.classes)
    if args.format == "json":
        print(json.dumps({"fields": [f.to_dict() for f in fields], "differential": diff}, indent=1))
    elif args.format == "csv":
        import csv
        writer = csv.writer(sys.stdout)
        writer.writerow(["path", "x1", "y1", "x2", "y2", "label", "confidence", "uncertain"])
        for f in fields:
            for c in f.white_cells:
                writer.writerow([f.path, *c.box, c.label, f"{c.confidence:.4f}", int(c.uncertain)])
        writer.writerow([])
        writer.writerow(["class", "count", "percent"])
        for c, d in diff.items():
            writer.writerow([c, d["count"], d["percent"]])
    else:
        table = Table(title=f"{len(fields)} field(s)")
        for col in ("field", "white cells", "red cells", "platelets"):
            table.add_column(col)
        for f in fields:
            cells = ", ".join(f"{c.label}{'?' if c.uncertain else ''}" for c in f.white_cells) or "none"
            table.add_row(Path(f.path).name, cells, str(f.red_cells), str(f.platelets))
        out.print(table)
        counts = Table(title="differential (white cells)")
        for col in ("class", "count", "%"):
            counts.add_column(col, justify="left" if col == "class" else "right")
        for c, d in diff.items():
            counts.add_row(c, str(d["count"]), f"{d['percent']:.1f}")
        out.print(counts)
    return 0 if failures == 0 else 1


# ---------------------------------------------------------------- serve
def cmd_serve(args) -> int:
    from .web.server import serve
    serve(model=args.model, host=args.host, port=args.port, workers=args.workers,
          data_dir=args.data_dir, database_url=args.database_url,
          max_upload_mb=args.max_upload_mb, store_images=False if args.no_store_images else None)
    return 0


# ---------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hematovision",
                                description="Blood-cell classification in microscope images.")
    p.add_argument("--version", action="version", version=f"hematovision {__version__}")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or logs")
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="create, fetch and inspect data sets")
    dsub = data.add_subparsers(dest="data_command", required=True)
    s = dsub.add_parser("synth", help="write the simulated data set")
    s.add_argument("out", help="output folder")
    s.add_argument("--classes", default="lymphocyte,neutrophil",
                   help="comma-separated (lymphocyte, neutrophil, eosinophil, monocyte, "
                        "basophil, platelet)")
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

    t = sub.add_parser("train", help="train a classifier on a class-per-folder data set")
    t.add_argument("--data", required=True)
    t.add_argument("--arch", default="seed-cnn",
                   help="seed-cnn, efficientnet_lite0 or any timm model name")
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--image-size", type=int, default=128)
    t.add_argument("--val-fraction", type=float, default=0.2)
    t.add_argument("--test-fraction", type=float, default=0.1)
    t.add_argument("--out", default="runs/latest")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--optimizer", choices=["auto", "adam", "adamw"], default="auto",
                   help="auto: Adam for seed-cnn (as the original design), AdamW otherwise")
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--weight-decay", type=float, default=1e-4)
    t.add_argument("--warmup-epochs", type=float, default=1.0, help="linear warm-up before cosine decay")
    t.add_argument("--pretrained", action="store_true", help="start from ImageNet weights")
    t.add_argument("--weights", help="pretrained weights from this URL or file (implies --pretrained)")
    t.add_argument("--class-weights", action="store_true", help="weight the loss by 1/frequency")
    t.add_argument("--label-smoothing", type=float, default=0.0)
    t.add_argument("--patience", type=int, default=5, help="early stopping on val macro-F1")
    t.add_argument("--no-augment", action="store_true")
    t.add_argument("--max-per-class", type=int, help="use at most N images per class")
    t.add_argument("--init", help="start from this run's best weights and keep its split")
    t.add_argument("--extra-train", help="class folders added to the training split only "
                                         "(e.g. cells cropped from your own smears)")
    t.add_argument("--extra-repeat", type=int, default=1, help="times each extra image is used per epoch")
    t.add_argument("--device", default="auto", help="auto, cpu or cuda")
    t.add_argument("--resume", action="store_true", help="continue the run in --out")
    t.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="score a trained run on a data folder")
    e.add_argument("--model", required=True, help="run folder")
    e.add_argument("--data", required=True)
    e.add_argument("--split", default="test", choices=["train", "val", "test", "all"])
    e.add_argument("--out", help="where to write eval-<split>.json/.html (default: the run)")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_evaluate)

    x = sub.add_parser("export", help="export a run to ONNX: the model artifact folder")
    x.add_argument("--model", required=True, help="run folder")
    x.add_argument("--out", help="artifact folder (default: RUN/artifact)")
    x.add_argument("--int8", action="store_true", help="also write a quantised model.int8.onnx")
    x.add_argument("--data", help="the training data, if it moved since training")
    x.add_argument("--overwrite", action="store_true")
    x.set_defaults(func=cmd_export)

    r = sub.add_parser("predict", help="classify cell images (default: the bundled model)")
    r.add_argument("paths", nargs="+", help="files, folders (recursive) or globs")
    r.add_argument("--model", help="model artifact folder (default: the bundled model)")
    r.add_argument("--format", choices=["table", "csv", "json"], default="table")
    r.add_argument("--top-k", type=int, default=3)
    r.add_argument("--heatmaps", help="write heatmap overlays (PNG) into this folder")
    r.add_argument("--batch-size", type=int, default=32)
    r.add_argument("--precision", choices=["fp32", "int8"], default="fp32")
    r.set_defaults(func=cmd_predict)

    m = sub.add_parser("smear", help="find, classify and count the white cells of smear fields")
    m.add_argument("images", nargs="+", help="field images, folders (recursive) or globs")
    m.add_argument("--model", help="model artifact folder (default: the bundled smear model)")
    m.add_argument("--out", help="write each annotated field (PNG) into this folder")
    m.add_argument("--format", choices=["table", "csv", "json"], default="table")
    m.add_argument("--cell-size", type=float, default=200,
                   help="width of a white cell in pixels (200 in BCCD fields, 640x480 at 100x)")
    m.set_defaults(func=cmd_smear)

    w = sub.add_parser("serve", help="run the web application (production server)")
    w.add_argument("--model", help="model artifact folder (default: the bundled model)")
    w.add_argument("--host", default="127.0.0.1")
    w.add_argument("--port", type=int, default=5000)
    w.add_argument("--workers", type=int, default=2)
    w.add_argument("--data-dir", help="database, images (env HEMATOVISION_DATA_DIR)")
    w.add_argument("--database-url", help="any SQLAlchemy URL (env HEMATOVISION_DATABASE_URL)")
    w.add_argument("--max-upload-mb", type=float, help="env HEMATOVISION_MAX_UPLOAD_MB")
    w.add_argument("--no-store-images", action="store_true", help="keep results, not images")
    w.set_defaults(func=cmd_serve)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s",
                        handlers=[RichHandler(console=err, show_path=False, show_time=False)],
                        force=True)
    try:
        return args.func(args)
    except HematoVisionError as exc:
        print(f"error: {exc}", file=sys.stderr)  # one line, never wrapped
        return exc.exit_code
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
