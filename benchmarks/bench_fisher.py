"""FISHER speed: windows/s and achieved GFLOP/s next to a plain fp32 matrix-multiply rate.

Random official-format checkpoints (the speed does not depend on the weights). On CPU the
target is >= 50 % of the matmul rate measured in the same run.

    python benchmarks/bench_fisher.py [--variants tiny] [--rates 16000 48000] [--batch 8]
    python benchmarks/bench_fisher.py --device cuda --variants tiny mini small \\
        --rates 16000 51200 --batch 64 --precisions fp32 bf16 fp16
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from rmis.encoders import load_encoder
from rmis.models.fisher import fisher_flops, random_checkpoint

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_gflops(device: str, n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def bench(
    enc, sr: int, batch: int, precision: str, device: str, reps: int
) -> tuple[float, torch.Tensor]:
    """(Seconds per batch of 10-s windows, the float32 embeddings of the batch)."""
    x = torch.randn(batch, 10 * sr, device=device) * 0.1
    ctx = (
        torch.autocast(device.split(":")[0], dtype=DTYPES[precision])
        if DTYPES[precision]
        else nullcontext()
    )
    with torch.inference_mode(), ctx:
        out = enc.embed(x, sr).float()
        sync(device)
        t = time.perf_counter()
        for _ in range(reps):
            enc.embed(x, sr)
        sync(device)
    return (time.perf_counter() - t) / reps, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", nargs="+", default=["tiny"])
    ap.add_argument("--rates", nargs="+", type=int, default=[16_000, 48_000])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precisions", nargs="+", default=["fp32"])
    args = ap.parse_args()
    mm = matmul_gflops(args.device)
    print(f"device {args.device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"plain fp32 matmul (2048^3): {mm:.1f} GFLOP/s\n")
    print(
        f"{'variant':8s}{'rate':>8s}{'bands':>6s}{'prec':>6s}{'batch':>6s}{'windows/s':>11s}"
        f"{'GFLOP/win':>11s}{'GFLOP/s':>9s}{'of matmul':>11s}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for v in args.variants:
            enc = load_encoder(
                f"fisher-{v}",
                checkpoint=str(random_checkpoint(v, Path(tmp) / f"{v}.pt")),
                device=args.device,
            )
            for sr in args.rates:
                n_fft = 25 * sr // 1000
                bands = max(1, (n_fft // 2 + 1) // enc.cfg.band_width)
                gflop = fisher_flops(enc.cfg, bands) / 1e9
                ref = None
                for prec in args.precisions:
                    torch.manual_seed(0)  # the same input batch for every precision
                    sec, out = bench(enc, sr, args.batch, prec, args.device, args.reps)
                    wps = args.batch / sec
                    diff = "" if ref is None else f"{(out - ref).abs().max().item():.2e}"
                    ref = out if ref is None else ref
                    print(
                        f"{v:8s}{sr:8d}{bands:6d}{prec:>6s}{args.batch:6d}{wps:11.2f}"
                        f"{gflop:11.1f}{wps * gflop:9.1f}{wps * gflop / mm:10.0%}{diff:>16s}"
                    )
            if args.device.startswith("cuda"):
                print(
                    f"  peak GPU memory after {v}: "
                    f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"
                )
                torch.cuda.reset_peak_memory_stats()
    return 0


if __name__ == "__main__":
    sys.exit(main())
