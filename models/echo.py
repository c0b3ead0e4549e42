"""ECHO (Zhang, Liu, Li, arXiv:2508.14689): the band-split MAE encoder at the native rate.

Per window at the native rate ``sr`` (the authors' ``AudioMAEWithBand.extract_features_from_audio``
and their SIREN extractor, ``yucongzh/ECHO`` and ``yucongzh/SIREN``; the official RMIS harness
does not ship ECHO):

1. magnitude STFT as FISHER: ``n_fft = 25 * sr // 1000``, hop ``10 * sr // 1000``, periodic
   Hann, no centring, onesided (``rmis.frontends.stft_magnitude``) -> ``[F, T]``;
2. ``log(|X| + 1e-9)``, normalised ``(x + 5.874158) / (2 * 5.223174)``;
3. at most ``spec_len`` (2000) frames per forward pass: a longer input is cut into 2000-frame
   segments, the remainder taken as the LAST 2000 frames (overlapping the previous segment),
   and the segment embeddings averaged; a 10-s RMIS window has 998 frames, so one segment;
   frames are NOT padded to 2000 (the time axis is variable);
4. ``nb = ceil(F / 32)`` bands of 32 bins, low to high; the last band, when shorter, is
   zero-padded at its LOW-frequency side (the official ``F.pad(band, (0, 0, pad, 0))``);
5. per band: a 32 x 16 patch (Conv2d, stride 32 x 16) over the full band height and 16 frames,
   time zero-padded to a multiple of 16; the checkpoint's fixed 1-D sin-cos time positions
   (row ``1 + i`` for patch ``i``; row 0 is unused); a frequency position code added to every
   patch AND to the CLS token: ``sincos(25 * c)`` with interleaved sin/cos (``[sin, cos, sin,
   ...]``, ``w_k = 10000 ** (-2k / D)``) of the band's normalised centre frequency
   ``c = ((start + end - 1) / 2) * sr / n_fft / (sr / 2)`` (``end`` = last REAL bin + 1, so the
   padded last band has its own centre);
6. ``depth`` post-norm blocks (``torch.nn.TransformerEncoderLayer``: ``x = LN1(x + MHA(x))``,
   ``x = LN2(x + W2 gelu(W1 x))``, eps 1e-6), then a final LayerNorm;
7. the window embedding is the concatenation of the band CLS vectors, low to high: ``nb * D``
   (D = 384 small, 192 tiny; 16 kHz: 7 bands -> 2688 / 1344).

The blocks are FISHER's (:class:`rmis.models.fisher.Block`: same post-norm layer, same
attention with fused q/k/v); the release's ``torch.nn.TransformerEncoderLayer`` names are
mapped onto it by :data:`KEY_MAP` (``self_attn.in_proj_*`` -> ``attn.qkv.*``, ``out_proj`` ->
``attn.proj``, ``linear1/2`` -> ``mlp.fc1/2``). Everything else keeps the release's names.

Release files: the hub folders ``yucongzh/echo-small-0824`` and ``yucongzh/echo-tiny-0828``
hold ``model.safetensors`` (the encoder's own state dict, no prefix, no config; the
architecture is read from the tensor shapes, the head count from the variant) beside the
authors' model code; the Zenodo record 16935787 has a torch ``.pth`` ``{"encoder":
state_dict, "model_type": ...}``, read when ``--checkpoint`` names a ``.pt``/``.pth``/``.ckpt``.

Where this adapter differs from the authors' code:

* loading is strict: the authors' own snippets load the safetensors with ``strict=False``
  (a key mismatch there silently leaves random weights);
* the final LayerNorm uses eps 1e-6, as the authors' SIREN extractor and Zenodo snippet build
  it; the hub model card and ``from_pretrained`` build ``nn.LayerNorm(D)`` (eps 1e-5). Option
  ``final_norm_eps`` (``-o final_norm_eps=1e-5``) switches it (a relative change of about
  ``1e-5 / (2 var)``, ``var`` the CLS token's variance before that norm);
* the authors remove the mean of the WHOLE file before the STFT and then segment its
  spectrogram; here, as for every encoder, the harness cuts 10-s windows, removes each
  window's mean, and the file embedding is the mean of the window embeddings (PROTOCOL.md §2);
  within a window the authors' 2000-frame segmentation is kept;
* the windows of a batch are processed together (bands folded into the batch); the authors
  run one signal at a time; the arithmetic per band is the same.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rmis.encoders import Encoder
from rmis.errors import RMISError
from rmis.frontends import frame_window, stft_magnitude
from rmis.models.fisher import Block, FisherConfig
from rmis.weights import Pretrained, load_strict, read_weights, register_family

LOG_MEAN = -5.874158
LOG_STD = 5.223174
LOG_EPS = 1e-9
FREQ_SCALE = 25
_LAYER = r"^(encoder\.layers\.\d+)\."

#: Release names (``torch.nn.TransformerEncoderLayer``) -> this module's (FISHER's Block).
KEY_MAP: tuple[tuple[str, str], ...] = (
    (_LAYER + r"self_attn\.in_proj_(weight|bias)$", r"\1.attn.qkv.\2"),
    (_LAYER + r"self_attn\.out_proj\.", r"\1.attn.proj."),
    (_LAYER + r"linear1\.", r"\1.mlp.fc1."),
    (_LAYER + r"linear2\.", r"\1.mlp.fc2."),
)


@dataclass(frozen=True)
class EchoConfig:
    """Architecture numbers (defaults = the released ECHO-small)."""

    embed_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    band_width: int = 32
    shift_size: int = 16
    spec_len: int = 2000
    block_eps: float = 1e-6
    final_norm_eps: float = 1e-6

    @property
    def pos_rows(self) -> int:
        """Rows of the time-position table: CLS + ``spec_len / shift_size`` patches."""
        return self.spec_len // self.shift_size + 1

    @classmethod
    def from_state(
        cls, state: dict[str, torch.Tensor], arch: dict[str, Any], where: str, **over: Any
    ) -> EchoConfig:
        """Read the architecture from a (renamed) state dict's shapes; the head count (not in
        the shapes) comes from ``arch``, the released variant's numbers."""
        need = ("cls_token", "pos_embed", "patch_embed.proj.weight")
        missing = [k for k in need if k not in state]
        if missing:
            raise RMISError(
                f"{where}: not an ECHO encoder state dict (no {missing}); expected the keys of "
                "the authors' AudioMAEWithBand (model.safetensors or the .pth's 'encoder')"
            )
        d = state["cls_token"].shape[-1]
        proj = state["patch_embed.proj.weight"]  # [D, 1, band_width, shift_size]
        layers = {int(m.group(1)) for k in state if (m := re.match(r"encoder\.layers\.(\d+)\.", k))}
        fc1 = state.get("encoder.layers.0.mlp.fc1.weight")
        heads = int(arch.get("num_heads", 6))
        if d % heads:
            raise RMISError(
                f"{where}: embedding size {d} is not divisible by the variant's {heads} heads"
            )
        return cls(
            embed_dim=d,
            depth=len(layers),
            num_heads=heads,
            mlp_ratio=(fc1.shape[0] / d) if fc1 is not None else float(arch.get("mlp_ratio", 4)),
            band_width=proj.shape[-2],
            shift_size=proj.shape[-1],
            spec_len=(state["pos_embed"].shape[1] - 1) * proj.shape[-1],
            **over,
        )

    def block_cfg(self) -> FisherConfig:
        return FisherConfig(
            embed_dim=self.embed_dim,
            num_heads=self.num_heads,
            mlp_ratio=self.mlp_ratio,
            norm_eps=self.block_eps,
            layer_norm_first=False,
        )


