"""Leave one lab out (issue 11): train on two of PBC / LISC / BCCD, test on the third.

An ablation, each step added to the one before: the original recipe; canonical framing of the
cell; augmentation that imitates other labs; lab-and-class balance; test-time augmentation.
Last, edge cut (``--recipe lab-cut``) and a milder one (``lab-cut-mild``), the stem and
first 3 or 5 blocks frozen at their ImageNet weights (``--freeze-blocks``), and random
convolutions (``lab-randconv``), each added to the other-lab augmentation step (the bundled model's recipe, without the balance).
For each: accuracy, macro-F1, "wrong and not flagged" (wrong and not uncertain: what reaches a
report unreviewed) and ECE on the left-out lab, whose images no run saw. Recipes are compared
at 96 px with 150 images per lab and class, so the 12 runs fit in about half an hour on 2 cores.
Also: agreement of a cell's class at 0.5x-2x zoom with its class at 1x, with and without framing.

    python benchmarks/bench_crosslab.py [--epochs 6] [--fresh]
    # another seed (another sample of the training labs, another initialisation of the head)
    # of some recipes and folds, added as rows of their own:
    python benchmarks/bench_crosslab.py --seed 1 --left-out pbc \
        --recipes "+ other-lab augmentation,other-lab augmentation + edge cut"
    # another seed on seed 2's split (a second member of an ensemble: bench_ensemble.py)
    python benchmarks/bench_crosslab.py --seed 4 --split-seed 2 --recipes "+ other-lab augmentation"
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from hematovision.artifact import RunDir
from hematovision.data import scan_folder
from hematovision.data.labs import combine_labs
from hematovision.evaluation import expected_calibration_error
from hematovision.evaluation.shifts import zoom_agreement
from hematovision.export import export_run
from hematovision.inference import Classifier
from hematovision.preprocess import to_rgb
from hematovision.smear.crops import bccd_white_cells
from hematovision.training import TrainConfig, train

from _common import DEFAULT_PBC, machine, table_head, table_row, write_section

OUT = Path(__file__).with_name("out") / "crosslab"
DATA = DEFAULT_PBC.parent
VARIANTS = {  # cumulative: each adds one step
    "original recipe": dict(framing="none", recipe="mild", balance="none"),
    "+ canonical framing": dict(framing="cell", recipe="mild", balance="none"),
    "+ other-lab augmentation": dict(framing="cell", recipe="lab", balance="none"),
    "+ lab-class balance": dict(framing="cell", recipe="lab", balance="lab-class"),
    "other-lab augmentation + edge cut": dict(framing="cell", recipe="lab-cut", balance="none"),
    "other-lab augmentation + mild edge cut": dict(
        framing="cell", recipe="lab-cut-mild", balance="none"
    ),
    # fine-tuning every layer on two labs may learn their look; early blocks kept at their
    # ImageNet weights (as the fast recipe does for speed) keep more general features
    "other-lab augmentation + 3 blocks frozen": dict(
        framing="cell", recipe="lab", balance="none", freeze_blocks=3
    ),
    "other-lab augmentation + 5 blocks frozen": dict(
        framing="cell", recipe="lab", balance="none", freeze_blocks=5
    ),
    # colour and fine texture randomised, shape kept: a lab's look is not a feature
    "other-lab augmentation + random convolutions": dict(
        framing="cell", recipe="lab-randconv", balance="none"
    ),
    # the mean of the weights along the run's end: a flatter minimum carries further
    "other-lab augmentation + weights averaged (last half)": dict(
        framing="cell", recipe="lab", balance="none", average_from=0.5
    ),
    "other-lab augmentation + weights averaged (from 10%)": dict(
        framing="cell", recipe="lab", balance="none", average_from=0.1
    ),
    # a lab's look as early features' statistics, mixed between images (Zhou et al., 2021)
    "other-lab augmentation + MixStyle": dict(
        framing="cell", recipe="lab", balance="none", mixstyle=0.5
    ),
}
TTA_VARIANT = "+ lab-class balance"
# agreement at other zooms, on the lisc fold's unseen PBC cells
ZOOM_VARIANTS = (
    "original recipe",
    "+ canonical framing",
    "+ other-lab augmentation",
    "other-lab augmentation + edge cut",
    "other-lab augmentation + mild edge cut",
)
COMMON = dict(
    arch="efficientnet_lite0",
    pretrained=True,
    image_size=96,
    max_per_class=150,
    lr=2e-3,
    label_smoothing=0.1,
    val_fraction=0.15,
    test_fraction=0.15,
    seed=0,
    show_progress=False,
)
EVAL_PER_CLASS = 120  # left-out images per class scored (all of a small lab)
ZOOMS = (0.5, 0.75, 1.5, 2.0)


def labs() -> dict[str, Path]:
    crops = OUT / "bccd-crops"
    if not crops.is_dir():
        bccd_white_cells(DATA / "bccd", crops, parity="all", show_progress=False)
    return {"pbc": DATA / "pbc", "lisc": DATA / "lisc", "bccd": crops}


def left_out_images(root: Path, classes: list[str]) -> tuple[list[Path], np.ndarray]:
    """Up to EVAL_PER_CLASS images of each class the model knows, from the left-out lab."""
    folder = scan_folder(root)
    rng = np.random.default_rng(0)
    paths, labels = [], []
    for c, name in enumerate(folder.classes):
        if name not in classes:
            continue
        mine = [p for p, y in zip(folder.paths, folder.labels) if y == c]
        for i in rng.permutation(len(mine))[:EVAL_PER_CLASS]:
            paths.append(mine[i])
            labels.append(classes.index(name))
    return paths, np.array(labels)


def score(clf: Classifier, paths: list[Path], labels: np.ndarray) -> dict:
    preds = clf.predict(paths, errors="report")
    ok = np.array([p.ok for p in preds])
    probs = np.array([[p.probabilities.get(c, 0) for c in clf.classes] for p in preds if p.ok])
    flagged = np.array([p.uncertain for p in preds if p.ok])
    return {"n": int(ok.sum()), **score_arrays(probs, flagged, labels[ok])}


def score_arrays(probs: np.ndarray, flagged: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy, macro-F1, wrong and not flagged, flagged and ECE of calibrated probabilities."""
    from sklearn.metrics import f1_score

    predicted = probs.argmax(1)
    wrong = predicted != labels
    return {
        "accuracy": float((~wrong).mean()),
        "f1_macro": float(f1_score(labels, predicted, average="macro", labels=sorted(set(labels)))),
        "wrong_unflagged": float((wrong & ~flagged).mean()),
        "flagged": float(flagged.mean()),
        "ece": expected_calibration_error(labels, probs),
    }


