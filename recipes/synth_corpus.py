"""A small pre-training corpus of machine-like signals, disjoint from the synth suite.

``python recipes/synth_corpus.py OUT [--recordings 3] [--clips 12]`` writes mono 16-bit WAV
files into ``OUT`` with the physics of :mod:`rmis.data.synth` but none of its evaluation files:

* the four FD rigs (16, 25.6, 48, 64 kHz), every class, recordings with indices from 100 on
  (the suite's are 0-9, so every random draw has another seed) and shaft speeds within +-15 %
  of nominal (the suite's: +-4 %); each sensor channel one 20-s file;
* two other AD machines (``pretrainfan``: 9 blades at 31 / 4 blades at 13 Hz; ``pretrainpump``:
  7 vanes at 19 / 3 vanes at 37 Hz, where the suite's have 5 / 7 blades and 5 / 6 vanes), all
  settings 1-5, normal clips and one anomalous clip in four, 10 s at 16 kHz.

The output is deterministic. It is what the learning evidence of the pre-training recipe uses
(README, "Pre-train FISHER").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rmis.data import synth
from rmis.errors import RMISError

OTHER_MACHINES = {
    "pretrainfan": synth._Machine(
        "fan", "spd", ((9, 31.0), (4, 13.0)), ("imbalance", "blade", "bearing", "rub")
    ),
    "pretrainpump": synth._Machine(
        "pump", "ld", ((7, 19.0), (3, 37.0)), ("cavitation", "clog", "leak", "bearing")
    ),
}
FIRST_RECORDING = 100


def fd_files(recordings: int):
    """``(name, rate, int16 samples)`` of the FD part."""
    for name, rig in synth._RIGS.items():
        spec = synth.SYNTH_DATASETS[name]
        for ci, label in enumerate(spec.classes):
            fault = rig.faults[label]
            for r in range(FIRST_RECORDING, FIRST_RECORDING + recordings):
                rng = synth._seed(name, "pretrain-conditions", ci, r)
                shaft = rig.shaft_hz * (1.0 + rng.uniform(-0.15, 0.15))
                sev = 0.0 if fault.kind == "none" else synth._log_uniform(rng, *fault.severity)
                mesh = shaft * rig.gear_teeth[0] if rig.gear_teeth else None
                rec = synth.Recording(f"{label}_rec{r}", label, shaft, sev, rig.bearing, mesh)
                x = synth._fd_signal(name, rec, ci, r)
                for c in range(x.shape[0]):
                    pcm = synth._to_pcm16(x[c], rig.full_scale)
                    yield f"{name}_{label}_rec{r}_ch{c + 1}.wav", spec.sample_rate, pcm


def ad_files(clips: int):
    """``(name, rate, int16 samples)`` of the AD part (machines absent from the suite)."""
    fs = synth.SYNTH_DATASETS["synth_ad"].sample_rate
    saved = dict(synth._MACHINES)
    synth._MACHINES.update(OTHER_MACHINES)  # _ad_clip looks machines up by name
    try:
        for machine, m in OTHER_MACHINES.items():
            for sec in range(len(m.sections)):
                for i in range(clips):
                    setting = 1 + i % 5
                    anomaly = m.anomalies[(i // 4) % len(m.anomalies)] if i % 4 == 3 else None
                    domain = "target" if setting == 5 else "source"
                    x = synth._ad_clip(machine, sec, domain, setting, anomaly, (sec, 7, i))
                    pcm = synth._to_pcm16(x, synth._AD_FULL_SCALE)
                    yield f"{machine}_sec{sec}_{i:03d}.wav", fs, pcm
    finally:
        synth._MACHINES.clear()
        synth._MACHINES.update(saved)


def write_corpus(out: str | Path, recordings: int = 3, clips: int = 12) -> list[Path]:
    """Write the corpus into ``out``; returns the files written."""
    if recordings < 1 or clips < 0:
        raise RMISError("--recordings must be >= 1 and --clips >= 0")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, rate, pcm in (*fd_files(recordings), *ad_files(clips)):
        synth._write_wav(out / name, pcm, rate)
        written.append(out / name)
    return written


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out")
    p.add_argument("--recordings", type=int, default=3, help="recordings per FD class")
    p.add_argument("--clips", type=int, default=12, help="clips per AD machine section")
    a = p.parse_args()
    files = write_corpus(a.out, a.recordings, a.clips)
    hours = sum(synth.sf.info(str(f)).duration for f in files) / 3600
    print(f"wrote {len(files)} files ({hours * 60:.1f} min) into {a.out}", file=sys.stderr)


if __name__ == "__main__":
    try:
        main()
    except RMISError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
