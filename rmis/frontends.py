"""Front-ends shared by every adapter and by the pre-training recipe (one place per concern).

CONTRACT (issue 10) -- implemented by the front-end owner; family adapters code against it.
All functions take a batch of mono windows ``x [B, L]`` (float32 torch tensor, any device) and
return float32 tensors on the same device; no torchaudio. Each is checked in tests against an
independent reference (kaldi-native-fbank, a float64 numpy Kaldi fbank, librosa / numpy HTK
mel filters, transformers.audio_utils).

Every function works on each window of the batch on its own (no statistic is ever taken
across the batch), so results do not depend on how windows are batched. Long batches are
processed a few windows at a time (``_CHUNK_SAMPLES`` input samples per step) so the complex
spectra in flight stay small; the output is the same. Front-ends always compute in float32,
also inside a caller's fp16/bf16 ``torch.autocast`` region (a half-precision mel or log loses
the quiet bins), so batching and precision settings never change the features.
"""

from __future__ import annotations

import functools
import math

import torch

from rmis.errors import RMISError

# input samples processed per step (bounded memory; the chunk's spectrum also stays in cache)
_CHUNK_SAMPLES = 1_500_000
# numeric_limits<float>::epsilon(): Kaldi's floor for log filter-bank energies
FLOAT_EPS = float(torch.finfo(torch.float32).eps)


