"""CED (Dinkel et al., "CED: Consistent ensemble distillation for audio tagging", ICASSP 2024):
``ced-tiny``, ``ced-mini``, ``ced-small``, ``ced-base``.

Also the home of :class:`AudioTransformer`, the ViT over a batch-normalised log-mel that CED and
DaSheng / MiDaShengLM share (``rmis.models.dasheng`` builds on it).

Per 16-kHz window (as the official RMIS harness computes it, ``rmis/model_conf/ced/*.yaml`` +
``models/ced``):

1. mel spectrogram from the checkpoint's own buffers (``front_end.0.spectrogram.window``, a
   periodic hann(512); ``front_end.0.mel_scale.fb``, 64 HTK triangles 0-8 kHz, no norm):
   n_fft 512, hop 160, centred (reflect), power 2 -> ``[64, T]`` (1001 frames for 10 s);
2. dB: ``10 log10(max(x, 1e-10))`` floored at the window's own max - 120 (``top_db`` 120);
3. FREQUENCY FIRST ``[B, 1, 64, T]``; BatchNorm2d over the 64 mel bins (``init_bn.1``, running
   statistics);
4. Conv2d patches 16 x 16 (stride 16) -> a 4 x 62 grid; ``+ time_pos_embed[..., :t]`` and
   ``+ freq_pos_embed``; flattened frequency-major; 12 pre-norm blocks (LayerNorm eps 1e-6,
   qkv bias, GELU MLP x4); final LayerNorm ``norm``;
5. window embedding = mean over all tokens of the last layer -> 192 / 256 / 384 / 768.

Where this adapter and the official wrapper differ:

- The official harness computes the features time-first (``[T, 64]``: its ``torchaudio_fbank``
  always transposes) although the CED config says ``freq_first: True``; fed to the model, that
  BatchNorm over 64 channels meets ``T`` = 1001 rows and the wrapper crashes as written. Here
  the features are frequency-first, as the config (and CED itself) intend.
- The harness builds its own torchaudio ``MelSpectrogram``; here the checkpoint's buffers are
  used (the same values: the release holds torchaudio's defaults for this configuration).
- A window of more than ``target_length`` (1012) frames, about 10.1 s: the official model then
  splits it and returns the CLASSIFIER's sigmoid outputs (527 values) instead of an embedding;
  here the patch grid is cut into pieces of the positional table's length, each piece encoded
  on its own (as DaSheng does), and the mean is taken over all tokens. Never met with the
  benchmark's 10-s windows.

The release (Zenodo 8275347, ``audiotransformer_*_mAP_*.pt``) is a plain state dict: the
model's tensors plus the front-end buffers and the AudioSet head ``outputlayer.*`` (not used;
dropped on load). Loading is strict otherwise. The file holds no config: the architecture is
the variant's (the official wrapper's ``model_kwargs``), except the depth, read from the
number of blocks in the file (12 in every release).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rmis.encoders import Encoder
from rmis.errors import RMISError
from rmis.frontends import amplitude_to_db, frame_window, mel_filters, mel_spectrogram
from rmis.models.layers import Attention, Mlp
from rmis.weights import Pretrained, load_strict, read_weights, register_family

SAMPLE_RATE = 16_000


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, Sequence) and not isinstance(v, str):
        if len(v) != 2:
            raise RMISError(f"expected a pair of sizes, got {v!r}")
        return int(v[0]), int(v[1])
    return int(v), int(v)


@dataclass(frozen=True)
class AudioTransformerConfig:
    """Architecture and front-end numbers of a CED / DaSheng audio transformer."""

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    init_values: float | None = None  # LayerScale (ls1/ls2.gamma) when set
    patch_size: tuple[int, int] = (16, 16)
    patch_stride: tuple[int, int] = (16, 16)
    target_length: int = 1012  # frames covered by the time positional table
    n_mels: int = 64
    n_fft: int = 512
    win_size: int = 512
    hop_size: int = 160
    f_min: float = 0.0
    f_max: float = 8000.0
    center: bool = True
    top_db: float | None = 120.0

    @classmethod
    def from_dict(cls, cfg: dict[str, Any] | None, **defaults: Any) -> AudioTransformerConfig:
        """Read known keys of a config dict (aliases of the official spellings included);
        ``defaults`` are used for keys it lacks."""
        cfg = dict(cfg or {})
        alias = {"hop_length": "hop_size", "win_length": "win_size"}
        for a, k in alias.items():
            if a in cfg and k not in cfg:
                cfg[k] = cfg[a]
        names = {f.name for f in fields(cls)}
        values = {**defaults, **{k: v for k, v in cfg.items() if k in names}}
        for k in ("patch_size", "patch_stride"):
            if k in values:
                values[k] = _pair(values[k])
        return cls(**values)

    @property
    def grid(self) -> tuple[int, int]:
        """(frequency, time) size of the positional tables."""
        return (
            self.n_mels // self.patch_stride[0],
            self.target_length // self.patch_stride[1],
        )


class LayerScale(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm block: ``x + ls1(attn(norm1(x)))``, then ``x + ls2(mlp(norm2(x)))``."""

    def __init__(self, cfg: AudioTransformerConfig) -> None:
        super().__init__()
        d = cfg.embed_dim
        self.norm1 = nn.LayerNorm(d, eps=1e-6)
        self.attn = Attention(d, cfg.num_heads, cfg.qkv_bias)
        self.norm2 = nn.LayerNorm(d, eps=1e-6)
        self.mlp = Mlp(d, int(d * cfg.mlp_ratio))
        scaled = cfg.init_values is not None and cfg.init_values != 0
        self.ls1 = LayerScale(d) if scaled else nn.Identity()
        self.ls2 = LayerScale(d) if scaled else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class _Buffer(nn.Module):
    def __init__(self, name: str, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.register_buffer(name, torch.zeros(shape))


class _MelBuffers(nn.Module):
    """Where torchaudio's ``MelSpectrogram`` keeps its two buffers (the release's key names:
    ``front_end.0.spectrogram.window``, ``front_end.0.mel_scale.fb``)."""

    def __init__(self, cfg: AudioTransformerConfig) -> None:
        super().__init__()
        self.spectrogram = _Buffer("window", (cfg.win_size,))
        self.mel_scale = _Buffer("fb", (cfg.n_fft // 2 + 1, cfg.n_mels))


class _PatchEmbed(nn.Module):
    def __init__(self, cfg: AudioTransformerConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(1, cfg.embed_dim, cfg.patch_size, cfg.patch_stride)


class AudioTransformer(nn.Module):
    """The CED / DaSheng encoder with the official state-dict layout.

    ``log_mel(wave) -> [B, n_mels, T]`` (per-window dB floor), ``tokens(spec) -> [B, N, D]``
    (last layer after the final norm), ``forward(wave) -> [B, D]`` (mean over tokens).
    """

    def __init__(self, cfg: AudioTransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.front_end = nn.Sequential(_MelBuffers(cfg))
        # init_bn.0 / init_bn.2 are the official code's (parameter-free) rearranges
        self.init_bn = nn.Sequential(
            nn.Identity(), nn.BatchNorm2d(cfg.n_mels, momentum=0.01), nn.Identity()
        )
        self.patch_embed = _PatchEmbed(cfg)
        f, t = cfg.grid
        self.time_pos_embed = nn.Parameter(torch.zeros(1, cfg.embed_dim, 1, t))
        self.freq_pos_embed = nn.Parameter(torch.zeros(1, cfg.embed_dim, f, 1))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=1e-6)

    def default_front_end(self) -> dict[str, torch.Tensor]:
        """The front-end buffers as torchaudio builds them for this configuration (periodic
        hann window, HTK filters without norm), under their state-dict keys."""
        c = self.cfg
        return {
            "front_end.0.spectrogram.window": frame_window("hann", c.win_size, periodic=True),
            "front_end.0.mel_scale.fb": mel_filters(
                c.n_fft // 2 + 1, SAMPLE_RATE, c.n_mels, c.f_min, c.f_max, scale="htk"
            ),
        }

    def log_mel(self, wave: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` 16-kHz windows -> dB mel ``[B, n_mels, T]`` in float32 (no autocast), the
        ``top_db`` floor taken per window."""
        c = self.cfg
        with torch.autocast(wave.device.type, enabled=False):
            mel = mel_spectrogram(
                wave.float(),
                n_fft=c.n_fft,
                hop=c.hop_size,
                window=self.front_end[0].spectrogram.window,
                filters=self.front_end[0].mel_scale.fb,
                center=c.center,
                power=2.0,
            )
            return amplitude_to_db(mel, top_db=c.top_db)

    def tokens(self, spec: torch.Tensor) -> torch.Tensor:
        """Frequency-first ``[B, n_mels, T]`` -> last-layer tokens ``[B, N, D]``.

        BatchNorm over the mel bins, patches, then the patch grid is encoded in pieces of at
        most the time positional table's length (one piece for a 10-s window)."""
        x = spec.unsqueeze(1)  # b 1 f t
        x = self.init_bn[1](x.transpose(1, 2)).transpose(1, 2)  # BN over f
        x = self.patch_embed.proj(x.to(self.patch_embed.proj.weight.dtype))  # b d f' t'
        if x.shape[-1] == 0:
            raise RMISError(
                f"{self.cfg.n_mels}-bin spectrogram of {spec.shape[-1]} frames is shorter than "
                f"one patch ({self.cfg.patch_size[1]} frames)"
            )
        pieces = x.split(self.time_pos_embed.shape[-1], dim=-1)
        return torch.cat([self._encode(p) for p in pieces], dim=1)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.time_pos_embed[..., : x.shape[-1]] + self.freq_pos_embed
        x = x.flatten(2).transpose(1, 2)  # b (f t) d, frequency-major
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.tokens(self.log_mel(wave)).mean(dim=1)


class AudioTransformerEncoder(Encoder):
    """Adapter of a CED / DaSheng-layout checkpoint: 16-kHz windows -> mean of the last layer."""

    sample_rate = SAMPLE_RATE
    version = "1"

    def __init__(self, model: AudioTransformer, sha256: str | None, revision: str | None):
        super().__init__()
        self.model = model
        self.weights_sha256 = sha256
        self.revision = revision

    def embed(self, windows: torch.Tensor, sample_rate: int) -> torch.Tensor:
        if sample_rate != SAMPLE_RATE:
            raise RMISError(f"{type(self).__name__}: needs {SAMPLE_RATE} Hz, got {sample_rate}")
        return self.model(windows)


# ---------------------------------------------------------------------------------------------
# CED variants

_CED_URL = "https://zenodo.org/record/{rec}/files/audiotransformer_{v}_mAP_{m}.pt?download=1"
# variant: (embed_dim, heads, Zenodo record, file tag, parameters of the released file in M,
# AudioSet head included: the paper's Table 3 gives 5.5 / 9.6 / 22 / 86)
_CED = {
    "tiny": (192, 3, 8275347, 4814, 5.50),
    "mini": (256, 4, 8275347, 4896, 9.70),
    "small": (384, 6, 8275319, 4958, 21.62),
    "base": (768, 12, 8275347, 4999, 85.71),
}


def ced_arch(variant: str) -> dict[str, Any]:
    """Architecture of a released CED variant (the official wrapper's ``model_kwargs``)."""
    d, h = _CED[variant][:2]
    return {
        "embed_dim": d,
        "depth": 12,
        "num_heads": h,
        "mlp_ratio": 4.0,
        "patch_size": 16,
        "patch_stride": 16,
        "target_length": 1012,
    }


CED_TABLE = tuple(
    Pretrained(
        name=f"ced-{v}",
        family="CED",
        variant=v,
        sources=(_CED_URL.format(rec=rec, v=v, m=m), f"mispeech/ced-{v} (Zenodo {rec})"),
        file_format="torch",
        state_path=(),
        config_path=(),
        drop=(r"^outputlayer\.",),
        sample_rate=SAMPLE_RATE,
        frontend="mel 512/160 centred, 64 HTK bins 0-8 kHz, power dB top_db 120 per window, "
        "frequency-first, BatchNorm over mel bins",
        pooling="mean of the last layer's tokens",
        dim=d,
        params_millions=params,
        license="Apache-2.0",
        paper="Dinkel et al., CED: Consistent ensemble distillation for audio tagging, "
        "ICASSP 2024 (arXiv:2308.11957)",
        arch=ced_arch(v),
    )
    for v, (d, _h, rec, m, params) in _CED.items()
)


def build_ced(spec: Pretrained, checkpoint: str | None = None) -> AudioTransformerEncoder:
    """Read a CED release file (plain state dict) and build its adapter (strict)."""
    source = checkpoint or spec.sources[0]
    weights = read_weights(source, spec)
    # the file holds no config: the variant's numbers, with the depth read from the weights
    # (12 blocks in every release; a depth-cut checkpoint, e.g. the tests', loads too)
    depth = len({k.split(".")[1] for k in weights.state_dict if k.startswith("blocks.")})
    cfg = AudioTransformerConfig.from_dict({**spec.arch, "depth": depth or spec.arch["depth"]})
    model = AudioTransformer(cfg)
    load_strict(model, weights.state_dict, f"{spec.name} checkpoint {source}")
    return AudioTransformerEncoder(model, weights.sha256, weights.revision)


register_family(CED_TABLE, build_ced)


def random_ced_state(variant: str, seed: int = 0, **overrides: Any) -> dict[str, torch.Tensor]:
    """A state dict laid out like the CED release (front-end buffers, ``init_bn.*``,
    ``outputlayer.*``) with random weights; ``overrides`` change the architecture (tests)."""
    cfg = AudioTransformerConfig.from_dict({**ced_arch(variant), **overrides})
    model = AudioTransformer(cfg)
    state = randomize(model, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    d = cfg.embed_dim
    state["outputlayer.0.weight"] = 1 + 0.1 * torch.randn(d, generator=gen)
    state["outputlayer.0.bias"] = 0.1 * torch.randn(d, generator=gen)
    state["outputlayer.1.weight"] = 0.02 * torch.randn(527, d, generator=gen)
    state["outputlayer.1.bias"] = torch.zeros(527)
    return state


def random_checkpoint(name: str, path: str | Path, seed: int = 0, **arch: Any) -> Path:
    """Write a random-weight release file of ``name`` (``ced-tiny`` ...): the plain state dict
    of :func:`random_ced_state`, as ``torch.save`` writes the Zenodo files; returns the path.
    ``arch`` overrides the variant's architecture; the release holds no config, so only
    ``depth`` changes what loads (the width and heads are the variant's)."""
    variant = name.removeprefix("ced-")
    if variant not in _CED:
        raise RMISError(f"no CED variant {name!r} (known: {[f'ced-{v}' for v in _CED]})")
    torch.save(random_ced_state(variant, seed, **arch), path)
    return Path(path)


def randomize(model: AudioTransformer, seed: int) -> dict[str, torch.Tensor]:
    """The model's state dict filled with random values of a sensible scale and the true
    front-end buffers (for tests and tools)."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for k, v in model.state_dict().items():
        if k.endswith("num_batches_tracked"):
            state[k] = torch.tensor(1000, dtype=torch.long)
        elif k.endswith("running_var"):
            state[k] = 50 + 20 * torch.rand(v.shape, generator=gen)
        elif k.endswith("running_mean"):
            state[k] = -40 + 10 * torch.randn(v.shape, generator=gen)
        elif v.dim() == 1 and ("norm" in k or "init_bn" in k) and k.endswith("weight"):
            state[k] = 1 + 0.1 * torch.randn(v.shape, generator=gen)
        elif k.endswith("gamma"):
            state[k] = 0.5 + 0.1 * torch.randn(v.shape, generator=gen)
        elif k.endswith("bias"):
            state[k] = 0.02 * torch.randn(v.shape, generator=gen)
        else:
            fan_in = v[0].numel() if v.dim() > 1 else 1
            scale = 0.02 if "pos_embed" in k else fan_in**-0.5
            state[k] = scale * torch.randn(v.shape, generator=gen)
    state.update(model.default_front_end())
    return state