def zoom_agreement_of(clf: Classifier, paths: list[Path]) -> dict:
    agreement = zoom_agreement(clf, [to_rgb(p) for p in paths], ZOOMS)
    return {str(z): a for z, a in agreement.items()}


def run_fold(left_out: str, sources: dict[str, Path], args, results: dict, save) -> None:
    training = {lab: path for lab, path in sources.items() if lab != left_out}
    data = combine_labs(
        OUT / f"without-{left_out}",
        training,
        {"lisc"} & set(training),
        overwrite=True,
        show_progress=False,
    )
    for name, variant in VARIANTS.items():
        if args.recipes and name not in args.recipes:
            continue
        key = f"{left_out} | {name}" + (f" | seed {args.seed}" if args.seed else "")
        key += f" | split {args.split_seed}" if args.split_seed is not None else ""
        wants_zoom = left_out == "lisc" and name in ZOOM_VARIANTS
        if key in results:
            if wants_zoom and "zoom_agreement" not in results[key]:  # a run made before
                run = RunDir(OUT / "runs" / key.replace(" ", "_"))
                clf = Classifier.load(run.path / "artifact")
                results[key]["zoom_agreement"] = zoom_agreement_of(clf, unseen_pbc(run, data))
                save()
            continue
        start = time.perf_counter()
        run = train(
            TrainConfig(
                data=str(data),
                out=str(OUT / "runs" / key.replace(" ", "_")),
                epochs=args.epochs,
                overwrite=True,
                **{**COMMON, "seed": args.seed, "split_seed": args.split_seed},
                **variant,
            )
        )
        artifact = export_run(run, int8=False, overwrite=True, show_progress=False)
        clf = Classifier.load(artifact.path)
        paths, labels = left_out_images(sources[left_out], clf.classes)
        entry = {
            "left_out": score(clf, paths, labels),
            "val_accuracy": run.metrics()["val"]["accuracy"],
            "seconds": round(time.perf_counter() - start),
        }
        if name == TTA_VARIANT:
            entry["left_out_tta"] = score(Classifier.load(artifact.path, tta=True), paths, labels)
        if wants_zoom:
            entry["zoom_agreement"] = zoom_agreement_of(clf, unseen_pbc(run, data))
        results[key] = entry
        save()
        print(key, json.dumps(entry), flush=True)