def _chunks(x: torch.Tensor):
    """Split ``[B, L]`` along the batch into pieces of about ``_CHUNK_SAMPLES`` samples."""
    return x.split(max(1, _CHUNK_SAMPLES // max(1, x.shape[-1])))


def _fp32(fn):
    """Run a front-end with autocast disabled on its input's device (always float32)."""

    @functools.wraps(fn)
    def wrapper(x: torch.Tensor, *args, **kwargs):
        with torch.autocast(x.device.type, enabled=False):
            return fn(x, *args, **kwargs)

    return wrapper


def _check_batch(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.dim() != 2:
        raise RMISError(f"{name}: expected a batch of windows [B, L], got shape {tuple(x.shape)}")
    return x.float()


def frame_window(kind: str, length: int, *, periodic: bool = True, device=None) -> torch.Tensor:
    """``hann`` (periodic or symmetric), ``hamming``, ``povey`` (hann ** 0.85, Kaldi) or
    ``rectangular`` window of ``length`` samples, float32.

    ``hanning`` is accepted as Kaldi's name for ``hann``. Kaldi (and so :func:`kaldi_fbank`)
    uses the SYMMETRIC forms (``periodic=False``); ``hamming`` is 0.54 - 0.46 cos.
    """
    kw = {"dtype": torch.float32, "device": device}
    if length < 1:
        raise RMISError(f"frame_window: length must be positive, got {length}")
    if kind in ("hann", "hanning"):
        return torch.hann_window(length, periodic=periodic, **kw)
    if kind == "hamming":
        return torch.hamming_window(length, periodic=periodic, alpha=0.54, beta=0.46, **kw)
    if kind == "povey":
        return torch.hann_window(length, periodic=periodic, **kw).pow(0.85)
    if kind == "rectangular":
        return torch.ones(length, **kw)
    raise RMISError(
        f"frame_window: unknown window {kind!r}; use hann, hanning, hamming, povey or rectangular"
    )


@_fp32
def stft_magnitude(
    x: torch.Tensor,
    n_fft: int,
    hop: int,
    window: torch.Tensor,
    *,
    center: bool = False,
    pad_mode: str = "reflect",
    power: float = 1.0,
) -> torch.Tensor:
    """``|STFT(x)| ** power`` as ``[B, T, n_fft // 2 + 1]`` (time first). ``window`` may be
    shorter than ``n_fft`` (zero-padded on both sides, centred, as torch.stft does). Chunked
    over the batch for long inputs so memory stays bounded.

    Frames: ``T = 1 + (L - n_fft) // hop`` without centring, ``1 + L // hop`` with it (the
    signal reflect-padded by ``n_fft // 2`` on both sides). Unnormalised, onesided;
    ``power`` 2 gives ``|X| ** 2`` (as torchaudio's ``Spectrogram(power=2)``).
    """
    x = _check_batch(x, "stft_magnitude")
    if not center and x.shape[-1] < n_fft:
        raise RMISError(
            f"stft_magnitude: a window of {x.shape[-1]} samples is shorter than one STFT frame "
            f"({n_fft} samples)"
        )
    window = window.to(device=x.device, dtype=torch.float32)
    out = []
    for chunk in _chunks(x):
        spec = torch.stft(
            chunk,
            n_fft,
            hop,
            win_length=window.numel(),
            window=window,
            center=center,
            pad_mode=pad_mode,
            return_complex=True,
        ).abs()
        if power != 1.0:
            spec = spec.pow(power)
        out.append(spec.transpose(1, 2))
    return out[0] if len(out) == 1 else torch.cat(out)


@_fp32
def kaldi_fbank(
    x: torch.Tensor,
    sample_rate: int = 16_000,
    *,
    num_mel_bins: int = 128,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
    window_type: str = "povey",
    preemphasis: float = 0.97,
    remove_dc_offset: bool = True,
    dither: float = 0.0,
    htk_compat: bool = True,
    low_freq: float = 20.0,
    high_freq: float = 0.0,
    snip_edges: bool = True,
    use_energy: bool = False,
    scale_int16: bool = False,
    energy_floor: float = 1.0,
) -> torch.Tensor:
    """Kaldi-compatible log mel filterbank (``torchaudio.compliance.kaldi.fbank`` semantics,
    per window of the batch) -> ``[B, T, num_mel_bins]``. ``scale_int16`` multiplies the wave by
    2**15 first (BEATs). A mel filter that holds no FFT bin (128 bins at 16 kHz) stays at the
    log floor (log of float32 eps), as the official front-end gives.

    Per frame (``frame_length_ms`` samples every ``frame_shift_ms``, ``snip_edges``: only frames
    that fit): optional dither (Gaussian, ``dither`` std), DC removal, raw log energy (floored at
    ``log(energy_floor)``), pre-emphasis ``y[n] = x[n] - c x[n-1]`` (``y[0] = x[0] - c x[0]``),
    the SYMMETRIC window, zero-padding to the next power of two, power spectrum ``|X| ** 2``,
    Kaldi mel filters (triangles in the ``1127 ln(1 + f/700)`` domain, ``low_freq`` to
    ``high_freq``; ``high_freq <= 0`` means Nyquist plus it), ``log(max(., float32 eps))``.
    ``use_energy`` appends (``htk_compat``) or prepends the log energy -> ``num_mel_bins + 1``.
    ``snip_edges=False`` is not implemented (no baseline uses it).
    """
    x = _check_batch(x, "kaldi_fbank")
    if not snip_edges:
        raise RMISError("kaldi_fbank: snip_edges=False is not implemented")
    shift = int(sample_rate * frame_shift_ms * 0.001)
    size = int(sample_rate * frame_length_ms * 0.001)
    padded = 1 if size == 0 else 2 ** (size - 1).bit_length()
    if not 2 <= size <= x.shape[-1] or shift <= 0:
        raise RMISError(
            f"kaldi_fbank: a frame of {size} samples every {shift} does not fit a window of "
            f"{x.shape[-1]} samples"
        )
    if not 0.0 <= preemphasis <= 1.0:
        raise RMISError(f"kaldi_fbank: preemphasis must be in [0, 1], got {preemphasis}")
    nyquist = 0.5 * sample_rate
    high = high_freq + nyquist if high_freq <= 0.0 else high_freq
    filters = mel_filters(
        padded // 2 + 1, sample_rate, num_mel_bins, low_freq, high, scale="kaldi"
    ).to(x.device)
    window = frame_window(window_type, size, periodic=False, device=x.device)
    if scale_int16:
        x = x * 32768.0
    out = []
    for chunk in _chunks(x):
        frames = chunk.unfold(-1, size, shift)  # [b, T, size] (a view)
        if dither != 0.0:
            frames = frames + torch.randn_like(frames) * dither
        if remove_dc_offset:
            frames = frames - frames.mean(dim=-1, keepdim=True)
        if use_energy:
            energy = frames.pow(2).sum(-1).clamp_min(FLOAT_EPS).log()
            if energy_floor != 0.0:
                energy = energy.clamp_min(math.log(energy_floor))
        if preemphasis != 0.0:
            previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
            frames = frames - preemphasis * previous
        spectrum = torch.fft.rfft(frames * window, n=padded).abs().pow(2.0)  # [b, T, F]
        fbank = torch.matmul(spectrum, filters).clamp_min(FLOAT_EPS).log()
        if use_energy:
            parts = [fbank, energy[..., None]] if htk_compat else [energy[..., None], fbank]
            fbank = torch.cat(parts, dim=-1)
        out.append(fbank)
    return out[0] if len(out) == 1 else torch.cat(out)


def _hz_to_mel(f: torch.Tensor, scale: str) -> torch.Tensor:
    if scale == "htk":
        return 2595.0 * torch.log10(1.0 + f / 700.0)
    if scale == "kaldi":
        return 1127.0 * torch.log(1.0 + f / 700.0)
    # slaney: linear below 1 kHz, logarithmic above
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    return torch.where(
        f >= min_log_hz,
        min_log_mel + torch.log(f.clamp_min(1e-10) / min_log_hz) / logstep,
        f / f_sp,
    )


def _mel_to_hz(m: torch.Tensor, scale: str) -> torch.Tensor:
    if scale == "htk":
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    if scale == "kaldi":
        return 700.0 * (torch.exp(m / 1127.0) - 1.0)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    return torch.where(
        m >= min_log_mel, min_log_hz * torch.exp(logstep * (m - min_log_mel)), f_sp * m
    )


def mel_filters(
    n_freqs: int,
    sample_rate: int,
    n_mels: int,
    f_min: float = 0.0,
    f_max: float | None = None,
    *,
    scale: str = "htk",
    norm: str | None = None,
) -> torch.Tensor:
    """Triangular mel filter bank ``[n_freqs, n_mels]`` (float32): ``scale`` ``htk``,
    ``slaney`` or ``kaldi``; ``norm`` None or ``slaney`` (area normalisation).

    ``n_freqs`` onesided bins at ``k * sample_rate / (2 * (n_freqs - 1))`` Hz; ``f_max`` None
    means Nyquist. ``n_mels + 2`` edges equally spaced on the mel scale between ``f_min`` and
    ``f_max``; filter ``m`` rises from edge ``m`` to ``m + 1`` and falls to ``m + 2``.

    - ``htk`` (``2595 log10(1 + f/700)``) and ``slaney``: triangles linear in Hz
      (torchaudio ``melscale_fbanks`` / librosa);
    - ``kaldi``: triangles linear in the ``1127 ln(1 + f/700)`` mel domain and the Nyquist bin
      left out (Kaldi / ``torchaudio.compliance.kaldi.get_mel_banks`` plus its zero column).

    ``norm="slaney"`` divides each filter by half its width in Hz (``2 / (f[m+2] - f[m])``).
    Computed in float64, returned as float32. A filter between two FFT bins is all zeros.
    """
    if scale not in ("htk", "slaney", "kaldi"):
        raise RMISError(f"mel_filters: unknown scale {scale!r}; use htk, slaney or kaldi")
    if norm not in (None, "slaney"):
        raise RMISError(f"mel_filters: unknown norm {norm!r}; use None or 'slaney'")
    nyquist = sample_rate / 2.0
    f_max = nyquist if f_max is None else float(f_max)
    if not 0.0 <= f_min < f_max <= nyquist:
        raise RMISError(
            f"mel_filters: need 0 <= f_min < f_max <= Nyquist, got {f_min}, {f_max}, {nyquist}"
        )
    d = torch.float64
    freqs = torch.linspace(0.0, nyquist, n_freqs, dtype=d)
    lo, hi = (_hz_to_mel(torch.tensor(v, dtype=d), scale) for v in (f_min, f_max))
    edges_mel = torch.linspace(float(lo), float(hi), n_mels + 2, dtype=d)
    if scale == "kaldi":
        # Kaldi spaces the edges as lo + i * (hi - lo) / (n_mels + 1)
        edges_mel = lo + torch.arange(n_mels + 2, dtype=d) * ((hi - lo) / (n_mels + 1))
        mel = _hz_to_mel(freqs, scale)[:, None]
        left, centre, right = edges_mel[:-2], edges_mel[1:-1], edges_mel[2:]
        up = (mel - left) / (centre - left)
        down = (right - mel) / (right - centre)
        fb = torch.clamp(torch.minimum(up, down), min=0.0)
        fb[-1] = 0.0  # Kaldi's bank covers bins 0 .. n_fft/2 - 1
    else:
        edges = _mel_to_hz(edges_mel, scale)
        width = edges[1:] - edges[:-1]  # [n_mels + 1]
        slopes = edges[None, :] - freqs[:, None]  # [n_freqs, n_mels + 2]
        down = -slopes[:, :-2] / width[:-1]
        up = slopes[:, 2:] / width[1:]
        fb = torch.clamp(torch.minimum(down, up), min=0.0)
    if norm == "slaney":
        hz = _mel_to_hz(edges_mel, scale)
        fb = fb * (2.0 / (hz[2:] - hz[:-2]))[None, :]
    return fb.to(torch.float32)


@_fp32
def mel_spectrogram(
    x: torch.Tensor,
    *,
    n_fft: int,
    hop: int,
    window: torch.Tensor,
    filters: torch.Tensor,
    center: bool = True,
    pad_mode: str = "reflect",
    power: float = 2.0,
) -> torch.Tensor:
    """Mel spectrogram ``[B, n_mels, T]`` (frequency first) from a given window and filter
    bank (e.g. the buffers stored in a CED / DaSheng checkpoint).

    ``filters`` is ``[n_fft // 2 + 1, n_mels]`` (torchaudio's ``fb`` buffer layout); the result
    is ``(|STFT| ** power)ᵀ @ filters``, transposed to frequency first.
    """
    x = _check_batch(x, "mel_spectrogram")
    filters = filters.to(device=x.device, dtype=torch.float32)
    if filters.shape[0] != n_fft // 2 + 1:
        raise RMISError(
            f"mel_spectrogram: filters have {filters.shape[0]} rows, expected n_fft // 2 + 1 = "
            f"{n_fft // 2 + 1}"
        )
    out = []
    for chunk in _chunks(x):
        spec = stft_magnitude(
            chunk, n_fft, hop, window, center=center, pad_mode=pad_mode, power=power
        )
        out.append(torch.matmul(spec, filters).transpose(1, 2))
    return out[0] if len(out) == 1 else torch.cat(out)


@_fp32
def amplitude_to_db(
    s: torch.Tensor, *, top_db: float | None = None, amin: float = 1e-10, multiplier: float = 10.0
) -> torch.Tensor:
    """``multiplier * log10(max(s, amin))``, then (if ``top_db``) floored at each ITEM's max
    minus ``top_db`` (per item of the batch: never across the batch).

    The first dimension of ``s`` is the batch: item ``i`` is ``s[i]`` (any shape). Reference
    1.0 (torchaudio's ``AmplitudeToDB`` with ``stype="power"`` is ``multiplier=10``). Note that
    torchaudio's own ``amplitude_to_DB`` on a 3-D ``[B, F, T]`` tensor takes the max over the
    WHOLE batch; this function never does.
    """
    db = multiplier * torch.log10(torch.clamp(s.float(), min=amin))
    if top_db is not None:
        if top_db < 0:
            raise RMISError(f"amplitude_to_db: top_db must be non-negative, got {top_db}")
        peak = db.reshape(db.shape[0], -1).amax(dim=1) if db.dim() > 1 else db.amax()
        floor = (peak - top_db).reshape(-1, *([1] * (db.dim() - 1)))
        db = torch.maximum(db, floor)
    return db


# PaSST (kkoutini/PaSST, AugmentMelSTFT in eval mode) at 32 kHz
PASST_SAMPLE_RATE = 32_000
PASST_N_FFT, PASST_WIN, PASST_HOP, PASST_MELS = 1024, 800, 320, 128
PASST_F_MAX = 15_000.0


@_fp32
def passt_mel(x: torch.Tensor) -> torch.Tensor:
    """PaSST's front-end at 32 kHz -> ``[B, 128, T]`` (BASELINES.md): pre-emphasis
    ``y[n] = x[n+1] - 0.97 x[n]``, STFT n_fft 1024 with a SYMMETRIC hann(800) zero-padded to
    1024, hop 320, centred (reflect), power 2, 128 kaldi-scale mel 0-15 kHz, ``log(x + 1e-5)``,
    ``(x + 4.5) / 5``.

    ``T = 1 + (L - 1) // 320``: 1000 frames for a 10-s window of 320 000 samples.
    """
    x = _check_batch(x, "passt_mel")
    y = x[:, 1:] - 0.97 * x[:, :-1]
    window = frame_window("hann", PASST_WIN, periodic=False, device=x.device)
    filters = mel_filters(
        PASST_N_FFT // 2 + 1, PASST_SAMPLE_RATE, PASST_MELS, 0.0, PASST_F_MAX, scale="kaldi"
    )
    mel = mel_spectrogram(y, n_fft=PASST_N_FFT, hop=PASST_HOP, window=window, filters=filters)
    return (torch.log(mel + 1e-5) + 4.5) / 5.0


# MuQ (tencent-ailab/MuQ, MelSTFT + the model's normalisation) at 24 kHz
MUQ_SAMPLE_RATE = 24_000
MUQ_N_FFT, MUQ_HOP, MUQ_MELS = 2048, 240, 128
MUQ_MEAN, MUQ_STD = 6.768444971712967, 18.417922652295623


@_fp32
def muq_mel(x: torch.Tensor) -> torch.Tensor:
    """MuQ's front-end at 24 kHz -> ``[B, 128, T]`` (BASELINES.md): n_fft 2048, hop 240, 128
    HTK mel 0-12 kHz, dB WITHOUT top_db, last frame dropped, then
    ``(x - 6.768444971712967) / 18.417922652295623``.

    STFT: periodic hann(2048), centred (reflect), power 2, no filter normalisation;
    ``T = L // 240``: 1000 frames for a 10-s window of 240 000 samples.
    """
    x = _check_batch(x, "muq_mel")
    window = frame_window("hann", MUQ_N_FFT, periodic=True, device=x.device)
    filters = mel_filters(MUQ_N_FFT // 2 + 1, MUQ_SAMPLE_RATE, MUQ_MELS, 0.0, None, scale="htk")
    mel = mel_spectrogram(x, n_fft=MUQ_N_FFT, hop=MUQ_HOP, window=window, filters=filters)
    db = amplitude_to_db(mel)[..., :-1]
    return (db - MUQ_MEAN) / MUQ_STD
