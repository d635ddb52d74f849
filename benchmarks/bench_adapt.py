"""Lab adaptation's learning curve (issue 13): how many of a new lab's cells does it take?

A base model that never saw the lab (default: one trained on PBC alone, the recipe of
bench_training's "training-fast" section, exported) is adapted with ``hematovision adapt``'s
head refit on 0, 25, 50, 100 and 200 cells of LISC, a lab it has not seen. Near-duplicate
crops of one cell are grouped first; half of the cells (by group) are the pool the lab's
reviewed cells are drawn from, the other half the test. For each size: accuracy and "wrong and
not flagged" on the test half, and accuracy on the base run's own PBC test split (the
"no loss on PBC" check); median of 3 draws. Then the time of one ``adapt`` call on 200 cells.

The base (about 10 minutes on 2 cores):

    hematovision train --data ../shared/data/pbc --arch efficientnet_lite0 --epochs 4 \
        --lr 0.002 --warmup-epochs 0.3 --freeze-blocks 3 --out runs/fast-f3-128
    hematovision export --model runs/fast-f3-128 --out runs/pbc-only-artifact
    python benchmarks/bench_adapt.py --base runs/pbc-only-artifact --run runs/fast-f3-128
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from hematovision.adapt import (
    OodSpace,
    accuracy,
    adapt,
    adapted_calibration,
    anchor_features,
    distances,
    embed_paths,
    fit_lab_head,
    head_weights,
)
from hematovision.artifact import ModelArtifact
from hematovision.data.labs import near_duplicate_groups
from hematovision.export.calibration import softmax
from hematovision.inference.classifier import DIHEDRAL

from _common import DEFAULT_PBC, machine, write_section

LISC = DEFAULT_PBC.parent / "lisc"
SIZES = (0, 25, 50, 100, 200)
OUT = Path(__file__).with_name("out")


def scores(features, ood, labels, w, b, c) -> tuple[float, float, float]:
    """(accuracy, wrong and not flagged, flagged) under calibration ``c``."""
    p = softmax(features @ w.T + b, c.temperature)
    wrong = p.argmax(1) != labels
    flagged = (p.max(1) < c.confidence_threshold) | (ood > (c.ood_threshold or np.inf))
    return float(1 - wrong.mean()), float((wrong & ~flagged).mean()), float(flagged.mean())


def lisc_cells(artifact):
    paths, labels = [], []
    for folder in sorted(p for p in LISC.iterdir() if p.is_dir()):
        for path in sorted(folder.glob("*.jpg")):
            paths.append(path)
            labels.append(artifact.classes.index(folder.name))
    return paths, np.array(labels)


def pbc_test(run: Path, artifact):
    split = json.loads((run / "split.json").read_text())
    root = Path(split["data_root"])
    files = [f for f in split["files"] if f["split"] == "test"]
    return [root / f["path"] for f in files], np.array(
        [artifact.classes.index(f["label"]) for f in files]
    )


def draw(pool: np.ndarray, labels: np.ndarray, groups: np.ndarray, n: int, rng):
    """``n`` cells of the pool, one crop per cell, as even across classes as the pool allows."""
    one_per_group = {}
    for i in rng.permutation(pool):
        one_per_group.setdefault(groups[i], i)
    chosen = np.array(list(one_per_group.values()))
    by_class = [rng.permutation(chosen[labels[chosen] == k]) for k in np.unique(labels[chosen])]
    order = [c[j] for j in range(max(map(len, by_class))) for c in by_class if j < len(c)]
    return np.array(order[:n], dtype=np.int64)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", type=Path, required=True, help="an artifact not trained on LISC")
    ap.add_argument("--run", type=Path, required=True, help="its run folder (its PBC test split)")
    ap.add_argument("--draws", type=int, default=3)
    args = ap.parse_args()
    print(machine(), flush=True)
    artifact = ModelArtifact.load(args.base)
    w0, b0 = head_weights(artifact)
    anchors = anchor_features(artifact)
    space = OodSpace.of(onnx.load_from_string(artifact.model_bytes("fp32")).graph)
    paths, labels = lisc_cells(artifact)
    groups = near_duplicate_groups(paths)
    t = time.perf_counter()
    views, view_ood = embed_paths(artifact, paths, views=DIHEDRAL)  # adapt() trains on all 8
    features, ood = views[:, 0], view_ood[:, 0]
    pbc_paths, pbc_labels = pbc_test(args.run, artifact)
    pbc_features, pbc_ood = embed_paths(artifact, pbc_paths)
    print(
        f"embedded {len(paths)} LISC + {len(pbc_paths)} PBC images in {time.perf_counter() - t:.0f} s"
    )
    rows = {n: [] for n in SIZES}
    for seed in range(args.draws):
        rng = np.random.default_rng(seed)
        cells = np.unique(groups)
        pool_groups = set(rng.permutation(cells)[: len(cells) // 2])
        in_pool = np.array([g in pool_groups for g in groups])
        pool, test = np.flatnonzero(in_pool), np.flatnonzero(~in_pool)
        for n in SIZES:
            w, b, c, lab_ood, pbc_ood_n = w0, b0, artifact.calibration, ood, pbc_ood
            if n:  # what adapt() does: the head refit, the lab's centres, the threshold
                chosen = draw(pool, labels, groups, n, rng)
                lab = (views[chosen], labels[chosen], groups[chosen])
                w, b, _, _ = fit_lab_head(*lab, w0, b0, anchors)
                centres = space.with_lab_centres(features[chosen], labels[chosen])
                lab_ood = distances(space, centres, features)
                pbc_ood_n = distances(space, centres, pbc_features)
                c = adapted_calibration(c, lab_ood[chosen])
            acc, unflagged, flagged = scores(features[test], lab_ood[test], labels[test], w, b, c)
            pbc = scores(pbc_features, pbc_ood_n, pbc_labels, w, b, c)[0]
            tta = accuracy(views[test], labels[test], w, b)  # predict --tta
            rows[n].append((acc, unflagged, flagged, pbc, tta))
            print(
                f"draw {seed} n={n}: LISC {acc:.3f} ({unflagged:.3f} wrong unflagged, "
                f"{flagged:.3f} flagged), PBC {pbc:.4f}"
            )
    timing = time_adapt(artifact, paths, labels, groups)
    report(args, rows, timing, len(paths), len(np.unique(groups)), len(pbc_paths))


def time_adapt(artifact, paths, labels, groups) -> float:
    """Seconds of one ``adapt`` call (embedding included) on 200 LISC cells, one crop each."""
    chosen = draw(np.arange(len(paths)), labels, groups, 200, np.random.default_rng(9))
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "cells"
        for i in chosen:
            (data / artifact.classes[labels[i]]).mkdir(parents=True, exist_ok=True)
            shutil.copy(paths[i], data / artifact.classes[labels[i]] / paths[i].name)
        t = time.perf_counter()
        adapt(artifact, data, Path(tmp) / "adapted", force=True)
        return time.perf_counter() - t


def report(args, rows, seconds, n_images, n_cells, n_pbc) -> None:
    med = {n: [statistics.median(r[i] for r in rows[n]) for i in range(5)] for n in SIZES}
    OUT.mkdir(exist_ok=True)
    (OUT / "adapt.json").write_text(
        json.dumps({"machine": machine(), "median": med, "adapt_200_s": seconds}, indent=1)
    )
    lines = [
        "## Lab adaptation: the learning curve on a lab the model never saw (issue 13)\n",
        f"Machine: {machine()}. Base: `{args.base}` (trained on PBC only); new lab: LISC, "
        f"{n_images} crops of {n_cells} cells (near-duplicates grouped), half of the cells the "
        f"pool the adapting cells come from (one crop per cell, classes balanced), the other "
        f"half the test. PBC: the base run's own test split ({n_pbc} images). Head refit "
        f"(`hematovision adapt`: trained on the 8 flips and turns of each cell), median of {args.draws} draws. Measured {time.strftime('%Y-%m-%d')}.\n",
        "| cells of the new lab | LISC test accuracy | with `--tta` | wrong and not flagged | flagged "
        "| PBC test accuracy |",
        "|---|---|---|---|---|---|",
    ]
    for n in SIZES:
        acc, unflagged, flagged, pbc, tta = med[n]
        lines.append(
            f"| {n} | {acc:.1%} | {tta:.1%} | {unflagged:.1%} | {flagged:.1%} | {pbc:.2%} |"
        )
    lines.append(
        f"\nOne `hematovision adapt` on 200 cells (embedding, refit, writing the artifact): "
        f"{seconds:.1f} s on this machine (target: 60 s on 2 cores)."
    )
    body = "\n".join(lines)
    write_section("adapt", body)
    print(body)


if __name__ == "__main__":
    main()
