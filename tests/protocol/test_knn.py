"""Exact cosine k-NN against brute-force float64 search and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from rmis.errors import RMISError
from rmis.protocol.knn import CosineKNN


def brute_force(x: np.ndarray, train: np.ndarray, test: np.ndarray, k: int):
    """Reference: float64 cosine, full sort by (-similarity, index)."""
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    tr = np.flatnonzero(train)
    sims = xn[test] @ xn[tr].T
    idx = np.empty((len(test), k), dtype=np.int64)
    val = np.empty((len(test), k))
    for r in range(len(test)):
        order = np.lexsort((tr, -sims[r]))[:k]
        idx[r], val[r] = tr[order], sims[r, order]
    return idx, val


def clustered(n=600, d=24, n_groups=60, seed=0):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, n_groups, n)
    centres = rng.normal(size=(n_groups, d))
    return centres[g] + 0.7 * rng.normal(size=(n, d)), g


# 4 * 50**2 bytes: blocks of 50 items (12 blocks, the last of 50; fewer than M = 4 * 18 + 96
# per block, so lists start below full); 4 * 128**2: 5 blocks, the last of 88
@pytest.mark.parametrize("block_bytes", [None, 4 * 50**2, 4 * 128**2])
@pytest.mark.parametrize("candidates", [None, 8, 600])
@pytest.mark.parametrize("train_frac", [0.05, 0.5, 0.95])
def test_matches_brute_force(candidates, train_frac, block_bytes) -> None:
    x, g = clustered()
    opts = {} if block_bytes is None else {"block_bytes": block_bytes}
    knn = CosineKNN(x, candidates=candidates, max_group_size=int(np.bincount(g).max()), **opts)
    rng = np.random.default_rng(1)
    for _ in range(3):
        train_groups = rng.random(g.max() + 1) < train_frac
        train = train_groups[g]
        if train.sum() < 5:
            continue
        test = np.flatnonzero(~train)
        idx, sim = knn.query(train, test, k=5)
        ref_idx, ref_sim = brute_force(x, train, test, 5)
        # the neighbour set is exact; similarities are float32-accurate at least
        np.testing.assert_array_equal(np.sort(idx, 1), np.sort(ref_idx, 1))
        np.testing.assert_allclose(np.sort(sim, 1), np.sort(ref_sim, 1), rtol=0, atol=knn.tol)
        exact = knn.exact_similarities(test, idx)
        np.testing.assert_allclose(np.sort(exact, 1), np.sort(ref_sim, 1), rtol=0, atol=1e-12)


@pytest.mark.parametrize("block_bytes", [4 * 37**2, 4 * 200**2, 4 * 600**2])
def test_candidate_lists_are_the_top_m(block_bytes) -> None:
    """Every block layout lists, per item, its M most similar items: each listed item is within
    the float32 error of the M-th float64 similarity or above, each unlisted one within it or
    below, and listed values are float32-accurate and sorted descending."""
    x, g = clustered(seed=5)
    knn = CosineKNN(x, max_group_size=int(np.bincount(g).max()), block_bytes=block_bytes)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = xn @ xn.T
    m = knn.m
    mth = -np.sort(-sims, axis=1)[:, m - 1]
    listed = np.zeros_like(sims, dtype=bool)
    np.put_along_axis(listed, knn.cand_idx.numpy(), True, axis=1)
    assert (listed.sum(1) == m).all()  # no item twice, no padding left
    assert (sims[listed].reshape(len(x), m).min(1) >= mth - knn.tol).all()
    assert (np.where(listed, -np.inf, sims).max(1) <= mth + knn.tol).all()
    ref = np.take_along_axis(sims, knn.cand_idx.numpy(), 1)
    np.testing.assert_allclose(knn.cand_sim.numpy(), ref, rtol=0, atol=knn.tol / 2)
    assert (np.diff(knn.cand_sim.numpy(), axis=1) <= 0).all()


def test_block_size_does_not_change_answers() -> None:
    x, g = clustered(seed=3)
    train = g % 2 == 0
    test = np.flatnonzero(~train)
    a = CosineKNN(x).query(train, test)
    b = CosineKNN(x, block_bytes=4096).query(train, test)
    np.testing.assert_array_equal(np.sort(a[0], 1), np.sort(b[0], 1))
    np.testing.assert_allclose(np.sort(a[1], 1), np.sort(b[1], 1), rtol=0, atol=1e-6)


def test_same_as_sklearn_cosine_neighbours() -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(400, 16)).astype(np.float32)
    train = rng.random(400) < 0.5
    test = np.flatnonzero(~train)
    idx, sim = CosineKNN(x).query(train, test, k=5)
    dist, ref = NearestNeighbors(n_neighbors=5, metric="cosine").fit(x[train]).kneighbors(x[test])
    np.testing.assert_array_equal(np.sort(idx, 1), np.sort(np.flatnonzero(train)[ref], 1))
    np.testing.assert_allclose(np.sort(sim, 1), np.sort(1 - dist, 1), atol=1e-6)


def test_exact_ties_go_to_the_lowest_index() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(size=(10, 8))
    # items 20..29 duplicate items 0..9: every tie pair differs only by index
    x = np.concatenate([base, rng.normal(size=(10, 8)), base])
    train = np.zeros(30, dtype=bool)
    train[[0, 1, 2, 3, 4, 5, 20, 21, 22, 23, 24, 25]] = True
    test = np.flatnonzero(~train)
    for cand in (None, 30, 4):
        knn = CosineKNN(x, candidates=cand)
        idx, _ = knn.query(train, test, k=3)
        ref, _ = brute_force(x, train, test, 3)
        # of two tied items at the k-th place, the lower index is taken
        np.testing.assert_array_equal(np.sort(idx, 1), np.sort(ref, 1))
        # duplicates get bit-identical float64 similarities
        exact = knn.exact_similarities(test, np.stack([idx[:, 0], idx[:, 0] + 20], 1) % 30)
        dup = idx[:, 0] < 10
        np.testing.assert_array_equal(exact[dup, 0], exact[dup, 1])


def test_bad_embeddings_are_named() -> None:
    x = np.ones((4, 3))
    x[2] = 0
    with pytest.raises(RMISError, match="'c.wav' is all zeros"):
        CosineKNN(x, ids=["a.wav", "b.wav", "c.wav", "d.wav"])
    x[2] = np.nan
    with pytest.raises(RMISError, match="row 2 contains NaN"):
        CosineKNN(x)


def test_too_few_train_items() -> None:
    knn = CosineKNN(np.random.default_rng(0).normal(size=(6, 3)))
    train = np.array([1, 1, 1, 0, 0, 0], dtype=bool)
    with pytest.raises(RMISError, match="at least 5 train items"):
        knn.query(train, np.array([3, 4, 5]), k=5)


def test_near_ties_below_float32_resolution_follow_float64() -> None:
    # the query is e1; train item j sits at angle theta_j from it, with similarities
    # cos(theta_j) that differ by ~1e-10 (invisible in float32, ordered in float64)
    eps = np.array([5e-10, 1e-10, 4e-10, 2e-10, 3e-10, 0.0, 6e-10])
    cosines = 0.9 + eps
    theta = np.arccos(cosines)
    train_vecs = np.stack([np.cos(theta), np.sin(theta), np.zeros_like(theta)], 1)
    x = np.concatenate([[[1.0, 0.0, 0.0]], train_vecs])
    train = np.ones(len(x), dtype=bool)
    train[0] = False
    idx, sim = CosineKNN(x, candidates=3).query(train, np.array([0]), k=5)
    expected = 1 + np.argsort(-eps, kind="stable")[:5]
    np.testing.assert_array_equal(idx[0], expected)
    assert np.all(np.diff(sim[0]) < 0)
