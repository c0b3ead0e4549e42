"""rmis.frontends against independent references.

- kaldi fbank: kaldi-native-fbank where it accepts the setup (80 bins at 16 kHz), and a float64
  numpy Kaldi fbank written here from Kaldi's equations (128 bins at 16 kHz, where one filter
  holds no FFT bin and kaldi-native-fbank refuses);
- mel filters: explicit per-element numpy formulas (and transformers.audio_utils if installed);
- STFT / mel / dB / PaSST / MuQ: explicit numpy framing + np.fft on short signals.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rmis import frontends as fe
from rmis.errors import RMISError

EPS32 = float(np.finfo(np.float32).eps)


def noise(shape, seed=0, scale=0.1) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=shape) * scale).astype(np.float32)


# ---------------------------------------------------------------------------------- numpy refs
def np_window(kind: str, n: int, periodic: bool) -> np.ndarray:
    m = n if periodic else n - 1
    k = np.arange(n)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * k / m)
    return {
        "hann": hann,
        "hanning": hann,
        "povey": hann**0.85,
        "hamming": 0.54 - 0.46 * np.cos(2 * np.pi * k / m),
        "rectangular": np.ones(n),
    }[kind]


def np_frames(x: np.ndarray, n_fft: int, hop: int, center: bool) -> np.ndarray:
    if center:
        x = np.pad(x, n_fft // 2, mode="reflect")
    t = 1 + (len(x) - n_fft) // hop
    return np.stack([x[i * hop : i * hop + n_fft] for i in range(t)])


def np_stft_mag(x, n_fft, hop, win, center, power=1.0) -> np.ndarray:
    """[T, F]; a short window is zero-padded on both sides to n_fft."""
    lpad = (n_fft - len(win)) // 2
    w = np.zeros(n_fft)
    w[lpad : lpad + len(win)] = win
    return np.abs(np.fft.rfft(np_frames(x, n_fft, hop, center) * w, axis=-1)) ** power


def hz2mel(f, scale):
    f = np.asarray(f, dtype=np.float64)
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + f / 700.0)
    if scale == "kaldi":
        return 1127.0 * np.log(1.0 + f / 700.0)
    log_part = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) * 27 / np.log(6.4)
    return np.where(f >= 1000.0, log_part, f * 3.0 / 200.0)


def mel2hz(m, scale):
    m = np.asarray(m, dtype=np.float64)
    if scale == "htk":
        return 700.0 * (10 ** (m / 2595.0) - 1.0)
    if scale == "kaldi":
        return 700.0 * (np.exp(m / 1127.0) - 1.0)
    return np.where(m >= 15.0, 1000.0 * np.exp((m - 15.0) * np.log(6.4) / 27), m * 200.0 / 3.0)


def np_mel_filters(n_freqs, sr, n_mels, fmin, fmax, scale, norm=None) -> np.ndarray:
    """Per-element loops: filter m rises from edge m to m+1, falls to m+2."""
    fmax = sr / 2 if fmax is None else fmax
    lo, hi = hz2mel(fmin, scale), hz2mel(fmax, scale)
    edges_mel = [lo + i * (hi - lo) / (n_mels + 1) for i in range(n_mels + 2)]
    edges = [float(mel2hz(e, scale)) for e in edges_mel]
    fb = np.zeros((n_freqs, n_mels))
    n_fft = 2 * (n_freqs - 1)
    for k in range(n_freqs):
        f = k * sr / n_fft
        for m in range(n_mels):
            if scale == "kaldi":  # Kaldi's MelBanks: triangles in mel, bins 0 .. n_fft/2 - 1
                if k == n_freqs - 1:
                    continue
                v, (a, b, c) = float(hz2mel(f, scale)), edges_mel[m : m + 3]
            else:
                v, (a, b, c) = f, edges[m : m + 3]
            if a < v <= b:
                fb[k, m] = (v - a) / (b - a)
            elif b < v < c:
                fb[k, m] = (c - v) / (c - b)
    if norm == "slaney":
        fb *= 2.0 / (np.array(edges[2:]) - np.array(edges[:-2]))
    return fb


def np_kaldi_fbank(
    x, sr=16000, n_mels=128, window="povey", scale16=False, use_energy=False, htk_compat=True
) -> np.ndarray:
    """Kaldi compute-fbank-feats (dither 0, snip_edges, raw energy, energy_floor 1) in float64."""
    x = np.asarray(x, dtype=np.float64) * (32768.0 if scale16 else 1.0)
    size, shift = int(sr * 0.025), int(sr * 0.010)
    padded = 1 << (size - 1).bit_length()
    win = np_window(window, size, periodic=False)
    filt = np_mel_filters(padded // 2 + 1, sr, n_mels, 20.0, sr / 2, "kaldi")
    rows = []
    for t in range(1 + (len(x) - size) // shift):
        w = x[t * shift : t * shift + size].copy()
        w -= w.mean()
        energy = max(math.log(max(float(np.sum(w * w)), EPS32)), 0.0)
        for i in range(size - 1, 0, -1):
            w[i] -= 0.97 * w[i - 1]
        w[0] -= 0.97 * w[0]
        spec = np.abs(np.fft.rfft(w * win, n=padded)) ** 2
        feats = np.log(np.maximum(spec @ filt, EPS32))
        if use_energy:
            feats = np.append(feats, energy) if htk_compat else np.insert(feats, 0, energy)
        rows.append(feats)
    return np.stack(rows)


# ---------------------------------------------------------------------------------- windows
@pytest.mark.parametrize("kind", ["hann", "hanning", "hamming", "povey", "rectangular"])
@pytest.mark.parametrize("periodic", [True, False])
def test_frame_window(kind, periodic) -> None:
    got = fe.frame_window(kind, 400, periodic=periodic)
    assert got.dtype == torch.float32 and got.shape == (400,)
    np.testing.assert_allclose(got.numpy(), np_window(kind, 400, periodic), atol=1e-6)


def test_frame_window_rejects_unknown() -> None:
    with pytest.raises(RMISError, match="unknown window"):
        fe.frame_window("blackmanharris", 16)


# ---------------------------------------------------------------------------------- STFT
@pytest.mark.parametrize(
    "n_fft,hop,win_len,center,power",
    [(400, 160, 400, False, 1.0), (512, 160, 512, True, 2.0), (1024, 320, 800, True, 2.0)],
)
def test_stft_magnitude_matches_numpy(n_fft, hop, win_len, center, power) -> None:
    x = noise((2, 6000))
    win = np_window("hann", win_len, periodic=(win_len == n_fft))
    got = fe.stft_magnitude(
        torch.from_numpy(x),
        n_fft,
        hop,
        torch.tensor(win, dtype=torch.float32),
        center=center,
        power=power,
    ).numpy()
    t = 1 + 6000 // hop if center else 1 + (6000 - n_fft) // hop
    assert got.shape == (2, t, n_fft // 2 + 1)
    for i in range(2):
        ref = np_stft_mag(x[i].astype(np.float64), n_fft, hop, win, center, power)
        np.testing.assert_allclose(got[i], ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_stft_chunking_does_not_change_results(monkeypatch) -> None:
    x = torch.from_numpy(noise((5, 4000)))
    win = fe.frame_window("hann", 400)
    whole = fe.stft_magnitude(x, 400, 160, win)
    monkeypatch.setattr(fe, "_CHUNK_SAMPLES", 8000)  # two windows a step
    assert torch.equal(fe.stft_magnitude(x, 400, 160, win), whole)
    with pytest.raises(RMISError, match="shorter than one STFT frame"):
        fe.stft_magnitude(x[:, :100], 400, 160, win)


# ---------------------------------------------------------------------------------- kaldi fbank
@pytest.mark.parametrize("window", ["povey", "hanning"])
@pytest.mark.parametrize("scale16", [False, True])
def test_kaldi_fbank_matches_kaldi_native_fbank(window, scale16) -> None:
    knf = pytest.importorskip("kaldi_native_fbank")
    x = noise((2, 8000), seed=1)
    got = fe.kaldi_fbank(
        torch.from_numpy(x), 16_000, num_mel_bins=80, window_type=window, scale_int16=scale16
    ).numpy()
    for i in range(2):
        opts = knf.FbankOptions()
        opts.frame_opts.dither = 0.0
        opts.frame_opts.window_type = window
        opts.frame_opts.snip_edges = True
        opts.mel_opts.num_bins = 80
        opts.mel_opts.low_freq, opts.mel_opts.high_freq = 20.0, 0.0
        fb = knf.OnlineFbank(opts)
        fb.accept_waveform(16_000, (x[i] * (32768.0 if scale16 else 1.0)).tolist())
        fb.input_finished()
        ref = np.stack([fb.get_frame(t) for t in range(fb.num_frames_ready)])
        assert got[i].shape == ref.shape == (48, 80)
        np.testing.assert_allclose(got[i], ref, atol=5e-4)


@pytest.mark.parametrize("window,scale16", [("povey", True), ("hanning", False)])
def test_kaldi_fbank_128_bins_matches_float64_numpy(window, scale16) -> None:
    x = noise((1, 4000), seed=2)
    got = fe.kaldi_fbank(torch.from_numpy(x), window_type=window, scale_int16=scale16).numpy()[0]
    ref = np_kaldi_fbank(x[0], window=window, scale16=scale16)
    assert got.shape == ref.shape == (23, 128)
    np.testing.assert_allclose(got, ref, atol=5e-4)  # float32 FFT on the quietest bins
    # filter 3 holds no FFT bin at 16 kHz / 512 points: it stays at log(float32 eps)
    empty = np.flatnonzero(np_mel_filters(257, 16000, 128, 20.0, 8000.0, "kaldi").sum(0) == 0)
    assert empty.tolist() == [3]
    assert np.all(got[:, 3] == np.float32(math.log(EPS32)))


@pytest.mark.parametrize("htk_compat", [True, False])
def test_kaldi_fbank_energy_position(htk_compat) -> None:
    x = noise((1, 2000), seed=3)
    got = fe.kaldi_fbank(
        torch.from_numpy(x),
        num_mel_bins=40,
        use_energy=True,
        htk_compat=htk_compat,
        scale_int16=True,
    ).numpy()[0]
    ref = np_kaldi_fbank(x[0], n_mels=40, scale16=True, use_energy=True, htk_compat=htk_compat)
    assert got.shape == ref.shape == (11, 41)
    np.testing.assert_allclose(got, ref, atol=2e-4)


def test_kaldi_fbank_is_per_window(monkeypatch) -> None:
    x = torch.from_numpy(noise((3, 3000), seed=4)) * torch.tensor([[1.0], [100.0], [0.01]])
    batch = fe.kaldi_fbank(x)
    for i in range(3):
        torch.testing.assert_close(batch[i], fe.kaldi_fbank(x[i : i + 1])[0], atol=1e-5, rtol=0)
    monkeypatch.setattr(fe, "_CHUNK_SAMPLES", 3000)
    torch.testing.assert_close(fe.kaldi_fbank(x), batch, atol=1e-5, rtol=0)
    with pytest.raises(RMISError, match="does not fit"):
        fe.kaldi_fbank(x[:, :100])


# ---------------------------------------------------------------------------------- mel filters
@pytest.mark.parametrize(
    "n_freqs,sr,n_mels,fmin,fmax,scale,norm",
    [
        (257, 16000, 64, 0.0, 8000.0, "htk", None),
        (1025, 24000, 128, 0.0, None, "htk", None),
        (201, 16000, 40, 30.0, 7000.0, "slaney", "slaney"),
        (201, 16000, 40, 0.0, None, "htk", "slaney"),
        (513, 32000, 128, 0.0, 15000.0, "kaldi", None),
        (257, 16000, 128, 20.0, 8000.0, "kaldi", None),
    ],
)
def test_mel_filters_match_explicit_formula(n_freqs, sr, n_mels, fmin, fmax, scale, norm):
    got = fe.mel_filters(n_freqs, sr, n_mels, fmin, fmax, scale=scale, norm=norm)
    assert got.dtype == torch.float32 and got.shape == (n_freqs, n_mels)
    ref = np_mel_filters(n_freqs, sr, n_mels, fmin, fmax, scale, norm)
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-6 * max(1.0, ref.max()))


@pytest.mark.parametrize("scale", ["htk", "slaney", "kaldi"])
def test_mel_filters_match_transformers(scale) -> None:
    audio_utils = pytest.importorskip("transformers.audio_utils")
    kw = {"triangularize_in_mel_space": True} if scale == "kaldi" else {}
    ref = audio_utils.mel_filter_bank(
        num_frequency_bins=257,
        num_mel_filters=64,
        min_frequency=20.0,
        max_frequency=8000.0,
        sampling_rate=16000,
        norm=None,
        mel_scale=scale,
        **kw,
    )
    got = fe.mel_filters(257, 16000, 64, 20.0, 8000.0, scale=scale).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_mel_filters_errors() -> None:
    with pytest.raises(RMISError, match="unknown scale"):
        fe.mel_filters(257, 16000, 64, scale="bark")
    with pytest.raises(RMISError, match="f_min < f_max"):
        fe.mel_filters(257, 16000, 64, 0.0, 9000.0)


# ---------------------------------------------------------------------------------- mel + dB
def test_mel_spectrogram_and_db_match_numpy() -> None:
    """CED's recipe: n_fft 512, hop 160, 64 HTK bins 0-8 kHz, centred, power 2, dB top_db 120."""
    x = noise((2, 3200), seed=5)
    x[1] *= 1e-4  # a much quieter item: per-item top_db must not borrow the loud one's max
    win = fe.frame_window("hann", 512)
    filt = fe.mel_filters(257, 16000, 64, 0.0, 8000.0)
    mel = fe.mel_spectrogram(torch.from_numpy(x), n_fft=512, hop=160, window=win, filters=filt)
    assert mel.shape == (2, 64, 21)
    db = fe.amplitude_to_db(mel, top_db=120.0).numpy()
    fb = np_mel_filters(257, 16000, 64, 0.0, 8000.0, "htk")
    for i in range(2):
        spec = np_stft_mag(x[i].astype(np.float64), 512, 160, np_window("hann", 512, True), True, 2)
        ref_mel = (spec @ fb).T
        np.testing.assert_allclose(mel[i].numpy(), ref_mel, rtol=2e-4, atol=1e-6 * ref_mel.max())
        ref_db = 10 * np.log10(np.maximum(ref_mel, 1e-10))
        ref_db = np.maximum(ref_db, ref_db.max() - 120.0)
        np.testing.assert_allclose(db[i], ref_db, atol=2e-3)