def unseen_pbc(run, data: Path) -> list[Path]:
    """The run's test images from PBC (the lisc fold trains on PBC and BCCD)."""
    return [data / f["path"] for f in run.manifest().entries("test") if f.get("lab") == "pbc"]


def _lab_and_recipe(key: str) -> tuple[str, str]:
    """'pbc | recipe' or 'pbc | recipe | seed 1' -> ('pbc', 'recipe' or 'recipe (seed 1)')."""
    lab, name, *seed = key.split(" | ")
    return lab, name + "".join(f" ({s})" for s in seed)


def table(results: dict) -> str:
    lines = [
        "| left-out lab | recipe | accuracy | macro-F1 | wrong and not flagged | flagged "
        "| ECE | val accuracy (training labs) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, r in results.items():
        if "|" not in key:
            continue
        lab, name = _lab_and_recipe(key)
        for suffix, s in (("", r["left_out"]), (" + TTA", r.get("left_out_tta"))):
            if s:
                lines.append(
                    f"| {lab} ({s['n']}) | {name}{suffix} | {100 * s['accuracy']:.1f}% | "
                    f"{s['f1_macro']:.3f} | {100 * s['wrong_unflagged']:.1f}% | "
                    f"{100 * s['flagged']:.1f}% | {s['ece']:.3f} | "
                    f"{100 * r['val_accuracy']:.1f}% |"
                )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--fresh", action="store_true", help="forget earlier results")
    ap.add_argument("--seed", type=int, default=0, help="runs of another seed: rows of their own")
    ap.add_argument(
        "--split-seed", type=int, help="the split of another seed's runs (ensemble members)"
    )
    ap.add_argument("--left-out", default="lisc,bccd,pbc", help="the folds to run")
    ap.add_argument("--recipes", help="only these recipes (comma-separated names)")
    args = ap.parse_args()
    args.recipes = set(args.recipes.split(",")) if args.recipes else None
    unknown = (args.recipes or set()) - set(VARIANTS)
    if unknown:
        ap.error(f"unknown recipes {sorted(unknown)}; known: {list(VARIANTS)}")
    if not set(args.left_out.split(",")) <= {"lisc", "bccd", "pbc"}:
        ap.error("--left-out: lisc, bccd and/or pbc")
    OUT.mkdir(parents=True, exist_ok=True)
    store = OUT / "results.json"
    results = {} if args.fresh or not store.exists() else json.loads(store.read_text())
    results["machine"] = machine()

    def save():
        store.write_text(json.dumps(results, indent=1))

    sources = labs()
    for left_out in args.left_out.split(","):
        run_fold(left_out, sources, args, results, save)
    zoom = {
        _lab_and_recipe(k)[1]: v["zoom_agreement"]
        for k, v in results.items()
        if isinstance(v, dict) and "zoom_agreement" in v
    }
    body = [
        f"## Leave one lab out (issue 11)\n\nMachine: {results['machine']}. Trained on two labs "
        f"at 96 px (150 images per lab and class, {args.epochs} epochs), scored on the third; "
        "each recipe adds one step to the one above (the last two: edge cut, full and mild, "
        "added to other-lab augmentation, which is the bundled model's recipe). Counts in "
        "brackets: images scored.\n",
        table(results),
        "\nClass agreement with 1x zoom on PBC cells (runs without LISC):\n",
        *table_head(["recipe", *(f"{z}x" for z in ZOOMS)]),
    ]
    body += [table_row([n, *(f"{100 * a[str(z)]:.0f}%" for z in ZOOMS)]) for n, a in zoom.items()]
    write_section("crosslab", "\n".join(body))
    print("\n".join(body))


if __name__ == "__main__":
    main()
