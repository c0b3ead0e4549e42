"""Fault-diagnosis scoring: hand-computed cases, scikit-learn references, properties."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy.integrate import simpson
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import train_test_split
from sklearn.neighbors import NearestNeighbors

from rmis.errors import SplitError
from rmis.protocol.fd import (
    CURVE_TEST_SIZES,
    CurvePoint,
    FDEvaluator,
    curve_area,
    knn_predict,
    macro_accuracy,
)


def test_knn_vote_by_hand() -> None:
    # neighbours' classes and similarities; logits by hand:
    # row 0: c0 = 0.9 + 0.1 = 1.0, c1 = 0.8 + 0.7 = 1.5, c2 = 0.6 -> 1
    # row 1: c0 = 0.5 + 0.5 = 1.0, c2 = 0.6 + 0.4 = 1.0 -> tie -> lowest class index 0
    # row 2: c2 = 0.9, c1 = 0.8 + 0.1 = 0.9, ... exact tie between 1 and 2 -> 1
    labels = np.array([[0, 1, 1, 2, 0], [0, 2, 0, 2, 1], [2, 1, 0, 0, 1]])
    sims = np.array(
        [
            [0.9, 0.8, 0.7, 0.6, 0.1],
            [0.5, 0.6, 0.5, 0.4, 0.25],
            [0.9, 0.8, 0.05, 0.05, 0.1],
        ]
    )
    np.testing.assert_array_equal(knn_predict(labels, sims, 3), [1, 0, 1])


def test_macro_accuracy_is_balanced_accuracy() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 200)
    p = np.where(rng.random(200) < 0.6, y, rng.integers(0, 5, 200))
    assert macro_accuracy(y, p, 6) == pytest.approx(100 * balanced_accuracy_score(y, p))
    # by hand: class 0 recall 1/2, class 1 recall 1/1 (class 2 absent from y_true) -> 75 %
    assert macro_accuracy(np.array([0, 0, 1]), np.array([0, 2, 1]), 3) == pytest.approx(75.0)


def dataset(n_classes=4, groups_per_class=6, files_per_group=5, d=16, seed=0, noise=1.5):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, d))
    files, groups, labels, x = [], [], [], []
    for c in range(n_classes):
        for g in range(groups_per_class):
            offset = 0.8 * rng.normal(size=d)
            for i in range(files_per_group):
                files.append(f"{c}/rec{g}_{i}.wav")
                groups.append(f"{c}/rec{g}")
                labels.append(f"class{c}")
                x.append(centres[c] + offset + noise * rng.normal(size=d))
    perm = rng.permutation(len(files))
    return (
        np.array(x)[perm],
        [files[i] for i in perm],
        [groups[i] for i in perm],
        [labels[i] for i in perm],
    )


def official_style(x, files, groups, labels, classes, t, runs=10):
    """The official harness's computation, written out with scikit-learn."""
    order = np.argsort(files, kind="stable")
    x, groups = x[order], np.asarray(groups)[order]
    y = np.array([classes.index(labels[i]) for i in order])
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    glist = list(dict.fromkeys(groups))
    accs = []
    for run in range(runs):
        j = 0
        while True:
            tr, te = train_test_split(glist, test_size=t, random_state=111 + run + 100 * j)
            trm = np.isin(groups, tr)
            if set(y[trm]) == set(y[~trm]) == set(y):
                break
            j += 1
        dist, ix = (
            NearestNeighbors(n_neighbors=5, metric="cosine").fit(xn[trm]).kneighbors(xn[~trm])
        )
        onehot = np.eye(len(classes))[y[trm][ix]]  # [n, k, C]
        logits = np.einsum("nk,nkc->nc", 1 - dist, onehot)
        accs.append(100 * balanced_accuracy_score(y[~trm], logits.argmax(1)))
    return accs


@pytest.mark.parametrize("t", [0.2, 0.5])
def test_sealed_score_matches_official_computation(t) -> None:
    x, files, groups, labels = dataset()
    classes = [f"class{c}" for c in range(4)]
    res = FDEvaluator(x, files, labels, classes, groups).sealed(test_size=t, runs=10)
    ref = official_style(x, files, groups, labels, classes, t)
    np.testing.assert_allclose([r.macro_acc for r in res.runs], ref, atol=1e-9)
    assert res.score == pytest.approx(np.mean(ref))
    assert res.std == pytest.approx(np.std(ref, ddof=1))
    assert all(r.test_groups == sorted(r.test_groups) for r in res.runs)


def test_scores_invariant_to_row_order() -> None:
    x, files, groups, labels = dataset(seed=2)
    classes = [f"class{c}" for c in range(4)]
    a = FDEvaluator(x, files, labels, classes, groups).sealed()
    perm = np.random.default_rng(9).permutation(len(files))
    b = FDEvaluator(
        x[perm],
        [files[i] for i in perm],
        [labels[i] for i in perm],
        classes,
        [groups[i] for i in perm],
    ).sealed()
    assert [r.macro_acc for r in a.runs] == [r.macro_acc for r in b.runs]
    assert [r.test_groups for r in a.runs] == [r.test_groups for r in b.runs]


