"""The synthetic suite: determinism, caching, layouts and physics against closed form."""

from __future__ import annotations

import csv
import hashlib
import math
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import butter, hilbert, sosfiltfilt, welch
from scipy.stats import ttest_ind

from rmis.data import synth
from rmis.data.synth import SYNTH_DATASETS, ensure, fd_recordings, generate
from rmis.errors import RMISError

FD_NAMES = [n for n, s in SYNTH_DATASETS.items() if s.task == "fd"]
AD_NAME = re.compile(
    r"^section_(?P<section>\d{2})_(?P<domain>source|target)_(?P<split>train|test)_"
    r"(?P<label>normal|anomaly)_(?P<index>\d{4})_(?P<attr>[A-Za-z]+_\d+)\.wav$"
)


def _hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, keyed by its relative path."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns for p in folder.rglob("*")}


def _manifest(folder: Path) -> list[dict[str, str]]:
    with open(folder / "manifest.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def suite(synth_root: Path) -> Path:
    """All five datasets, generated once per session (conftest) into one cache folder."""
    for name in SYNTH_DATASETS:
        assert synth._marker_ok(synth_root / name)
    return synth_root


@pytest.fixture(scope="module")
def suite_hashes(suite: Path) -> dict[str, dict[str, str]]:
    return {name: _hashes(suite / name) for name in SYNTH_DATASETS}


def _read(path: Path) -> tuple[np.ndarray, int]:
    x, fs = sf.read(path, dtype="float64")
    return x, fs


# ------------------------------------------------------------------------------------------------
# specs and names
# ------------------------------------------------------------------------------------------------


def test_specs() -> None:
    assert list(SYNTH_DATASETS) == [
        "synth_ad",
        "synth_fd16k",
        "synth_fd25k6",
        "synth_fd48k",
        "synth_fd64k",
    ]
    ad = SYNTH_DATASETS["synth_ad"]
    assert (ad.task, ad.modality, ad.sample_rate, ad.window_seconds) == ("ad", "sound", 16_000, 10)
    assert ad.protocol == "dcase2023" and ad.year == 2023
    assert ad.machines == {"dev": ("synthfan", "synthpump")}
    rates = [SYNTH_DATASETS[n].sample_rate for n in FD_NAMES]
    assert rates == [16_000, 25_600, 48_000, 64_000]
    for name in FD_NAMES:
        spec = SYNTH_DATASETS[name]
        assert spec.task == "fd" and spec.protocol == "fd" and spec.sealed
        assert spec.test_size == 0.5 and spec.window_seconds == 10.0
        assert len(spec.classes) == len(set(spec.classes)) >= 3
        assert spec.modality in ("sound", "vibration", "current")


def test_unknown_name_lists_the_suite(tmp_path: Path) -> None:
    for call in (generate, ensure):
        with pytest.raises(RMISError) as err:
            call("synth_nope", tmp_path)
        assert all(name in str(err.value) for name in SYNTH_DATASETS)
    with pytest.raises(RMISError, match="synth_fd48k"):
        fd_recordings("nope")
    with pytest.raises(RMISError, match="anomaly-detection"):
        fd_recordings("synth_ad")
    assert list(tmp_path.iterdir()) == []


def test_foreign_folder_is_not_replaced(tmp_path: Path) -> None:
    mine = tmp_path / "synth_fd16k"
    mine.mkdir()
    (mine / "notes.txt").write_text("user data")
    with pytest.raises(RMISError, match="not a synthetic dataset"):
        ensure("synth_fd16k", tmp_path)
    assert (mine / "notes.txt").read_text() == "user data"


# ------------------------------------------------------------------------------------------------
# determinism, caching, interruption
# ------------------------------------------------------------------------------------------------


def test_generation_is_byte_identical(
    tmp_path: Path, suite_hashes: dict[str, dict[str, str]]
) -> None:
    """A second generation in another folder gives the same bytes (all files, marker included).

    ``synth_fd16k`` is checked the same way below; the others by their first files.
    """
    name = "synth_fd25k6"
    assert _hashes(generate(name, tmp_path)) == suite_hashes[name]
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary folder left behind


def test_ensure_reuses_then_regenerates_on_version_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suite_hashes: dict[str, dict[str, str]]
) -> None:
    name = "synth_fd16k"
    folder = ensure(name, tmp_path)
    assert folder == tmp_path / name
    assert (folder / synth.MARKER_FILE).read_text().strip() == synth.SYNTH_VERSION
    before = _mtimes(folder)
    assert ensure(name, tmp_path) == folder
    assert _mtimes(folder) == before  # up to date: nothing rewritten

    monkeypatch.setattr(synth, "SYNTH_VERSION", "0-test")
    assert ensure(name, tmp_path) == folder
    assert (folder / synth.MARKER_FILE).read_text().strip() == "0-test"
    assert _mtimes(folder) != before
    after = _hashes(folder)
    after.pop(synth.MARKER_FILE)
    expected = dict(suite_hashes[name])
    expected.pop(synth.MARKER_FILE)
    assert after == expected  # regenerated byte for byte
    assert [p.name for p in tmp_path.iterdir()] == [name]


