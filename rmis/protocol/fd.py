"""Fault-diagnosis score of the RMIS protocol (PROTOCOL.md section 3).

Cosine-weighted k-NN (k = 5) on L2-normalised embeddings: class logit = sum of the similarities of
the neighbours of that class, prediction = argmax with ties to the lowest class index. Score =
macro accuracy (mean over the classes present in the test set of per-class recall, percent).
Sealed datasets average 10 runs of the official group splits; IIEE uses its official split.

All runs of a dataset, and all 190 runs of a multi-split curve, share one
:class:`~rmis.protocol.knn.CosineKNN`, i.e. one similarity computation.

The official harness writes each run's macro accuracy with 2 decimals and averages those
rounded figures; rmis keeps full precision unless ``official_rounding`` is set
(``--compat rmis-official``). The std of a single run is undefined: ``None``, never 0.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from rmis.errors import RMISError, SplitError
from rmis.protocol.knn import CosineKNN
from rmis.protocol.splits import GroupTable, group_table, sealed_split, unplaceable_classes

log = logging.getLogger(__name__)

#: The multi-split curve's test sizes: 0.05, 0.10, ..., 0.95.
CURVE_TEST_SIZES: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 20))
DEFAULT_RUNS = 10
DEFAULT_K = 5


def vote_logits(
    neighbour_labels: np.ndarray, neighbour_sims: np.ndarray, n_classes: int
) -> np.ndarray:
    """Cosine-weighted vote: ``[n, C]`` per-class sums of the neighbours' similarities.

    Args:
        neighbour_labels: ``[n, k]`` class index of each neighbour.
        neighbour_sims: ``[n, k]`` cosine similarity of each neighbour.
        n_classes: number of classes ``C``.

    Sums are accumulated in neighbour (column) order, so equal inputs give equal sums.
    """
    n, k = neighbour_labels.shape
    logits = np.zeros((n, n_classes), dtype=np.float64)
    rows = np.arange(n)
    for j in range(k):
        logits[rows, neighbour_labels[:, j]] += neighbour_sims[:, j]
    return logits


def knn_predict(
    neighbour_labels: np.ndarray, neighbour_sims: np.ndarray, n_classes: int
) -> np.ndarray:
    """``[n]`` predicted class: argmax of :func:`vote_logits`, ties to the lowest class index."""
    return np.argmax(vote_logits(neighbour_labels, neighbour_sims, n_classes), axis=1)


def round_official(x: float) -> float:
    """A run figure as the official harness records it: printed ``:.2f`` and read back."""
    return float(f"{x:.2f}")


def per_class_accuracy(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """``[C]`` recall of each class in percent; NaN for classes absent from ``y_true``."""
    y_true = np.asarray(y_true)
    support = np.bincount(y_true, minlength=n_classes)
    correct = np.bincount(y_true[y_true == np.asarray(y_pred)], minlength=n_classes)
    out = np.full(n_classes, np.nan)
    present = support > 0
    out[present] = correct[present] / support[present] * 100.0
    return out


def macro_accuracy(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Mean over classes present in ``y_true`` of per-class recall, in percent."""
    y_true = np.asarray(y_true)
    support = np.bincount(y_true, minlength=n_classes)
    correct = np.bincount(y_true[y_true == np.asarray(y_pred)], minlength=n_classes)
    present = support > 0
    if not present.any():
        raise RMISError("macro accuracy of an empty test set is undefined")
    return float(np.mean(correct[present] / support[present]) * 100.0)


@dataclass(frozen=True)
class FDRun:
    """One run: a sealed split (``seed``, ``test_groups``) or the official split (both None,
    with ``predictions``).

    ``per_class``: ``{class: recall in percent}`` of the classes present in the test set;
    ``predictions``: ``{file id: predicted class}`` of every test file (official split only).
    """

    run: int
    seed: int | None
    macro_acc: float
    test_groups: list[str] | None
    per_class: dict[str, float] = field(default_factory=dict)
    predictions: dict[str, str] | None = None


@dataclass(frozen=True)
class CurvePoint:
    test_size: float
    mean: float
    runs: list[float]


@dataclass(frozen=True)
class FDResult:
    """Score of one fault-diagnosis dataset (percent, full precision).

    ``runs`` lists the sealed runs (the single run of an official split); ``std`` is the sample
    std of their macro accuracies, None for a single run; ``curve``/``auc`` are set when the
    multi-split curve was computed.
    """

    score: float
    mean: float
    std: float | None
    runs: list[FDRun] = field(default_factory=list)
    curve: list[CurvePoint] | None = None
    auc: float | None = None


