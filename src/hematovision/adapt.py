"""Teach a model a lab's own cells: refit its linear head on cached embeddings.

The backbone stays as it is; its pooled features (the input of the final linear layer, the
same for every model: timm's ``forward_head``) are computed once for the lab's cells, and the
head is refitted on them while it must keep giving its old answers on "anchors", features of
images it was trained on (shipped in the artifact), and stay near its old weights: what the
model knew of the other labs is kept. How near is chosen per lab, by cross-validation on its
own cells (``choose_pull``). The new weights replace the old ones in the ONNX graph (the
heatmaps' CAM uses the same weights), so the result is an ordinary artifact: no PyTorch, and
seconds to tens of seconds on two cores.

Before/after accuracy on a held-out part of the lab's cells goes into ``model.json``; a model
worse than the base there is refused unless forced.
"""

from __future__ import annotations

import hashlib
import shutil
import time
import warnings
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from scipy.optimize import minimize
from sklearn.metrics import confusion_matrix
from sklearn.model_selection import StratifiedGroupKFold, train_test_split
from threadpoolctl import threadpool_limits

from .artifact import Calibration, ModelArtifact, neighbour_distances, unit_rows
from .data.duplicates import groups_by_class
from .data.folders import scan_folder
from .errors import HematoVisionError
from .files import FAST_PNG
from .inference.classifier import DIHEDRAL, SAMPLES
from .preprocess import model_input, model_view, resize, to_rgb
from .progress import progress_bar

# chosen on validation data (PBC's validation split and half of the LISC pool, never the test
# halves): benchmarks/bench_adapt.py
PULL = 1e-2
ANCHOR_WEIGHT = 5.0
# how near the old weights the head must stay is chosen per lab, by cross-validation on its own
# cells: the pull whose held-out log-loss is lowest (accuracy on a few dozen cells ties too
# often, and the ties went to the strongest pull, which underfits: LISC, 100 cells, one draw
# 92.4% -> 94.1% with the 8 views; bench_adapt.py); of equal losses, the strongest
PULL_CHOICES = (1e-4, 1e-3, 1e-2)
PULL_FOLDS = 2  # each choice fitted twice on half the cells: seconds, not minutes
# A cell of the lab is "unlike the training images" when its distance score is above this
# percentile of the lab's own cells' scores measured without them (out of fold, OOD_FOLDS
# folds by group). The export's rule for validation images at the time (the class-centre
# distance, 0.6 x their 99th percentile) never widened the threshold for a new lab, which
# left 55-65% of its cells flagged after adapting; chosen on validation cells (the LISC
# pool's cells not drawn, 25-100 drawn, 3 draws; bench_adapt.py): the 75th flagged 30-43%
# with 0-0.6% wrong and not flagged (at most 1.8%), the 90th 24-34% with up to 1.1% (at
# most 1.9%). With the nearest-anchor distance, 100 crops: 29.6% flagged, 0.6% (RESULTS.md).
LAB_OOD_PERCENTILE = 75
OOD_FOLDS = 5
# BLAS threads while the head is fitted (None: as the process has them). Its products are small,
# and numpy's and scipy's OpenBLAS (two thread pools) at 2 threads each spun against each other:
# 1 thread fits 4-6x faster on 2 cores (benchmarks/bench_head_fit.py)
FIT_BLAS_THREADS = 1


@dataclass
class LabCells:
    """A lab's labelled cells as the base model sees them: pooled features and class indices."""

    views: np.ndarray  # (n, 8, d) float32: the 8 flips and turns, the image as it is first
    labels: np.ndarray  # (n,) indices into the model's classes
    paths: list[str]
    groups: np.ndarray  # images of one group (one cell, one sample) stay on one side
    ood: np.ndarray  # (n, 8): the distance score of each view, as the base computes it

    @property
    def features(self) -> np.ndarray:
        return self.views[:, 0]