def test_official_split_by_hand() -> None:
    # 1-D directions on the circle; k = 1 for a hand check
    ang = np.array([0.0, 0.1, 1.5, 1.6, 0.05, 1.2, 0.9])
    x = np.stack([np.cos(ang), np.sin(ang)], 1)
    labels = ["a", "a", "b", "b", "a", "a", "b"]
    split = [True, True, True, True, False, False, False]
    ev = FDEvaluator(x, [f"f{i}" for i in range(7)], labels, ["a", "b"], k=1)
    # f4 (0.05) -> f0/f1 'a' correct; f5 (1.2) -> f2 (1.5) 'b' wrong; f6 (0.9) -> f2 'b'?
    # |0.9 - 0.1| = 0.8 > |1.5 - 0.9| = 0.6 -> 'b' correct. recall a = 1/2, b = 1/1 -> 75 %
    res = ev.official(split)
    assert res.score == pytest.approx(75.0)
    # the single run is reported like a sealed run, with per-class accuracies and predictions
    assert res.std is None and len(res.runs) == 1
    run = res.runs[0]
    assert (run.run, run.seed, run.test_groups) == (0, None, None)
    assert run.macro_acc == res.score and run.per_class == {"a": 50.0, "b": 100.0}
    assert run.predictions == {"f4": "a", "f5": "b", "f6": "b"}


def test_official_split_official_rounding() -> None:
    # k = 1 on the circle: train a at 0.0, 0.1, b at 1.5, 1.6; test a at 0.05, 0.02 (right)
    # and 1.4 (nearest 1.5: wrong); b at 1.55 (right). Recall a = 2/3, b = 1 -> 83.333...
    ang = np.array([0.0, 0.1, 1.5, 1.6, 0.05, 0.02, 1.4, 1.55])
    x = np.stack([np.cos(ang), np.sin(ang)], 1)
    labels = ["a", "a", "b", "b", "a", "a", "a", "b"]
    split = [True] * 4 + [False] * 4
    ev = FDEvaluator(x, [f"f{i}" for i in range(8)], labels, ["a", "b"], k=1)
    plain = ev.official(split)
    assert plain.score == pytest.approx(250 / 3, rel=1e-12)
    assert plain.runs[0].per_class == pytest.approx({"a": 200 / 3, "b": 100.0}, rel=1e-12)
    assert plain.runs[0].predictions == {"f4": "a", "f5": "a", "f6": "b", "f7": "b"}
    rounded = ev.official(split, official_rounding=True)
    assert rounded.score == 83.33 and rounded.runs[0].per_class == {"a": 66.67, "b": 100.0}


@pytest.mark.parametrize(
    ("split", "message"),
    [
        ([True] * 4 + [False] * 3 + [True], r"classes \['b'\] have no test files"),
        ([True, True] + [False] * 6, r"classes \['b'\] have no train files"),
        ([True] * 8, "the official split has no test files"),
    ],
)
def test_official_split_needs_every_class_on_both_sides(split, message) -> None:
    from rmis.errors import RMISError

    x = np.random.default_rng(0).normal(size=(8, 3))
    labels = ["a", "a", "b", "b", "a", "a", "a", "b"]
    ev = FDEvaluator(x, [f"f{i}" for i in range(8)], labels, ["a", "b"], where="toy")
    with pytest.raises(RMISError, match="toy: " + message):
        ev.official(split)


def traitor_dataset():
    """3 classes x 2 groups x 3 files on orthogonal axes; every class-a group holds one file
    pointing at class b's axis. A sealed split at 0.5 puts one group of each class on each
    side, so every run has recall a = 2/3, b = c = 1: macro accuracy 88.888... by hand."""
    rng = np.random.default_rng(7)
    e = np.eye(3)
    x, files, groups, labels = [], [], [], []
    for c, axis in (("a", 0), ("b", 1), ("c", 2)):
        for g in range(2):
            for i in range(3):
                v = e[1] + 0.01 * e[0] if c == "a" and i == 2 else e[axis]
                x.append(v + 1e-4 * rng.normal(size=3))
                files.append(f"{c}{g}_{i}")
                groups.append(f"{c}{g}")
                labels.append(c)
    return np.array(x), files, groups, labels


def test_sealed_official_rounding_rounds_each_run_before_the_mean() -> None:
    x, files, groups, labels = traitor_dataset()
    ev = FDEvaluator(x, files, labels, ["a", "b", "c"], groups)
    plain = ev.sealed(0.5, runs=3)
    assert [r.macro_acc for r in plain.runs] == pytest.approx([800 / 9] * 3, rel=1e-12)
    assert plain.score == pytest.approx(800 / 9, rel=1e-12)  # 88.888...
    assert plain.runs[0].per_class == pytest.approx({"a": 200 / 3, "b": 100.0, "c": 100.0})
    assert plain.runs[0].predictions is None  # sealed runs do not list predictions
    rounded = ev.sealed(0.5, runs=3, official_rounding=True)
    assert [r.macro_acc for r in rounded.runs] == [88.89] * 3
    assert rounded.runs[0].per_class == {"a": 66.67, "b": 100.0, "c": 100.0}
    assert rounded.score == pytest.approx(88.89, abs=1e-12)
    assert rounded.std == pytest.approx(0.0, abs=1e-12)