class FDEvaluator:
    """Fault-diagnosis scoring of one dataset's embeddings with one shared k-NN index.

    Args:
        embeddings: ``[N, D]`` one embedding per file.
        files: ``[N]`` file ids (unique).
        labels: ``[N]`` class names.
        classes: class names in the official order (decides vote ties).
        groups: ``[N]`` sealing unit of each file (None for official-split datasets).
        k: neighbours.
        where: dataset name for messages.
        device: torch device for the similarity product.
    """

    def __init__(
        self,
        embeddings: np.ndarray,
        files: Sequence[str],
        labels: Sequence[str],
        classes: Sequence[str],
        groups: Sequence[str] | None = None,
        *,
        k: int = DEFAULT_K,
        where: str = "dataset",
        device: str = "cpu",
    ) -> None:
        self.classes = list(classes)
        self.k = k
        self.where = where
        index = {c: i for i, c in enumerate(self.classes)}
        unknown = sorted({str(lab) for lab in labels} - set(index))
        if unknown:
            raise RMISError(f"{where}: labels {unknown} are not among the classes {self.classes}")
        self.files = [str(f) for f in files]
        # Items are indexed in file-id order so that neighbour ties break by file id.
        self.order = np.argsort(np.asarray(self.files, dtype=str), kind="stable")
        self.files_sorted = [self.files[i] for i in self.order]
        self.y = np.array([index[str(labels[i])] for i in self.order], dtype=np.int64)
        emb = np.asarray(embeddings)[self.order]
        self.table: GroupTable | None = None
        max_group = 1
        if groups is not None:
            self.table = group_table(
                self.files_sorted,
                [str(groups[i]) for i in self.order],
                self.y,
                len(self.classes),
                where=where,
            )
            max_group = int(np.bincount(self.table.of_row).max())
        started = time.perf_counter()
        self.knn = CosineKNN(emb, max_group_size=max_group, ids=self.files_sorted, device=device)
        log.info(
            "%s: k-NN index of %d items (D=%d) built in %.2f s",
            where,
            self.knn.n,
            self.knn.dim,
            time.perf_counter() - started,
        )

    def predict(self, train_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Predicted class of every non-train item.

        The vote uses the similarities :meth:`CosineKNN.query` returns (float32-accurate where
        the neighbour set was certified without float64); a vote whose winning margin is within
        their error bound is recomputed from float64 similarities, summed in (similarity,
        file id) order, so ties go to the lowest class index exactly.

        Args:
            train_mask: ``[N]`` bool over items in file-id order (``self.files_sorted``).

        Returns:
            ``(test_idx, pred)``: item indices (file-id order) and predicted class indices.
        """
        n_classes = len(self.classes)
        test_idx = np.flatnonzero(~train_mask)
        idx, sim = self.knn.query(train_mask, test_idx, self.k)
        labels = self.y[idx]
        logits = vote_logits(labels, sim, n_classes)
        pred = np.argmax(logits, axis=1)
        if n_classes > 1:
            top2 = np.partition(logits, n_classes - 2, axis=1)[:, -2:]
            unsure = np.flatnonzero(top2[:, 1] - top2[:, 0] <= self.k * self.knn.tol)
            if unsure.size:
                exact = self.knn.exact_similarities(test_idx[unsure], idx[unsure])
                order = np.lexsort((idx[unsure], -exact), axis=1)
                pred[unsure] = knn_predict(
                    np.take_along_axis(labels[unsure], order, 1),
                    np.take_along_axis(exact, order, 1),
                    n_classes,
                )
        return test_idx, pred

    def _evaluate(
        self, train_mask: np.ndarray
    ) -> tuple[float, dict[str, float], np.ndarray, np.ndarray]:
        """(macro accuracy, per-class accuracy, test item indices, predicted classes)."""
        test_idx, pred = self.predict(train_mask)
        n_classes = len(self.classes)
        acc = macro_accuracy(self.y[test_idx], pred, n_classes)
        per = per_class_accuracy(self.y[test_idx], pred, n_classes)
        per_class = {c: float(per[i]) for i, c in enumerate(self.classes) if not np.isnan(per[i])}
        return acc, per_class, test_idx, pred

    def run(self, run: int, test_size: float, official_rounding: bool = False) -> FDRun:
        """One sealed run (official seed sequence); ``official_rounding`` rounds its figures
        to 2 decimals as the official harness records them."""
        if self.table is None:
            raise RMISError(f"{self.where}: sealed runs need a group for every file")
        split = sealed_split(self.table, test_size, run, self.classes, where=self.where)
        train_mask = np.isin(self.table.of_row, split.train_groups)
        acc, per_class, _, _ = self._evaluate(train_mask)
        if official_rounding:
            acc = round_official(acc)
            per_class = {c: round_official(v) for c, v in per_class.items()}
        test_groups = sorted(self.table.names[g] for g in split.test_groups)
        return FDRun(
            run=run, seed=split.seed, macro_acc=acc, test_groups=test_groups, per_class=per_class
        )

    def sealed(
        self, test_size: float = 0.5, runs: int = DEFAULT_RUNS, official_rounding: bool = False
    ) -> FDResult:
        """Mean and sample std (ddof 1; None for one run) of ``runs`` sealed runs.

        With ``official_rounding`` each run's figures are rounded to 2 decimals first and the
        mean and std are those of the rounded runs, as the official harness computes them.
        """
        if runs < 1:
            raise RMISError(f"{self.where}: need at least one run, got {runs}")
        started = time.perf_counter()
        results = [self.run(r, test_size, official_rounding) for r in range(runs)]
        log.info(
            "%s: %d sealed runs (test size %s) queried in %.2f s",
            self.where,
            runs,
            test_size,
            time.perf_counter() - started,
        )
        accs = np.array([r.macro_acc for r in results])
        std = float(np.std(accs, ddof=1)) if runs > 1 else None
        return FDResult(score=float(accs.mean()), mean=float(accs.mean()), std=std, runs=results)

    def official(self, is_train: Sequence[bool], official_rounding: bool = False) -> FDResult:
        """The single run on the official split (``is_train[i]`` for the i-th input file),
        reported in ``runs`` with its per-class accuracies and predictions; std None."""
        mask = np.asarray(is_train, dtype=bool)[self.order]
        check_official_split([self.classes[c] for c in self.y], mask, where=self.where)
        acc, per_class, test_idx, pred = self._evaluate(mask)
        if official_rounding:
            acc = round_official(acc)
            per_class = {c: round_official(v) for c, v in per_class.items()}
        predictions = {
            self.files_sorted[i]: self.classes[p] for i, p in zip(test_idx, pred, strict=True)
        }
        run = FDRun(
            run=0,
            seed=None,
            macro_acc=acc,
            test_groups=None,
            per_class=per_class,
            predictions=predictions,
        )
        return FDResult(score=acc, mean=acc, std=None, runs=[run])

    def curve(
        self, runs: int = DEFAULT_RUNS, test_sizes: Sequence[float] = CURVE_TEST_SIZES
    ) -> tuple[list[CurvePoint], float]:
        """Multi-split-ratio curve and its area (percent).

        Every test size is checked up front; one at which some class cannot be on both sides
        raises :class:`SplitError` naming it before any run is computed.
        """
        if self.table is None:
            raise RMISError(f"{self.where}: the split curve needs a group for every file")
        check_curve(self.table, self.classes, where=self.where, test_sizes=test_sizes)
        started = time.perf_counter()
        points = []
        for t in test_sizes:
            accs = [self.run(r, t).macro_acc for r in range(runs)]
            points.append(CurvePoint(test_size=float(t), mean=float(np.mean(accs)), runs=accs))
        log.info(
            "%s: split curve (%d runs) queried in %.2f s",
            self.where,
            runs * len(test_sizes),
            time.perf_counter() - started,
        )
        return points, curve_area(points, len(self.classes))


def check_curve(
    table: GroupTable,
    classes: Sequence[str],
    *,
    where: str = "dataset",
    test_sizes: Sequence[float] = CURVE_TEST_SIZES,
) -> None:
    """Raise :class:`SplitError` naming the first test size of the multi-split curve at which
    some class cannot be on both sides of a sealed split."""
    for t in test_sizes:
        bad = unplaceable_classes(table, t, classes)
        if bad:
            raise SplitError(
                f"{where}: the split curve is impossible at test size {t}: classes "
                f"{bad} cannot be on both sides with {table.n_groups} groups"
            )


def check_official_split(
    labels: Sequence[str], is_train: Sequence[bool], *, where: str = "dataset"
) -> None:
    """An official split must have train and test files and every class on both sides.

    A class without test files has no accuracy (the official harness divides by zero); one
    without train files can never be predicted.

    Raises:
        RMISError: naming the side that is empty or the classes missing from a side.
    """
    labels_a = np.asarray([str(x) for x in labels], dtype=object)
    mask = np.asarray(is_train, dtype=bool)
    for side, m in (("train", mask), ("test", ~mask)):
        if not m.any():
            raise RMISError(
                f"{where}: the official split has no {side} files; mark some files split={side}"
            )
    present = set(labels_a.tolist())
    for side, m in (("train", mask), ("test", ~mask)):
        missing = sorted(present - set(labels_a[m].tolist()))
        if missing:
            raise RMISError(
                f"{where}: classes {missing} have no {side} files in the official split; every "
                f"class needs train and test files (fix the split column)"
            )


def curve_area(points: Sequence[CurvePoint], n_classes: int) -> float:
    """Area under the accuracy vs train-ratio curve, percent (PROTOCOL.md section 3).

    x = train ratio (1 - test size), with anchors (0, 100 / C) and (1, 100); y = accuracy / 100;
    area = ``scipy.integrate.simpson`` over [0, 1], times 100.
    """
    from scipy.integrate import simpson  # imported here: scoring without a curve skips scipy

    pts = sorted(points, key=lambda p: -p.test_size)
    x = np.array([0.0] + [1.0 - p.test_size for p in pts] + [1.0])
    y = np.array([100.0 / n_classes] + [p.mean for p in pts] + [100.0]) / 100.0
    return float(simpson(y=y, x=x) * 100.0)
