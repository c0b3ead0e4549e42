"""GPU check of the device paths: k-NN index on GPU and extraction on GPU (fp32 / bf16).

Prints a table; meant to be run once on a machine with a CUDA GPU:

    python benchmarks/gpu_check.py [--n 20000] [--dim 1152]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fd_knn import make_data  # noqa: E402

from rmis.encoders import load_encoder  # noqa: E402
from rmis.evaluate import evaluate_dataset, synth_suite  # noqa: E402
from rmis.extract import extract  # noqa: E402
from rmis.protocol.fd import FDEvaluator  # noqa: E402
from rmis.protocol.splits import sealed_split  # noqa: E402


def knn_check(n: int, dim: int) -> None:
    x, files, groups, labels, classes = make_data(n, dim, 10, 10)
    out = {}
    for device in ("cpu", "cuda"):
        torch.cuda.synchronize()
        t = time.perf_counter()
        ev = FDEvaluator(x, files, labels, classes, groups, device=device)
        torch.cuda.synchronize()
        t_index = time.perf_counter() - t
        preds = []
        t = time.perf_counter()
        for r in range(10):
            split = sealed_split(ev.table, 0.5, r, classes)
            preds.append(ev.predict(np.isin(ev.table.of_row, split.train_groups))[1])
        out[device] = (t_index, time.perf_counter() - t, preds)
    same = all(np.array_equal(a, b) for a, b in zip(out["cpu"][2], out["cuda"][2], strict=True))
    print(
        f"k-NN index N={n} D={dim}: cpu {out['cpu'][0]:.2f} s, cuda {out['cuda'][0]:.2f} s; "
        f"10 queries cpu {out['cpu'][1]:.2f} s, cuda-built {out['cuda'][1]:.2f} s; "
        f"identical predictions: {same}"
    )


def extract_check(cache: Path) -> None:
    datasets = synth_suite(None, cache)
    print(
        f"\n{'dataset':14s}{'device':>8s}{'precision':>10s}{'windows/s':>11s}"
        f"{'max|diff| vs cpu':>18s}"
    )
    for ds in datasets:
        items = ds.items()
        ref = None
        for device, precision in (("cpu", "fp32"), ("cuda", "fp32"), ("cuda", "bf16")):
            enc = load_encoder("logspec", device=device)
            res = extract(
                items,
                enc,
                window_seconds=ds.spec.window_seconds,
                expected_rate=ds.spec.sample_rate,
                precision=precision,
                batch_size=64,
                num_workers=4,
            )
            emb = np.stack([res.embeddings[i.id] for i in items])
            diff = "" if ref is None else f"{np.abs(emb - ref).max():.2e}"
            ref = emb if ref is None else ref
            print(
                f"{ds.name:14s}{device:>8s}{precision:>10s}{res.windows / res.seconds:11.1f}"
                f"{diff:>18s}"
            )


def eval_check(cache: Path, results: Path) -> None:
    scores = {}
    for device in ("cpu", "cuda"):
        enc = load_encoder("logspec", device=device)
        for ds in synth_suite(None, cache):
            r = evaluate_dataset(
                ds,
                enc,
                options={},
                results_dir=results / device,
                cache_dir=cache / device,
                device=device,
            )
            scores.setdefault(ds.name, {})[device] = r["score"]
    print("\nrmis eval logspec --suite synth, cpu vs cuda (extraction and k-NN on the device):")
    for name, s in scores.items():
        print(
            f"  {name:14s} cpu {s['cpu']:.4f}  cuda {s['cuda']:.4f}  "
            f"diff {s['cuda'] - s['cpu']:+.2e}"
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--dim", type=int, default=1152)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, device {torch.cuda.get_device_name(0)}")
    knn_check(args.n, args.dim)
    with tempfile.TemporaryDirectory() as tmp:
        extract_check(Path(tmp))
        eval_check(Path(tmp), Path(tmp) / "results")
    print(f"\npeak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
