"""``logspec``: a training-free, native-rate baseline encoder.

Per window: magnitude STFT on a fixed 25 ms / 10 ms time grid (periodic Hann window of
``n_fft = 25 * sr // 1000`` samples, hop ``10 * sr // 1000``, no centring), natural log of
``|X| + 1e-6``, averaged over the bins of fixed-width frequency bands (``band_hz`` wide, from
0 Hz up to Nyquist; a final partial band is dropped), then the mean and the standard deviation
over time of each band. Embedding: ``[means, stds]``, ``2 * floor(sr / 2 / band_hz)`` values,
so higher rates give more bands (64 values at 16 kHz with 250-Hz bands, 256 at 64 kHz).

It needs no download and is the reference point every learned encoder must beat.
"""

from __future__ import annotations

import torch

from rmis.encoders import Encoder, EncoderInfo, register_encoder
from rmis.errors import RMISError
from rmis.frontends import frame_window, stft_magnitude

_CHUNK_SAMPLES = 1_500_000


class LogSpec(Encoder):
    """Band-averaged log-magnitude spectrogram statistics at the native rate."""

    sample_rate = None

    def __init__(self, band_hz: float = 250.0) -> None:
        super().__init__()
        if band_hz <= 0:
            raise RMISError(f"logspec: band_hz must be positive, got {band_hz}")
        self.band_hz = float(band_hz)
        self._cache: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}

    def _plan(self, sample_rate: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(Hann window [n_fft], band-averaging matrix [F, n_bands]) for a rate."""
        key = (sample_rate, str(device))
        if key not in self._cache:
            n_fft = 25 * sample_rate // 1000
            n_bins = n_fft // 2 + 1
            freqs = torch.arange(n_bins, dtype=torch.float64) * sample_rate / n_fft
            n_bands = int(sample_rate / 2 // self.band_hz)
            band = torch.floor(freqs / self.band_hz).long()
            weights = torch.zeros(n_bins, n_bands, dtype=torch.float64)
            ok = band < n_bands
            weights[torch.nonzero(ok).squeeze(1), band[ok]] = 1.0
            counts = weights.sum(0)
            if n_bands == 0 or bool((counts == 0).any()):
                raise RMISError(
                    f"logspec: {self.band_hz:g}-Hz bands are narrower than the STFT bin spacing "
                    f"at {sample_rate} Hz; use a larger band_hz"
                )
            window = frame_window("hann", n_fft, periodic=True, device=device)
            self._cache[key] = (window, (weights / counts).to(torch.float32).to(device))
        return self._cache[key]

    def embed(self, windows: torch.Tensor, sample_rate: int) -> torch.Tensor:
        n_fft, hop = 25 * sample_rate // 1000, 10 * sample_rate // 1000
        if windows.shape[-1] < n_fft:
            raise RMISError(
                f"logspec: a window of {windows.shape[-1]} samples is shorter than one STFT frame "
                f"({n_fft} samples at {sample_rate} Hz)"
            )
        window, bands = self._plan(sample_rate, windows.device)
        # a few windows at a time: the spectrogram of a chunk stays in cache (2x faster)
        step = max(1, _CHUNK_SAMPLES // windows.shape[-1])
        out = []
        for chunk in windows.float().split(step):
            spec = stft_magnitude(chunk, n_fft, hop, window)  # [b, T, F]
            logmag = torch.log(spec + 1e-6) @ bands  # [b, T, n_bands]
            std, mean = torch.std_mean(logmag, dim=1, correction=0)
            out.append(torch.cat([mean, std], dim=1))
        return torch.cat(out)


register_encoder(
    EncoderInfo(
        name="logspec",
        family="logspec",
        variant="250Hz",
        factory=LogSpec,
        params_millions=0.0,
        sample_rate=None,
        embedding="mean and std over time of 250-Hz band log-magnitudes: 2 x sr / 500 values",
        license="MIT",
        paper="rmis built-in baseline",
    )
)