def _failing_writer(monkeypatch: pytest.MonkeyPatch, after: int, seen: dict[str, str]) -> None:
    """Make the WAV writer write ``after`` files, then fail.

    ``seen`` receives the sha256 of each written file, keyed by its path relative to the
    dataset's temporary folder.
    """
    real = synth._write_wav

    def write(path: Path, pcm: np.ndarray, sample_rate: int) -> None:
        if len(seen) >= after:
            raise OSError("simulated failure: disk full")
        real(path, pcm, sample_rate)
        top = next(i for i, part in enumerate(path.parts) if ".partial-" in part)
        seen["/".join(path.parts[top + 1 :])] = hashlib.sha256(path.read_bytes()).hexdigest()

    monkeypatch.setattr(synth, "_write_wav", write)


def test_interrupted_generation_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "synth_fd16k"
    seen: dict[str, str] = {}
    _failing_writer(monkeypatch, 5, seen)
    with pytest.raises(OSError, match="disk full"):
        ensure(name, tmp_path)
    assert len(seen) == 5
    assert list(tmp_path.iterdir()) == []  # neither the dataset nor a temporary folder

    # A killed process leaves its temporary folder: an old one is swept, a recent one (maybe
    # another process at work) is left alone.
    stale, recent = tmp_path / f".{name}.partial-dead", tmp_path / f".{name}.partial-busy"
    for folder in (stale, recent):
        folder.mkdir()
        (folder / "x.wav").write_bytes(b"")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))

    monkeypatch.undo()
    folder = ensure(name, tmp_path)
    assert (folder / synth.MARKER_FILE).read_text().strip() == synth.SYNTH_VERSION
    assert len(_manifest(folder)) == len(list(folder.glob("*.wav"))) == 160
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([recent.name, name])


@pytest.mark.parametrize("name", ["synth_ad", "synth_fd48k", "synth_fd64k"])
def test_first_files_of_a_second_run_are_identical(
    name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    suite_hashes: dict[str, dict[str, str]],
) -> None:
    """A second (interrupted) run writes the same bytes, and cleans up after the failure."""
    seen: dict[str, str] = {}
    _failing_writer(monkeypatch, 8, seen)
    with pytest.raises(OSError):
        generate(name, tmp_path)
    assert len(seen) == 8
    assert seen == {k: suite_hashes[name][k] for k in seen}
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------
# layouts
# ------------------------------------------------------------------------------------------------


def _check_audio(path: Path, sample_rate: int) -> None:
    info = sf.info(str(path))
    assert (info.format, info.subtype, info.channels) == ("WAV", "PCM_16", 1), path
    assert info.samplerate == sample_rate, path
    assert info.frames == int(10.0 * sample_rate), path


