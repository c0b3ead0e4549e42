"""Extraction throughput and memory.

1. ``logspec`` on the synth suite: windows/s of the full extraction, next to the I/O floor
   (the same DataLoader decoding, resampling and windowing every file, with no encoder).
2. Peak resident memory while extracting a ~2 GB dataset of synthetic files (default: 2 GB of
   16-bit mono 48 kHz files, 10 minutes each), measured in a fresh process for the main
   process and its DataLoader workers.

    python benchmarks/bench_extract.py [--gb 2] [--workers 1] [--skip-memory]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf


def io_floor(items, window_seconds, rate, workers) -> tuple[float, int]:
    """Seconds and windows for decoding + resampling + windowing alone."""
    from torch.utils.data import DataLoader

    from rmis.extract import _identity, _WindowDataset

    ds = _WindowDataset(items, window_seconds, None, rate, False)
    loader = DataLoader(
        ds,
        batch_size=None,
        num_workers=workers,
        collate_fn=_identity,
        prefetch_factor=2 if workers else None,
    )
    t = time.perf_counter()
    n = sum(len(w) for _, w, _, _ in loader)
    return time.perf_counter() - t, n


def synth_throughput(workers: int, cache: Path) -> None:
    from rmis.encoders import load_encoder
    from rmis.evaluate import synth_suite
    from rmis.extract import extract

    enc = load_encoder("logspec")
    print(
        f"{'dataset':14s}{'files':>7s}{'windows':>9s}{'I/O floor w/s':>15s}"
        f"{'extract w/s':>13s}{'floor/extract':>15s}"
    )
    tot_io = tot_ex = 0.0
    tot_w = 0
    for ds in synth_suite(None, cache):
        items = ds.items()
        io_floor(items, ds.spec.window_seconds, ds.spec.sample_rate, workers)  # warm the cache
        t_io, n = io_floor(items, ds.spec.window_seconds, ds.spec.sample_rate, workers)
        res = extract(
            items,
            enc,
            window_seconds=ds.spec.window_seconds,
            expected_rate=ds.spec.sample_rate,
            num_workers=workers,
        )
        tot_io, tot_ex, tot_w = tot_io + t_io, tot_ex + res.seconds, tot_w + n
        print(
            f"{ds.name:14s}{len(items):7d}{n:9d}{n / t_io:15.1f}{n / res.seconds:13.1f}"
            f"{t_io / res.seconds:15.2f}"
        )
    print(
        f"{'all':14s}{'':7s}{tot_w:9d}{tot_w / tot_io:15.1f}{tot_w / tot_ex:13.1f}"
        f"{tot_io / tot_ex:15.2f}"
    )


def make_big(folder: Path, gb: float, sr: int = 48_000, minutes: float = 10.0) -> list[Path]:
    n = int(sr * 60 * minutes)
    count = max(1, int(gb * 1e9 // (2 * n)))
    rng = np.random.default_rng(0)
    block = (rng.normal(size=n) * 3000).clip(-32768, 32767).astype(np.int16)
    paths = []
    for i in range(count):
        p = folder / f"big_{i:04d}.wav"
        sf.write(p, np.roll(block, i * 997), sr, subtype="PCM_16")
        paths.append(p)
    return paths


def memory_child(folder: str, workers: int) -> None:
    """Run in a fresh process: extract every file, print peak RSS (MB) as JSON."""
    from rmis.encoders import load_encoder
    from rmis.extract import FileItem, extract

    items = [FileItem(p.name, str(p)) for p in sorted(Path(folder).glob("*.wav"))]
    t = time.perf_counter()
    res = extract(items, load_encoder("logspec"), window_seconds=10.0, num_workers=workers)
    print(
        json.dumps(
            {
                "files": len(items),
                "windows": res.windows,
                "seconds": time.perf_counter() - t,
                "main_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "worker_peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
            }
        )
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=2.0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        memory_child(args._child, args.workers)
        return 0
    from rmis.evaluate import default_cache_dir

    print(f"logspec on the synth suite, {args.workers} DataLoader worker(s)")
    synth_throughput(args.workers, args.cache_dir or default_cache_dir())
    if not args.skip_memory:
        with tempfile.TemporaryDirectory() as tmp:
            paths = make_big(Path(tmp), args.gb)
            size = sum(p.stat().st_size for p in paths) / 1e9
            out = subprocess.run(
                [sys.executable, __file__, "--_child", tmp, "--workers", str(args.workers)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            m = json.loads(out.strip().splitlines()[-1])
            print(
                f"\nmemory: {m['files']} files, {size:.2f} GB, {m['windows']} windows in "
                f"{m['seconds']:.1f} s"
            )
            print(
                f"  peak RSS main process {m['main_peak_mb']:.0f} MB; largest worker "
                f"{m['worker_peak_mb']:.0f} MB"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
