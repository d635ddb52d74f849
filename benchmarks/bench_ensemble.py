"""Does an ensemble of models carry further to a lab none of them saw (issue 11, point 4)?

Deep ensembles (Lakshminarayanan et al., 2017) are among the few methods known to keep
accuracy and calibration under dataset shift (Ovadia et al., 2019). bench_crosslab.py trains
each leave-one-lab-out fold with several seeds and recipes; here each model is scored alone on
the lab it never saw, then their mean probabilities, a cell flagged where any member flags it
or the members disagree on its class. Side by side: the members' mean, the best member, the
ensemble.

    python benchmarks/bench_ensemble.py          (after bench_crosslab.py --seed 2 / --seed 3)

``--cost ARTIFACT ...``: only the size and speed of those artifacts beside the bundled model's.

``--home RUN RUN ...``: the other side, on the labs the models were trained on: runs of the
bundled model's build on the same split (their saved test-split probabilities, before
calibration), alone and in pairs, per lab.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np

from bench_crosslab import OUT, labs, left_out_images, score_arrays
from hematovision.artifact import RunDir
from hematovision.export import export_run
from hematovision.inference import Classifier

from _common import machine, table_head, table_row, write_section

SEEDS = (2, 3)
RECIPES = (
    "+ other-lab augmentation",  # the bundled model's
    "other-lab augmentation + random convolutions",
    "other-lab augmentation + weights averaged (last half)",
    "other-lab augmentation + MixStyle",
)
FOLDS = ("lisc", "bccd", "pbc")
# bench_crosslab.py's runs of the bundled recipe that share a split (seed 2's, LISC grouped as now)
PRODUCT_MEMBERS = (
    "+ other-lab augmentation | seed 4 | split 2",
    "+ other-lab augmentation | seed 5 | split 2",
)
LABS = ("pbc", "lisc", "bccd")  # of the bundled model's build


def run_of(left_out: str, key: str) -> Path:
    return OUT / "runs" / f"{left_out} | {key}".replace(" ", "_")


def member_outputs(artifact: Path, paths) -> dict | None:
    """One artifact's calibrated probabilities and flags on the left-out lab's images."""
    if not artifact.is_dir():
        return None
    clf = Classifier.load(artifact)
    preds = clf.predict(paths)
    probs = np.array([[p.probabilities[c] for c in clf.classes] for p in preds])
    return {"probs": probs, "flagged": np.array([p.uncertain for p in preds])}


def disagree(members: list[dict]) -> np.ndarray:
    """Where the members' top classes differ."""
    votes = np.stack([m["probs"].argmax(1) for m in members])
    return (votes != votes[0]).any(0)


