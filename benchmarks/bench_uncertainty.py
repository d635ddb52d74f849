"""Which uncertainty rule keeps wrong answers from passing unflagged on a lab never seen (issue 11)?

For each leave-one-lab-out fold of bench_crosslab.py (the models of the bundled model's recipe,
other-lab augmentation, and the second seed of the PBC fold), every left-out image's
confidence, out-of-distribution distance and TTA agreement are recorded once; then each rule is
scored: the share of cells wrong and not flagged (target <= 3%) and the share flagged (the
review work it costs). The rule is a confidence floor (at least the model's own threshold,
fitted on its validation images), a distance threshold as a multiple of the model's own (the
export's rule, ``artifact.ood_threshold_of``), and, optionally, TTA disagreement.

    python benchmarks/bench_uncertainty.py [--export]     (after bench_crosslab.py)

``--export`` first re-exports each fold's run with the present exporter (its distance score
and thresholds); each fold's recorded scores are kept in out/crosslab/records/.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

from bench_crosslab import OUT, labs, left_out_images
from hematovision.artifact import OOD_PERCENTILE, Calibration
from hematovision.export import export_run, flagged_uncertain
from hematovision.inference import Classifier
from hematovision.inference.classifier import DIHEDRAL, TTA_MIN_AGREEMENT
from hematovision.preprocess import model_view, resize, to_rgb

from _common import machine, table_head, table_row, write_section

RECIPE = "+ other-lab augmentation"  # the bundled model's recipe
FOLDS = {
    "LISC": ("lisc", ""),
    "BCCD": ("bccd", ""),
    "PBC": ("pbc", ""),
    "PBC, seed 1": ("pbc", " | seed 1"),
}
FLOORS = (None, 0.9, 0.97, 0.99)  # None: the model's own threshold
OOD_SCALES = (1.5, 1.25, 1.0, 0.8, 0.6)
TTA = (False, True)


def record(clf: Classifier, paths: list[Path]) -> dict[str, np.ndarray]:
    """Per image: calibrated probabilities (plain and TTA-averaged), distance, TTA agreement."""
    batch = np.stack([resize(model_view(to_rgb(p), clf.spec)[0], clf.spec) for p in paths])
    runs = [clf.predict_arrays(np.ascontiguousarray(view(batch))) for view in DIHEDRAL]
    plain, tta = runs[0][0], np.mean([r[0] for r in runs], axis=0)
    votes = np.stack([r[0].argmax(1) for r in runs])
    return {
        "plain": plain,
        "tta": tta,
        "ood": runs[0][2],
        "agreement": (votes == tta.argmax(1)).mean(0),
    }


def score(rec: dict, labels: np.ndarray, clf: Classifier, floor, scale, tta) -> dict:
    probs = rec["tta"] if tta else rec["plain"]
    rule = Calibration(
        confidence_threshold=max(clf.confidence_threshold, floor or 0),
        ood_threshold=scale * clf.ood_threshold,
    )
    flagged = flagged_uncertain(probs, rec["ood"], rule)
    if tta:  # as the Classifier does with its views
        flagged |= rec["agreement"] < TTA_MIN_AGREEMENT
    wrong = probs.argmax(1) != labels
    return {"wrong_unflagged": float((wrong & ~flagged).mean()), "flagged": float(flagged.mean())}


def save_record(name: str, rec: dict, labels: np.ndarray, clf: Classifier) -> None:
    """The fold's scores with its labels and thresholds, to try other rules without rerunning."""
    (OUT / "records").mkdir(exist_ok=True)
    np.savez(
        OUT / "records" / f"{name.replace(' ', '_').replace(',', '')}.npz",
        labels=labels,
        confidence_threshold=clf.confidence_threshold,
        ood_threshold=clf.ood_threshold,
        **rec,
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--export", action="store_true", help="re-export each fold's run first")
    args = ap.parse_args()
    sources = labs()
    rows = {}
    for fold, (left_out, seed) in FOLDS.items():
        run = OUT / "runs" / f"{left_out} | {RECIPE}{seed}".replace(" ", "_")
        if args.export:
            export_run(run, int8=False, overwrite=True, show_progress=False)
        clf = Classifier.load(run / "artifact")
        paths, labels = left_out_images(sources[left_out], clf.classes)
        rec = record(clf, paths)
        save_record(fold, rec, labels, clf)
        for floor, scale, tta in itertools.product(FLOORS, OOD_SCALES, TTA):
            rows.setdefault((floor, scale, tta), {})[fold] = score(
                rec, labels, clf, floor, scale, tta
            )
    (OUT / "uncertainty.json").write_text(
        json.dumps({str(k): v for k, v in rows.items()}, indent=1)
    )
    lines = [
        "## Uncertainty rules on left-out labs (issue 11)\n",
        f"Machine: {machine()}. Models of bench_crosslab.py's recipe `{RECIPE}` (the bundled "
        "model's), each scored on the lab it never saw: wrong and not flagged / flagged. "
        "Confidence floor: the least confidence not flagged (model's own: fitted on "
        "validation); distance: the model's out-of-distribution threshold (the "
        f"{OOD_PERCENTILE}th percentile of its validation images' distances) times this.\n",
        *table_head(
            ["confidence floor", "distance x", "TTA", *FOLDS]
            + ["worst wrong and not flagged", "mean flagged"]
        ),
    ]
    for (floor, scale, tta), r in rows.items():
        cells = [
            f"{100 * r[lab]['wrong_unflagged']:.1f}% / {100 * r[lab]['flagged']:.0f}%"
            for lab in FOLDS
        ]
        worst = max(v["wrong_unflagged"] for v in r.values())
        flagged = np.mean([v["flagged"] for v in r.values()])
        rule = [floor or "own", scale, "yes" if tta else "no"]
        lines.append(table_row([*rule, *cells, f"{100 * worst:.1f}%", f"{100 * flagged:.0f}%"]))
    write_section("uncertainty", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