def export_reviewed(storage, out: str | Path) -> dict[str, int]:
    """The reviewed cells of signed samples as a class-per-folder set: each cell's image (a
    smear cell cut from its field) named ``<sample>-<cell>``, a ``meta.csv`` that groups the
    cells of one sample (so splits never separate them) and ``provenance.csv`` (who reviewed
    what, the model's label and version). Returns the count per class."""
    import csv

    from .smear import crop_cell

    out = Path(out)
    rows, counts = [], {}
    for cell, sample in storage.samples.reviewed_cells():
        source = storage.image_path(cell.image_sha256)
        if source is None:
            continue  # stored without its image (--no-store-images, or lost): nothing to learn
        name = f"{cell.label}/{sample.public_id}-{cell.id}.png"
        (out / cell.label).mkdir(parents=True, exist_ok=True)
        picture = to_rgb(source)
        (crop_cell(picture, cell.box) if cell.box else picture).save(out / name, **FAST_PNG)
        counts[cell.label] = counts.get(cell.label, 0) + 1
        signed = sample.versions[-1] if sample.versions else None
        rows.append(
            {
                "path": name,
                "lab": "reviewed",
                "group": sample.public_id,
                "label": cell.label,
                "model_label": cell.model_label,
                "model_version": cell.model_version,
                "status": cell.status,
                "accession": sample.accession,
                "sample_version": sample.version,
                "signed_by": signed.signed_by if signed else "",
                "image_sha256": cell.image_sha256,
            }
        )
    if not rows:
        raise HematoVisionError("no reviewed cell of a signed sample to export")
    for file, fields in (("meta.csv", ["path", "lab", "group"]), ("provenance.csv", list(rows[0]))):
        with open(out / file, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    return counts


def _head(graph):
    """(features tensor name, weight initializer, bias initializer) of the node making logits."""
    node = next((n for n in graph.node if "logits" in n.output), None)
    inits = {i.name: i for i in graph.initializer}
    if node is None or node.op_type != "Gemm" or node.input[1] not in inits:
        raise HematoVisionError(
            "this model's head is not one linear layer: it cannot be adapted by refitting it"
        )
    return node.input[0], inits[node.input[1]], inits[node.input[2]]


def _feature_session(artifact: ModelArtifact):
    """An ONNX Runtime session of the artifact's graph that also outputs the pooled features."""
    import onnx
    import onnxruntime as ort

    model = onnx.load_from_string(artifact.model_bytes("fp32"))
    name, _, _ = _head(model.graph)
    model.graph.output.append(
        onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
    )
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]), name


def embed_paths(
    artifact: ModelArtifact, paths, batch_size: int = 64, views=(None,), show_progress=False
):
    """(pooled features, OOD scores) of image files, framed and computed as when serving;
    with ``views`` (e.g. ``DIHEDRAL``, the 8 flips and turns), shaped (images, views, ...)."""
    session, name = _feature_session(artifact)
    spec, features, ood = artifact.preprocess, [], []
    with progress_bar("embedding the cells", len(paths), enabled=show_progress) as bar:
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            batch = np.stack([resize(model_view(to_rgb(p), spec)[0], spec) for p in chunk])
            runs = [
                session.run(
                    [name, "ood"],
                    {session.get_inputs()[0].name: model_input(_view(batch, view), spec)},
                )
                for view in views
            ]
            features.append(np.stack([f for f, _ in runs], 1))
            ood.append(np.stack([o for _, o in runs], 1))
            bar.advance(len(chunk))
    features, ood = np.concatenate(features).astype(np.float32), np.concatenate(ood)
    return (features[:, 0], ood[:, 0]) if views == (None,) else (features, ood)


def _view(batch: np.ndarray, view) -> np.ndarray:
    return batch if view is None else np.ascontiguousarray(view(batch))


def embed(artifact: ModelArtifact, folder: str | Path, show_progress: bool = False) -> LabCells:
    """The pooled features of every image of a class-per-folder set (classes: the model's)."""
    images = scan_folder(folder)
    unknown = sorted(set(images.classes) - set(artifact.classes))
    if unknown:
        raise HematoVisionError(
            f"{folder}: classes the model does not have: {', '.join(unknown)} "
            f"(it has {', '.join(artifact.classes)})"
        )
    # a cell has no orientation: its 8 flips and turns are 8 examples (and TTA's views)
    views, ood = embed_paths(artifact, images.paths, views=DIHEDRAL, show_progress=show_progress)
    labels = np.array([artifact.classes.index(images.classes[y]) for y in images.labels])
    groups = images.groups  # from meta.csv; without one, copies found so held-out cells are new
    if groups is None:
        groups = groups_by_class(images, show_progress)
    return LabCells(views, labels, [str(p) for p in images.paths], groups, ood)


