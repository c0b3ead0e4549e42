"""The per-file embedding store at full scale: write, merge and read N embeddings of D dims.

    python benchmarks/bench_store.py [--n 63360] [--dim 1152] [--parts 40]

Writes the N rows as ``--parts`` part files (as a long extraction does, one every few seconds),
merges them into one segment (the end of a dataset), then reads them back in a fresh store
object (what the next ``rmis eval`` or ``split-curve`` does): wall times, and the same read
through ``np.load`` for comparison. Every row read back is checked bit for bit.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from rmis.store import EmbeddingStore


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=63_360)
    ap.add_argument("--dim", type=int, default=1152)
    ap.add_argument("--parts", type=int, default=40)
    args = ap.parse_args()
    x = np.random.default_rng(0).normal(size=(args.n, args.dim)).astype(np.float32)
    keys = [f"f{i:031x}" for i in range(args.n)]
    with tempfile.TemporaryDirectory(prefix="bench_store.") as tmp:
        store = EmbeddingStore(Path(tmp) / "s", {})
        t = time.perf_counter()
        for chunk in np.array_split(np.arange(args.n), args.parts):
            store.add({keys[i]: x[i] for i in chunk})
        t_add = time.perf_counter() - t
        t = time.perf_counter()
        got = EmbeddingStore(store.dir).lookup(keys)
        t_parts = time.perf_counter() - t
        t = time.perf_counter()
        store.consolidate(keys)
        t_merge = time.perf_counter() - t
        (seg,) = store.dir.glob("seg.*.npz")
        t = time.perf_counter()
        got = EmbeddingStore(store.dir).lookup(keys)
        t_read = time.perf_counter() - t
        t = time.perf_counter()
        with np.load(seg) as z:
            z["ids"], z["emb"]
        t_np = time.perf_counter() - t
        ok = len(got) == args.n and all(np.array_equal(got[k], x[i]) for i, k in enumerate(keys))
        size = seg.stat().st_size / 1e6
    print(f"N={args.n} D={args.dim}: {size:.0f} MB of float32")
    rows = [
        (f"write as {args.parts} parts", t_add, ""),
        (f"read from {args.parts} parts", t_parts, ""),
        ("merge into one segment", t_merge, ""),
        ("read from the segment", t_read, f"   (np.load of it: {t_np:.2f} s)"),
    ]
    for label, sec, extra in rows:
        print(f"  {label:28s}{sec:7.2f} s{extra}")
    print(f"  every row bit for bit: {ok}")


if __name__ == "__main__":
    main()
