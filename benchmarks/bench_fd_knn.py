"""FD scoring speed: `rmis score` against a per-run exact search as the official harness does it.

Synthetic but realistically clustered embeddings (N files x D dims, C classes, groups of G files
sealed together), written as a metadata CSV plus an embeddings ``.npz`` (matrix layout). Then,
on the same sealed splits:

* rmis CLI: ``python -m rmis score -v`` in a subprocess: wall time, peak RSS and where the time
  goes (the command's ``-v`` log: imports, reading, index, queries, writing; "start-up" is the
  rest of the wall time: interpreter, CLI parsing, split checks);
* rmis in-process: one :class:`rmis.protocol.fd.FDEvaluator` (index once, then every run's
  queries), whose predictions are compared with the baseline's;
* baseline: per run, faiss ``IndexFlatL2`` over the L2-normalised float32 train embeddings, a
  ``k``-NN search of the test embeddings and the official one-hot similarity vote (cosine =
  1 - d^2 / 2). Without faiss-cpu (``pip install "rmis[bench]"``) scikit-learn's exact
  ``NearestNeighbors(metric="cosine")`` is used instead, and the output says so;
* the plain similarity matmul: all N x N float32 dot products (row blocks, torch, the same BLAS
  as rmis). rmis's index multiplies each pair of item blocks once, about half of that product,
  so "index / plain matmul" can be below 1;
* with ``--official REPO`` (a clone of github.com/jianganbai/RMIS): the official harness's own
  scoring code, run as its users run it (``runner/cls/cls_reg_nrun.py``, and with ``--curve``
  ``runner/cls/multi_split_reg_nrun.py``) on the same data, against the rmis CLI (``rmis score``,
  and ``rmis score --split-curve``): wall times, speed-ups and every run's macro accuracy
  compared (the official code writes them to 2 decimals). See ``official_harness.py``.

    python benchmarks/bench_fd_knn.py                          # N=20000, D=1152, test size 0.5
    python benchmarks/bench_fd_knn.py --n 63360 --test-size 0.2
    python benchmarks/bench_fd_knn.py --curve --curve-sample 1 # + the 190-run split curve
    python benchmarks/bench_fd_knn.py --official ~/src/RMIS --curve --baseline-runs 0
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from official_harness import check_repo, run_official, write_layout

from rmis.io import write_embedding_matrix
from rmis.protocol.fd import CURVE_TEST_SIZES, FDEvaluator, macro_accuracy
from rmis.protocol.splits import sealed_split

try:
    import faiss
except ImportError:  # the benchmark-only extra is not installed
    faiss = None


def peak_rss_gb(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident memory so far, GB (Linux reports KiB)."""
    return resource.getrusage(who).ru_maxrss / 1e6


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
    """Official per-run search: index the train items, query the test items, one-hot vote."""
    if faiss is not None:
        index = faiss.IndexFlatL2(xn.shape[1])
        index.add(np.ascontiguousarray(xn[train]))
        d2, ix = index.search(np.ascontiguousarray(xn[~train]), k)
        sim = 1.0 - d2 / 2.0  # unit vectors: |a - b|^2 = 2 - 2 cos
    else:
        from sklearn.neighbors import NearestNeighbors

        nn = NearestNeighbors(n_neighbors=k, metric="cosine").fit(xn[train])
        dist, ix = nn.kneighbors(xn[~train])
        sim = 1.0 - dist
    onehot = np.eye(n_classes, dtype=np.float32)[y[train][ix]]  # [n, k, C]
    logits = np.matmul(sim[:, None, :].astype(np.float32), onehot)[:, 0]
    return logits.argmax(-1)


def plain_matmul_seconds(x32: torch.Tensor, rows: int = 2048) -> float:
    """All N x N dot products in float32, row block by row block (results discarded)."""
    started = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(x32), rows):
            _ = x32[i : i + rows] @ x32.T
    return time.perf_counter() - started


_PHASES = {
    "imports": r"score: modules imported in ([\d.]+) s",
    "read meta": r"score: metadata read in ([\d.]+) s",
    "read embeddings": r"score: embeddings read in ([\d.]+) s",
    "index": r"k-NN index of \d+ items \(D=\d+\) built in ([\d.]+) s",
    "queries": r"sealed runs \(test size [\d.]+\) queried in ([\d.]+) s",
    "write": r"score: result written in ([\d.]+) s",
}