def test_ad_layout(suite: Path) -> None:
    spec = SYNTH_DATASETS["synth_ad"]
    folder = suite / "synth_ad"
    assert sorted(p.name for p in folder.iterdir()) == [synth.MARKER_FILE, "dev_data"]
    machines = sorted(p.name for p in (folder / "dev_data").iterdir())
    assert machines == sorted(spec.machines["dev"])
    for machine in machines:
        assert sorted(p.name for p in (folder / "dev_data" / machine).iterdir()) == [
            "test",
            "train",
        ]
        cells: dict[tuple, int] = {}
        for path in sorted((folder / "dev_data" / machine).rglob("*.wav")):
            m = AD_NAME.match(path.name)
            assert m, path.name
            assert m["split"] == path.parent.name
            key = (int(m["section"]), m["split"], m["domain"], m["label"])
            cells[key] = cells.get(key, 0) + 1
            _check_audio(path, spec.sample_rate)
        for section in (0, 1):
            assert cells[(section, "train", "source", "normal")] == 20
            assert cells[(section, "train", "target", "normal")] == 4
            assert (section, "train", "source", "anomaly") not in cells
            assert (section, "train", "target", "anomaly") not in cells
            for domain in ("source", "target"):
                for label in ("normal", "anomaly"):
                    assert cells[(section, "test", domain, label)] == 5
        assert {k[0] for k in cells} == {0, 1}


@pytest.mark.parametrize("name", FD_NAMES)
def test_fd_layout(name: str, suite: Path) -> None:
    spec = SYNTH_DATASETS[name]
    folder = suite / name
    with open(folder / "manifest.csv", encoding="utf-8") as fh:
        assert fh.readline() == "path,label,group\n"
    rows = _manifest(folder)
    wavs = sorted(p.name for p in folder.iterdir() if p.suffix == ".wav")
    assert sorted(r["path"] for r in rows) == wavs
    assert {p.name for p in folder.iterdir()} == set(wavs) | {
        "manifest.csv",
        "conditions.csv",
        synth.MARKER_FILE,
    }
    groups: dict[str, set[str]] = {}
    for r in rows:
        m = re.fullmatch(r"(?P<group>(?P<label>.+)_rec\d{2}_ch\d)_(?P<seg>\d{2})\.wav", r["path"])
        assert m, r["path"]
        assert (r["label"], r["group"]) == (m["label"], m["group"])
        assert r["label"] in spec.classes
        groups.setdefault(r["label"], set()).add(r["group"])
        _check_audio(folder / r["path"], spec.sample_rate)
    assert set(groups) == set(spec.classes)
    assert all(len(g) >= 4 for g in groups.values())
    with open(folder / "conditions.csv", newline="", encoding="utf-8") as fh:
        cond = list(csv.DictReader(fh))
    recs = fd_recordings(name)
    assert [c["recording"] for c in cond] == [r.name for r in recs]
    for c, r in zip(cond, recs):
        assert float(c["shaft_hz"]) == pytest.approx(r.shaft_hz, abs=1e-6)
        assert float(c["bpfo_hz"]) == pytest.approx(r.bearing.bpfo(r.shaft_hz), abs=1e-6)


def test_fd_speeds_vary_a_few_percent() -> None:
    for name in FD_NAMES:
        speeds = np.array([r.shaft_hz for r in fd_recordings(name)])
        spread = speeds.max() / speeds.min() - 1.0
        assert 0.02 < spread < 0.09, name


def test_no_clipping(suite: Path) -> None:
    for name in SYNTH_DATASETS:
        for path in sorted((suite / name).rglob("*.wav"))[::7]:
            x, _ = sf.read(path, dtype="int16")
            assert np.abs(x.astype(np.int32)).max() < 32767, path
            assert x.std() > 100, path  # uses the 16-bit range


# ------------------------------------------------------------------------------------------------
# physics against closed form
# ------------------------------------------------------------------------------------------------


def _closed_form(rec: synth.Recording) -> dict[str, float]:
    """Textbook defect frequencies (Hz) from the bearing geometry and the shaft speed."""
    g, fr = rec.bearing, rec.shaft_hz
    rho = g.ball_diameter / g.pitch_diameter * math.cos(math.radians(g.contact_angle))
    return {
        "shaft": fr,
        "ftf": fr / 2 * (1 - rho),
        "bpfo": g.n_balls * fr / 2 * (1 - rho),
        "bpfi": g.n_balls * fr / 2 * (1 + rho),
        "2bsf": g.pitch_diameter / g.ball_diameter * fr * (1 - rho**2),
    }


