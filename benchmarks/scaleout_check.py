"""Scale-out check: ``torchrun -m rmis eval`` against plain ``rmis eval``, and ``rmis score`` on
a device against the CPU. Prints the figures; exits 1 if anything differs.

    python benchmarks/scaleout_check.py --device cuda --nproc 1          # the GPU check
    python benchmarks/scaleout_check.py --device cpu --nproc 2 --n 2000  # tries it on CPU

1. ``rmis eval fisher-tiny --suite synth`` (a full-size FISHER-tiny with random weights written
   here: no download) as one plain process and as ``torchrun --nproc-per-node NPROC`` (fresh
   caches each): wall times and every dataset's score, which must be identical.
2. ``rmis score`` of N synthetic embeddings (test size 0.2) with ``--device DEVICE`` and with
   ``--device cpu``: wall times and whether every run's accuracies (each class's) are identical.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fd_knn import make_data  # noqa: E402

from rmis.io import write_embedding_matrix  # noqa: E402
from rmis.models import random_checkpoint  # noqa: E402


def run(cmd: list[str], env: dict[str, str] | None = None) -> float:
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr[-3000:]}")
    return time.perf_counter() - t


def eval_check(work: Path, device: str, nproc: int, synth: Path) -> bool:
    ckpt = random_checkpoint("fisher-tiny", work / "tiny.pt", seed=0)
    scores, times = {}, {}
    for how in ("plain", "torchrun"):
        cache = work / f"cache-{how}"
        cache.mkdir()
        (cache / "synth").symlink_to(synth, target_is_directory=True)
        args = ["eval", "fisher-tiny", "--suite", "synth", "--checkpoint", str(ckpt)]
        args += ["--device", device, "--cache-dir", str(cache)]
        args += ["--results-dir", str(work / f"res-{how}")]
        if how == "plain":
            cmd = [sys.executable, "-m", "rmis", *args]
        else:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc)]
            cmd += ["--master-port", "29517", "-m", "rmis", *args]
        times[how] = run(cmd)
        scores[how] = {
            p.stem: json.loads(p.read_text())["score"]
            for p in (work / f"res-{how}").rglob("synth_*.json")
        }
    same = scores["plain"] == scores["torchrun"]
    print(f"rmis eval fisher-tiny --suite synth --device {device}")
    print(f"  plain:                 {times['plain']:7.1f} s  {scores['plain']}")
    print(f"  torchrun nproc {nproc}:      {times['torchrun']:7.1f} s  {scores['torchrun']}")
    print(f"  identical scores: {same}")
    return same


def score_check(work: Path, device: str, n: int) -> bool:
    x, files, groups, labels, _ = make_data(n, 1152, 10, 10)
    meta = work / "meta.csv"
    with open(meta, "w") as fh:
        fh.write("file,label,group\n")
        fh.writelines(f"{f},{c},{g}\n" for f, c, g in zip(files, labels, groups, strict=True))
    emb = work / "emb.npz"
    write_embedding_matrix(emb, files, x)
    preds, times = {}, {}
    for dev in dict.fromkeys((device, "cpu")):
        out = work / f"score-{dev.replace(':', '')}.json"
        cmd = [sys.executable, "-m", "rmis", "score", "--meta", str(meta), "--embeddings", str(emb)]
        cmd += ["--protocol", "fd", "--test-size", "0.2"]
        times[dev] = run([*cmd, "--device", dev, "--out", str(out)])
        runs = json.loads(out.read_text())["runs"]
        preds[dev] = [(r["macro_acc"], r["per_class"]) for r in runs]
    same = all(p == preds["cpu"] for p in preds.values())
    print(f"rmis score, N = {n}, D = 1152, test size 0.2, 10 runs")
    for dev, t in times.items():
        print(f"  --device {dev:6s} {t:7.1f} s")
    print(f"  identical runs (macro accuracy and every class's accuracy): {same}")
    return same


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--nproc", type=int, default=1)
    ap.add_argument("--n", type=int, default=63_360)
    ap.add_argument("--skip-eval", action="store_true", help="only the score check")
    args = ap.parse_args()
    from rmis.data.synth import SYNTH_DATASETS, ensure

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ok = True
        if not args.skip_eval:
            synth = work / "synth"
            for name in SYNTH_DATASETS:
                ensure(name, synth)
            ok = eval_check(work, args.device, args.nproc, synth)
        ok = score_check(work, args.device, args.n) and ok
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