def run_cli(
    folder: Path, test_size: float, runs: int, curve: bool = False
) -> tuple[float, dict[str, float], dict]:
    """``rmis score -v [--split-curve]`` in a subprocess: (wall s, phase seconds, result)."""
    out = folder / "result.json"
    cmd = [sys.executable, "-m", "rmis", "score", "-v", "--protocol", "fd"]
    cmd += ["--meta", str(folder / "meta.csv"), "--embeddings", str(folder / "emb.npz")]
    cmd += ["--test-size", str(test_size), "--runs", str(runs), "--out", str(out)]
    cmd += ["--split-curve"] if curve else []
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"rmis score failed:\n{proc.stdout}\n{proc.stderr}")
    phases = {}
    for name, pattern in _PHASES.items():
        m = re.search(pattern, proc.stderr)
        phases[name] = float(m.group(1)) if m else float("nan")
    phases["start-up, checks (rest)"] = wall - sum(phases.values())
    return wall, phases, json.loads(out.read_text())


def official_section(args, folder: Path, wall: float, cli_result: dict) -> None:
    """The official harness's own code against the rmis CLI on the same files; prints both."""
    print(f"\nagainst the official harness's own code ({args.official})")
    off = run_official(args.official, folder, args.test_size, args.runs)
    ours = [round(r["macro_acc"], 2) for r in cli_result["runs"]]
    same = sum(a == b for a, b in zip(ours, off.runs[args.test_size], strict=True))
    print(f"  fixed split, {args.runs} runs at test size {args.test_size}:")
    print(f"    {'official cls_reg_nrun.py (wall)':34s}{off.wall:10.2f}")
    print(f"    {'rmis score (CLI wall)':34s}{wall:10.2f}   speed-up {off.wall / wall:.1f}x")
    print(f"    runs with the same macro accuracy (2 decimals): {same}/{args.runs}")
    if not args.curve:
        return
    wall_c, _, res_c = run_cli(folder, args.test_size, args.runs, curve=True)
    off_c = run_official(args.official, folder, args.test_size, args.runs, curve=True)
    ours_c = {
        (c["test_size"], r): round(a, 2) for c in res_c["curve"] for r, a in enumerate(c["runs"])
    }
    print(f"  split curve, {len(off_c.runs)} test sizes x {args.runs} runs:")
    print(f"    {'official multi_split_reg_nrun.py':34s}{off_c.wall:10.2f}")
    print(
        f"    {'rmis score --split-curve (CLI)':34s}{wall_c:10.2f}   speed-up "
        f"{off_c.wall / wall_c:.1f}x"
    )
    print(f"    curve area: official {off_c.auc:.2f}, rmis {res_c['auc']:.2f}")
    n_same = sum(ours_c[t, r] == v for t, vals in off_c.runs.items() for r, v in enumerate(vals))
    print(f"    runs with the same macro accuracy (2 decimals): {n_same}/{len(ours_c)}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--dim", type=int, default=1152)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--group", type=int, default=10, help="files per sealed group")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--test-size", type=float, default=0.5)
    ap.add_argument(
        "--baseline-runs",
        type=int,
        default=None,
        help="time only this many baseline runs (0: none) and extrapolate to --runs (labelled)",
    )
    ap.add_argument("--curve", action="store_true", help="also the 190-run split curve")
    ap.add_argument(
        "--official",
        type=Path,
        default=None,
        metavar="REPO",
        help="a clone of github.com/jianganbai/RMIS: also time its own scoring code",
    )
    ap.add_argument(
        "--curve-sample", type=int, default=1, help="baseline curve: runs timed per test size"
    )
    args = ap.parse_args()
    if args.official is not None:
        check_repo(args.official)
    base_name = "faiss IndexFlatL2" if faiss is not None else "sklearn (no faiss-cpu!)"

    x, files, groups, labels, classes = make_data(args.n, args.dim, args.classes, args.group)
    print(
        f"data: N={args.n} D={args.dim} C={args.classes} groups of {args.group} (float32), "
        f"test size {args.test_size}, {args.runs} runs; torch threads {torch.get_num_threads()}"
    )
    with tempfile.TemporaryDirectory(prefix="bench_fd_knn.") as tmp:
        folder = Path(tmp)
        rows = ["file,label,group"] + [
            f"{f},{lab},{g}" for f, lab, g in zip(files, labels, groups, strict=True)
        ]
        (folder / "meta.csv").write_text("\n".join(rows) + "\n")
        write_embedding_matrix(folder / "emb.npz", files, x)
        size_mb = os.path.getsize(folder / "emb.npz") / 1e6
        wall, phases, cli_result = run_cli(folder, args.test_size, args.runs)
        rss_cli = peak_rss_gb(resource.RUSAGE_CHILDREN)
        if args.official is not None:
            write_layout(folder, x, files, groups, labels, classes)
            official_section(args, folder, wall, cli_result)

    # in-process rmis: the predictions the baseline must match
    t0 = time.perf_counter()
    ev = FDEvaluator(x, files, labels, classes, groups)
    t_index = time.perf_counter() - t0
    sizes = [args.test_size]
    if args.curve:
        sizes += [t for t in CURVE_TEST_SIZES if t != args.test_size]
    ours: dict[tuple[float, int], tuple[np.ndarray, np.ndarray, float]] = {}
    for t in sizes:
        for r in range(args.runs):
            split = sealed_split(ev.table, t, r, classes)
            train = np.isin(ev.table.of_row, split.train_groups)
            t1 = time.perf_counter()
            _, pred = ev.predict(train)
            ours[t, r] = (train, pred, time.perf_counter() - t1)
    agree_cli = all(
        abs(
            macro_accuracy(
                ev.y[~ours[args.test_size, r][0]], ours[args.test_size, r][1], len(classes)
            )
            - cli_result["runs"][r]["macro_acc"]
        )
        == 0.0
        for r in range(args.runs)
    )
    xn = ev.knn.x32.numpy()  # the same unit vectors, float32 as the official harness uses
    t_matmul = plain_matmul_seconds(ev.knn.x32)
    del ev

    def baseline(test_size: float, n_runs: int) -> tuple[float, int]:
        if n_runs == 0:
            return float("nan"), 0
        t_base, mismatches = 0.0, 0
        for r in range(n_runs):
            train, pred, _ = ours[test_size, r]
            t1 = time.perf_counter()
            ref = baseline_predict(xn, y_sorted, train, len(classes), 5)
            t_base += time.perf_counter() - t1
            mismatches += int((ref != pred).sum())
        return t_base * args.runs / n_runs, mismatches

    order = np.argsort(np.asarray(files, dtype=str), kind="stable")
    index_of = {c: i for i, c in enumerate(classes)}
    y_sorted = np.array([index_of[labels[i]] for i in order])
    n_base = args.runs if args.baseline_runs is None else min(args.baseline_runs, args.runs)
    t_b, mism = baseline(args.test_size, n_base)
    rss_all = peak_rss_gb()

    t_q = sum(ours[args.test_size, r][2] for r in range(args.runs))
    extrap = "" if n_base == args.runs else f" (timed {n_base} run(s), extrapolated)"
    extrap = " (skipped: --baseline-runs 0)" if n_base == 0 else extrap
    print(f"\nembeddings file: {size_mb:.0f} MB (ids + float32 matrix)")
    print(f"\nfixed split, {args.runs} runs at test size {args.test_size}")
    print(f"  {'':34s}{'time (s)':>10s}")
    print(f"  {'baseline: ' + base_name + ' per run':34s}{t_b:10.2f}{extrap}")
    print(f"  {'rmis score (CLI wall time)':34s}{wall:10.2f}   peak RSS {rss_cli:.2f} GB")
    for name, sec in phases.items():
        print(f"    {name:32s}{sec:10.2f}")
    print(
        f"  {'rmis in-process index + queries':34s}{t_index + t_q:10.2f}   "
        f"(index {t_index:.2f}, queries {t_q:.2f})"
    )
    print(f"  {'plain N x N float32 matmul':34s}{t_matmul:10.2f}")
    idx_q = phases["index"] + phases["queries"]
    print(
        f"  speed-up (baseline / CLI wall) {t_b / wall:.1f}x; CLI wall / (index + queries) "
        f"{wall / idx_q:.2f}x; index / plain matmul {phases['index'] / t_matmul:.2f}x"
    )
    print(f"  differing predictions vs baseline: {mism}; CLI run scores = in-process: {agree_cli}")

    if args.curve:
        tot_o = tot_b = 0.0
        mism_c = 0
        for t in sizes[1:]:
            tot_o += sum(ours[t, r][2] for r in range(args.runs))
            b, m = baseline(t, min(args.curve_sample, args.runs))
            tot_b += b
            mism_c += m
        label = f" (timed {args.curve_sample} run(s) per size, extrapolated)"
        print(f"\nsplit curve, {len(sizes) - 1} more test sizes x {args.runs} runs")
        print(f"  {'baseline: ' + base_name + ' per run':34s}{tot_b:10.2f}{label}")
        print(f"  {'rmis (index + queries)':34s}{t_index + tot_o:10.2f}   (queries {tot_o:.2f})")
        print(f"  speed-up {tot_b / (t_index + tot_o):.1f}x; differing predictions: {mism_c}")

    print(
        f"\npeak memory (RSS): rmis score CLI process {rss_cli:.2f} GB; this process "
        f"(in-process rmis + baseline) {rss_all:.2f} GB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
