"""Audio layer: read, down-mix, resample and window files (PROTOCOL.md section 2).

* Files are read with soundfile (wav, flac, ...) as float32; multi-channel files are down-mixed
  by averaging channels.
* Resampling (when an encoder needs another rate than the file's) uses soxr, high quality.
* Windows of ``W`` samples: if the signal is longer than ``W``, windows start at 0, W, 2W, ...
  while they fit, plus one last window ending at the signal's end when the remainder is at
  least 5 % of ``W``; a signal not longer than ``W`` is one window, zero-padded at the end.
  Each window has its mean removed before padding.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf

from rmis.errors import RMISError

#: Version of the preprocessing (reading, down-mix, resampling, windowing). Part of every
#: embedding-cache key: bump it whenever a change could alter an embedding.
PREPROCESSING_VERSION = "1"
TAIL_FRACTION = 0.05


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read a file as mono float32 ``[L]`` and its sample rate (Hz).

    Raises:
        RMISError: unreadable, empty or non-finite audio; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise RMISError(
            f"audio file {str(path)!r} not found" + (" (it is a folder)" if path.is_dir() else "")
        )
    try:
        data, sr = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise RMISError(f"cannot read audio file {str(path)!r}: {exc}") from None
    if data.shape[0] == 0:
        raise RMISError(f"audio file {str(path)!r} is empty (0 samples)")
    mono = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)
    if not np.isfinite(mono).all():
        raise RMISError(f"audio file {str(path)!r} contains NaN or Inf samples")
    return np.ascontiguousarray(mono), int(sr)


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample mono ``x`` from ``sr_in`` to ``sr_out`` Hz (soxr, high quality)."""
    if sr_in == sr_out:
        return x
    import soxr

    return soxr.resample(x, sr_in, sr_out, quality="HQ").astype(np.float32, copy=False)


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
    path: str | os.PathLike,
    window_seconds: float,
    target_rate: int | None,
    expected_rate: int | None = None,
) -> tuple[np.ndarray, int]:
    """Read, resample and window one file.

    Args:
        path: audio file.
        window_seconds: window length in seconds.
        target_rate: the encoder's rate in Hz, or None for the file's native rate.
        expected_rate: the dataset's native rate; a file at another rate is an error.

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
    x = resample(x, sr, rate)
    return cut_windows(x, int(round(window_seconds * rate))), rate