def _envelope_spectrum(x: np.ndarray, fs: int, band: tuple[float, float]):
    """Spectrum of the Hilbert envelope of ``x`` band-passed to ``band`` (Hz)."""
    sos = butter(4, band, btype="bandpass", fs=fs, output="sos")
    env = np.abs(hilbert(sosfiltfilt(sos, x)))
    env -= env.mean()
    spec = np.abs(np.fft.rfft(env * np.hanning(env.size)))
    return np.fft.rfftfreq(env.size, 1.0 / fs), spec


def _peak(f: np.ndarray, spec: np.ndarray, lo: float, hi: float) -> float:
    """Frequency (Hz) of the largest ``spec`` value strictly between ``lo`` and ``hi`` Hz."""
    m = (f > lo) & (f < hi)
    return float(f[m][np.argmax(spec[m])])


def _line_power(f: np.ndarray, spec: np.ndarray, freq: float) -> float:
    """Squared magnitude of the bin nearest ``freq`` (Hz)."""
    return float(spec[np.argmin(np.abs(f - freq))] ** 2)


def _log_energy(f: np.ndarray, psd: np.ndarray, bands: list[tuple[float, float]]) -> float:
    """Natural log of the PSD summed over the bands ``[lo, hi)`` (Hz)."""
    return float(np.log(sum(psd[(f >= lo) & (f < hi)].sum() for lo, hi in bands)))


def test_bearing_envelope_spectra_peak_at_defect_frequencies(suite: Path) -> None:
    """Outer race: the envelope peaks at BPFO; inner race: at the shaft rate (load-zone
    modulation) with the BPFI line nearby; ball: at the cage rate with the 2 BSF line nearby."""
    bin_hz = 0.1  # 10-s clips
    for rec in fd_recordings("synth_fd25k6"):
        if rec.label == "normal":
            continue
        x, fs = _read(suite / "synth_fd25k6" / f"{rec.name}_ch1_00.wav")
        f, spec = _envelope_spectrum(x, fs, (2000.0, 4000.0))  # around the 2.7 kHz mode
        cf = _closed_form(rec)
        assert cf["bpfo"] == pytest.approx(rec.bearing.bpfo(rec.shaft_hz))
        top = _peak(f, spec, 5.0, 500.0)
        if rec.label == "outer":
            assert abs(top - cf["bpfo"]) <= 2 * bin_hz, (rec.name, top, cf)
        elif rec.label == "inner":
            assert abs(top - cf["shaft"]) <= 2 * bin_hz, (rec.name, top, cf)
            near = _peak(f, spec, 0.85 * cf["bpfi"], 1.15 * cf["bpfi"])
            assert abs(near - cf["bpfi"]) <= 2 * bin_hz, (rec.name, near, cf)
        else:
            assert abs(top - cf["ftf"]) <= 2 * bin_hz, (rec.name, top, cf)
            # the cage-rate modulation puts sidebands at 2 BSF +- FTF, which can outgrow the
            # carrier line: the peak must be one of the three
            near = _peak(f, spec, 0.85 * cf["2bsf"], 1.15 * cf["2bsf"])
            lines = [cf["2bsf"] + k * cf["ftf"] for k in (-1, 0, 1)]
            assert min(abs(near - line) for line in lines) <= 2 * bin_hz, (rec.name, near, cf)


def test_healthy_bearing_has_no_defect_line(suite: Path) -> None:
    for rec in fd_recordings("synth_fd25k6"):
        if rec.label != "normal":
            continue
        x, fs = _read(suite / "synth_fd25k6" / f"{rec.name}_ch1_00.wav")
        f, spec = _envelope_spectrum(x, fs, (2000.0, 4000.0))
        cf = _closed_form(rec)
        m = (f > 50.0) & (f < 500.0)
        at_bpfo = spec[np.argmin(np.abs(f - cf["bpfo"]))]
        assert at_bpfo < 4.0 * np.median(spec[m]), rec.name