def test_one_run_has_no_std() -> None:
    x, files, groups, labels = traitor_dataset()
    ev = FDEvaluator(x, files, labels, ["a", "b", "c"], groups)
    res = ev.sealed(0.5, runs=1)
    assert res.std is None and len(res.runs) == 1
    assert ev.sealed(0.5, runs=2).std == pytest.approx(0.0, abs=1e-12)


def test_curve_area_closed_form() -> None:
    # accuracy linear in the train ratio from 100/C to 100: Simpson is exact
    c = 4
    pts = [CurvePoint(t, 100 / c + (100 - 100 / c) * (1 - t), []) for t in CURVE_TEST_SIZES]
    assert curve_area(pts, c) == pytest.approx((100 / c + 100) / 2, abs=1e-9)
    # a concave curve against scipy on the same 21 points
    pts = [CurvePoint(t, 100 * np.sqrt(1 - t), []) for t in CURVE_TEST_SIZES]
    x = np.array([0.0] + [1 - t for t in reversed(CURVE_TEST_SIZES)] + [1.0])
    y = np.array([25.0] + [100 * np.sqrt(1 - t) for t in reversed(CURVE_TEST_SIZES)] + [100])
    assert curve_area(pts, 4) == pytest.approx(100 * simpson(y=y / 100, x=x))


def test_curve_runs_and_is_consistent_with_fixed_split() -> None:
    # 50 groups: at test size 0.05 (3 test groups) and 0.95 (2 train groups) both classes fit
    x, files, groups, labels = dataset(n_classes=2, groups_per_class=25, files_per_group=3)
    classes = ["class0", "class1"]
    ev = FDEvaluator(x, files, labels, classes, groups)
    points, area = ev.curve(runs=3)
    assert [p.test_size for p in points] == list(CURVE_TEST_SIZES)
    half = next(p for p in points if p.test_size == 0.5)
    assert half.mean == pytest.approx(ev.sealed(0.5, runs=3).score)
    assert 50 < area <= 100


def test_impossible_curve_fails_fast() -> None:
    x, files, groups, labels = dataset(groups_per_class=3)
    ev = FDEvaluator(x, files, labels, [f"class{c}" for c in range(4)], groups, where="toy")
    start = time.perf_counter()
    with pytest.raises(SplitError, match="toy: the split curve is impossible at test size 0.05"):
        ev.curve()
    assert time.perf_counter() - start < 2


def reference_predict(x, y, train, k, n_classes):
    """Float64 brute force: top k by (-similarity, index), vote summed in that order.

    Similarities are element-wise products summed per pair (not a matrix product, whose
    rounding differs from column to column), so duplicated vectors tie exactly."""
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    tr, te = np.flatnonzero(train), np.flatnonzero(~train)
    pred = []
    for r in range(len(te)):
        sims = (xn[te[r]] * xn[tr]).sum(1)
        order = np.lexsort((tr, -sims))[:k]
        logits = np.zeros(n_classes)
        for j in order:
            logits[y[tr[j]]] += sims[j]
        pred.append(int(np.argmax(logits)))
    return te, np.array(pred)


def test_vote_ties_from_duplicated_signals_go_to_lowest_class() -> None:
    # hand case: the test item's two neighbours are the same vector in classes 2 and 1
    x = np.array([[1.0, 0.2], [1.0, 0.2], [0.0, 1.0], [1.0, 0.21]])
    files = ["a", "b", "c", "d"]
    ev = FDEvaluator(x, files, ["c2", "c1", "c0", "c0"], ["c0", "c1", "c2"], k=2)
    _, pred = ev.predict(np.array([True, True, True, False]))
    assert pred.tolist() == [1]  # predicted c1, truth c0
    assert macro_accuracy(np.array([0]), pred, 3) == 0.0


def test_predictions_equal_float64_reference_with_many_exact_ties() -> None:
    # few distinct vectors, repeated across classes: neighbour and vote ties everywhere
    rng = np.random.default_rng(4)
    base = rng.normal(size=(12, 6))
    pick = rng.integers(0, 12, 400)
    # exact duplicates, and near-duplicates whose similarities differ by ~1e-10: below float32
    # resolution, far above float64 rounding
    x = base[pick] + (rng.random((400, 1)) < 0.3) * 1e-5 * rng.normal(size=(400, 6))
    y = rng.integers(0, 4, 400)
    files = [f"f{i:04d}" for i in range(400)]
    ev = FDEvaluator(x, files, [f"c{v}" for v in y], ["c0", "c1", "c2", "c3"])
    for seed in range(3):
        train = np.random.default_rng(seed).random(400) < 0.5
        te, pred = ev.predict(train)
        ref_te, ref = reference_predict(x, y, train, 5, 4)
        np.testing.assert_array_equal(te, ref_te)
        np.testing.assert_array_equal(pred, ref)