@dataclass
class NeighbourSpace:
    """The graph's distance score (export/graph.py): cosine distance to the k-th nearest of
    its ``anchors``, training images' features. A lab's cells join the anchors."""

    initializer: object  # the ONNX initializer "anchors" (unit rows, float16)

    @classmethod
    def of(cls, graph) -> NeighbourSpace | None:
        found = [i for i in graph.initializer if i.name == "anchors"]
        return cls(found[0]) if found else None

    @property
    def dims(self) -> int:
        return int(self.initializer.dims[1])

    @property
    def size(self) -> int:
        return int(self.initializer.dims[0])

    def known(self) -> np.ndarray:
        """The anchors (unit rows) as the graph stores them."""
        from onnx import numpy_helper

        return numpy_helper.to_array(self.initializer)

    def with_lab(self, features: np.ndarray, labels: np.ndarray) -> np.ndarray:
        known = self.known()
        return np.concatenate([known, unit_rows(features).astype(known.dtype)])

    def distances(self, known: np.ndarray, features: np.ndarray) -> np.ndarray:
        return neighbour_distances(known.astype(np.float32), features)


@dataclass
class CentreSpace:
    """The distance score of artifacts exported before the nearest-anchor score (the graph's
    ``pca_mean``, ``projection``, ``centres``): whitened distance to the nearest class centre.
    A lab's cells add their classes' centres."""

    pca_mean: np.ndarray
    projection: np.ndarray
    initializer: object  # the ONNX initializer "centres"

    @classmethod
    def of(cls, graph) -> CentreSpace | None:
        from onnx import numpy_helper

        inits = {i.name: i for i in graph.initializer}
        if not {"pca_mean", "projection", "centres"} <= set(inits):
            return None
        array = numpy_helper.to_array
        return cls(array(inits["pca_mean"]), array(inits["projection"]), inits["centres"])

    @property
    def dims(self) -> int:
        return len(self.pca_mean)

    def with_lab(self, features: np.ndarray, labels: np.ndarray) -> np.ndarray:
        from onnx import numpy_helper

        z = (features - self.pca_mean) @ self.projection
        lab = [z[labels == k].mean(0) for k in np.unique(labels)]
        return np.concatenate([numpy_helper.to_array(self.initializer), lab]).astype(np.float32)

    def distances(self, known: np.ndarray, features: np.ndarray) -> np.ndarray:
        z = (features - self.pca_mean) @ self.projection
        return np.sqrt(((z[..., None, :] - known) ** 2).sum(-1)).min(-1)


def ood_space(graph, dims: int) -> NeighbourSpace | CentreSpace | None:
    """The distance score's parts in an ONNX graph, or None where it has none we know or its
    features are not the ``dims`` the final linear layer takes (a head of several layers).

    Both spaces: ``with_lab(features, labels)`` -> what the graph knows with the lab's cells
    added; ``distances(known, features (..., d))`` -> the score the graph computes, (...)."""
    space = NeighbourSpace.of(graph) or CentreSpace.of(graph)
    return space if space is not None and space.dims == dims else None


def store_known(space, known: np.ndarray) -> None:
    """Write ``known`` (``space.with_lab``'s result) into the graph's initializer."""
    from onnx import numpy_helper

    space.initializer.CopyFrom(numpy_helper.from_array(known, space.initializer.name))


def out_of_fold_distances(space, views, labels, groups) -> np.ndarray:
    """Each cell's distance score (the mean over its ``views``, (n, views, d), as the
    Classifier averages them) with the lab's other cells known, in ``OOD_FOLDS`` folds by
    group: how far a new cell of the lab lies. In-sample distances understate it (a cell is
    its own nearest neighbour, or pulls its class centre towards it). Empty with too few
    groups."""
    folds = _folds(labels, groups, OOD_FOLDS)
    out = np.zeros(len(labels) if folds else 0)
    for train, test in folds:
        known = space.with_lab(views[train, 0], labels[train])
        out[test] = space.distances(known, views[test]).mean(1)
    return out