def time_positions(dim: int, rows: int) -> torch.Tensor:
    """The official fixed time table ``[1, rows, dim]`` (row 0 zeros, for the CLS; row ``1 + t``
    = ``[sin(t w_k), cos(t w_k)]`` with ``w_k = 10000 ** (-k / (dim / 2))``), float32."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    arg = torch.arange(rows - 1, dtype=torch.float64)[:, None] * omega[None]
    table = torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)
    return torch.cat([torch.zeros(1, dim, dtype=torch.float64), table]).float()[None]


def band_centres(n_freqs: int, band_width: int, sample_rate: int) -> list[float]:
    """Normalised centre frequency (0..1 of Nyquist) of each band, as the official code computes
    it (float64): the centre of the band's REAL bins, in Hz, over ``sr / 2``."""
    n_fft = 25 * sample_rate // 1000
    out = []
    for start in range(0, max(n_freqs, 1), band_width):
        end = min(start + band_width, n_freqs)
        out.append(((start + end - 1) / 2.0) * sample_rate / n_fft / (sample_rate / 2.0))
    return out


def frequency_code(centres: torch.Tensor, dim: int) -> torch.Tensor:
    """``[N]`` normalised centres -> ``[N, dim]``: interleaved ``sin/cos(c * 25 * w_k)``,
    ``w_k = exp(-2k ln(10000) / dim)`` (float32, the official operation order)."""
    div = torch.exp(
        torch.arange(0, dim, 2, device=centres.device).float() * (-math.log(10000.0) / dim)
    )
    arg = centres.float()[:, None] * FREQ_SCALE * div
    pe = torch.zeros(centres.shape[0], dim, device=centres.device)
    pe[:, 0::2] = torch.sin(arg)
    pe[:, 1::2] = torch.cos(arg)
    return pe