def test_gear_spectrum_shows_mesh_frequency_and_crack_sidebands(suite: Path) -> None:
    sideband_ratio: dict[str, list[float]] = {"healthy": [], "tooth_crack": []}
    for name in ("synth_fd16k", "synth_fd48k"):
        for rec in fd_recordings(name):
            if rec.label not in ("healthy", "tooth_crack"):
                continue
            x, fs = _read(suite / name / f"{rec.name}_ch1_00.wav")
            spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
            f = np.fft.rfftfreq(x.size, 1.0 / fs)
            assert rec.mesh_hz is not None
            top = _peak(f, spec, 200.0, 5000.0)
            assert abs(top - rec.mesh_hz) <= 0.2, (rec.name, top, rec.mesh_hz)
            if name == "synth_fd48k":
                # Energy of the sidebands f_mesh +- k f_r (k = 2..8) relative to the mesh line.
                side = sum(
                    _line_power(f, spec, rec.mesh_hz + sign * k * rec.shaft_hz)
                    for k in range(2, 9)
                    for sign in (-1, 1)
                )
                sideband_ratio[rec.label].append(side / _line_power(f, spec, rec.mesh_hz))
    crack, healthy = sideband_ratio["tooth_crack"], sideband_ratio["healthy"]
    assert min(crack) > max(healthy)  # every cracked gear shows more sideband power
    assert np.median(crack) > 5 * np.median(healthy)


@pytest.mark.parametrize(
    ("name", "pair", "de_bands", "nde_bands"),
    [
        ("synth_fd48k", ("outer_de", "outer_nde"), [(11e3, 12e3), (14e3, 15e3)],
         [(16.5e3, 17.5e3), (20e3, 21e3)]),
        ("synth_fd64k", ("inner_de", "inner_nde"), [(12.5e3, 13.5e3), (15.5e3, 16.5e3)],
         [(21.5e3, 22.5e3), (25.5e3, 26.5e3)]),
    ],
)  # fmt: skip
def test_class_pair_differs_only_above_8khz(
    suite: Path,
    name: str,
    pair: tuple[str, str],
    de_bands: list[tuple[float, float]],
    nde_bands: list[tuple[float, float]],
) -> None:
    """Below 8 kHz the two classes are statistically indistinguishable (Welch t-tests on per-group
    band energies); above 8 kHz the DE / NDE housing bands separate them."""
    rows = _manifest(suite / name)
    low_edges = np.arange(0.0, 8000.0, 1000.0)

    def features(label: str, channel: str) -> np.ndarray:
        per_group: dict[str, list[np.ndarray]] = {}
        for r in rows:
            if r["label"] != label or not r["group"].endswith(channel):
                continue
            x, fs = _read(suite / name / r["path"])
            f, p = welch(x, fs, nperseg=4096)
            low = [_log_energy(f, p, [(e, e + 1000.0)]) for e in low_edges]
            de = _log_energy(f, p, de_bands)
            nde = _log_energy(f, p, nde_bands)
            per_group.setdefault(r["group"], []).append(np.array([*low, de - nde]))
        return np.array([np.mean(v, axis=0) for v in per_group.values()])

    for channel in ("ch1", "ch2"):
        a, b = features(pair[0], channel), features(pair[1], channel)
        assert len(a) == len(b) == 10
        p_low = ttest_ind(a[:, :-1], b[:, :-1], equal_var=False).pvalue
        assert p_low.min() > 0.01 / len(low_edges), (channel, p_low)  # Bonferroni
        ratio_a, ratio_b = a[:, -1], b[:, -1]
        assert ratio_a.mean() - ratio_b.mean() > 0.5, (channel, ratio_a, ratio_b)  # > 2 dB
        assert ttest_ind(ratio_a, ratio_b, equal_var=False).pvalue < 0.01, channel


def test_bearing_geometry_closed_form() -> None:
    g = synth.BearingGeometry("6205", 9, 7.94, 39.04)
    fr = 29.95
    # Published SKF 6205 multipliers (x shaft speed): BPFO 3.585, BPFI 5.415, BSF 2.357, FTF 0.398.
    assert g.bpfo(fr) / fr == pytest.approx(3.585, abs=2e-3)
    assert g.bpfi(fr) / fr == pytest.approx(5.415, abs=2e-3)
    assert g.bsf(fr) / fr == pytest.approx(2.357, abs=2e-3)
    assert g.ftf(fr) / fr == pytest.approx(0.398, abs=2e-3)
    assert g.bpfo(fr) + g.bpfi(fr) == pytest.approx(g.n_balls * fr)