def head_weights(artifact: ModelArtifact) -> tuple[np.ndarray, np.ndarray]:
    """The (weight, bias) of the artifact's final linear layer."""
    import onnx
    from onnx import numpy_helper

    _, weight, bias = _head(onnx.load_from_string(artifact.model_bytes("fp32")).graph)
    return numpy_helper.to_array(weight), numpy_helper.to_array(bias)


def fit_head(
    features: np.ndarray,
    labels: np.ndarray,
    w0: np.ndarray,
    b0: np.ndarray,
    anchors: np.ndarray | None = None,
    pull: float = PULL,
    anchor_weight: float = ANCHOR_WEIGHT,
) -> tuple[np.ndarray, np.ndarray]:
    """The head refitted (L-BFGS) on the lab's cells, minimising

    cross-entropy on the lab's cells
    + ``anchor_weight`` * cross-entropy to the base head's own probabilities on ``anchors``
      (features of the images the base was trained on: what it knew must stay true)
    + ``pull`` * ||(W, b) - (W0, b0)||^2.
    """
    # float32 products (2x faster; the sums and the optimiser's state stay in float64)
    x = features.astype(np.float32)
    a = _anchors_or_empty(anchors, features.shape[1]).astype(np.float32)
    targets = np.eye(len(b0), dtype=np.float32)[labels]
    kept = np.exp(_log_softmax(a @ w0.T + b0))  # the base's answers on its own images

    def loss(theta):
        w, b = theta[: w0.size].reshape(w0.shape), theta[w0.size :]
        value, gw, gb = 0.0, 2 * pull * (w - w0), 2 * pull * (b - b0)
        w32, b32 = w.astype(np.float32), b.astype(np.float32)
        for inputs, wanted, weight in ((x, targets, 1.0), (a, kept, anchor_weight)):
            if len(inputs) == 0:
                continue
            log_p = _log_softmax(inputs @ w32.T + b32)
            grad = weight * (np.exp(log_p) - wanted) / len(inputs)
            value -= weight * float((wanted * log_p).sum(dtype=np.float64)) / len(inputs)
            gw, gb = gw + grad.T @ inputs, gb + grad.sum(0, dtype=np.float64)
        value += pull * (((w - w0) ** 2).sum() + ((b - b0) ** 2).sum())
        return value, np.concatenate([gw.ravel(), gb])

    start = np.concatenate([w0.ravel(), b0]).astype(np.float64)
    with threadpool_limits(limits=FIT_BLAS_THREADS, user_api="blas"):
        result = minimize(loss, start, jac=True, method="L-BFGS-B", options={"maxiter": 300})
    theta = result.x.astype(np.float32)
    return theta[: w0.size].reshape(w0.shape), theta[w0.size :]


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits - logits.max(1, keepdims=True)
    return logits - np.log(np.exp(logits).sum(1, keepdims=True))


def _anchors_or_empty(anchors, dims: int) -> np.ndarray:
    return np.zeros((0, dims)) if anchors is None else anchors.astype(np.float64)


def anchor_features(artifact: ModelArtifact, graph=None) -> np.ndarray:
    """Features of images the model was trained on: a class-balanced sample of its training
    split chosen at export, else the bundled samples. The graph's distance score holds their
    directions (unit rows) and ``anchors.npz`` their lengths; artifacts exported before
    that (the bundled model until 2026-11-28) keep the whole features in ``anchors.npz``.
    ``graph``: the artifact's fp32 ONNX graph where the caller has it loaded already."""
    path = artifact.file("anchors")
    if path is None or not path.is_file():
        return embed_paths(artifact, sorted(SAMPLES.glob("*.jpg")))[0]
    with np.load(path, allow_pickle=False) as saved:
        if "features" in saved:
            return saved["features"].astype(np.float32)
        norms = saved["norms"].astype(np.float32)
    if graph is None:
        import onnx

        graph = onnx.load_from_string(artifact.model_bytes("fp32")).graph
    space = NeighbourSpace.of(graph)
    if space is None or space.size < len(norms):
        raise HematoVisionError(f"{path}: its model holds no anchors of these lengths")
    directions = space.known()[: len(norms)].astype(np.float32)  # a lab's cells come after
    return directions * norms[:, None]


