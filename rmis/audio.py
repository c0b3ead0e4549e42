"""Audio layer: read, down-mix, resample and window files (PROTOCOL.md section 2).

* Files are read with soundfile (wav, flac, ...) as float64, multi-channel files down-mixed by
  averaging channels (in float64), then cast to float32 (as the official harness does).
* Resampling (when an encoder needs another rate than the file's) is done on the WHOLE file,
  before windowing, by the benchmark's resampler: an exact port of the official harness's
  ``torchaudio.transforms.Resample(orig, new)`` at its defaults (windowed sinc, Hann window,
  ``lowpass_filter_width=6``, ``rolloff=0.99``, kernel per gcd-reduced rate pair, float32;
  :func:`sinc_resample`). ``method="soxr"`` (soxr, high quality; rmis's resampler before
  preprocessing version 2) stays available: it moves baseline embeddings by 2-5 %.
* Windows of ``W`` samples: if the signal is longer than ``W``, windows start at 0, W, 2W, ...
  while they fit, plus one last window ending at the signal's end when the remainder is at
  least 5 % of ``W``; a signal not longer than ``W`` is one window, zero-padded at the end.
  Each window has its mean removed before padding.
"""

from __future__ import annotations

import functools
import io
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from rmis.errors import RMISError

#: Version of the preprocessing (reading, down-mix, resampling, windowing). Part of every
#: embedding-cache key: bump it whenever a change could alter an embedding.
PREPROCESSING_VERSION = "2"
TAIL_FRACTION = 0.05
#: Resampling methods: ``sinc`` (the benchmark's, default) and ``soxr``.
RESAMPLERS = ("sinc", "soxr")
DEFAULT_RESAMPLER = "sinc"


def is_source(path: Any) -> bool:
    """True for an in-memory audio source rather than a path: an object with ``read_bytes()``
    (the encoded file's bytes, e.g. one row of a Parquet dataset, :mod:`rmis.data.hf`),
    ``size`` (bytes) and ``stamp`` (a string that changes when its content may change), whose
    ``str()`` names it in messages."""
    return not isinstance(path, (str, os.PathLike)) and hasattr(path, "read_bytes")