def ensemble(members: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Mean probabilities; flagged where any member flags the cell or their classes differ."""
    probs = np.mean([m["probs"] for m in members], axis=0)
    flagged = np.any([m["flagged"] for m in members], axis=0) | disagree(members)
    return probs, flagged


def fold_rows(left_out: str, paths, labels) -> dict:
    members = {
        (recipe, seed): out
        for recipe in RECIPES
        for seed in SEEDS
        if (out := member_outputs(run_of(left_out, f"{recipe} | seed {seed}") / "artifact", paths))
        is not None
    }
    rows = {}
    for recipe in RECIPES:
        mine = [members[(recipe, s)] for s in SEEDS if (recipe, s) in members]
        if len(mine) < 2:
            continue
        alone = [score_arrays(m["probs"], m["flagged"], labels) for m in mine]
        rows[f"{recipe}: one model (mean of {len(mine)} seeds)"] = {
            k: float(np.mean([a[k] for a in alone])) for k in alone[0]
        }
        rows[f"{recipe}: {len(mine)} seeds together"] = score_arrays(*ensemble(mine), labels)
    if len(members) > 2:
        rows[f"all {len(members)} models together"] = score_arrays(
            *ensemble(list(members.values())), labels
        )
    return rows | product_rows(left_out, paths, labels)


def product_rows(left_out: str, paths, labels) -> dict:
    """Two runs of the bundled recipe on one split, exported as one artifact (``hematovision
    export --model A B --half-weights``: the mean of their logits, calibrated as one model)."""
    runs = [run_of(left_out, key) for key in PRODUCT_MEMBERS]
    if not all((run / "artifact").is_dir() for run in runs):
        return {}
    out = OUT / "ensembles" / left_out
    if not (out / "model.json").is_file():
        export_run(runs, out, half_weights=True, overwrite=True, show_progress=False)
    members = [member_outputs(run / "artifact", paths) for run in runs]
    alone = [score_arrays(m["probs"], m["flagged"], labels) for m in members]
    product = member_outputs(out, paths)
    name = "bundled recipe, one split"
    return {
        f"{name}: one model (mean of 2 members)": {
            k: float(np.mean([a[k] for a in alone])) for k in alone[0]
        },
        f"{name}: 2 members' mean probabilities": score_arrays(*ensemble(members), labels),
        f"{name}: 2 members as one artifact": score_arrays(
            product["probs"], product["flagged"], labels
        ),
        f"{name}: one artifact, flagged also where members disagree": score_arrays(
            product["probs"], product["flagged"] | disagree(members), labels
        ),
    }


def home_rows(runs: list[Path]) -> str:
    """Test-split accuracy per lab of each run and each pair (mean probabilities)."""
    manifests = [RunDir(r).manifest() for r in runs]
    if len({m.sha256 for m in manifests}) != 1:
        raise SystemExit("--home: the runs must share one split (split.json)")
    test = manifests[0].entries("test")
    classes = manifests[0].classes
    labels = np.array([classes.index(f["label"]) for f in test])
    lab_of = np.array([f.get("lab", "") for f in test])
    probs = {r.name: np.load(RunDir(r).probs_file("test")) for r in runs}
    lines = [
        "\nOn the labs the models were trained on: runs of the bundled model's build on one "
        "split, test-split accuracy from their saved probabilities (before calibration), alone "
        "and two together (mean probabilities).\n",
        *table_head(["models", *(f"{lab} ({(lab_of == lab).sum()})" for lab in LABS)]),
    ]
    combos = [(n,) for n in probs] + list(itertools.combinations(probs, 2))
    for combo in combos:
        predicted = np.mean([probs[n] for n in combo], axis=0).argmax(1)
        cells = [f"{100 * (predicted == labels)[lab_of == lab].mean():.2f}%" for lab in LABS]
        lines.append(table_row([" + ".join(combo), *cells]))
    return "\n".join(lines)


def cost_section(artifacts: list[Path], images: int = 256, repeats: int = 5) -> str:
    """Each artifact's folder size and time per image (batches of 64 resized PBC cells,
    median of ``repeats``), on ONNX Runtime and on the engine ``auto`` picks."""
    from hematovision.artifact import ModelArtifact
    from hematovision.data import scan_folder
    from hematovision.inference.classifier import DEFAULT_MODEL
    from hematovision.preprocess import load_resized

    from _common import DEFAULT_PBC

    folder = scan_folder(DEFAULT_PBC)
    chosen = np.random.default_rng(0).choice(len(folder.paths), images, replace=False)
    artifacts = [DEFAULT_MODEL, *artifacts]
    rows, base = [], {}
    for path in artifacts:
        megabytes = sum(f.stat().st_size for f in path.iterdir()) / 1e6
        spec = ModelArtifact.load(path).preprocess  # the same cells for both engines
        batch = np.stack([load_resized(folder.paths[i], spec) for i in chosen])
        cells = []
        for engine in ("onnxruntime", "auto"):
            clf = Classifier.load(path, engine=engine)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                for i in range(0, len(batch), 64):
                    clf.predict_arrays(batch[i : i + 64])
                times.append((time.perf_counter() - start) / len(batch) * 1000)
            ms = float(np.median(times))
            base.setdefault(engine, ms)
            cells.append(f"{ms:.2f} ms ({ms / base[engine]:.2f}x), {clf.engine_info()['name']}")
        rows.append(table_row([f"{path.parent.name}/{path.name}", f"{megabytes:.1f} MB", *cells]))
    return "\n".join(
        [
            "## What an ensemble costs to serve (issue 11)\n",
            f"Machine: {machine()}. Each artifact's folder, and the model's time per image on "
            f"{images} PBC cells already resized, in batches of 64 (median of {repeats}; ratio "
            "to the bundled model on the same engine).\n",
            *table_head(["artifact", "folder", "ONNX Runtime fp32", "engine auto picks"]),
            *rows,
        ]
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--home", nargs="+", type=Path, help="runs of the build on one split")
    ap.add_argument(
        "--cost",
        nargs="+",
        type=Path,
        help="only measure these artifacts' size and speed beside the bundled model's",
    )
    args = ap.parse_args()
    if args.cost:
        text = cost_section(args.cost)
        write_section("ensemble_cost", text)
        print(text)
        return
    sources, results = labs(), {}
    for left_out in FOLDS:
        # a fold's models know its training labs' classes (LISC and BCCD: five), all alike
        run = next((OUT / "runs").glob(f"{left_out}_|_*_|_seed_2"))
        classes = Classifier.load(run / "artifact").classes
        paths, labels = left_out_images(sources[left_out], classes)
        results[left_out] = fold_rows(left_out, paths, labels)
        print(left_out, json.dumps(results[left_out], indent=1), flush=True)
    (OUT / "ensemble.json").write_text(json.dumps(results, indent=1))
    lines = [
        "## Ensembles of models on a lab none of them saw (issue 11)\n",
        f"Machine: {machine()}. Models of bench_crosslab.py (two labs, 96 px, 6 epochs), seeds "
        f"{' and '.join(map(str, SEEDS))}, each scored on the left-out lab; an ensemble takes "
        "their mean calibrated probabilities and flags a cell that any member flags or on "
        "whose class they disagree. The last four rows: two runs of the bundled recipe on one "
        "split (seeds 4 and 5 on seed 2's), alone, by that rule, and exported as one artifact "
        "(`hematovision export --model A B --half-weights`: the mean of their logits, one "
        "temperature and thresholds fitted on validation), with and without a flag where the "
        "members disagree. Accuracy / wrong and not flagged / flagged; ECE.\n",
        *table_head(["models", *(f"{f} left out" for f in FOLDS)]),
    ]
    for name in {n: None for fold in results.values() for n in fold}:
        cells = []
        for fold in FOLDS:
            r = results[fold].get(name)
            cells.append(
                f"{100 * r['accuracy']:.1f}% / {100 * r['wrong_unflagged']:.1f}% / "
                f"{100 * r['flagged']:.0f}%; {r['ece']:.3f}"
                if r
                else "-"
            )
        lines.append(table_row([name, *cells]))
    if args.home:
        lines.append(home_rows(args.home))
    write_section("ensemble", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
