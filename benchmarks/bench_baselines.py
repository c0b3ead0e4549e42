"""Baseline encoders: windows/s and peak memory, full-size architectures on random weights.

Each name's checkpoint is written in its authors' release format by the family's
``random_checkpoint`` (no download; the speed does not depend on the weights) and loaded through
the real path (``rmis.load_encoder``). Batches of 10-s windows at the model's rate (16 kHz for
native-rate models), one warm-up pass, then ``--reps`` timed passes under
``torch.inference_mode`` (bf16/fp16: autocast, as ``rmis eval --precision``; CUDA only). Peak
memory: ``torch.cuda.max_memory_allocated`` during the timed passes (weights included) on CUDA;
on CPU the growth of the process's peak RSS while loading and running that model. The
checkpoint is written by this process; every name is loaded and run in its own fresh process,
so neither the writing nor another model's peak hides in its numbers.

    python benchmarks/bench_baselines.py --names ced-tiny --reps 1          # CPU smoke run
    python benchmarks/bench_baselines.py --device cuda                       # the four defaults
    python benchmarks/bench_baselines.py --device cuda --names eat-large dasheng-1.2b --batch 16
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from pathlib import Path

DEFAULT_NAMES = ["beats-iter3", "eat-base", "ced-base", "dasheng-base"]
DTYPES = {"fp32": None, "bf16": "bfloat16", "fp16": "float16"}


def _peak_rss_mib() -> float:
    """Peak resident set size of this process so far (MiB; ru_maxrss is KiB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / 2**20


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def write(name: str, tmp: str) -> Path:
    """A full-size random-weight checkpoint of ``name`` in its release format, under ``tmp``."""
    from rmis.encoders import get_encoder_info
    from rmis.models import random_checkpoint

    spec = get_encoder_info(name).factory.args[0]  # the family table's Pretrained row
    folder = spec.file_format in ("hf-folder", "safetensors")
    return random_checkpoint(name, Path(tmp) / (name if folder else f"{name}.pt"))


def measure(
    name: str, checkpoint: str, device: str, batch: int, reps: int, precisions: list[str]
) -> list[dict]:
    """One name, in a fresh process: load and time it; one row per precision."""
    import torch

    from rmis.encoders import load_encoder

    rss0 = _peak_rss_mib()
    enc = load_encoder(name, checkpoint=checkpoint, device=device)
    rows = []
    params = sum(p.numel() for p in enc.parameters()) / 1e6
    sr = enc.sample_rate or 16_000
    x = torch.randn(batch, 10 * sr, generator=torch.Generator().manual_seed(0)).mul_(0.1)
    x = x.to(device)
    for prec in precisions:
        dtype = getattr(torch, DTYPES[prec]) if DTYPES[prec] else None
        ctx = torch.autocast(device.split(":")[0], dtype=dtype) if dtype else nullcontext()
        with torch.inference_mode(), ctx:
            out = enc.embed(x, sr)  # warm-up
            _sync(device)
            if device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            t = time.perf_counter()
            for _ in range(reps):
                enc.embed(x, sr)
            _sync(device)
            sec = (time.perf_counter() - t) / reps
        if device.startswith("cuda"):
            peak, what = torch.cuda.max_memory_allocated() / 2**20, "GPU alloc"
        else:
            peak, what = _peak_rss_mib() - rss0, "RSS growth"
        rows.append(
            {
                "name": name,
                "params_m": params,
                "rate": sr,
                "precision": prec,
                "batch": batch,
                "windows_s": batch / sec,
                "sec_batch": sec,
                "peak_mib": peak,
                "peak_kind": what,
                "dim": int(out.shape[-1]),
            }
        )
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--names", nargs="+", default=DEFAULT_NAMES)
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--batch", type=int, default=None, help="default: 32 on CUDA, 4 on CPU")
    ap.add_argument("--reps", type=int, default=None, help="default: 10 on CUDA, 2 on CPU")
    ap.add_argument(
        "--precisions", nargs="+", default=None, choices=sorted(DTYPES),
        help="default: fp32 bf16 on CUDA, fp32 on CPU (fp16/bf16 need CUDA)",
    )  # fmt: skip
    args = ap.parse_args()
    cuda = args.device.startswith("cuda")
    batch = args.batch or (32 if cuda else 4)
    reps = args.reps or (10 if cuda else 2)
    precisions = args.precisions or (["fp32", "bf16"] if cuda else ["fp32"])
    if not cuda and precisions != ["fp32"]:
        ap.error("fp16/bf16 autocast is measured on CUDA only; use --precisions fp32 on CPU")

    import torch

    where = f"{args.device} ({torch.cuda.get_device_name(args.device)})" if cuda else "cpu"
    threads = "" if cuda else f", {torch.get_num_threads()} threads"
    print(f"device {where}{threads}, torch {torch.__version__}, batch {batch}, reps {reps}")
    head = (
        f"{'name':16s}{'params M':>9s}{'rate':>7s}{'prec':>6s}{'windows/s':>11s}{'s/batch':>9s}"
        f"{'peak MiB':>10s}  {'(kind)':14s}{'dim':>6s}"
    )
    print(head)
    print("-" * len(head))
    ctx = multiprocessing.get_context("spawn")
    failed = 0
    for name in args.names:
        try:
            with tempfile.TemporaryDirectory() as tmp:
                path = str(write(name, tmp))
                with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
                    job = pool.submit(measure, name, path, args.device, batch, reps, precisions)
                    rows = job.result()
        except Exception as exc:  # report and go on with the other names
            failed += 1
            print(f"{name:16s}  FAILED: {type(exc).__name__}: {exc}")
            continue
        for r in rows:
            print(
                f"{r['name']:16s}{r['params_m']:9.1f}{r['rate']:7d}{r['precision']:>6s}"
                f"{r['windows_s']:11.2f}{r['sec_batch']:9.3f}{r['peak_mib']:10.0f}  "
                f"{'(' + r['peak_kind'] + ')':14s}{r['dim']:6d}"
            )
        sys.stdout.flush()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
