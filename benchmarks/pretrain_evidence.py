"""Does the FISHER pre-training recipe learn? Pre-train the ``debug`` preset on a synthetic corpus
disjoint from the synth suite, then score it against the same architecture with random weights.

    python benchmarks/pretrain_evidence.py [--steps 300] [--work DIR]

Runs, in order (the README's commands): ``recipes/synth_corpus.py`` (other recordings, speeds and
machines than the suite's evaluation files), ``recipes/fisher_pretrain.py --preset debug
--max-steps 0`` (the random initialisation) and ``--max-steps STEPS``, then ``rmis eval
fisher-tiny --suite synth --checkpoint .../encoder.pt`` for both, and prints the dataset, AD, FD
and overall scores side by side with the loss and probe figures of the run. About 5 minutes on 2
CPU cores at 300 steps.
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

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, *args], check=True, env=env, cwd=ROOT)
    return time.perf_counter() - started


def scores(results: Path) -> dict[str, float]:
    out = {}
    for path in results.rglob("*.json"):
        res = json.loads(path.read_text())
        if res.get("kind") == "eval":
            out[res["dataset"]] = res["score"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=300, help="pre-training steps of the debug preset")
    p.add_argument("--work", type=Path, default=None, help="working folder (default: a temp dir)")
    a = p.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="rmis-pretrain-"))
    env = {**os.environ, "RMIS_CACHE_DIR": str(work / "cache")}
    corpus = work / "corpus"
    if not corpus.is_dir():
        run("recipes/synth_corpus.py", str(corpus), env=env)
    seconds = {}
    for tag, steps in (("init", 0), ("pre", a.steps)):
        seconds[tag] = run(
            "recipes/fisher_pretrain.py",
            *("--preset", "debug", "--data", str(corpus), "--out", str(work / tag)),
            *("--max-steps", str(steps), "--probe-cache", str(work / "cache")),
            env=env,
        )
        run(
            "-m",
            "rmis",
            *("eval", "fisher-tiny", "--suite", "synth", "--workers", "0"),
            *("--checkpoint", str(work / tag / "encoder.pt")),
            *("--results-dir", str(work / f"results-{tag}")),
            env=env,
        )
    from rmis.evaluate import suite_overall

    table = {tag: scores(work / f"results-{tag}") for tag in ("init", "pre")}
    print(f"\nFISHER debug preset, {a.steps} steps ({seconds['pre']:.0f} s) vs random weights")
    print(f"{'dataset':<14}{'random':>10}{'pre-trained':>14}")
    for name in sorted(table["init"]):
        print(
            f"{name:<14}{table['init'][name]:>10.2f}{table['pre'].get(name, float('nan')):>14.2f}"
        )
    for tag in ("init", "pre"):
        overall, _ = suite_overall("synth", table[tag])
        table[tag] = overall
    for label, key in (("AD", "ad"), ("FD", "fd"), ("overall", "rmis")):
        a_, b_ = getattr(table["init"], key), getattr(table["pre"], key)
        print(f"{label:<14}{a_:>10.2f}{b_:>14.2f}")
    rows = [json.loads(line) for line in (work / "pre" / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    if len(losses) >= 20:
        first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
        print(f"loss, mean of the first / last 10 steps: {first:.3f} -> {last:.3f}")
    probes = [(r["step"], r["probe"]) for r in rows if "probe" in r]
    for step, probe in probes:
        print(f"probe at step {step}: " + ", ".join(f"{k} {v:.2f}" for k, v in probe.items()))
    print(f"work folder: {work}")


if __name__ == "__main__":
    main()