def adapted_calibration(base: Calibration, lab_distances: np.ndarray) -> Calibration:
    """The base's calibration, with the lab's own cells counted among the images the model
    knows: the distance threshold widens to the ``LAB_OOD_PERCENTILE``th percentile of their
    distances measured without them (``out_of_fold_distances``), and never narrows."""
    if base.ood_threshold is None or not len(lab_distances):
        return base
    lab = float(np.percentile(lab_distances, LAB_OOD_PERCENTILE))
    return replace(base, ood_threshold=max(base.ood_threshold, lab))


def predicted(features, w, b) -> np.ndarray:
    """The head (w, b)'s classes; features (n, d), or (n, views, d): logits averaged."""
    logits = features @ w.T + b
    return (logits.mean(1) if logits.ndim == 3 else logits).argmax(1)


def accuracy(answers: np.ndarray, labels: np.ndarray) -> float:
    """The share of ``answers`` (``predicted``'s classes) that are ``labels``; NaN for none."""
    return float((answers == labels).mean()) if len(labels) else float("nan")


def adapt(
    base: ModelArtifact,
    data: str | Path,
    out: str | Path,
    held_out: float = 0.3,
    force: bool = False,
    seed: int = 0,
    show_progress: bool = False,
) -> ModelArtifact:
    """A new artifact in ``out``: ``base`` with its head refitted on the cells in ``data``."""
    import onnx
    from onnx import numpy_helper

    started = time.perf_counter()
    cells = embed(base, data, show_progress)
    if len(cells.labels) < 10:
        raise HematoVisionError(f"{data}: {len(cells.labels)} images; adapting needs at least 10")
    train, test = _split(cells.labels, cells.groups, held_out, seed)
    model = onnx.load_from_string(base.model_bytes("fp32"))
    _, weight, bias = _head(model.graph)
    w0, b0 = numpy_helper.to_array(weight), numpy_helper.to_array(bias)
    lab = (cells.views[train], cells.labels[train], cells.groups[train])
    anchors = anchor_features(base, model.graph)  # before the lab's cells join the graph's
    w, b, pull, pull_losses = fit_lab_head(*lab, w0, b0, anchors, show_progress)
    held = _held_out_scores(base, cells.views[test], cells.labels[test], (w0, b0), (w, b))
    as_predicted = held["accuracy_after_tta" if held["tta"] else "accuracy_after"]
    if not as_predicted >= held["accuracy_before"] and not force:  # NaN (a failed fit) too
        raise HematoVisionError(
            f"the adapted model is worse on the held-out cells ({as_predicted:.1%} vs "
            f"{held['accuracy_before']:.1%} for the base): nothing written (use --force to "
            "write it anyway)"
        )
    weight.CopyFrom(numpy_helper.from_array(w, weight.name))
    bias.CopyFrom(numpy_helper.from_array(b, bias.name))
    calibration, far = _lab_distance_rule(model.graph, base, cells, train, test, held["tta"])
    scores = {
        "held_out": {**held, **far},  # far: the share flagged as unlike, before and after
        "pull": pull,  # and each choice's cross-validated log-loss on the lab's cells
        "pull_log_loss": {f"{k:g}": v for k, v in pull_losses.items()},
    }
    seconds = time.perf_counter() - started
    return _write(base, model, out, cells, train, scores, calibration, seconds)


def _held_out_scores(base: ModelArtifact, views, labels, base_head, head) -> dict:
    """Accuracy on the held-out cells (n, views, d) before (as the base predicts) and after,
    with one view and with the 8 averaged, and whether the adapted model is to use the 8."""
    before = predicted(views if base.tta else views[:, 0], *base_head)  # as the base predicts
    one_view, eight_views = predicted(views[:, 0], *head), predicted(views, *head)
    after, after_tta = accuracy(one_view, labels), accuracy(eight_views, labels)
    # a head fitted on a new lab's cells answers better on the 8 views averaged than on
    # one (LISC, 100 crops: 96.7% against 94.2%; on every left-out lab, issue 11): worth
    # 8x the model's time unless the held-out cells say one view does better
    tta = bool(after_tta >= after)
    classes = range(len(base.classes))
    return {
        "n": int(len(labels)),
        "accuracy_before": accuracy(before, labels),
        "accuracy_after": after,
        "accuracy_after_tta": after_tta,  # predict --tta: the 8 views averaged
        "tta": tta,
        # rows: the true class, columns: the answer, in the base's class order; as predicted
        "confusion_before": confusion_matrix(labels, before, labels=classes).tolist(),
        "confusion_after": confusion_matrix(
            labels, eight_views if tta else one_view, labels=classes
        ).tolist(),
    }


