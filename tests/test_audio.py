"""Audio layer: windowing rules of PROTOCOL.md section 2 by hand, reading and resampling."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from rmis.audio import cut_windows, load_windows, read_audio, resample, window_starts
from rmis.errors import RMISError


@pytest.mark.parametrize(
    "n, width, starts",
    [
        (50, 100, [0]),  # shorter: one window, padded
        (100, 100, [0]),  # exactly one window
        (104, 100, [0]),  # remainder 4 < 5 % of 100: dropped
        (105, 100, [0, 5]),  # remainder 5 = 5 %: last window ends at the end
        (250, 100, [0, 100, 150]),
        (300, 100, [0, 100, 200]),
    ],
)
def test_window_starts_by_hand(n: int, width: int, starts: list[int]) -> None:
    assert window_starts(n, width) == starts


def test_windows_remove_mean_before_padding() -> None:
    x = np.arange(1, 8, dtype=np.float32)  # 1..7, mean 4
    w = cut_windows(x, 10)
    np.testing.assert_allclose(w[0], [-3, -2, -1, 0, 1, 2, 3, 0, 0, 0])
    w = cut_windows(np.arange(12, dtype=np.float32), 5)  # starts 0, 5 and 7 (tail 2 >= 0.25)
    np.testing.assert_allclose(w[2], np.arange(7, 12) - 9.0)
    assert np.allclose(w.mean(axis=1), 0)


def test_read_downmixes_and_names_bad_files(tmp_path) -> None:
    stereo = np.stack([np.full(100, 0.5), np.full(100, -0.25)], 1)
    sf.write(tmp_path / "s.wav", stereo, 8000, subtype="FLOAT")
    x, sr = read_audio(tmp_path / "s.wav")
    assert sr == 8000 and x.shape == (100,) and np.allclose(x, 0.125)
    (tmp_path / "bad.wav").write_bytes(b"RIFF....not audio")
    with pytest.raises(RMISError, match="cannot read audio file .*bad.wav"):
        read_audio(tmp_path / "bad.wav")
    sf.write(tmp_path / "empty.wav", np.zeros((0, 1)), 8000)
    with pytest.raises(RMISError, match="empty.wav.* is empty"):
        read_audio(tmp_path / "empty.wav")
    sf.write(tmp_path / "nan.wav", np.array([0.0, np.nan, 1.0]), 8000, subtype="FLOAT")
    with pytest.raises(RMISError, match="nan.wav.* NaN"):
        read_audio(tmp_path / "nan.wav")


def test_resample_matches_scipy_in_band() -> None:
    sr_in, sr_out = 48_000, 16_000
    t = np.arange(sr_in) / sr_in
    x = (np.sin(2 * np.pi * 440 * t) + 0.5 * np.sin(2 * np.pi * 3000 * t)).astype(np.float32)
    y = resample(x, sr_in, sr_out)
    ref = resample_poly(x, 1, 3)
    assert y.shape == ref.shape
    core = slice(200, -200)  # filters differ at the edges only
    assert np.max(np.abs(y[core] - ref[core])) < 2e-3


def test_load_windows_checks_the_dataset_rate(tmp_path) -> None:
    sf.write(tmp_path / "a.wav", np.zeros(16_000), 16_000)
    w, rate = load_windows(tmp_path / "a.wav", 0.5, None, 16_000)
    assert rate == 16_000 and w.shape == (2, 8000)
    w, rate = load_windows(tmp_path / "a.wav", 0.5, 8_000)
    assert rate == 8_000 and w.shape == (2, 4000)
    with pytest.raises(RMISError, match="sampled at 16000 Hz but its dataset is at 48000"):
        load_windows(tmp_path / "a.wav", 0.5, None, 48_000)
