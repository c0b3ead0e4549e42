"""The benchmark's resampler (PROTOCOL.md section 2): a port of torchaudio's default
``transforms.Resample`` checked against an independent float64 evaluation of the windowed-sinc
sum, written per output sample from the formula."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf
import torch

from rmis.audio import (
    PREPROCESSING_VERSION,
    cut_windows,
    load_windows,
    read_audio,
    resample,
    sinc_resample,
    sinc_resample_kernel,
)
from rmis.errors import RMISError

WIDTH, ROLLOFF = 6, 0.99


def reference(x: np.ndarray, sr_in: int, sr_out: int, phase32: bool = True) -> np.ndarray:
    """y[J] = sum_i x[i] h(base (i / orig - J / new)) in float64, per output sample, with
    ``orig``/``new`` the gcd-reduced rates, base = 0.99 min(orig, new) and
    h(u) = (base / orig) sinc(pi u) cos(pi u / 2W)^2 for |u| < W, else 0; samples outside the
    signal are 0. Writing J = n new + j: J / new = n + j / new, where torchaudio evaluates
    j / new in float32 (``phase32``; up to ~5e-6 at 441 -> 160)."""
    g = math.gcd(sr_in, sr_out)
    orig, new = sr_in // g, sr_out // g
    x = x.astype(np.float64)
    n_in = len(x)
    n_out = -(-n_in * new // orig)
    base = min(orig, new) * ROLLOFF
    y = np.zeros(n_out)
    for big_j in range(n_out):
        block, j = divmod(big_j, new)
        phase = float(np.float32(j / new)) if phase32 else j / new
        t = block + phase  # output time, counted in groups of orig input samples
        lo = max(0, math.floor(orig * (t - WIDTH / base)))
        hi = min(n_in - 1, math.ceil(orig * (t + WIDTH / base)))
        i = np.arange(lo, hi + 1)
        u = base * (i / orig - t)
        sinc = np.where(u == 0, 1.0, np.sin(np.pi * u) / np.where(u == 0, 1.0, np.pi * u))
        h = sinc * np.cos(np.pi * u / (2 * WIDTH)) ** 2 * base / orig
        y[big_j] = np.sum(x[i] * h * (np.abs(u) < WIDTH))
    return y


@pytest.mark.parametrize(
    ("sr_in", "sr_out", "n"),
    [
        (48_000, 16_000, 3_001),  # 3 -> 1
        (44_100, 16_000, 2_205),  # 441 -> 160
        (16_000, 32_000, 1_003),  # upsampling 1 -> 2
        (8_000, 24_000, 777),  # 1 -> 3 (MuQ's rate)
        (25_600, 16_000, 2_560),  # 8 -> 5
        (51_200, 32_000, 1_999),  # 8 -> 5, PaSST's rate
    ],
)
def test_matches_the_windowed_sinc_sum(sr_in: int, sr_out: int, n: int) -> None:
    rng = np.random.default_rng(sr_in + n)
    x = rng.uniform(-1, 1, n).astype(np.float32)
    y = resample(x, sr_in, sr_out)
    assert y.dtype == np.float32
    ref = reference(x, sr_in, sr_out)
    assert y.shape == ref.shape == (math.ceil(n * sr_out / sr_in),)
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-6)
    # the float32 phase is torchaudio's; the exact-phase sum differs by less than 1e-5
    np.testing.assert_allclose(y, reference(x, sr_in, sr_out, phase32=False), rtol=0, atol=1e-5)


def test_length_rule_identity_and_batching() -> None:
    for sr_in, sr_out in [(48_000, 16_000), (44_100, 16_000), (16_000, 24_000), (12_800, 16_000)]:
        for n in (1, 2, 3, 159, 160, 441, 1000):
            y = resample(np.ones(n, np.float32), sr_in, sr_out)
            assert len(y) == -(-n * sr_out // sr_in), (sr_in, sr_out, n)
    x = np.random.default_rng(0).standard_normal(500).astype(np.float32)
    assert resample(x, 16_000, 16_000) is x
    t = torch.from_numpy(x)
    assert sinc_resample(t, 8_000, 8_000) is t
    batch = torch.stack([t, -2 * t])[None]  # [1, 2, L]
    out = sinc_resample(batch, 48_000, 16_000)
    assert out.shape == (1, 2, 167)
    torch.testing.assert_close(out[0, 1], -2 * out[0, 0])
    with pytest.raises(RMISError, match="floating-point"):
        sinc_resample(torch.ones(10, dtype=torch.int64), 2, 1)
    with pytest.raises(RMISError, match="unknown resampler 'linear'"):
        resample(x, 2, 1, method="linear")


def test_kernel_uses_gcd_reduced_rates() -> None:
    k1, w1 = sinc_resample_kernel(48_000, 16_000)
    k2, w2 = sinc_resample_kernel(3, 1)
    assert w1 == w2 == math.ceil(6 * 3 / 0.99) and torch.equal(k1, k2)
    k, w = sinc_resample_kernel(44_100, 16_000)
    assert k.shape == (160, 1, 2 * w + 441) and k.dtype == torch.float32
    # each phase filter passes DC with gain ~1 (the sum of its taps)
    np.testing.assert_allclose(k.sum(-1).flatten().numpy(), 1.0, atol=2e-2)


def test_tone_frequency_is_preserved_and_aliases_are_removed() -> None:
    sr_in, sr_out, f0 = 44_100, 16_000, 1_000.0
    t = np.arange(sr_in) / sr_in
    tone = np.sin(2 * np.pi * f0 * t).astype(np.float32)
    y = resample(tone, sr_in, sr_out)
    spec = np.abs(np.fft.rfft(y[1000:-1000] * np.hanning(len(y) - 2000)))
    freqs = np.fft.rfftfreq(len(y) - 2000, 1 / sr_out)
    assert abs(freqs[np.argmax(spec)] - f0) < 2.0
    inner = y[200:-200]
    expect = np.sin(2 * np.pi * f0 * (np.arange(len(y)) / sr_out))[200:-200]
    np.testing.assert_allclose(inner, expect, atol=2e-3)
    # 10 kHz is above the new Nyquist (8 kHz): the low-pass filter removes it
    high = np.sin(2 * np.pi * 10_000 * t).astype(np.float32)
    assert np.abs(resample(high, sr_in, sr_out)[200:-200]).max() < 1e-2


def test_soxr_stays_an_option() -> None:
    x = np.sin(2 * np.pi * 440 * np.arange(48_000) / 48_000).astype(np.float32)
    a = resample(x, 48_000, 16_000, method="soxr")
    b = resample(x, 48_000, 16_000)
    assert a.dtype == np.float32 and len(a) == len(b) == 16_000
    assert not np.array_equal(a, b)
    np.testing.assert_allclose(a[100:-100], b[100:-100], atol=5e-3)


def test_whole_file_is_resampled_before_windowing(tmp_path) -> None:
    assert PREPROCESSING_VERSION == "2"
    rng = np.random.default_rng(1)
    stereo = rng.uniform(-0.5, 0.5, (48_000 * 2 + 123, 2))
    sf.write(tmp_path / "a.wav", stereo, 48_000, subtype="PCM_24")
    x, sr = read_audio(tmp_path / "a.wav")
    raw, _ = sf.read(tmp_path / "a.wav", dtype="float64")
    assert sr == 48_000 and x.dtype == np.float32
    np.testing.assert_array_equal(x, raw.mean(axis=1).astype(np.float32))  # float64 down-mix
    windows, rate = load_windows(tmp_path / "a.wav", 0.5, 16_000)
    assert rate == 16_000
    np.testing.assert_array_equal(windows, cut_windows(resample(x, 48_000, 16_000), 8_000))
    soxr_windows, _ = load_windows(tmp_path / "a.wav", 0.5, 16_000, resampler="soxr")
    assert soxr_windows.shape == windows.shape and not np.array_equal(soxr_windows, windows)


def test_resampler_option_reaches_the_cache_key_config_and_embed(tmp_path, monkeypatch) -> None:
    from typer.testing import CliRunner

    import rmis.encoders as encoders
    from rmis.cli import app
    from rmis.evaluate import config_differences, config_id
    from rmis.store import store_key

    fp = {"model": "m"}
    k_sinc, parts = store_key(fp, 10.0, "fp32", None)
    k_soxr, _ = store_key(fp, 10.0, "fp32", None, resampler="soxr")
    assert parts["resampler"] == "sinc" and parts["preprocessing_version"] == "2"
    assert k_sinc != k_soxr
    cfg = {"model": "m", "compat": "none", "precision": "fp32", "runs": 10}
    assert config_id({**cfg, "resampler": "sinc"}) == config_id(cfg)  # default ids unchanged
    assert config_id({**cfg, "resampler": "soxr"}) != config_id(cfg)
    assert config_differences({**cfg, "resampler": "soxr"}) == ["resampler=soxr"]

    class Head(encoders.Encoder):  # first 4 samples of each window, at 16 kHz
        sample_rate = 16_000

        def embed(self, windows, sample_rate):
            return windows[:, :4]

    encoders.list_encoders()
    monkeypatch.setattr(encoders, "_REGISTRY", dict(encoders._REGISTRY))
    encoders.register_encoder(encoders.EncoderInfo("head-16k", "test", "x", factory=Head))
    x = np.random.default_rng(3).uniform(-0.5, 0.5, 4_410).astype(np.float32)
    sf.write(tmp_path / "a.wav", x, 44_100, subtype="FLOAT")
    for method in ("sinc", "soxr"):
        out = tmp_path / f"{method}.npz"
        args = ["embed", "head-16k", str(tmp_path / "a.wav"), "--out", str(out)]
        r = CliRunner().invoke(app, [*args, "--resampler", method])
        assert r.exit_code == 0, r.output
        y = resample(x, 44_100, 16_000, method)
        with np.load(out) as npz:
            np.testing.assert_allclose(npz[str(tmp_path / "a.wav")], (y - y.mean())[:4], atol=1e-7)
