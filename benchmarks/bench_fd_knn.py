"""FD scoring speed: rmis's shared k-NN index vs the per-run exact search of the official harness.

Synthetic but realistically clustered embeddings (N files x D dims, C classes, groups of G files
sealed together). Compares, in the same process, on the same splits:

* baseline: one scikit-learn ``NearestNeighbors(metric="cosine")`` fit + query per run and the
  official one-hot similarity vote (what the official harness does per run);
* rmis: one :class:`rmis.protocol.fd.FDEvaluator` (one similarity computation) for all runs.

Prints times, speed-ups, the number of differing predictions (must be 0) and peak memory.

    python benchmarks/bench_fd_knn.py                 # N=20000, D=1152: fixed split + full curve
    python benchmarks/bench_fd_knn.py --curve-sample 1  # baseline curve: 1 run per test size,
                                                        # time extrapolated to 10 (labelled)
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import numpy as np
from sklearn.neighbors import NearestNeighbors

from rmis.protocol.fd import CURVE_TEST_SIZES, FDEvaluator
from rmis.protocol.splits import sealed_split


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far, GB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def make_data(n: int, d: int, n_classes: int, group: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    n_groups = n // group
    g_label = rng.integers(0, n_classes, n_groups)
    centres = rng.normal(size=(n_classes, d)).astype(np.float32)
    offsets = (0.7 * rng.normal(size=(n_groups, d))).astype(np.float32)
    gid = np.repeat(np.arange(n_groups), group)
    x = centres[g_label[gid]] + offsets[gid] + 1.5 * rng.normal(size=(n, d)).astype(np.float32)
    files = [f"rec{g:05d}_{i:03d}.wav" for g in range(n_groups) for i in range(group)]
    groups = [f"rec{g:05d}" for g in gid]
    labels = [f"class{c}" for c in g_label[gid]]
    return x, files, groups, labels, [f"class{c}" for c in range(n_classes)]


def baseline_predict(xn: np.ndarray, y: np.ndarray, train: np.ndarray, n_classes: int, k: int):
    """Official per-run search: fit on train, query test, one-hot similarity vote."""
    nn = NearestNeighbors(n_neighbors=k, metric="cosine").fit(xn[train])
    dist, ix = nn.kneighbors(xn[~train])
    onehot = np.eye(n_classes, dtype=np.float32)[y[train][ix]]  # [n, k, C]
    logits = np.matmul((1 - dist)[:, None, :], onehot)[:, 0]
    return logits.argmax(-1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--dim", type=int, default=1152)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--group", type=int, default=10, help="files per sealed group")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--no-curve", action="store_true", help="skip the 190-run split curve")
    ap.add_argument(
        "--curve-sample",
        type=int,
        default=None,
        help="baseline curve: time only this many runs per test size and extrapolate",
    )
    args = ap.parse_args()

    x, files, groups, labels, classes = make_data(args.n, args.dim, args.classes, args.group)
    print(f"data: N={args.n} D={args.dim} C={args.classes} groups of {args.group} (float32)")

    t0 = time.perf_counter()
    ev = FDEvaluator(x, files, labels, classes, groups)
    t_index = time.perf_counter() - t0
    sizes = [] if args.no_curve else list(CURVE_TEST_SIZES)

    # rmis first, for every run, so that its peak memory is measured before the baseline runs
    ours: dict[tuple[float, int], tuple[np.ndarray, np.ndarray, float]] = {}
    for t in [0.5, *sizes]:
        for r in range(args.runs):
            if (t, r) in ours:
                continue
            split = sealed_split(ev.table, t, r, classes)
            train = np.isin(ev.table.of_row, split.train_groups)
            t1 = time.perf_counter()
            _, pred = ev.predict(train)
            ours[t, r] = (train, pred, time.perf_counter() - t1)
    mem_ours = peak_rss_gb()

    xn = ev.knn.x32.numpy()  # the same unit vectors, float32 as the official harness uses
    y = ev.y

    def compare(test_size: float, baseline_runs: int) -> tuple[float, float, int]:
        t_ours = sum(ours[test_size, r][2] for r in range(args.runs))
        t_base, mismatches = 0.0, 0
        for r in range(baseline_runs):
            train, pred, _ = ours[test_size, r]
            t1 = time.perf_counter()
            ref = baseline_predict(xn, y, train, len(classes), ev.k)
            t_base += time.perf_counter() - t1
            mismatches += int((ref != pred).sum())
        return t_ours, t_base, mismatches

    t_q, t_b, mism = compare(0.5, args.runs)
    total = t_index + t_q
    print(f"\nfixed split, {args.runs} runs at test size 0.5")
    print(f"  {'':28s}{'time (s)':>10s}")
    print(f"  {'baseline (sklearn per run)':28s}{t_b:10.2f}")
    print(
        f"  {'rmis (index + queries)':28s}{total:10.2f}   (index {t_index:.2f}, queries {t_q:.2f})"
    )
    print(f"  speed-up {t_b / total:.1f}x; differing predictions: {mism}")

    if sizes:
        sample = args.runs if args.curve_sample is None else min(args.curve_sample, args.runs)
        tot_o = tot_b = 0.0
        mism_c = 0
        for t in sizes:
            o, b, m = compare(t, sample)
            tot_o += o
            tot_b += b * args.runs / sample
            mism_c += m
        total_c = t_index + tot_o
        label = "" if sample == args.runs else f" (extrapolated from {sample} run(s) per size)"
        print(f"\nsplit curve, {len(sizes)} test sizes x {args.runs} runs")
        print(f"  {'baseline (sklearn per run)':28s}{tot_b:10.2f}{label}")
        print(f"  {'rmis (index + queries)':28s}{total_c:10.2f}   (queries {tot_o:.2f})")
        print(f"  speed-up {tot_b / total_c:.1f}x; differing predictions: {mism_c}")

    print(
        f"\npeak memory (RSS): rmis, before any baseline ran, {mem_ours:.2f} GB; "
        f"whole process {peak_rss_gb():.2f} GB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
