"""Does a sample's differential show a model that misreads a new lab (issue 11)?

A per-cell rule cannot see a whole class of a new lab's cells falling inside one training
class (bench_crosslab.py's PBC fold, seed 2: 34.5% of PBC's cells wrong and unflagged, PBC's
lymphocytes called basophils at 0.995). A differential can: a third of a sample's cells
called basophils lies far outside any reference interval. This script draws samples of 100
white cells in a normal adult's proportions (NORMAL) from each lab's labelled cells, counts
them as the product does (``count_differential``: flagged cells to review, the typical adult
reference intervals) and reports, per model and lab:

* the cells: accuracy, wrong and not flagged, flagged (at these proportions);
* the samples flagged H or L anywhere; the same counted from the cells' true classes (what a
  100-cell count's own sampling flags in a normal sample: the floor of false alarms);
* the cells wrong and not flagged **in a sample with no flag**: what reaches a report that
  neither a cell's flag nor the differential's asks anyone to look at;
* the samples that get the new-lab notice (``inference.new_lab_notice``: most of their cells
  flagged).

Models: the bundled model on its own labs' held-out cells (PBC and LISC test split, BCCD's odd
fields), and bench_crosslab.py's fold models of the bundled model's recipe on the lab each
never saw.

    python benchmarks/bench_sample_flags.py [--samples 2000]      (after bench_crosslab.py)
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np

from bench_cell_shifts import cell_sets
from bench_crosslab import OUT as CROSSLAB
from bench_crosslab import labs, left_out_images
from hematovision.artifact import RunDir
from hematovision.differential import count_differential
from hematovision.inference import Classifier, new_lab_notice

from _common import machine, table_head, table_row, write_section

# a normal adult's white cells (the middle of the typical intervals), summing to 1
NORMAL = {
    "neutrophil": 0.60,
    "lymphocyte": 0.30,
    "monocyte": 0.06,
    "eosinophil": 0.03,
    "basophil": 0.01,
}
CELLS_PER_SAMPLE = 100
BUNDLED_SPLIT = (
    Path(__file__).resolve().parents[1] / "runs" / "default-lab"
)  # today's split of the three labs (its test entries)
FOLD_RECIPE = "+ other-lab augmentation"
OUT = Path(__file__).with_name("out") / "sample-flags"


def classified(clf: Classifier, paths: list[Path], labels: np.ndarray) -> dict:
    """Each cell of NORMAL's classes (``labels``: indices into ``clf.classes``): its predicted
    class, flag and true class (cells that cannot be read dropped)."""
    truth = [clf.classes[y] for y in labels]
    paths = [p for p, t in zip(paths, truth) if t in NORMAL]
    truth = [t for t in truth if t in NORMAL]
    preds = clf.predict(paths, errors="report")
    keep = [i for i, p in enumerate(preds) if p.ok]
    return {
        "label": [preds[i].label for i in keep],
        "uncertain": [bool(preds[i].uncertain) for i in keep],
        "truth": [truth[i] for i in keep],
        "reasons": [preds[i].reasons for i in keep],
    }


def bundled_cell_sets(classes: list[str]) -> dict[str, tuple[list[Path], np.ndarray]]:
    """The bundled model's own labs' held-out cells: PBC's and LISC's test split, BCCD's odd
    fields; (paths, indices into ``classes``) each."""
    manifest = RunDir(BUNDLED_SPLIT).manifest()
    root = Path(manifest.data_root)
    sets = {}
    for lab in ("pbc", "lisc"):
        mine = [f for f in manifest.entries("test") if f.get("lab") == lab]
        paths = [root / f["path"] for f in mine]
        sets[f"{lab} test split"] = (paths, np.array([classes.index(f["label"]) for f in mine]))
    sets["bccd odd fields"] = cell_sets(BUNDLED_SPLIT, classes)["BCCD odd fields"]
    return sets


def bundled_cells(clf: Classifier) -> dict[str, dict]:
    """The bundled model on its own labs' held-out cells."""
    sets = bundled_cell_sets(clf.classes)
    return {name: classified(clf, paths, labels) for name, (paths, labels) in sets.items()}


def fold_cells() -> dict[str, dict]:
    """Each fold model of the bundled model's recipe on the lab it never saw."""
    out = {}
    for run in sorted((CROSSLAB / "runs").glob("*")):
        lab, recipe, seed = run.name.replace("_", " ").split(" | ")
        if recipe != FOLD_RECIPE or not (run / "artifact").is_dir():
            continue
        clf = Classifier.load(run / "artifact")
        paths, labels = left_out_images(labs()[lab], clf.classes)
        out[f"{lab} left out ({seed})"] = classified(clf, paths, labels)
    return out


