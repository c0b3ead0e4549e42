"""Sealed group splits of the RMIS fault-diagnosis protocol (PROTOCOL.md section 3).

The sealing unit ("group") of a file is e.g. one channel of one recording: all files of a group go
to the same side. The official harness splits the list of groups with
``sklearn.model_selection.train_test_split(groups, test_size=t, random_state=111 + r + 100 * j)``
and retries with the next ``j`` until every class occurs on both sides. This module reproduces that
split bit for bit (numpy's legacy ``RandomState`` stream, which numpy keeps stable across versions
and machines), but

* the list of groups is ordered by first appearance when rows are sorted by file id, so the split
  does not depend on the order of the input rows;
* an impossible request is detected up front and retries are bounded, with an error naming the
  classes that cannot be placed (the official harness loops forever).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rmis.errors import RMISError, SplitError

#: Seed of run 0; run ``r``, retry ``j`` uses ``BASE_SEED + r + RETRY_STRIDE * j``.
BASE_SEED = 111
RETRY_STRIDE = 100
#: Retries before a (possible but unlucky) split is given up.
MAX_TRIES = 10_000


def split_sizes(n_groups: int, test_size: float) -> tuple[int, int]:
    """Number of (train, test) groups exactly as scikit-learn's ``train_test_split`` computes it.

    ``n_test = ceil(test_size * n_groups)`` in floating point (so 0.55 x 100 gives 56) and
    ``n_train = n_groups - n_test``.
    """
    if not 0.0 < test_size < 1.0:
        raise RMISError(f"test size must lie strictly between 0 and 1, got {test_size}")
    n_test = math.ceil(test_size * n_groups)
    n_train = n_groups - n_test
    if n_train <= 0 or n_test <= 0:
        raise SplitError(
            f"test size {test_size} of {n_groups} groups leaves {n_train} train and {n_test} test "
            "groups; use a test size that leaves both sides non-empty"
        )
    return n_train, n_test


def shuffle_split(n_groups: int, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train, test)`` indices of ``train_test_split(range(n_groups), test_size, seed)``.

    The order of each returned array is the order scikit-learn returns (a random permutation).
    """
    n_train, n_test = split_sizes(n_groups, test_size)
    permutation = np.random.RandomState(seed).permutation(n_groups)
    return permutation[n_test : n_test + n_train], permutation[:n_test]


@dataclass(frozen=True)
class GroupTable:
    """Rows mapped to groups, with groups in first-appearance order of rows sorted by file id.

    Attributes:
        names: ``[G]`` group names in canonical order.
        of_row: ``[N]`` group index of every input row.
        label: ``[G]`` class index of every group (a group has exactly one class).
    """

    names: list[str]
    of_row: np.ndarray
    label: np.ndarray

    @property
    def n_groups(self) -> int:
        return len(self.names)


def group_table(
    files: Sequence[str],
    groups: Sequence[str],
    labels: np.ndarray,
    n_classes: int,
    *,
    where: str | None = None,
) -> GroupTable:
    """Build the canonical group order.

    Args:
        files: ``[N]`` file ids (unique).
        groups: ``[N]`` group name of each file.
        labels: ``[N]`` class index of each file (``0 <= label < n_classes``).
        n_classes: number of classes.
        where: dataset name that prefixes error messages.

    Raises:
        RMISError: duplicate file ids, or a group whose files carry different labels.
    """
    at = f"{where}: " if where else ""
    files = np.asarray(files, dtype=object)
    groups_arr = np.asarray(groups, dtype=object)
    labels = np.asarray(labels, dtype=np.int64)
    if not (len(files) == len(groups_arr) == len(labels)):
        raise RMISError("files, groups and labels must have the same length")
    if np.any((labels < 0) | (labels >= n_classes)):
        raise RMISError(f"class indices must lie in [0, {n_classes})")
    order = np.argsort(files.astype(str), kind="stable")
    sorted_files = files[order].astype(str)
    if len(sorted_files) > 1 and np.any(sorted_files[1:] == sorted_files[:-1]):
        dup = str(sorted_files[1:][sorted_files[1:] == sorted_files[:-1]][0])
        raise RMISError(f"{at}file id {dup!r} occurs more than once")
    names: list[str] = []
    index: dict[str, int] = {}
    of_row = np.empty(len(files), dtype=np.int64)
    for row in order:
        g = str(groups_arr[row])
        gi = index.get(g)
        if gi is None:
            gi = index[g] = len(names)
            names.append(g)
        of_row[row] = gi
    group_label = np.full(len(names), -1, dtype=np.int64)
    group_label[of_row] = labels
    mismatch = np.flatnonzero(labels != group_label[of_row])
    if mismatch.size:
        g = of_row[mismatch[0]]
        found = sorted({int(x) for x in labels[of_row == g]})
        raise RMISError(
            f"{at}group {names[g]!r} holds files of several classes (class indices {found}); a "
            "sealing unit must have one class: check the group column"
        )
    return GroupTable(names=names, of_row=of_row, label=group_label)


