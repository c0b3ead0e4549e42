"""Miniature copies of the 13 fault-diagnosis releases, for tests and demos.

:func:`write_miniature` writes, under ``root/<name>/``, a few short files per class that follow
the official release layout of each dataset (PROTOCOL.md section 1, the rules of
:mod:`rmis.data.release`): real file-name conventions with real-looking tokens taken from the
official preprocessing scripts and the source datasets (PU bearings ``KA01``/``KI04``, working
conditions ``N15_M07_F10`` and repetitions ``1..20``; SDUST speeds and loads; UMGED
``G``/``E``/``T``/``N``/``S`` tokens and channel numbers; MaFaulDa rotation frequencies with
dots), mono 16-bit PCM at the dataset's NATIVE rate (FLAC for WTPG, WAV otherwise). Tokens that
no rule reads (IICA noise and session folders, IIEE recording names) are illustrative.

Every class has enough groups (sealing units) that a sealed split at the dataset's test size is
possible (UMGED, test size 0.2: 6 groups per class, 66 groups); IIEE has ``train_cut/`` and
``test_cut/`` plus a stray uncut ``train/`` folder that the loader must ignore.

Content: deterministic noise (seeded by the file name) plus a tone whose frequency depends on
the class (200 Hz x 1.35**class index, below 4.1 kHz so it survives resampling to 16 kHz) and
varies by +-1 % per group, so a k-NN on any sensible representation beats chance. With the
default 0.2-s clips the 13 folders hold about 750 files, 14 MB, written in about a second.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

from rmis.data.specs import DATASETS, FD_DATASETS, closest
from rmis.errors import RMISError

# One entry per file: (path relative to the dataset folder, class, group key).
_Entry = tuple[str, str, str]


def _iica() -> Iterator[_Entry]:
    # <leak>/<noise>/<session>/<S>_<iO|niO>_<knob>_<mic>_<i>.wav; the raw name ends in "_".
    for leak in ("tubeleak", "ventleak", "ventlow"):
        for status, state in (("iO", "noleak"), ("niO", "leak")):
            for noise, session, s in (("lab", "session1", 1), ("hydr", "session2", 4)):
                for mic in ("mic1", "mic2"):
                    raw = f"{leak}/{noise}/{session}/{s}_{status}_3_{mic}_"
                    for i in range(2):
                        yield f"{raw}{i}.wav", f"{leak}_{state}", raw


def _iiee() -> Iterator[_Entry]:
    folders = {"good": "engine1_good", "broken": "engine2_broken", "heavyload": "engine3_heavyload"}
    recs = {
        "train_cut": ("pure_1", "talking_2", "atmo_medium_3"),
        "test_cut": ("pure_4", "atmo_high_5"),
    }
    for cls, folder in folders.items():
        for split, names in recs.items():
            for rec in names:
                for i in range(2):
                    yield f"{split}/{folder}/{rec}_{i}.wav", cls, f"{split}/{folder}/{rec}"
        # the uncut originals, which the loader ignores
        yield f"train/{folder}/pure_1.wav", cls, f"train/{folder}/pure_1"


def _wtpg() -> Iterator[_Entry]:
    letters = {"broken": "B", "healthy": "N", "missing_tooth": "M", "root_crack": "R", "wear": "W"}
    for cls, x in letters.items():
        for k, speed in ((1, 20), (2, 35)):
            for ch in (1, 2):
                rec = f"{cls}_{k}_{x}{k}_{speed}_channel{ch}"
                for i in range(2):
                    yield f"{rec}_ch0_{i}.flac", cls, rec


_MAFAULDA_PATHS = {
    "horizontal-misalignment": "horizontal-misalignment_0.5mm",
    "imbalance": "imbalance_6g",
    "normal": "normal",
    "overhang_ball_fault": "overhang_ball_fault_0g",
    "overhang_cage_fault": "overhang_cage_fault_6g",
    "overhang_outer_race": "overhang_outer_race_20g",
    "underhang_ball_fault": "underhang_ball_fault_0g",
    "underhang_cage_fault": "underhang_cage_fault_20g",
    "underhang_outer_race": "underhang_outer_race_35g",
    "vertical-misalignment": "vertical-misalignment_0.51mm",
}


def _mafaulda(channels: Sequence[int], rotations: Sequence[str]) -> Iterator[_Entry]:
    for cls, path in _MAFAULDA_PATHS.items():
        for rot in rotations:
            for ch in channels:
                stem = f"{path}_{rot}_channel{ch}"
                yield f"{stem}.wav", cls, stem


def _sdust_bearing() -> Iterator[_Entry]:
    for cls in DATASETS["sdust_bearing"].classes:
        for cond in ("1000_0", "1500~2500_20_1"):
            for ch in (1, 6):
                rec = f"{cls}_{cls}_{cond}_channel{ch}"
                for i in range(2):
                    yield f"{rec}_ch0_{i}.wav", cls, rec


def _sdust_gear() -> Iterator[_Entry]:
    for cls in DATASETS["sdust_gear"].classes:
        head = "NC_normal" if cls == "normal" else f"{cls}_{cls}"
        for cond in ("1000_0-0.2A_1", "flu_flu_2" if cls.startswith("sun") else "1800_0.35A_2"):
            for ch in (1, 6):
                rec = f"{head}_{cond}_channel{ch}"
                for i in range(2):
                    yield f"{rec}_ch0_{i}.wav", cls, rec


def _umged(channels: Sequence[str]) -> Iterator[_Entry]:
    # 6 groups per class whatever the number of channels: recordings x channels = 6.
    recordings = [("1", "1", "1200"), ("2", "3", "1800"), ("1", "4", "1500")]
    recordings += [("2", "2", "1200"), ("1", "2", "1800"), ("2", "4", "1500")]
    serial = 0
    for cls in DATASETS["umged_sound"].classes:
        for r, (g, t, speed) in enumerate(recordings[: 6 // len(channels)]):
            serial += 1
            base = f"G{g}_{cls}_T{t}_N{serial:03d}_G{g}_{cls}_T{t}_S{speed}"
            for ch in channels:
                rec = f"{base}_channel{ch}"
                for i in range(2 if r == 0 else 1):
                    yield f"{rec}_ch0_{i}.wav", cls, rec


def _pu(channels: Sequence[int]) -> Iterator[_Entry]:
    bearings = {
        "healthy": [("K001", "N15_M07_F10"), ("K002", "N09_M07_F10"), ("K001", "N15_M01_F10")],
        "IR": [
            ("artificial_KI01", "N15_M07_F10"),
            ("lifetime_KI04", "N15_M01_F10"),
            ("artificial_KI01", "N15_M07_F04"),
        ],
        "OR": [
            ("artificial_KA01", "N15_M07_F10"),
            ("lifetime_KA04", "N09_M07_F10"),
            ("artificial_KA08", "N15_M01_F10"),
        ],
    }
    for cls, items in bearings.items():
        for bearing, condition in items:
            code = bearing.rsplit("_", 1)[-1]
            group = f"{cls}_{bearing}_{condition}_{code}"
            for m in (1, 20):
                for ch in channels:
                    yield f"{group}_{m}_channel{ch}.wav", cls, group


_ROT = ("12.288", "24.576", "36.864")

_LAYOUTS = {
    "iica": _iica,
    "iiee": _iiee,
    "wtpg": _wtpg,
    "mafaulda_sound": lambda: _mafaulda([8], _ROT),
    "mafaulda_vib": lambda: _mafaulda([2, 3, 4, 5, 6, 7], _ROT[:1]),
    "sdust_bearing": _sdust_bearing,
    "sdust_gear": _sdust_gear,
    "umged_sound": lambda: _umged(["06"]),
    "umged_vib": lambda: _umged(["03", "04", "05"]),
    "umged_vol": lambda: _umged(["07", "08"]),
    "umged_cur": lambda: _umged(["01", "02"]),
    "pu_vib": lambda: _pu([7]),
    "pu_cur": lambda: _pu([2, 3]),
}


def miniature_files(name: str) -> list[tuple[str, str, str]]:
    """``(file, class, group key)`` of every file :func:`write_miniature` writes for ``name``.

    The group key is the writer's own notion of a recording channel (for checks); the loader's
    group follows from the name alone.
    """
    if name not in _LAYOUTS:
        raise RMISError(
            f"no miniature for {name!r}: miniatures exist for the fault-diagnosis datasets "
            f"({closest(name, FD_DATASETS)})"
        )
    return list(_LAYOUTS[name]())


def _signal(file: str, group: str, class_index: int, sr: int, seconds: float) -> np.ndarray:
    """``[n]`` int16 samples: noise seeded by the file plus the class tone (jittered by group)."""
    n = max(1, round(seconds * sr))
    rng = np.random.default_rng(zlib.crc32(file.encode()))
    jitter = 1.0 + 0.02 * (zlib.crc32(group.encode()) / 0xFFFFFFFF - 0.5)
    freq = 200.0 * 1.35**class_index * jitter
    t = np.arange(n) / sr
    x = 0.3 * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))
    x += 0.1 * rng.standard_normal(n)
    return np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)


def write_miniature(
    root: str | Path, names: Sequence[str] | None = None, seconds: float = 0.2
) -> None:
    """Write miniature releases of FD datasets under ``root/<name>/`` (for tests and demos).

    Args:
        root: data root; each dataset goes to ``root/<name>/`` (created; existing files of the
            same names are overwritten, nothing is deleted).
        names: FD dataset names (default: all 13).
        seconds: length of every clip in seconds (> 0).

    Raises:
        RMISError: an unknown or non-FD dataset name, or ``seconds <= 0``.
    """
    if not seconds > 0:
        raise RMISError(f"seconds must be positive, got {seconds}")
    chosen = list(FD_DATASETS if names is None else names)
    layouts = {name: miniature_files(name) for name in chosen}  # validates every name first
    for name, entries in layouts.items():
        spec = DATASETS[name]
        index = {c: i for i, c in enumerate(spec.classes)}
        folder = Path(root) / name
        fmt = "FLAC" if name == "wtpg" else "WAV"
        for rel, cls, group in entries:
            path = folder / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            pcm = _signal(f"{name}/{rel}", group, index[cls], spec.sample_rate, seconds)
            sf.write(str(path), pcm, spec.sample_rate, subtype="PCM_16", format=fmt)


# ------------------------------------------------------------------------------------------
# DCASE (dcase20 ... dcase25)
# ------------------------------------------------------------------------------------------

#: Sections of a miniature per (year family, subset).
_DCASE_SECTIONS = {
    2020: {"dev": (0, 2), "eval": (1, 3)},
    2021: {"dev": (0, 1), "eval": (3, 4)},
    2022: {"dev": (0, 1), "eval": (3, 4)},
}


def _dcase_sections(year: int, subset: str) -> tuple[int, ...]:
    return _DCASE_SECTIONS.get(year, {"dev": (0,), "eval": (0,)})[subset]


def _labelled(year: int, section: int, domain: str, split: str, label: str, i: int) -> str:
    if year == 2020:
        return f"{label}_id_{section:02d}_{i:08d}.wav"
    return f"section_{section:02d}_{domain}_{split}_{label}_{i:04d}_a_1.wav"


def write_dcase_miniature(
    root: str | Path,
    years: Sequence[int] = (2020, 2021, 2022, 2023, 2024, 2025),
    seconds: float = 0.2,
) -> None:
    """Write miniature DCASE task-2 datasets ``root/dcase<yy>/`` in the official layouts (dev
    and eval, anonymised eval test clips) with their ground-truth list
    ``eval_data_list_<year>.csv`` beside them (for tests and demos). Every machine of the
    year's spec has its sections, source and target clips, normal and anomalous test clips;
    anomalies carry an extra tone."""
    for year in years:
        spec = DATASETS[f"dcase{year % 100}"]
        folder = Path(root) / spec.name
        gt_lines: list[str] = []
        for subset in ("dev", "eval"):
            for m_index, machine in enumerate(spec.machines[subset]):
                base = folder / f"{subset}_data" / machine
                if subset == "eval":
                    gt_lines.append(machine)
                n = 0
                for section in _dcase_sections(year, subset):
                    domains = ("source",) if year == 2020 else ("source", "target")
                    for domain in domains:
                        for _ in range(3 if domain == "source" else 2):
                            name = _labelled(year, section, domain, "train", "normal", n)
                            _write_clip(base / "train" / name, m_index, False, seconds)
                            n += 1
                        for label in ("normal", "anomaly"):
                            for _ in range(2):
                                name = _labelled(year, section, domain, "test", label, n)
                                test_dir = f"{domain}_test" if year == 2021 else "test"
                                if subset == "dev":
                                    _write_clip(
                                        base / test_dir / name, m_index, label == "anomaly", seconds
                                    )
                                else:
                                    anon = _anonymised(year, section, domain, n)
                                    _write_clip(
                                        base / test_dir / anon, m_index, label == "anomaly", seconds
                                    )
                                    labelled = name[:-4] if year == 2025 else name
                                    extra = f",{int(label == 'anomaly')}" if year == 2020 else ""
                                    gt_lines.append(f"{anon},{labelled}{extra}")
                                n += 1
        gt = folder / f"eval_data_list_{year}.csv"
        gt.write_text("\n".join(gt_lines) + "\n")


def _anonymised(year: int, section: int, domain: str, i: int) -> str:
    if year == 2020:
        return f"id_{section:02d}_{i:08d}.wav"
    if year == 2021:
        return f"section_{section:02d}_{domain}_test_{i:04d}.wav"
    return f"section_{section:02d}_{i:04d}.wav"


def _write_clip(path: Path, machine_index: int, anomaly: bool, seconds: float) -> None:
    sr = 16_000
    n = max(1, round(seconds * sr))
    rng = np.random.default_rng(zlib.crc32(str(path.name).encode() + bytes([machine_index])))
    t = np.arange(n) / sr
    x = 0.2 * np.sin(2 * np.pi * (300.0 + 40 * machine_index) * t) + 0.05 * rng.standard_normal(n)
    if anomaly:
        x += 0.2 * np.sin(2 * np.pi * 3000.0 * t)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(
        path, np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16), sr, subtype="PCM_16"
    )
