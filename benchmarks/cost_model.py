"""Cost model of a full RMIS run: hours of audio and windows per dataset, and the time
``logspec`` and ``fisher-tiny`` need on this machine (encoder compute only, measured here on
random windows at each dataset's rate and window length; decoding adds the I/O floor measured
by ``bench_extract.py``).

Volumes are the paper's Table 1 (hours); windows = hours x 3600 / window length (the released
files are cut to the window length, so this is exact up to the last partial piece per
recording).

    python benchmarks/cost_model.py [--batch 8]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from rmis.data.specs import DATASETS
from rmis.encoders import load_encoder
from rmis.models.fisher import random_checkpoint

#: Paper Table 1, "Volume" column, hours.
HOURS = {
    "dcase20": 153,
    "dcase21": 165,
    "dcase22": 139,
    "dcase23": 50,
    "dcase24": 49,
    "dcase25": 45,
    "iica": 47,
    "iiee": 1,
    "wtpg": 14,
    "mafaulda_sound": 3,
    "mafaulda_vib": 16,
    "sdust_bearing": 25,
    "sdust_gear": 17,
    "umged_sound": 59,
    "umged_vib": 176,
    "umged_vol": 117,
    "umged_cur": 117,
    "pu_vib": 3,
    "pu_cur": 6,
}


def windows_per_second(enc, sr: int, seconds: float, batch: int) -> float:
    x = torch.randn(batch, int(sr * seconds)) * 0.1
    with torch.inference_mode():
        enc.embed(x, sr)
        t = time.perf_counter()
        enc.embed(x, sr)
    return batch / (time.perf_counter() - t)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        encoders = {
            "logspec": load_encoder("logspec"),
            "fisher-tiny": load_encoder(
                "fisher-tiny", checkpoint=str(random_checkpoint("tiny", Path(tmp) / "t.pt"))
            ),
        }
        speed: dict[tuple[str, int, float], float] = {}
        print(
            f"{'dataset':15s}{'rate':>7s}{'win s':>6s}{'hours':>7s}{'windows':>9s}"
            f"{'logspec w/s':>12s}{'h':>6s}{'tiny w/s':>10s}{'h':>7s}"
        )
        totals = {"logspec": 0.0, "fisher-tiny": 0.0}
        for name, spec in DATASETS.items():
            n = HOURS[name] * 3600 / spec.window_seconds
            row = f"{name:15s}{spec.sample_rate:7d}{spec.window_seconds:6g}{HOURS[name]:7d}{n:9.0f}"
            for model, enc in encoders.items():
                key = (model, spec.sample_rate, spec.window_seconds)
                if key not in speed:
                    speed[key] = windows_per_second(
                        enc, spec.sample_rate, spec.window_seconds, args.batch
                    )
                hours = n / speed[key] / 3600
                totals[model] += hours
                row += (
                    f"{speed[key]:12.1f}{hours:6.2f}"
                    if model == "logspec"
                    else (f"{speed[key]:10.2f}{hours:7.1f}")
                )
            print(row)
        print(
            f"\ntotal encoder time on this machine: logspec {totals['logspec']:.1f} h, "
            f"fisher-tiny {totals['fisher-tiny']:.1f} h (threads: {torch.get_num_threads()})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