def draw_samples(cells: dict, n_samples: int, rng) -> list[np.ndarray]:
    """Indices of ``n_samples`` samples of CELLS_PER_SAMPLE cells, drawn class by class in
    NORMAL's proportions (renormalised over the classes the lab has)."""
    truth = np.array(cells["truth"])
    pools = {c: np.flatnonzero(truth == c) for c in NORMAL if (truth == c).any()}
    shares = np.array([NORMAL[c] for c in pools])
    samples = []
    for counts in rng.multinomial(CELLS_PER_SAMPLE, shares / shares.sum(), size=n_samples):
        samples.append(np.concatenate([rng.choice(p, k) for p, k in zip(pools.values(), counts)]))
    return samples


def score(cells: dict, samples: list[np.ndarray]) -> dict:
    label, truth = np.array(cells["label"]), np.array(cells["truth"])
    uncertain = np.array(cells["uncertain"])
    wrong_unflagged = (label != truth) & ~uncertain
    flagged, flagged_truth, hidden, total, empty, noticed = 0, 0, 0, 0, 0, 0
    flags = Counter()
    for s in samples:
        d = count_differential(zip(label[s], uncertain[s]))
        flagged += bool(d.outside_reference)
        flags.update(f"{c} {d.flag(c)}" for c in d.outside_reference)
        flagged_truth += bool(count_differential((t, False) for t in truth[s]).outside_reference)
        empty += d.counted == 0
        noticed += new_lab_notice(cells["reasons"][i] for i in s) is not None
        hidden += 0 if d.outside_reference else int(wrong_unflagged[s].sum())
        total += len(s)
    every = np.concatenate(samples)
    return {
        "cells": len(label),
        "accuracy": float((label[every] == truth[every]).mean()),
        "wrong_unflagged": float(wrong_unflagged[every].mean()),
        "flagged_cells": float(uncertain[every].mean()),
        "samples_flagged": flagged / len(samples),
        "samples_flagged_truth": flagged_truth / len(samples),
        "samples_nothing_counted": empty / len(samples),
        "samples_new_lab_notice": noticed / len(samples),
        "wrong_unflagged_in_unflagged_samples": hidden / total,
        "commonest_flags": [[f, n / len(samples)] for f, n in flags.most_common(2)],
    }


def table(results: dict, n_samples: int) -> str:
    lines = [
        "## A new lab in a sample's differential (issue 11)",
        "",
        f"Machine: {machine()}. {n_samples} samples of {CELLS_PER_SAMPLE} white cells per row, "
        "drawn in a normal adult's proportions (neutrophils 60%, lymphocytes 30%, monocytes 6%, "
        "eosinophils 3%, basophils 1%; renormalised over a lab's classes) from the lab's labelled "
        "cells, counted as the product counts them (flagged cells to review) against the "
        "typical adult reference intervals. Cells: at these proportions. Samples flagged: H or L "
        "anywhere, by the model's count / by the cells' true classes (the count's own sampling). "
        "Last column: cells wrong and not flagged in a sample with no H or L.",
        "",
        *table_head(
            [
                "model",
                "cells of",
                "cells",
                "accuracy",
                "wrong and not flagged",
                "flagged",
                "samples flagged (true classes)",
                "nothing counted",
                "new-lab notice",
                "commonest flags (share of samples)",
                "wrong, unflagged, in a sample without a flag",
            ]
        ),
    ]
    for (model, lab), r in results.items():
        lines.append(
            table_row(
                [
                    model,
                    lab,
                    r["cells"],
                    f"{r['accuracy']:.1%}",
                    f"{r['wrong_unflagged']:.1%}",
                    f"{r['flagged_cells']:.0%}",
                    f"{r['samples_flagged']:.0%} ({r['samples_flagged_truth']:.0%})",
                    f"{r['samples_nothing_counted']:.0%}",
                    f"{r['samples_new_lab_notice']:.0%}",
                    ", ".join(f"{f} {share:.0%}" for f, share in r["commonest_flags"]) or "-",
                    f"{r['wrong_unflagged_in_unflagged_samples']:.2%}",
                ]
            )
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=2000)
    args = ap.parse_args()
    print(machine())
    OUT.mkdir(parents=True, exist_ok=True)
    cache = OUT / "cells.json"
    if cache.exists():
        cells = {tuple(k.split(" @ ")): v for k, v in json.loads(cache.read_text()).items()}
    else:
        cells = {("bundled", lab): c for lab, c in bundled_cells(Classifier.load()).items()}
        cells |= {("fold model", lab): c for lab, c in fold_cells().items()}
        cache.write_text(json.dumps({" @ ".join(k): v for k, v in cells.items()}))
    rng = np.random.default_rng(0)
    results = {key: score(c, draw_samples(c, args.samples, rng)) for key, c in cells.items()}
    for key, r in results.items():
        print(key, r)
    write_section("sample_flags", table(results, args.samples))


if __name__ == "__main__":
    main()