def unplaceable_classes(
    table: GroupTable, test_size: float, class_names: Sequence[str]
) -> list[str]:
    """Classes that can never be on both sides of a sealed split at ``test_size``.

    A split with every class on both sides exists iff every class has at least two groups and
    each side holds at least as many groups as there are classes. Returns the offending class
    names (all classes when the sides are too small), empty when a split exists.
    """
    counts = np.bincount(table.label, minlength=len(class_names))
    present = np.flatnonzero(counts > 0)
    bad = [class_names[c] for c in present if counts[c] < 2]
    if bad:
        return bad
    n_train, n_test = split_sizes(table.n_groups, test_size)
    if min(n_train, n_test) < len(present):
        return [class_names[c] for c in present]
    return []


@dataclass(frozen=True)
class Split:
    """One sealed split: group indices on each side and the seed that produced it."""

    train_groups: np.ndarray
    test_groups: np.ndarray
    seed: int
    tries: int


def sealed_split(
    table: GroupTable,
    test_size: float,
    run: int,
    class_names: Sequence[str],
    *,
    where: str = "dataset",
    max_tries: int = MAX_TRIES,
) -> Split:
    """The official sealed split of run ``run`` (seed ``111 + run + 100 * j``, first good ``j``).

    Args:
        table: canonical groups (:func:`group_table`).
        test_size: fraction of groups in the test set, in (0, 1).
        run: run index, 0-based.
        class_names: names of the classes (for messages).
        where: name of the dataset (for messages).
        max_tries: retries before giving up.

    Raises:
        SplitError: some class cannot be placed on both sides (detected up front), or no
            acceptable split was found within ``max_tries`` retries.
    """
    try:
        bad = unplaceable_classes(table, test_size, class_names)
    except RMISError as exc:  # a test size that leaves a side empty
        raise type(exc)(f"{where}: {exc}") from None
    if bad:
        raise SplitError(
            f"{where}: at test size {test_size} with {table.n_groups} groups, classes {bad} cannot "
            "be on both sides of a sealed split (each class needs >= 2 groups and each side at "
            "least one group per class); use another test size or add recordings"
        )
    present = np.bincount(table.label, minlength=len(class_names)) > 0
    misses = np.zeros(len(class_names), dtype=np.int64)
    for j in range(max_tries):
        seed = BASE_SEED + run + RETRY_STRIDE * j
        train, test = shuffle_split(table.n_groups, test_size, seed)
        in_train = np.bincount(table.label[train], minlength=len(class_names)) > 0
        in_test = np.bincount(table.label[test], minlength=len(class_names)) > 0
        if np.array_equal(in_train, present) and np.array_equal(in_test, present):
            return Split(train_groups=train, test_groups=test, seed=seed, tries=j + 1)
        misses += present & ~(in_train & in_test)
    worst = [class_names[c] for c in np.argsort(-misses, kind="stable") if misses[c] > 0][:5]
    raise SplitError(
        f"{where}: no sealed split with every class on both sides in {max_tries} tries at test "
        f"size {test_size} (run {run}); classes most often missing a side: {worst}"
    )
