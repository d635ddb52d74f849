"""Lab adaptation's learning curve (issue 13): how many of a new lab's cells does it take?

A base model that never saw the lab (default: one trained on PBC alone, the recipe of
bench_training's "training-fast" section, exported) is adapted with ``hematovision adapt``'s
head refit on 0, 25, 50, 100 and 200 cells of LISC, a lab it has not seen. Near-duplicate
crops of one cell are grouped first; half of the cells (by group) are the pool the lab's
reviewed cells are drawn from, the other half the test. For each size: accuracy and "wrong and
not flagged" on the test half, and accuracy on the base run's own PBC test split (the
"no loss on PBC" check), each with one view and with the 8 flips and turns averaged; median of
3 draws. Then ``adapt`` itself, end to end, on 100 and 200 of the pool's cells (it fits on 70%
and holds out 30% to decide and check): what it chose and how its artifact, loaded by the
Classifier as ``predict --model`` loads it, does on the test half; and its time.

The base (about 10 minutes on 2 cores):

    hematovision train --data ../shared/data/pbc --arch efficientnet_lite0 --pretrained \
        --epochs 4 --lr 0.002 --warmup-epochs 0.3 --freeze-blocks 3 --out runs/fast-f3-128
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
    adapt,
    adapted_calibration,
    anchor_features,
    embed_paths,
    fit_lab_head,
    head_weights,
    ood_space,
    out_of_fold_distances,
)
from hematovision.artifact import ModelArtifact
from hematovision.data import scan_folder
from hematovision.data.duplicates import groups_by_class
from hematovision.export.calibration import softmax
from hematovision.inference.classifier import (
    DIHEDRAL,
    TTA_MIN_AGREEMENT,
    Classifier,
    average_views,
)

from _common import DEFAULT_PBC, machine, write_section

LISC = DEFAULT_PBC.parent / "lisc"
SIZES = (0, 25, 50, 100, 200)
END_TO_END = (100, 200)
OUT = Path(__file__).with_name("out")


def scores(views, view_ood, labels, w, b, c, tta=False) -> tuple[float, float, float]:
    """(accuracy, wrong and not flagged, flagged) under calibration ``c``, as the Classifier
    answers: the first view, or (``tta``) the 8 views' probabilities and distances averaged,
    flagged also where fewer than ``TTA_MIN_AGREEMENT`` of the views agree."""
    if not tta:
        views, view_ood = views[:, :1], view_ood[:, :1]
    n, v, d = views.shape
    per_view = softmax(views.reshape(n * v, d) @ w.T + b, c.temperature).reshape(n, v, -1)
    (p, agreement), ood = average_views(per_view), view_ood.mean(1)
    wrong = p.argmax(1) != labels
    flagged = (
        (p.max(1) < c.confidence_threshold)
        | (ood > (c.ood_threshold or np.inf))
        | (agreement < TTA_MIN_AGREEMENT)
    )
    return float(1 - wrong.mean()), float((wrong & ~flagged).mean()), float(flagged.mean())


def lisc_cells(artifact):
    """LISC's crops, their classes (the artifact's numbers) and their cells (copies grouped)."""
    folder = scan_folder(LISC)
    labels = np.array([artifact.classes.index(folder.classes[y]) for y in folder.labels])
    return list(folder.paths), labels, groups_by_class(folder, show_progress=True)


def pbc_test(run: Path, artifact):
    split = json.loads((run / "split.json").read_text())
    root = Path(split["data_root"])
    files = [f for f in split["files"] if f["split"] == "test"]
    return [root / f["path"] for f in files], np.array(
        [artifact.classes.index(f["label"]) for f in files]
    )


def draw(pool: np.ndarray, labels: np.ndarray, groups: np.ndarray, n: int, rng):
    """``n`` crops of the pool, as even across classes as the pool allows: one crop of each
    cell first, a second crop of a cell only when every cell has given one, and so on."""
    crops = {}
    for i in rng.permutation(pool):
        crops.setdefault(groups[i], []).append(i)
    order = []
    for r in range(max(map(len, crops.values()))):
        chosen = np.array([c[r] for c in crops.values() if r < len(c)])
        by_class = [rng.permutation(chosen[labels[chosen] == k]) for k in np.unique(labels[chosen])]
        order += [c[j] for j in range(max(map(len, by_class))) for c in by_class if j < len(c)]
    return np.array(order[:n], dtype=np.int64)


def halves(groups: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the pool (half of the cells, by group) and of the test (the other half)."""
    cells = np.unique(groups)
    pool_groups = set(rng.permutation(cells)[: len(cells) // 2])
    in_pool = np.array([g in pool_groups for g in groups])
    return np.flatnonzero(in_pool), np.flatnonzero(~in_pool)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", type=Path, required=True, help="an artifact not trained on LISC")
    ap.add_argument("--run", type=Path, required=True, help="its run folder (its PBC test split)")
    ap.add_argument("--draws", type=int, default=3)
    args = ap.parse_args()
    print(machine(), flush=True)
    artifact = ModelArtifact.load(args.base)
    lab = Lab(artifact, *lisc_cells(artifact))
    pbc_paths, pbc_labels = pbc_test(args.run, artifact)
    t = time.perf_counter()
    pbc_views, pbc_ood = embed_paths(artifact, pbc_paths, views=DIHEDRAL)
    print(
        f"embedded {len(lab.paths)} LISC + {len(pbc_paths)} PBC images "
        f"(8 views each) in {time.perf_counter() - t + lab.seconds:.0f} s"
    )
    curve, cells = {n: [] for n in SIZES}, {}
    ends = {n: [] for n in END_TO_END}
    for seed in range(args.draws):
        rng = np.random.default_rng(seed)
        pool, test = halves(lab.groups, rng)
        for n in SIZES:
            chosen = lab.draw(pool, n, rng)
            curve[n].append(lab.curve_point(chosen, test, pbc_views, pbc_ood, pbc_labels))
            cells[n] = len(np.unique(lab.groups[chosen]))
            print(f"draw {seed} n={n}: " + " ".join(f"{v:.3f}" for v in curve[n][-1]), flush=True)
        for n in END_TO_END:
            ends[n].append(lab.end_to_end(lab.draw(pool, n, rng), test))
            print(f"draw {seed} adapt on {n}: {ends[n][-1]}", flush=True)
    report(args, curve, cells, ends, lab, len(pbc_paths))


class Lab:
    """LISC as the new lab: its crops, their 8 views through the base, and the two measures."""

    def __init__(self, artifact, paths, labels, groups):
        self.artifact, self.paths, self.labels, self.groups = artifact, paths, labels, groups
        t = time.perf_counter()
        self.views, self.ood = embed_paths(artifact, paths, views=DIHEDRAL)
        self.seconds = time.perf_counter() - t
        self.w0, self.b0 = head_weights(artifact)
        graph = onnx.load_from_string(artifact.model_bytes("fp32")).graph
        self.anchors = anchor_features(artifact, graph)
        self.space = ood_space(graph, self.views.shape[-1])

    def draw(self, pool, n, rng) -> np.ndarray:
        return draw(pool, self.labels, self.groups, n, rng)

    def curve_point(self, chosen, test, pbc_views, pbc_ood, pbc_labels) -> tuple:
        """What adapt()'s head refit, distance score and threshold give when fitted on
        every ``chosen`` cell: LISC test (accuracy, unflagged, flagged) and PBC accuracy, with
        one view, then with 8."""
        w, b, lab_ood = self.w0, self.b0, self.ood
        calibration = dict.fromkeys((False, True), self.artifact.calibration)
        if len(chosen):
            fit = (self.views[chosen], self.labels[chosen], self.groups[chosen])
            w, b, _, _ = fit_lab_head(*fit, self.w0, self.b0, self.anchors)
            known = self.space.with_lab(self.views[chosen, 0], self.labels[chosen])
            lab_ood = self.space.distances(known, self.views)
            pbc_ood = self.space.distances(known, pbc_views)
            for tta, seen in ((False, fit[0][:, :1]), (True, fit[0])):  # as adapt() does
                lab_known = out_of_fold_distances(self.space, seen, *fit[1:])
                calibration[tta] = adapted_calibration(calibration[tta], lab_known)
        row = ()
        for tta in (False, True):
            c = calibration[tta]
            lisc = scores(self.views[test], lab_ood[test], self.labels[test], w, b, c, tta)
            row += (*lisc, scores(pbc_views, pbc_ood, pbc_labels, w, b, c, tta)[0])
        return row

    def end_to_end(self, chosen, test) -> tuple:
        """``adapt`` on the ``chosen`` cells' files, then its artifact as ``predict --model``
        loads it on the test half: (chose 8 views, accuracy, unflagged, flagged, seconds)."""
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "cells"
            for i in chosen:
                label = self.artifact.classes[self.labels[i]]
                (data / label).mkdir(parents=True, exist_ok=True)
                shutil.copy(self.paths[i], data / label / self.paths[i].name)
            rows = [
                f"{self.artifact.classes[self.labels[i]]}/{self.paths[i].name},lisc,"
                f"{self.groups[i]}"
                for i in chosen
            ]  # crops of one cell: one group
            (data / "meta.csv").write_text("path,lab,group\n" + "\n".join(rows) + "\n")
            t = time.perf_counter()
            adapt(self.artifact, data, Path(tmp) / "adapted")
            seconds = time.perf_counter() - t
            classifier = Classifier.load(Path(tmp) / "adapted")
            answers = classifier.predict([self.paths[i] for i in test])
        wrong = np.array(
            [a.label != self.artifact.classes[self.labels[i]] for a, i in zip(answers, test)]
        )
        flagged = np.array([a.uncertain for a in answers])
        return (
            classifier.tta,
            float(1 - wrong.mean()),
            float((wrong & ~flagged).mean()),
            float(flagged.mean()),
            seconds,
        )


def _crops(n: int, cells: int) -> str:
    return f"{n}" if cells >= n else f"{n} ({cells} cells)"


def report(args, curve, cells, ends, lab, n_pbc) -> None:
    med = {
        n: [statistics.median(r[i] for r in rows) for i in range(8)] for n, rows in curve.items()
    }
    end_med = {
        n: [sum(r[0] for r in rows), *(statistics.median(r[i] for r in rows) for i in range(1, 5))]
        for n, rows in ends.items()
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "adapt.json").write_text(
        json.dumps({"machine": machine(), "curve": med, "adapt": end_med}, indent=1)
    )
    n_cells = len(np.unique(lab.groups))
    lines = [
        "## Lab adaptation: the learning curve on a lab the model never saw (issue 13)\n",
        f"Machine: {machine()}. Base: `{args.base}` (trained on PBC only); new lab: LISC, "
        f"{len(lab.paths)} crops of {n_cells} cells (near-duplicates grouped), half of the "
        "cells the pool the adapting cells come from (one crop per cell, classes balanced), "
        f"the other half the test. PBC: the base run's own test split ({n_pbc} images). "
        f"Median of {args.draws} draws. Measured {time.strftime('%Y-%m-%d')}.\n",
        "The head refit of `hematovision adapt` (trained on the 8 flips and turns of each "
        "cell) fitted on every drawn cell; answers with one view / with the 8 views averaged "
        "(`--tta`):\n",
        "| crops fitted on | LISC test accuracy | wrong and not flagged | flagged "
        "| PBC test accuracy |",
        "|---|---|---|---|---|",
    ]
    for n in SIZES:
        m = med[n]
        lines.append(
            f"| {_crops(n, cells[n])} | {m[0]:.1%} / {m[4]:.1%} | {m[1]:.1%} / {m[5]:.1%} "
            f"| {m[2]:.1%} / {m[6]:.1%} | {m[3]:.2%} / {m[7]:.2%} |"
        )
    lines += [
        "\n`hematovision adapt` end to end on the drawn cells' files (default `--held-out 0.3`: "
        "it fits on 70% and decides on 30% whether its artifact predicts with the 8 views), "
        "then its artifact loaded as `predict --model` loads it, on the LISC test half:\n",
        "| crops given to adapt | predicts with 8 views (draws) | LISC test accuracy "
        "| wrong and not flagged | flagged | seconds per adapt |",
        "|---|---|---|---|---|---|",
    ]
    for n, (chose, acc, unflagged, flagged, seconds) in end_med.items():
        lines.append(
            f"| {_crops(n, cells[n])} | {chose} of {args.draws} | {acc:.1%} | {unflagged:.1%} | {flagged:.1%} "
            f"| {seconds:.1f} |"
        )
    body = "\n".join(lines)
    write_section("adapt", body)
    print(body)


if __name__ == "__main__":
    main()