def _lab_distance_rule(graph, base: ModelArtifact, cells: LabCells, train, test, tta: bool):
    """The lab's cells become "known" to the distance score in ``graph`` (``ood_space``) and
    its threshold widens (``adapted_calibration``). Returns the calibration and the share of
    held-out cells beyond the threshold, before and after."""

    def seen(predicts_with_tta: bool) -> int:  # how many views a model averages
        return len(DIHEDRAL) if predicts_with_tta else 1

    space = ood_space(graph, cells.views.shape[-1])
    if space is None:  # nothing to add the cells to: the distances as the base measures them
        lab_distances, after = (cells.ood[part, : seen(tta)].mean(1) for part in (train, test))
    else:  # measured before the lab's cells go into the graph: out of fold, then with them
        views, lab = cells.views[:, : seen(tta)], (cells.labels[train], cells.groups[train])
        lab_distances = out_of_fold_distances(space, views[train], *lab)
        known = space.with_lab(cells.features[train], cells.labels[train])
        store_known(space, known)
        after = space.distances(known, views[test]).mean(1)
    calibration = adapted_calibration(base.calibration, lab_distances)
    before = cells.ood[test, : seen(base.tta)].mean(1)  # as the base predicts
    return calibration, {
        "far_before": _share_beyond(before, base.calibration.ood_threshold),
        "far_after": _share_beyond(after, calibration.ood_threshold),
    }


def _share_beyond(distance: np.ndarray, threshold: float | None) -> float:
    return float((distance > threshold).mean()) if threshold is not None else 0.0


def fit_lab_head(views, labels, groups, w0, b0, anchors, show_progress: bool = False):
    """The head refitted on a lab's cells (n, views, d) with the pull ``choose_pull`` picks:
    (w, b, pull, every choice's cross-validated log-loss), with a bar over the fits."""
    folds = _folds(labels, groups, PULL_FOLDS)
    fits = len(PULL_CHOICES) * len(folds) + 1  # the cross-validation's, then the chosen one
    with progress_bar("fitting the head", fits, enabled=show_progress) as bar:
        pull, losses = _cross_validated_pull(views, labels, folds, w0, b0, anchors, bar.advance)
        head = fit_views(views, labels, w0, b0, anchors, pull)
        bar.advance()
    return (*head, pull, losses)


def fit_views(views, labels, w0, b0, anchors, pull: float = PULL):
    """``fit_head`` on every view of each cell (n, views, d): the flips and turns as examples."""
    examples = views.reshape(-1, views.shape[-1])
    return fit_head(examples, np.repeat(labels, views.shape[1]), w0, b0, anchors, pull)


def choose_pull(views, labels, groups, w0, b0, anchors) -> tuple[float, dict[float, float]]:
    """The pull (of ``PULL_CHOICES``) whose head predicts the lab's own cells best when fitted
    without them: the lowest mean log-loss over ``PULL_FOLDS`` folds by group, the 8 views'
    logits averaged (as ``--tta``); of equal losses, the strongest. Returns it and every
    choice's loss."""
    folds = _folds(labels, groups, PULL_FOLDS)
    return _cross_validated_pull(views, labels, folds, w0, b0, anchors)