def test_amplitude_to_db_top_db_is_per_item() -> None:
    rng = np.random.default_rng(6)
    s = torch.from_numpy(rng.uniform(0, 1, size=(3, 8, 10)).astype(np.float32) ** 12)
    s = s * torch.tensor([1.0, 1e-6, 1e4]).reshape(3, 1, 1)
    batch = fe.amplitude_to_db(s, top_db=80.0)
    for i in range(3):
        one = fe.amplitude_to_db(s[i : i + 1], top_db=80.0)
        assert torch.equal(batch[i : i + 1], one)
        assert float(one.max() - one.min()) <= 80.0 + 1e-3
    plain = fe.amplitude_to_db(s, multiplier=20.0, amin=1e-5)
    torch.testing.assert_close(plain, 20 * torch.log10(s.clamp_min(1e-5)))


# ---------------------------------------------------------------------------------- PaSST, MuQ
def test_passt_mel_matches_numpy_recipe() -> None:
    x = noise((1, 6400), seed=7)
    got = fe.passt_mel(torch.from_numpy(x)).numpy()[0]
    x64 = x[0].astype(np.float64)
    y = x64[1:] - 0.97 * x64[:-1]
    spec = np_stft_mag(y, 1024, 320, np_window("hann", 800, periodic=False), True, 2.0)
    ref = ((np.log(spec @ np_mel_filters(513, 32000, 128, 0.0, 15000.0, "kaldi") + 1e-5)) + 4.5) / 5
    assert got.shape == ref.T.shape == (128, 20)
    np.testing.assert_allclose(got, ref.T, atol=1e-4)
    assert fe.passt_mel(torch.zeros(1, 320_000)).shape == (1, 128, 1000)


