"""Float64 numpy references of the CED / DaSheng equations (official code: RMIS ``models/ced``,
``models/dasheng``; torchaudio ``MelSpectrogram`` + ``AmplitudeToDB``), written from the
equations, sharing no code with ``rmis``. Used by test_ced.py and test_dasheng.py."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.special import erf


def np_hann_periodic(n: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)


def np_htk_filters(n_freqs: int, sr: int, n_mels: int, f_min: float, f_max: float) -> np.ndarray:
    """``[n_freqs, n_mels]`` HTK triangles linear in Hz (torchaudio ``melscale_fbanks``)."""

    def hz2mel(f):
        return 2595.0 * math.log10(1.0 + f / 700.0)

    lo, hi = hz2mel(f_min), hz2mel(f_max)
    edges = [
        700.0 * (10 ** ((lo + i * (hi - lo) / (n_mels + 1)) / 2595.0) - 1)
        for i in range(n_mels + 2)
    ]
    out = np.zeros((n_freqs, n_mels))
    for k in range(n_freqs):
        f = k * (sr / 2) / (n_freqs - 1)
        for m in range(n_mels):
            a, c, b = edges[m], edges[m + 1], edges[m + 2]
            out[k, m] = max(0.0, min((f - a) / (c - a), (b - f) / (b - c)))
    return out


def np_log_mel(wave, window, fb, n_fft=512, hop=160, top_db=120.0) -> np.ndarray:
    """One window -> dB mel ``[n_mels, T]``: centred (reflect) STFT, power 2, filters, dB with
    the floor at this window's max - top_db."""
    wave = np.asarray(wave, np.float64)
    x = np.pad(wave, n_fft // 2, mode="reflect")
    n = 1 + len(wave) // hop
    frames = np.stack([x[t * hop : t * hop + n_fft] for t in range(n)])
    power = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2
    db = 10 * np.log10(np.maximum(power @ fb, 1e-10)).T
    return np.maximum(db, db.max() - top_db) if top_db is not None else db


def np_layernorm(x, w, b, eps=1e-6):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def np_transformer(spec, s, heads, patch=(16, 16), bn_eps=1e-5) -> np.ndarray:
    """Frequency-first dB mel ``[F, T]`` -> last-layer tokens ``[N, D]`` (official order:
    BatchNorm per mel bin, non-overlapping patches, + time/freq positions, tokens frequency-
    major, pre-norm blocks with optional LayerScale, final LayerNorm). ``s``: float64 numpy
    state dict in the DaSheng/CED layout (``init_bn.1.*``)."""
    x = (spec - s["init_bn.1.running_mean"][:, None]) / np.sqrt(
        s["init_bn.1.running_var"][:, None] + bn_eps
    ) * s["init_bn.1.weight"][:, None] + s["init_bn.1.bias"][:, None]
    w, bias = s["patch_embed.proj.weight"], s["patch_embed.proj.bias"]  # [D, 1, pf, pt]
    pf, pt = patch
    nf, nt = x.shape[0] // pf, x.shape[1] // pt
    tokens = []
    for i in range(nf):  # frequency-major: (f t)
        for j in range(nt):
            p = x[i * pf : (i + 1) * pf, j * pt : (j + 1) * pt]
            e = (w[:, 0] * p).sum(axis=(1, 2)) + bias
            e = e + s["time_pos_embed"][0, :, 0, j] + s["freq_pos_embed"][0, :, i, 0]
            tokens.append(e)
    h = np.stack(tokens)
    d = h.shape[1]
    hd = d // heads
    depth = len({k.split(".")[1] for k in s if k.startswith("blocks.")})
    for b in range(depth):
        p = f"blocks.{b}."
        y = np_layernorm(h, s[p + "norm1.weight"], s[p + "norm1.bias"])
        qkv = y @ s[p + "attn.qkv.weight"].T + s[p + "attn.qkv.bias"]
        q, k, v = qkv[:, :d], qkv[:, d : 2 * d], qkv[:, 2 * d :]
        out = np.zeros_like(y)
        for hh in range(heads):
            sl = slice(hh * hd, (hh + 1) * hd)
            a = q[:, sl] @ k[:, sl].T / math.sqrt(hd)
            a = np.exp(a - a.max(-1, keepdims=True))
            a = a / a.sum(-1, keepdims=True)
            out[:, sl] = a @ v[:, sl]
        y = out @ s[p + "attn.proj.weight"].T + s[p + "attn.proj.bias"]
        h = h + y * s.get(p + "ls1.gamma", 1.0)
        y = np_layernorm(h, s[p + "norm2.weight"], s[p + "norm2.bias"])
        y = y @ s[p + "mlp.fc1.weight"].T + s[p + "mlp.fc1.bias"]
        y = 0.5 * y * (1 + erf(y / math.sqrt(2)))
        y = y @ s[p + "mlp.fc2.weight"].T + s[p + "mlp.fc2.bias"]
        h = h + y * s.get(p + "ls2.gamma", 1.0)
    return np_layernorm(h, s["norm.weight"], s["norm.bias"])


def np_state(state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.double().numpy() for k, v in state.items() if v.is_floating_point()}


def np_embedding(wave, state, heads, patch, top_db=120.0) -> np.ndarray:
    """One window -> mean of the last layer's tokens, all in float64, from the state dict's
    own front-end buffers."""
    s = np_state(state)
    spec = np_log_mel(
        wave, s["front_end.0.spectrogram.window"], s["front_end.0.mel_scale.fb"], top_db=top_db
    )
    return np_transformer(spec, s, heads, patch).mean(0)