def _cross_validated_pull(views, labels, folds, w0, b0, anchors, fitted=lambda: None):
    """``choose_pull`` over given folds; ``fitted`` is called after each fit."""
    if not folds:  # too few cells to cross-validate: the default
        return PULL, {}
    losses = {}
    for pull in PULL_CHOICES:
        loss = 0.0
        for train, test in folds:
            w, b = fit_views(views[train], labels[train], w0, b0, anchors, pull)
            fitted()
            log_p = _log_softmax((views[test] @ w.T + b).mean(1))
            loss -= float(log_p[np.arange(len(test)), labels[test]].sum())
        losses[pull] = loss / sum(len(test) for _, test in folds)
    best = min(losses.values())
    return max(p for p, s in losses.items() if s == best), losses


def _folds(labels: np.ndarray, groups: np.ndarray, n_splits: int, seed: int = 0) -> list:
    """(train, test) positions of ``n_splits`` folds by group (near-duplicates of one cell
    never on both sides), stratified by class; [] when there are too few groups."""
    if len(np.unique(groups)) < 2 * n_splits:
        return []
    folds = StratifiedGroupKFold(n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # a class with fewer cells than folds: fine, said here
        warnings.simplefilter("ignore", UserWarning)
        return list(folds.split(labels, labels, groups))


def _split(labels: np.ndarray, groups: np.ndarray, held_out: float, seed: int):
    """Train and held-out positions: the first of ``_folds`` where the groups allow it,
    else by image."""
    folds = _folds(labels, groups, max(2, round(1 / held_out)), seed)
    if folds and all(len(side) for side in folds[0]):
        return folds[0]
    index = np.arange(len(labels))
    counts = np.bincount(labels)
    stratify = labels if counts[counts > 0].min() >= 2 else None
    return train_test_split(index, test_size=held_out, random_state=seed, stratify=stratify)


def plot_adaptation(base: ModelArtifact, held: dict, out: Path) -> str:
    """``adaptation.png``: the held-out cells' confusion matrices before and after, over the
    classes among their truths and answers; returns the file name."""
    from .evaluation import plot_confusions

    before, after = np.asarray(held["confusion_before"]), np.asarray(held["confusion_after"])
    seen = np.flatnonzero(before.sum(0) + before.sum(1) + after.sum(0))
    after_accuracy = held["accuracy_after_tta" if held["tta"] else "accuracy_after"]
    matrices = {
        f"{base.name} as it was: {held['accuracy_before']:.1%}": before[np.ix_(seen, seen)],
        f"adapted to the lab: {after_accuracy:.1%}": after[np.ix_(seen, seen)],
    }
    title = f"The lab's {held['n']} cells held out from the fit (rows: their true class)"
    classes = [base.classes[i] for i in seen]
    return plot_confusions(matrices, classes, out / "adaptation.png", title)


def _write(base, model, out, cells, train, scores, calibration, seconds) -> ModelArtifact:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = model.SerializeToString()
    (out / "model.onnx").write_bytes(data)
    for key, entry in base.files.items():  # e.g. the confusion matrix: the base's, named so
        if key not in ("onnx",) and not entry.path.endswith(".onnx"):
            shutil.copy(base.path / entry.path, out / entry.path)
    counts = np.bincount(cells.labels[train], minlength=len(base.classes))
    artifact = ModelArtifact.from_dict(base.to_dict(), out)
    artifact.calibration = calibration
    artifact.tta = scores["held_out"]["tta"]
    artifact.files = {k: v for k, v in artifact.files.items() if not v.path.endswith(".onnx")}
    artifact.add_file("onnx", "model.onnx")
    artifact.add_file("adaptation", plot_adaptation(base, scores["held_out"], out))
    artifact.version = f"{base.version}+lab.{hashlib.sha256(data).hexdigest()[:8]}"
    artifact.name = f"{base.name}-adapted"
    artifact.checks = {}
    artifact.metrics = {
        **base.metrics,
        "adaptation": {
            **scores,
            "trained_on": {c: int(n) for c, n in zip(base.classes, counts) if n},
            "seconds": round(seconds, 1),
        },
    }
    artifact.provenance.note = (
        f"head refitted on {len(train)} cells of {cells.paths[0].rsplit('/', 2)[0]} "
        f"from {base.name} {base.version}"
    )
    artifact.provenance.created = datetime.now(UTC).isoformat()
    artifact.provenance.data = {
        **artifact.provenance.data,
        "adapted_from": {"name": base.name, "version": base.version},
    }
    artifact.save()
    return artifact
