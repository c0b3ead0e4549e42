"""FISHER (Fan, Jiang et al., arXiv:2507.16696): the RMIS-window inference path in plain PyTorch.

Per window at the native rate ``sr`` (FISHER.md):

1. magnitude STFT, ``n_fft = 25 * sr // 1000``, hop ``10 * sr // 1000``, periodic Hann, no
   centring, onesided -> ``[T, F]``;
2. ``log(|X| + 1e-10)``, normalised ``(x + 3.0173443) / (2 * 2.1531635)`` (switch off with
   ``normalize=False``, the official harness's quirk for some datasets);
3. zero-pad or crop to 1024 frames; zero-pad the frequency axis to the band width if shorter;
4. ``nb = F // w`` sub-bands of ``w`` bins (low to high, leftover bins dropped), folded into the
   batch: ``[B * nb, 1, 1024, w]``;
5. per band, a ViT: Conv2d patch embedding (16 x 16), fixed 2-D sin-cos positions (row ``i`` of
   the checkpoint's table for token ``i``), CLS prepended, LayerNorm, 12 post-norm blocks;
6. the window embedding is the concatenation of the band CLS vectors, low to high: ``nb * D``.

Every architecture number is read from the checkpoint's ``cfg["model"]``; the state-dict keys
are the official ones, so released checkpoints load unchanged (strictly).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rmis.encoders import Encoder
from rmis.errors import RMISError
from rmis.frontends import frame_window, stft_magnitude
from rmis.models.layers import Attention, Mlp
from rmis.weights import Pretrained, load_strict, read_weights, register_family

LOG_MEAN = -3.017344307886898
LOG_STD = 2.1531635155379805
TARGET_FRAMES = 1024
PREFIX = "modality_encoders.IMAGE."


@dataclass(frozen=True)
class FisherConfig:
    """Architecture numbers (defaults = the official code's defaults)."""

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    norm_eps: float = 1e-6
    norm_affine: bool = True
    layer_norm_first: bool = False
    band_width: int = 50
    patch_size: int = 16
    in_chans: int = 1
    target_length: int = TARGET_FRAMES
    max_length: int = 768
    max_freq: int = 400
    flatten: str = "freq"
    prenet_depth: int = 4
    num_extra_tokens: int = 0
    use_alibi_encoder: bool = False

    @classmethod
    def from_cfg(cls, model_cfg: dict[str, Any]) -> FisherConfig:
        """Read the official ``cfg["model"]`` dict (nested ``modalities.image``)."""
        image = dict((model_cfg.get("modalities") or {}).get("image") or {})
        top = {
            k: model_cfg[k]
            for k in (
                "embed_dim",
                "depth",
                "num_heads",
                "mlp_ratio",
                "norm_eps",
                "norm_affine",
                "layer_norm_first",
                "band_width",
            )
            if k in model_cfg
        }
        sub = {
            k: image[k]
            for k in (
                "patch_size",
                "in_chans",
                "target_length",
                "max_length",
                "max_freq",
                "flatten",
                "prenet_depth",
                "num_extra_tokens",
                "use_alibi_encoder",
            )
            if k in image
        }
        cfg = cls(**top, **sub)
        if cfg.use_alibi_encoder:
            raise RMISError(
                "FISHER checkpoint uses ALiBi attention biases, which rmis does not "
                "implement (the released FISHER checkpoints do not)"
            )
        if cfg.in_chans != 1 or cfg.flatten not in ("freq", "time"):
            raise RMISError(
                f"unsupported FISHER config: in_chans={cfg.in_chans}, flatten={cfg.flatten!r}"
            )
        return cfg


def sincos_positions(dim: int, rows: int, cols: int) -> torch.Tensor:
    """The official fixed 2-D sin-cos table ``[rows * cols, dim]`` (MAE style, float32).

    Row ``i`` encodes ``c = i % cols`` in its first half and ``r = i // cols`` in its second;
    each half is ``[sin(p * w_k), cos(p * w_k)]`` with ``w_k = 10000 ** (-k / (dim / 4))``.
    """
    if dim % 4:
        raise RMISError(f"position table needs a dimension divisible by 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float32) / quarter)
    idx = torch.arange(rows * cols)
    halves = []
    for p in ((idx % cols).float(), (idx // cols).float()):
        arg = p[:, None] * omega[None, :]
        halves += [torch.sin(arg), torch.cos(arg)]
    return torch.cat(halves, dim=1)


class Block(nn.Module):
    """Transformer block; post-norm ``x = LN1(x + Attn(x)); x = LN2(x + MLP(x))`` by default."""

    def __init__(self, cfg: FisherConfig) -> None:
        super().__init__()
        d = cfg.embed_dim
        self.pre_norm = cfg.layer_norm_first
        self.norm1 = nn.LayerNorm(d, eps=cfg.norm_eps, elementwise_affine=cfg.norm_affine)
        self.attn = Attention(d, cfg.num_heads)
        self.norm2 = nn.LayerNorm(d, eps=cfg.norm_eps, elementwise_affine=cfg.norm_affine)
        self.mlp = Mlp(d, int(d * cfg.mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre_norm:
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))
        x = self.norm1(x + self.attn(x))
        return self.norm2(x + self.mlp(x))


class _PatchEmbed(nn.Module):
    def __init__(self, cfg: FisherConfig) -> None:
        super().__init__()
        p = cfg.patch_size
        self.flatten_time = cfg.flatten == "time"
        self.proj = nn.Conv2d(cfg.in_chans, cfg.embed_dim, kernel_size=p, stride=p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)  # [N, D, T/16, w/16]
        if self.flatten_time:
            x = x.transpose(-2, -1)
        return x.flatten(2).transpose(1, 2)  # [N, tokens, D]


class _Positions(nn.Module):
    def __init__(self, cfg: FisherConfig) -> None:
        super().__init__()
        table = sincos_positions(cfg.embed_dim, cfg.max_length, cfg.max_freq)
        self.positions = nn.Parameter(table[None], requires_grad=False)


class _ContextEncoder(nn.Module):
    def __init__(self, cfg: FisherConfig) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(
            cfg.embed_dim, eps=cfg.norm_eps, elementwise_affine=cfg.norm_affine
        )
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.prenet_depth))
        self.pre_norm = cfg.layer_norm_first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.pre_norm:
            x = self.norm(x)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x) if self.pre_norm else x


class _ImageEncoder(nn.Module):
    def __init__(self, cfg: FisherConfig) -> None:
        super().__init__()
        if cfg.num_extra_tokens < 1:
            raise RMISError("FISHER checkpoint cfg has num_extra_tokens=0: no CLS token to read")
        self.extra_tokens = nn.Parameter(torch.zeros(1, cfg.num_extra_tokens, cfg.embed_dim))
        self.local_encoder = _PatchEmbed(cfg)
        self.fixed_positional_encoder = _Positions(cfg)
        self.context_encoder = _ContextEncoder(cfg)


class FisherViT(nn.Module):
    """The FISHER student encoder with the official parameter names."""

    def __init__(self, cfg: FisherConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.modality_encoders = nn.ModuleDict({"IMAGE": _ImageEncoder(cfg)})
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = (
            nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps, elementwise_affine=cfg.norm_affine)
            if cfg.layer_norm_first
            else None
        )

    def bands(self, spec: torch.Tensor) -> tuple[torch.Tensor, int]:
        """``[B, T, F]`` normalised log-spectrogram -> ``([B * nb, 1, 1024, w], nb)``."""
        w = self.cfg.band_width
        t, f = spec.shape[1], spec.shape[2]
        frames = self.cfg.target_length
        spec = F.pad(spec, (0, 0, 0, frames - t)) if t < frames else spec[:, :frames]
        if f < w:
            spec = F.pad(spec, (0, w - f))
        nb = spec.shape[2] // w
        spec = spec[:, :, : nb * w].reshape(spec.shape[0], frames, nb, w)
        return spec.permute(0, 2, 1, 3).reshape(-1, 1, frames, w), nb

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        """``[B, T, F]`` normalised log-magnitude spectrogram -> ``[B, nb * D]``."""
        enc = self.modality_encoders["IMAGE"]
        x, nb = self.bands(spec)
        x = enc.local_encoder(x)
        positions = enc.fixed_positional_encoder.positions
        if x.shape[1] > positions.shape[1]:
            raise RMISError(
                f"FISHER: {x.shape[1]} patches exceed the position table ({positions.shape[1]})"
            )
        x = x + positions[:, : x.shape[1]].to(x.dtype)
        x = torch.cat([enc.extra_tokens.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
        x = enc.context_encoder(x)
        for blk in self.blocks:
            x = blk(x)
        if self.norm is not None:
            x = self.norm(x)
        return x[:, 0].reshape(-1, nb * x.shape[-1])

    def grid(self) -> tuple[int, int]:
        """The patch grid of one band: ``(time rows, frequency columns)``; token ``i`` of the
        flattened sequence sits at row ``i // cols``, column ``i % cols`` (``flatten="freq"``)."""
        p = self.cfg.patch_size
        rows, cols = self.cfg.target_length // p, self.cfg.band_width // p
        return (cols, rows) if self.cfg.flatten == "time" else (rows, cols)

    def forward_features(
        self, bands: torch.Tensor, keep: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Training path: ``[N, 1, 1024, w]`` bands -> ``(out, layers)``.

        ``keep`` (``[N, K]`` token indices, or None for all tokens) selects the patches the
        encoder sees; the others are dropped before the CLS token is prepended (the student's
        masked input). ``out`` is ``[N, 1 + K, D]`` (CLS first, then the kept patches in the
        order of ``keep``), ``layers`` the output of every block (same shape), shallow to deep.
        With ``keep=None`` ``out[:, 0]`` is exactly the band vector :meth:`forward` returns.
        """
        enc = self.modality_encoders["IMAGE"]
        x = enc.local_encoder(bands)
        positions = enc.fixed_positional_encoder.positions
        if x.shape[1] > positions.shape[1]:
            raise RMISError(
                f"FISHER: {x.shape[1]} patches exceed the position table ({positions.shape[1]})"
            )
        x = x + positions[:, : x.shape[1]].to(x.dtype)
        if keep is not None:
            x = torch.gather(x, 1, keep[:, :, None].expand(-1, -1, x.shape[-1]))
        x = torch.cat([enc.extra_tokens.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
        x = enc.context_encoder(x)
        layers = []
        for blk in self.blocks:
            x = blk(x)
            layers.append(x)
        if self.norm is not None:
            x = self.norm(x)
        return x, layers


def log_spectrogram(windows: torch.Tensor, sample_rate: int, normalize: bool = True):
    """``[B, L]`` waveform -> ``[B, T, F]`` (normalised) natural-log magnitude STFT."""
    n_fft, hop = 25 * sample_rate // 1000, 10 * sample_rate // 1000
    if windows.shape[-1] < n_fft:
        raise RMISError(
            f"FISHER: a window of {windows.shape[-1]} samples is shorter than one "
            f"STFT frame ({n_fft} samples at {sample_rate} Hz)"
        )
    window = frame_window("hann", n_fft, periodic=True, device=windows.device)
    x = torch.log(stft_magnitude(windows, n_fft, hop, window) + 1e-10)
    return (x - LOG_MEAN) / (2 * LOG_STD) if normalize else x


class Fisher(Encoder):
    """FISHER encoder adapter (native rate; embedding = bands x D)."""

    sample_rate = None
    version = "1"

    def __init__(
        self, checkpoint: str | None = None, variant: str = "tiny", normalize: bool = True
    ) -> None:
        super().__init__()
        spec = next(s for s in PRETRAINED if s.variant == variant)
        source = checkpoint or spec.sources[0]
        weights = read_weights(source, spec)
        model_cfg = weights.config.get("model") if isinstance(weights.config, dict) else None
        if not isinstance(model_cfg, dict):
            raise RMISError(
                f"{source}: no cfg['model'] in the checkpoint; FISHER checkpoints "
                "are {'cfg': {'model': ...}, 'model': state_dict}"
            )
        self.cfg = FisherConfig.from_cfg(model_cfg)
        self.vit = FisherViT(self.cfg)
        load_strict(self.vit, weights.state_dict, source)
        self.normalize = bool(normalize)
        self.band_dim = self.cfg.embed_dim  # the embedding is n_bands blocks of this size
        self.band_bins = self.cfg.band_width  # STFT bins per sub-band
        self.weights_sha256 = weights.sha256
        self.revision = weights.revision

    def embed(self, windows: torch.Tensor, sample_rate: int) -> torch.Tensor:
        return self.vit(log_spectrogram(windows, sample_rate, self.normalize))


def fisher_flops(cfg: FisherConfig, n_bands: int) -> float:
    """Multiply-add FLOPs (x2) of one window: patch embedding, attention and MLPs."""
    d = cfg.embed_dim
    tokens = (cfg.target_length // cfg.patch_size) * (cfg.band_width // cfg.patch_size) + 1
    per_block = 2 * tokens * (4 * d * d + 2 * cfg.mlp_ratio * d * d) + 4 * tokens * tokens * d
    patch = 2 * (tokens - 1) * d * cfg.patch_size**2
    return n_bands * ((cfg.depth + cfg.prenet_depth) * per_block + patch)


VARIANTS: dict[str, dict[str, Any]] = {
    "tiny": {"params": 5.5, "dim": 192, "checkpoints": ("hf://jiangab/FISHER-tiny-0723",)},
    "mini": {"params": 10.0, "dim": 256, "checkpoints": ("hf://jiangab/FISHER-mini-0723",)},
    "small": {"params": 22.0, "dim": 384, "checkpoints": ("hf://jiangab/FISHER-small-0723",)},
}

#: The released variants as weights-layer rows. The released file is a torch pickle
#: ``{"cfg": ..., "model": state_dict}`` whose ``cfg`` may hold omegaconf objects (the official
#: loader uses ``weights_only=False``); :func:`rmis.weights.safe_torch_load` reads those as plain
#: data. A ``.safetensors`` copy with the cfg as JSON metadata (or a config.json beside it)
#: loads too.
PRETRAINED = tuple(
    Pretrained(
        name=f"fisher-{v}",
        family="FISHER",
        variant=v,
        sources=meta["checkpoints"],
        file_format="torch",
        state_path=("model",),
        config_path=("cfg",),
        sample_rate=None,
        frontend="log |STFT| 25/10 ms (native rate), 1024 frames",
        pooling="band CLS vectors, concatenated",
        dim=f"n_bands x {meta['dim']}",
        params_millions=meta["params"],
        license="see the FISHER release",
        paper="Fan, Jiang et al., FISHER, arXiv:2507.16696",
    )
    for v, meta in VARIANTS.items()
)


def _make(spec: Pretrained, checkpoint: str | None = None, normalize: bool = True) -> Fisher:
    return Fisher(checkpoint=checkpoint, variant=spec.variant, normalize=normalize)


register_family(PRETRAINED, _make)

__all__ = [
    "Fisher",
    "FisherConfig",
    "FisherViT",
    "fisher_flops",
    "log_spectrogram",
    "official_cfg",
    "sincos_positions",
    "variant_config",
]


#: The released variants' architecture (FISHER.md; the checkpoints' cfg is authoritative).
RELEASED = {
    "tiny": {"embed_dim": 192, "num_heads": 3, "band_width": 100},
    "mini": {"embed_dim": 256, "num_heads": 4, "band_width": 100},
    "small": {"embed_dim": 384, "num_heads": 6, "band_width": 50},
}


def official_cfg(variant: str, **overrides: Any) -> dict[str, Any]:
    """A ``cfg["model"]`` dict shaped like the released checkpoints' (for tests and tools)."""
    arch = RELEASED[variant]
    cfg = {
        "depth": 12,
        "mlp_ratio": 4.0,
        "norm_eps": 1e-6,
        "layer_norm_first": False,
        "embed_dim": arch["embed_dim"],
        "num_heads": arch["num_heads"],
        "band_width": arch["band_width"],
        "modalities": {
            "image": {
                "patch_size": 16,
                "in_chans": 1,
                "target_length": TARGET_FRAMES,
                "max_length": 128,
                "max_freq": 50,
                "flatten": "freq",
                "prenet_depth": 0,
                "num_extra_tokens": 1,
            }
        },
    }
    cfg.update(overrides)
    return cfg


def variant_config(variant: str, **overrides: Any) -> FisherConfig:
    """The :class:`FisherConfig` of a released variant (``tiny``, ``mini``, ``small``; paper
    Table 2: hidden size 192 / 256 / 384, 3 / 4 / 6 heads, band width 100 / 100 / 50 bins, 12
    post-norm layers, 16 x 16 patches), ``overrides`` changing ``cfg["model"]`` entries
    (``depth=4``, ``embed_dim=64`` ...). Its ``cfg["model"]`` dict is
    ``official_cfg(variant, **overrides)``."""
    if variant not in RELEASED:
        raise RMISError(f"no FISHER variant {variant!r} (known: {sorted(RELEASED)})")
    return FisherConfig.from_cfg(official_cfg(variant, **overrides))


def random_checkpoint(name: str, path: str | Path, seed: int = 0, **overrides: Any) -> Path:
    """Write an official-format checkpoint ``{"cfg": {"model": ...}, "model": state_dict}`` with
    random weights (the fixed position table as the official code builds it) for variant
    ``name`` (registry name ``fisher-tiny`` or bare ``tiny``); returns the path.
    ``overrides`` change ``cfg["model"]`` entries (``depth=1`` ...)."""
    variant = name.removeprefix("fisher-")
    if variant not in RELEASED:
        raise RMISError(f"no FISHER variant {name!r} (known: {sorted(RELEASED)})")
    cfg_dict = official_cfg(variant, **overrides)
    torch.manual_seed(seed)
    vit = FisherViT(FisherConfig.from_cfg(cfg_dict))
    with torch.no_grad():
        for name, p in vit.named_parameters():
            if name.endswith("positions"):
                continue
            if name.endswith("bias") or "norm" in name:
                p.copy_(torch.randn_like(p) * 0.02 + (1.0 if name.endswith("weight") else 0.0))
            else:
                p.copy_(torch.randn_like(p) * 0.02)
    torch.save({"cfg": {"model": cfg_dict}, "model": vit.state_dict()}, path)
    return Path(path)
