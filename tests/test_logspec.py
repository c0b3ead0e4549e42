"""logspec against an independent numpy/scipy computation and closed-form band layouts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.signal import stft
from scipy.signal.windows import hann

from rmis.encoders import load_encoder
from rmis.errors import RMISError


def reference(x: np.ndarray, sr: int, band_hz: float = 250.0) -> np.ndarray:
    n_fft, hop = 25 * sr // 1000, 10 * sr // 1000
    _, _, z = stft(
        x,
        window=hann(n_fft, sym=False),
        nperseg=n_fft,
        noverlap=n_fft - hop,
        boundary=None,
        padded=False,
        scaling="spectrum",
    )
    mag = np.abs(z) * hann(n_fft, sym=False).sum()  # undo scipy's 1/sum(window) scaling
    logmag = np.log(mag + 1e-6)  # [F, T]
    freqs = np.arange(n_fft // 2 + 1) * sr / n_fft
    n_bands = int(sr / 2 // band_hz)
    bands = np.stack(
        [
            logmag[(freqs >= b * band_hz) & (freqs < (b + 1) * band_hz)].mean(0)
            for b in range(n_bands)
        ]
    )  # [n_bands, T]
    return np.concatenate([bands.mean(1), bands.std(1)])


@pytest.mark.parametrize("sr", [12_000, 16_000, 44_100, 51_200])
def test_logspec_matches_scipy(sr: int) -> None:
    rng = np.random.default_rng(sr)
    x = rng.normal(size=(2, sr)).astype(np.float32) * 0.1
    enc = load_encoder("logspec")
    got = enc.embed(torch.from_numpy(x), sr).numpy()
    assert got.shape == (2, 2 * int(sr / 2 // 250))
    for i in range(2):
        np.testing.assert_allclose(got[i], reference(x[i].astype(np.float64), sr), atol=2e-4)


def test_logspec_sees_a_tone_in_its_band() -> None:
    sr = 16_000
    t = np.arange(sr) / sr
    x = torch.from_numpy(np.sin(2 * np.pi * 3100 * t).astype(np.float32))[None]
    mean = load_encoder("logspec").embed(x, sr)[0, :32]
    assert int(mean.argmax()) == 3100 // 250  # band 12 covers 3000-3250 Hz


def test_logspec_errors() -> None:
    with pytest.raises(RMISError, match="shorter than one STFT frame"):
        load_encoder("logspec").embed(torch.zeros(1, 100), 16_000)
    with pytest.raises(RMISError, match="band_hz must be positive"):
        load_encoder("logspec", band_hz=0)
    with pytest.raises(RMISError, match="narrower than the STFT bin spacing"):
        load_encoder("logspec", band_hz=10).embed(torch.zeros(1, 16_000), 16_000)
