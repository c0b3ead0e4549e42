"""Sealed group splits against scikit-learn's train_test_split and the official retry rule."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from rmis.errors import RMISError, SplitError
from rmis.protocol.splits import group_table, sealed_split, shuffle_split, split_sizes


@pytest.mark.parametrize("n", [2, 3, 7, 20, 51, 100, 333])
@pytest.mark.parametrize("t", [0.05, 0.2, 0.5, 0.55, 0.95])
@pytest.mark.parametrize("seed", [111, 112, 211, 1234])
def test_shuffle_split_is_sklearn(n: int, t: float, seed: int) -> None:
    try:
        ref_train, ref_test = train_test_split(list(range(n)), test_size=t, random_state=seed)
    except ValueError:
        with pytest.raises(SplitError):
            shuffle_split(n, t, seed)
        return
    train, test = shuffle_split(n, t, seed)
    assert train.tolist() == ref_train
    assert test.tolist() == ref_test


def test_split_sizes_float_ceil() -> None:
    assert split_sizes(100, 0.55) == (44, 56)  # 0.55 * 100 = 55.000000000000007
    assert split_sizes(10, 0.5) == (5, 5)
    assert split_sizes(51, 0.2) == (40, 11)


def _official_reference(files, groups, labels, t, run):
    """The official harness's loop, written out with scikit-learn (unbounded retries)."""
    order = np.argsort(files, kind="stable")
    glist = list(dict.fromkeys(np.asarray(groups)[order]))
    lab_set = set(labels)
    incre = 0
    while True:
        tr, te = train_test_split(glist, test_size=t, random_state=111 + run + incre)
        tr_l = {lab for g, lab in zip(groups, labels) if g in set(tr)}
        te_l = {lab for g, lab in zip(groups, labels) if g in set(te)}
        if tr_l == lab_set and te_l == lab_set:
            return sorted(te), 111 + run + incre
        incre += 100


def _toy(n_classes=4, groups_per_class=(2, 3, 5, 8), files_per_group=3, seed=0):
    rng = np.random.default_rng(seed)
    files, groups, labels = [], [], []
    for c in range(n_classes):
        for g in range(groups_per_class[c]):
            for i in range(files_per_group):
                files.append(f"c{c}_rec{g:02d}_{i}.wav")
                groups.append(f"c{c}_rec{g:02d}")
                labels.append(c)
    perm = rng.permutation(len(files))  # input rows in arbitrary order
    return [files[i] for i in perm], [groups[i] for i in perm], np.array(labels)[perm]


@pytest.mark.parametrize("t", [0.2, 0.5, 0.7])
def test_sealed_split_matches_official_loop(t: float) -> None:
    files, groups, labels = _toy()
    names = [f"class{c}" for c in range(4)]
    table = group_table(files, groups, labels, 4)
    for run in range(10):
        split = sealed_split(table, t, run, names)
        ref_test, ref_seed = _official_reference(files, groups, list(labels), t, run)
        assert sorted(table.names[g] for g in split.test_groups) == ref_test
        assert split.seed == ref_seed
        # sealed: no group on both sides, all groups used, every class on both sides
        tr, te = set(split.train_groups.tolist()), set(split.test_groups.tolist())
        assert not tr & te and len(tr | te) == table.n_groups
        assert set(table.label[list(tr)]) == set(table.label[list(te)]) == {0, 1, 2, 3}


def test_split_independent_of_row_order() -> None:
    files, groups, labels = _toy(seed=1)
    a = group_table(files, groups, labels, 4)
    perm = np.random.default_rng(5).permutation(len(files))
    b = group_table([files[i] for i in perm], [groups[i] for i in perm], labels[perm], 4)
    assert a.names == b.names
    for run in range(5):
        sa, sb = sealed_split(a, 0.5, run, list("abcd")), sealed_split(b, 0.5, run, list("abcd"))
        assert sa.seed == sb.seed and sa.test_groups.tolist() == sb.test_groups.tolist()


def test_split_identical_across_processes() -> None:
    code = (
        "import json, numpy as np\n"
        "from rmis.protocol.splits import group_table, sealed_split\n"
        "files=[f'f{i:03d}' for i in range(60)]; groups=[f'g{i//3}' for i in range(60)]\n"
        "labels=np.array([(i//3)%4 for i in range(60)])\n"
        "t=group_table(files,groups,labels,4)\n"
        "print(json.dumps([sealed_split(t,0.5,r,list('abcd')).test_groups.tolist() "
        "for r in range(10)]))\n"
    )
    outs = [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True
            ).stdout
        )
        for _ in range(2)
    ]
    assert outs[0] == outs[1]
    # and equal to scikit-learn's own answer in this process
    files = [f"f{i:03d}" for i in range(60)]
    groups = [f"g{i // 3}" for i in range(60)]
    labels = [(i // 3) % 4 for i in range(60)]
    t = group_table(files, groups, np.array(labels), 4)
    for run, test in enumerate(outs[0]):
        ref, _ = _official_reference(files, groups, labels, 0.5, run)
        assert sorted(t.names[g] for g in test) == ref


def test_impossible_split_is_reported_fast() -> None:
    files, groups, labels = _toy(groups_per_class=(1, 3, 5, 8))
    table = group_table(files, groups, labels, 4)
    start = time.perf_counter()
    with pytest.raises(SplitError, match=r"umged.*\['tube'\]"):
        sealed_split(table, 0.5, 0, ["tube", "b", "c", "d"], where="umged")
    # 18 groups at test size 0.05 -> 1 test group < 4 classes: every class is named
    files, groups, labels = _toy()
    table = group_table(files, groups, labels, 4)
    with pytest.raises(SplitError, match="test size 0.05"):
        sealed_split(table, 0.05, 0, list("abcd"))
    assert time.perf_counter() - start < 2


def test_bounded_retries() -> None:
    # possible, but only 1 in many permutations places all 6 classes with 2 groups each at 0.5
    files = [f"f{i:02d}" for i in range(12)]
    groups = [f"g{i:02d}" for i in range(12)]
    labels = np.array([i // 2 for i in range(12)])
    table = group_table(files, groups, labels, 6)
    with pytest.raises(SplitError, match="no sealed split .* in 3 tries"):
        sealed_split(table, 0.5, 0, list("abcdef"), max_tries=3)
    split = sealed_split(table, 0.5, 0, list("abcdef"))
    assert split.tries > 3 and split.seed == 111 + 100 * (split.tries - 1)


def test_group_with_two_labels_is_an_error() -> None:
    with pytest.raises(RMISError, match="group 'g1' holds files of several classes"):
        group_table(["a", "b", "c"], ["g1", "g1", "g2"], np.array([0, 1, 1]), 2)


def test_duplicate_file_ids() -> None:
    with pytest.raises(RMISError, match="'a' occurs more than once"):
        group_table(["a", "a"], ["g1", "g2"], np.array([0, 1]), 2)