def read_audio(path: Any) -> tuple[np.ndarray, int]:
    """Read a file (or an audio source, :func:`is_source`) as mono float32 ``[L]`` and its
    sample rate (Hz).

    Raises:
        RMISError: unreadable, empty or non-finite audio; the message names the file.
    """
    if is_source(path):
        try:
            source: Any = io.BytesIO(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise RMISError(f"cannot read {path}: {exc}") from None
    else:
        path = source = Path(path)
        if not path.is_file():
            raise RMISError(
                f"audio file {str(path)!r} not found"
                + (" (it is a folder)" if path.is_dir() else "")
            )
    try:
        data, sr = sf.read(source, dtype="float64", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise RMISError(f"cannot read audio file {str(path)!r}: {exc}") from None
    if data.shape[0] == 0:
        raise RMISError(f"audio file {str(path)!r} is empty (0 samples)")
    mono = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1)
    if not np.isfinite(mono).all():
        raise RMISError(f"audio file {str(path)!r} contains NaN or Inf samples")
    return np.ascontiguousarray(mono, dtype=np.float32), int(sr)


def resample(x: np.ndarray, sr_in: int, sr_out: int, method: str = DEFAULT_RESAMPLER) -> np.ndarray:
    """Resample mono float32 ``x`` from ``sr_in`` to ``sr_out`` Hz.

    Args:
        method: ``"sinc"`` (the benchmark's resampler, :func:`sinc_resample`) or ``"soxr"``
            (soxr, high quality).

    Returns:
        ``x`` itself when the rates are equal; else a new float32 array of
        ``ceil(len(x) * sr_out / sr_in)`` samples (``sinc``; soxr rounds its own way).
    """
    if method not in RESAMPLERS:
        raise RMISError(f"unknown resampler {method!r}; choose one of {', '.join(RESAMPLERS)}")
    if sr_in == sr_out:
        return x
    if method == "soxr":
        import soxr

        return soxr.resample(x, sr_in, sr_out, quality="HQ").astype(np.float32, copy=False)
    import torch

    signal = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    with torch.inference_mode():
        return sinc_resample(signal, sr_in, sr_out).numpy()


def sinc_resample_kernel(
    sr_in: int, sr_out: int, lowpass_filter_width: int = 6, rolloff: float = 0.99
) -> tuple[Any, int]:
    """The windowed-sinc kernels ``[new, 1, 2 * width + orig]`` (float32) and ``width``, for
    the gcd-reduced rates ``orig = sr_in / g``, ``new = sr_out / g``.

    Output sample ``j`` of each group of ``new`` weighs input sample ``i`` (relative to the
    group's first input, ``i = m - width``) by ``h(base * (i / orig - j / new))`` with
    ``base = min(orig, new) * rolloff`` and, for ``u`` clamped to ``[-W, W]`` (``W`` the
    filter width in zero crossings), ``h(u) = (base / orig) * sinc(pi u) * cos(pi u / 2W)^2``.
    Computed as torchaudio does: ``j / new`` in float32 (its integer ``arange`` divided in the
    default dtype), the rest in float64, the result cast to float32.
    """
    return _kernel(int(sr_in), int(sr_out), int(lowpass_filter_width), float(rolloff))


@functools.lru_cache(maxsize=16)
def _kernel(sr_in: int, sr_out: int, lowpass_filter_width: int, rolloff: float):
    import torch

    if sr_in <= 0 or sr_out <= 0:
        raise RMISError(f"sample rates must be positive, got {sr_in} and {sr_out}")
    if lowpass_filter_width <= 0:
        raise RMISError("the low-pass filter width must be positive")
    g = math.gcd(sr_in, sr_out)
    orig, new = sr_in // g, sr_out // g
    base = min(orig, new) * rolloff
    width = math.ceil(lowpass_filter_width * orig / base)
    idx = torch.arange(-width, width + orig, dtype=torch.float64)[None, None] / orig
    phase = torch.arange(0, -new, -1, dtype=torch.int64)[:, None, None] / new  # float32
    t = (phase + idx) * base
    t = t.clamp(-lowpass_filter_width, lowpass_filter_width)
    window = torch.cos(t * math.pi / lowpass_filter_width / 2) ** 2
    t = t * math.pi
    sinc = torch.where(t == 0, torch.tensor(1.0, dtype=t.dtype), t.sin() / t)
    kernel = (sinc * (window * (base / orig))).to(torch.float32)
    return kernel, width


def sinc_resample(x: Any, sr_in: int, sr_out: int) -> Any:
    """Resample ``x`` (a float tensor ``[..., L]``) from ``sr_in`` to ``sr_out`` Hz: the
    benchmark's resampler, an exact port of ``torchaudio.transforms.Resample(sr_in, sr_out)``
    at its defaults (see :func:`sinc_resample_kernel`). The signal is zero-padded by ``width``
    samples on the left and ``width + orig`` on the right, filtered with stride ``orig`` and
    cut to ``ceil(new * L / orig)`` samples. Equal rates return ``x`` unchanged.
    """
    import torch.nn.functional as F

    if sr_in == sr_out:
        return x
    if not x.is_floating_point():
        raise RMISError(f"sinc_resample needs a floating-point signal, got {x.dtype}")
    kernel, width = _kernel(int(sr_in), int(sr_out), 6, 0.99)
    g = math.gcd(int(sr_in), int(sr_out))
    orig, new = int(sr_in) // g, int(sr_out) // g
    shape = x.shape
    flat = x.reshape(-1, shape[-1])
    length = flat.shape[-1]
    padded = F.pad(flat, (width, width + orig))
    y = F.conv1d(padded[:, None], kernel.to(device=x.device, dtype=x.dtype), stride=orig)
    y = y.transpose(1, 2).reshape(flat.shape[0], -1)
    y = y[:, : -(-new * length // orig)]
    return y.reshape(*shape[:-1], y.shape[-1])


def window_starts(n: int, width: int) -> list[int]:
    """Start indices of the windows of a signal of ``n`` samples (see module docstring)."""
    if n <= width:
        return [0]
    starts = list(range(0, n - width + 1, width))
    if n - (starts[-1] + width) >= TAIL_FRACTION * width:
        starts.append(n - width)
    return starts


def cut_windows(x: np.ndarray, width: int) -> np.ndarray:
    """Windows ``[n, width]`` float32 of mono ``x``, each with its mean removed before padding."""
    starts = window_starts(len(x), width)
    out = np.zeros((len(starts), width), dtype=np.float32)
    for i, s in enumerate(starts):
        seg = x[s : s + width].astype(np.float64)
        out[i, : len(seg)] = seg - seg.mean()
    return out


def load_windows(
    path: Any,
    window_seconds: float,
    target_rate: int | None,
    expected_rate: int | None = None,
    resampler: str = DEFAULT_RESAMPLER,
) -> tuple[np.ndarray, int]:
    """Read, resample (the whole file) and window one file.

    Args:
        path: audio file, or an audio source (:func:`is_source`).
        window_seconds: window length in seconds.
        target_rate: the encoder's rate in Hz, or None for the file's native rate.
        expected_rate: the dataset's native rate; a file at another rate is an error.
        resampler: ``sinc`` (the benchmark's) or ``soxr`` (see :func:`resample`).

    Returns:
        ``(windows [n, W], rate)`` with ``W = round(window_seconds * rate)``.
    """
    x, sr = read_audio(path)
    if expected_rate is not None and sr != expected_rate:
        raise RMISError(
            f"{str(path)!r} is sampled at {sr} Hz but its dataset is at {expected_rate} Hz; "
            "every file of a dataset must have the dataset's rate (`rmis data check` lists "
            "the rates of a data root; an RMIS dataset must come from its official release)"
        )
    rate = target_rate or sr
    x = resample(x, sr, rate, resampler)
    return cut_windows(x, int(round(window_seconds * rate))), rate
