"""Which out-of-distribution score flags what the model does not know, at equal review cost?

Two scores of the pooled features, each beside the product's confidence rule (below
max(0.97, the model's own threshold): "uncertain"), thresholded at a percentile of the model's
validation images' scores:

* class centre: whitened (PCA, 64 components) distance to the nearest class centre, the
  export's score until session 10 (fitted here on the artifact's anchors);
* nearest anchors: cosine distance to the 10th nearest anchor (the export's score since
  session 10, ``artifact.neighbour_distances``);
* nearest anchors of its class: the same among the anchors of the predicted class only;
* energy: -logsumexp of the logits (Liu et al., 2020), no features needed.

Scored on the models bench_unknown_class.py trained without one PBC class (the untaught
class's images passed as a confident known class / the known classes' test cells flagged) and
on bench_crosslab.py's leave-one-lab-out models of the bundled recipe (the left-out lab's
cells wrong and not flagged / flagged). Needs those runs exported (bench_uncertainty.py
--export, bench_unknown_class.py --export-only); features are computed with ONNX Runtime.

    python benchmarks/bench_ood_scores.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.special import logsumexp
from sklearn.decomposition import PCA

from bench_crosslab import DATA, OUT, labs, left_out_images
from bench_uncertainty import FOLDS, RECIPE
from hematovision.adapt import CentreSpace, embed_paths, head_weights
from hematovision.artifact import (
    Calibration,
    ModelArtifact,
    RunDir,
    neighbour_distances,
    unit_rows,
)
from hematovision.data import scan_folder
from hematovision.export import flagged_uncertain
from hematovision.export.calibration import CONFIDENCE_FLOOR, softmax

from _common import machine, table_head, table_row, write_section

UNTAUGHT = ("ig", "monocyte", "lymphocyte")
PERCENTILES = (95, 90, 85, 80, 70, 60)
UNKNOWN_PER_CLASS = 300  # as bench_unknown_class.py


SCORES = ("class centre", "nearest anchors", "nearest anchors of its class", "energy")


def score_functions(artifact: ModelArtifact) -> dict:
    """name -> f(features, logits) for each score, fitted on the artifact's anchors."""
    with np.load(artifact.path / "anchors.npz") as saved:
        anchors, labels = saved["features"].astype(np.float32), saved["labels"]
    pca = PCA(64, whiten=True, random_state=0).fit(anchors)
    projection = pca.components_.T / np.sqrt(pca.explained_variance_)
    centres = np.stack(
        [((anchors[labels == k] - pca.mean_) @ projection).mean(0) for k in np.unique(labels)]
    )
    space = CentreSpace(pca.mean_, projection, initializer=None)  # the old graph's score
    unit = unit_rows(anchors)

    def own_class(f, logits):
        predicted, out = logits.argmax(1), np.zeros(len(f))
        for k in np.unique(predicted):
            out[predicted == k] = neighbour_distances(unit[labels == k], f[predicted == k])
        return out

    return {
        "class centre": lambda f, logits: space.distances(centres, f),
        "nearest anchors": lambda f, logits: neighbour_distances(unit, f),
        "nearest anchors of its class": own_class,
        "energy": lambda f, logits: -logsumexp(logits, axis=1),
    }


def scorer(artifact: ModelArtifact):
    """paths -> the calibrated probabilities and every score of those image files, as served
    (the scores fitted once per artifact)."""
    scores, (w, b) = score_functions(artifact), head_weights(artifact)

    def scored(paths) -> dict:
        features, _ = embed_paths(artifact, paths)
        logits = features @ w.T + b
        out = {"probs": softmax(logits, artifact.calibration.temperature)}
        return out | {name: f(features, logits) for name, f in scores.items()}

    return scored


def flagged(sets: dict, name: str, score: str, q: float, threshold: float) -> np.ndarray:
    rule = Calibration(
        confidence_threshold=max(CONFIDENCE_FLOOR, threshold),
        ood_threshold=np.percentile(sets["val"][score], q),
    )
    return flagged_uncertain(sets[name]["probs"], sets[name][score], rule)


def split_paths(run: Path, split: str) -> list[Path]:
    manifest = RunDir(run).manifest()
    return [Path(manifest.data_root) / f["path"] for f in manifest.entries(split)]


def untaught_model(left_out: str) -> dict:
    run = OUT / "unknown" / "runs" / left_out
    artifact = ModelArtifact.load(run / "artifact")
    pbc = scan_folder(DATA / "pbc")
    unknown = [p for p, y in zip(pbc.paths, pbc.labels) if pbc.classes[y] == left_out]
    unknown = [unknown[i] for i in np.random.default_rng(0).permutation(len(unknown))]
    scored = scorer(artifact)
    sets = {
        "val": scored(split_paths(run, "val")),
        "known": scored(split_paths(run, "test")),
        "unknown": scored(unknown[:UNKNOWN_PER_CLASS]),
    }
    return {"sets": sets, "threshold": artifact.calibration.confidence_threshold}


def left_out_lab_model(fold: str) -> dict:
    left_out, seed = FOLDS[fold]
    run = OUT / "runs" / f"{left_out} | {RECIPE}{seed}".replace(" ", "_")
    artifact = ModelArtifact.load(run / "artifact")
    paths, labels = left_out_images(labs()[left_out], artifact.classes)
    scored = scorer(artifact)
    sets = {"val": scored(split_paths(run, "val")), "new": scored(paths)}
    return {"sets": sets, "labels": labels, "threshold": artifact.calibration.confidence_threshold}


def row(untaught: dict, folds: dict, score: str, q: float) -> str:
    cells = []
    for m in untaught.values():
        passed = ~flagged(m["sets"], "unknown", score, q, m["threshold"])
        own = flagged(m["sets"], "known", score, q, m["threshold"])
        cells.append(f"{100 * passed.mean():.1f}% / {100 * own.mean():.0f}%")
    worst, shares = 0.0, []
    for m in folds.values():
        f = flagged(m["sets"], "new", score, q, m["threshold"])
        wrong = m["sets"]["new"]["probs"].argmax(1) != m["labels"]
        worst, shares = max(worst, float((wrong & ~f).mean())), [*shares, f.mean()]
    cells.append(f"{100 * worst:.1f}% / {100 * np.mean(shares):.0f}%")
    return table_row([score, f"p{q}", *cells])


def main() -> None:
    untaught = {c: untaught_model(c) for c in UNTAUGHT}
    folds = {fold: left_out_lab_model(fold) for fold in FOLDS}
    lines = [
        "## Out-of-distribution scores at equal review cost (issue 11)\n",
        f"Machine: {machine()}. Each score beside the product's confidence rule, thresholded "
        "at a percentile of the model's validation images' scores. Untaught class: models "
        "trained on PBC without it (bench_unknown_class.py), its images passed as a confident "
        "known class / the known classes' test cells flagged. Left-out labs: the worst of "
        f"{len(FOLDS)} folds' cells wrong and not flagged / the mean flagged "
        "(bench_uncertainty.py's models).\n",
        *table_head(["score", "threshold", *(f"untaught {c}" for c in UNTAUGHT), "left-out labs"]),
    ]
    for q in PERCENTILES:
        for score in SCORES:
            lines.append(row(untaught, folds, score, q))
    write_section("ood_scores", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