def test_muq_mel_matches_numpy_recipe() -> None:
    x = noise((1, 4800), seed=8)
    got = fe.muq_mel(torch.from_numpy(x)).numpy()[0]
    spec = np_stft_mag(x[0].astype(np.float64), 2048, 240, np_window("hann", 2048, True), True, 2)
    mel = spec @ np_mel_filters(1025, 24000, 128, 0.0, None, "htk")
    ref = (10 * np.log10(np.maximum(mel, 1e-10))[:-1] - 6.768444971712967) / 18.417922652295623
    assert got.shape == ref.T.shape == (128, 20)
    np.testing.assert_allclose(got, ref.T, atol=1e-4)
    assert fe.muq_mel(torch.zeros(1, 240_000)).shape == (1, 128, 1000)


def test_front_ends_stay_float32_under_autocast() -> None:
    x = torch.from_numpy(noise((2, 4000), seed=9))
    win, filt = fe.frame_window("hann", 512), fe.mel_filters(257, 16000, 64)

    def both():
        mel = fe.mel_spectrogram(x, n_fft=512, hop=160, window=win, filters=filt)
        return fe.kaldi_fbank(x), mel, fe.amplitude_to_db(mel, top_db=80.0)

    fp32 = both()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        amp = both()
    for a, b in zip(amp, fp32):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b)