def log_spectrogram(windows: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """``[B, L]`` waveform -> ``[B, T, F]`` normalised natural-log magnitude STFT."""
    n_fft, hop = 25 * sample_rate // 1000, 10 * sample_rate // 1000
    if windows.shape[-1] < n_fft:
        raise RMISError(
            f"ECHO: a window of {windows.shape[-1]} samples is shorter than one "
            f"STFT frame ({n_fft} samples at {sample_rate} Hz)"
        )
    window = frame_window("hann", n_fft, periodic=True, device=windows.device)
    mag = stft_magnitude(windows.float(), n_fft, hop, window, center=False, power=1.0)
    return (torch.log(mag + LOG_EPS) - LOG_MEAN) / (LOG_STD * 2)


class _PatchEmbed(nn.Module):
    def __init__(self, cfg: EchoConfig) -> None:
        super().__init__()
        k = (cfg.band_width, cfg.shift_size)
        self.shift = cfg.shift_size
        self.proj = nn.Conv2d(1, cfg.embed_dim, kernel_size=k, stride=k)

    def forward(self, bands: torch.Tensor) -> torch.Tensor:
        """``[N, 1, band_width, T]`` -> ``[N, ceil(T / shift), D]`` (time zero-padded)."""
        rest = bands.shape[-1] % self.shift
        if rest:
            bands = F.pad(bands, (0, self.shift - rest))
        return self.proj(bands).squeeze(2).transpose(1, 2)


class _Encoder(nn.Module):
    def __init__(self, cfg: EchoConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(Block(cfg.block_cfg()) for _ in range(cfg.depth))


class EchoViT(nn.Module):
    """The ECHO encoder (``AudioMAEWithBand`` at mask ratio 0) with the release's names."""

    def __init__(self, cfg: EchoConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.embed_dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(time_positions(d, cfg.pos_rows), requires_grad=False)
        self.patch_embed = _PatchEmbed(cfg)
        self.encoder = _Encoder(cfg)
        self.norm = nn.LayerNorm(d, eps=cfg.final_norm_eps)

    def bands(self, spec: torch.Tensor) -> torch.Tensor:
        """``[B, T, F]`` -> ``[B * nb, 1, band_width, T]``; the last band, if partial, is
        zero-padded at its low-frequency side (as the official code does)."""
        w = self.cfg.band_width
        b, t, f = spec.shape
        x = spec.transpose(1, 2)  # [B, F, T]
        full, rest = divmod(f, w)
        parts = [x[:, : full * w].reshape(b, full, w, t)]
        if rest:
            parts.append(F.pad(x[:, full * w :], (0, 0, w - rest, 0))[:, None])
        return torch.cat(parts, dim=1).reshape(-1, 1, w, t)

    def segment(self, spec: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """One segment ``[B, T <= spec_len, F]`` -> ``[B, nb * D]``."""
        b, _, f = spec.shape
        centres = torch.tensor(
            band_centres(f, self.cfg.band_width, sample_rate), dtype=torch.float32
        ).to(spec.device)
        code = frequency_code(centres, self.cfg.embed_dim).to(spec.dtype)  # [nb, D]
        nb = code.shape[0]
        code = code.repeat(b, 1)[:, None]  # [B * nb, 1, D]
        x = self.patch_embed(self.bands(spec))
        if x.shape[1] + 1 > self.pos_embed.shape[1]:
            raise RMISError(
                f"ECHO: {x.shape[1]} patches exceed the position table ({self.pos_embed.shape[1]})"
            )
        x = x + self.pos_embed[:, 1 : x.shape[1] + 1].to(x.dtype) + code
        cls = self.cls_token.to(x.dtype) + code
        x = torch.cat([cls, x], dim=1)
        for layer in self.encoder.layers:
            x = layer(x)
        x = self.norm(x)
        return x[:, 0].reshape(b, nb * x.shape[-1])

    def forward(self, spec: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """``[B, T, F]`` normalised log-spectrogram -> ``[B, nb * D]``; inputs longer than
        ``spec_len`` frames are averaged over segments (the last one ending at the end)."""
        n = self.cfg.spec_len
        t = spec.shape[1]
        if t <= n:
            return self.segment(spec, sample_rate)
        starts = list(range(0, t - n + 1, n))
        if starts[-1] + n < t:
            starts.append(t - n)
        return torch.stack([self.segment(spec[:, s : s + n], sample_rate) for s in starts]).mean(0)


class Echo(Encoder):
    """ECHO encoder adapter (native rate; embedding = bands x D)."""

    sample_rate = None
    version = "1"

    def __init__(
        self, spec: Pretrained, checkpoint: str | None = None, final_norm_eps: float = 1e-6
    ) -> None:
        super().__init__()
        source = checkpoint or spec.sources[0]
        weights = read_weights(source, file_spec(source, spec))
        self.cfg = EchoConfig.from_state(
            weights.state_dict, dict(spec.arch), source, final_norm_eps=float(final_norm_eps)
        )
        self.vit = EchoViT(self.cfg)
        load_strict(self.vit, weights.state_dict, source)
        self.band_dim = self.cfg.embed_dim  # the embedding is n_bands blocks of this size
        self.band_bins = self.cfg.band_width  # STFT bins per sub-band
        self.weights_sha256 = weights.sha256
        self.revision = weights.revision

    def embed(self, windows: torch.Tensor, sample_rate: int) -> torch.Tensor:
        return self.vit(log_spectrogram(windows, sample_rate), sample_rate)


def file_spec(source: str, spec: Pretrained) -> Pretrained:
    """The table's spec for the hub's ``model.safetensors``; for a torch file (the Zenodo
    ``.pth``) the state dict under ``"encoder"``."""
    name = source.split("?")[0].lower()
    if name.endswith((".pt", ".pth", ".ckpt")):
        return replace(spec, file_format="torch", state_path=("encoder",))
    return spec


_ARCH = {"mlp_ratio": 4.0, "depth": 12, "band_width": 32, "shift_size": 16, "spec_len": 2000}
_COMMON = {
    "family": "ECHO",
    "file_format": "safetensors",
    "state_path": (),
    "key_map": KEY_MAP,
    "sample_rate": None,
    "frontend": "native rate; |STFT| 25/10 ms periodic Hann, log(x+1e-9), "
    "(x+5.874158)/(2*5.223174); 32-bin bands + band-centre frequency code; <= 2000 frames",
    "license": "MIT (the yucongzh/ECHO repository)",
    "paper": "Zhang, Liu, Li, ECHO, arXiv:2508.14689",
}

TABLE: tuple[Pretrained, ...] = (
    Pretrained(
        name="echo-tiny",
        variant="tiny",
        sources=("hf://yucongzh/echo-tiny-0828",),
        pooling="concatenated band CLS (after the final LayerNorm)",
        dim="n_bands x 192",
        params_millions=5.44,
        arch={**_ARCH, "embed_dim": 192, "num_heads": 3},
        **_COMMON,
    ),
    Pretrained(
        name="echo-small",
        variant="small",
        sources=("hf://yucongzh/echo-small-0824",),
        pooling="concatenated band CLS (after the final LayerNorm)",
        dim="n_bands x 384",
        params_millions=21.49,
        arch={**_ARCH, "embed_dim": 384, "num_heads": 6},
        **_COMMON,
    ),
)


def _make(spec: Pretrained, checkpoint: str | None = None, final_norm_eps: float = 1e-6) -> Echo:
    return Echo(spec, checkpoint=checkpoint, final_norm_eps=final_norm_eps)


register_family(TABLE, _make)


# --- random-weight releases (tests, benchmarks) -----------------------------------------------


class ReleaseLayout(nn.Module):
    """The authors' ``AudioMAEWithBand`` parameter tree (``torch.nn.TransformerEncoder``
    layers), so random checkpoints carry exactly the release's keys, shapes and order."""

    def __init__(self, d: int, depth: int, heads: int, rows: int = 126) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, rows, d), requires_grad=False)
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(1, d, kernel_size=(32, 16), stride=(32, 16))
        layer = nn.TransformerEncoderLayer(
            d, heads, 4 * d, activation="gelu", batch_first=True, layer_norm_eps=1e-6
        )
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d, eps=1e-6)


def release_state(
    d: int, depth: int, heads: int, rows: int = 126, seed: int = 0
) -> dict[str, torch.Tensor]:
    """A random encoder state dict in the release's layout (:class:`ReleaseLayout`), the fixed
    time table written as the authors' code builds it (computed here in numpy, independently
    of :func:`time_positions`)."""
    import numpy as np

    gen = torch.Generator().manual_seed(seed)
    m = ReleaseLayout(d, depth, heads, rows)
    with torch.no_grad():
        for name, p in m.named_parameters():
            unit = 1.0 if "norm" in name and name.endswith("weight") else 0.0
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05 + unit)
        # the official fixed table: row 0 zeros (CLS), row 1 + t = [sin(t w), cos(t w)]
        w = 1.0 / 10000 ** (np.arange(d // 2) / (d / 2))
        arg = np.arange(rows - 1)[:, None] * w[None]
        table = np.zeros((rows, d))
        table[1:, : d // 2], table[1:, d // 2 :] = np.sin(arg), np.cos(arg)
        m.pos_embed.copy_(torch.from_numpy(table).float()[None])
    return {k: v.contiguous() for k, v in m.state_dict().items()}


def random_checkpoint(name: str, path: str | Path, seed: int = 0, **arch: Any) -> Path:
    """Write a random-weight release of ``name`` (``echo-tiny`` / ``echo-small``) at ``path``;
    returns what to pass as ``--checkpoint``. A ``path`` ending in ``.pt``/``.pth``/``.ckpt``
    gets the Zenodo file ``{"encoder": state_dict, "model_type": variant}``; any other path
    becomes the hub folder (``model.safetensors``, no prefix, no config). ``arch`` overrides
    ``embed_dim`` / ``depth`` / ``num_heads`` / ``spec_len`` (the head count the adapter uses
    is always the variant's: keep ``embed_dim`` divisible by it)."""
    spec = next((s for s in TABLE if s.name == name), None)
    if spec is None:
        raise RMISError(f"no ECHO variant {name!r} (known: {[s.name for s in TABLE]})")
    a = {**spec.arch, **arch}
    rows = int(a["spec_len"]) // int(a["shift_size"]) + 1
    state = release_state(int(a["embed_dim"]), int(a["depth"]), int(a["num_heads"]), rows, seed)
    path = Path(path)
    if path.suffix.lower() in (".pt", ".pth", ".ckpt"):
        torch.save({"encoder": state, "model_type": spec.variant}, path)
        return path
    from rmis.weights import write_hub_folder

    return write_hub_folder(path, None, state)  # the release ships no config.json


__all__ = [
    "KEY_MAP",
    "TABLE",
    "Echo",
    "EchoConfig",
    "EchoViT",
    "ReleaseLayout",
    "band_centres",
    "frequency_code",
    "log_spectrogram",
    "random_checkpoint",
    "release_state",
    "time_positions",
]
