"""BEATs (iter3) and OpenBEATs (base, large; iter3): one architecture, two releases.

Registered names: ``beats-iter3`` (paper row BEATs / iter3), ``openbeats-base`` and
``openbeats-large`` (OpenBEATs / base, large).

Release files (``--checkpoint``):

* ``BEATs_iter3.pt`` (microsoft/unilm, OneDrive link of the BEATs README): a torch file
  ``{'cfg': dict, 'model': state_dict}``; the keys are the ones of the official ``BEATs`` module
  and load unchanged. A fine-tuned BEATs file (``finetuned_model=True``) also loads: its
  ``predictor.*`` head is dropped (the embedding never uses it).
* ``shikhar7ssu/OpenBEATs-{Base,Large}-i3`` (hub): the file ESPnet's
  ``espnet2/beats/generate_beats_checkpoint.py`` writes, ``{'cfg': beats_config dict, 'model':
  state_dict}`` with the ``encoder.`` prefix of the ESPnet model already stripped, so the keys are
  the BEATs ones plus two frozen helper kernels of ESPnet's ``BeatsEncoder``
  (``patch_embedding_pad.weight``, ``raw2fbank_pad.weight``: they only shrink padding masks and
  are dropped). Declared key map: a weight-normed positional convolution saved with
  ``torch.nn.utils.parametrizations.weight_norm`` (``pos_conv.0.parametrizations.weight.
  original0/1``) is read as the classic ``weight_g``/``weight_v``. The exact file name inside the
  hub repository could not be confirmed offline; pass the ``.pt`` file itself if the repository
  holds more than one weights file.

What one window computes (the official RMIS wrapper ``models/beats/beats_ft.py`` +
``rmis/model_conf/beats/iter3.yaml``, window by window):

1. the window (16 kHz; the harness removed its mean and zero-padded it to 160 000 samples)
   times 2**15, Kaldi fbank: 128 mel bins, 25 ms / 10 ms, povey window, dither 0, pre-emphasis
   0.97, DC removal, snip edges (:func:`rmis.frontends.kaldi_fbank`; 998 frames for 10 s; at
   16 kHz with 128 bins one mel filter holds no FFT bin and stays at the log floor, as in
   torchaudio);
2. ``(fbank - 15.41663) / (2 * 6.55582)``;
3. 16 x 16 patch convolution (stride 16; 62 x 8 = 496 tokens for 10 s, the last 6 frames are
   not covered), tokens in time-major order, LayerNorm, ``post_extract_proj`` 512 -> D;
4. convolutional positional embedding (weight-normed grouped Conv1d over the token sequence,
   kernel 128, one trailing sample removed, GELU) added to the tokens;
5. the transformer: BEATs iter3 is post-norm with deep-norm residual scaling
   ``x = LN(alpha * x + f(x))``, ``alpha = (2 * layers) ** 0.25`` (LayerNorm before the first
   layer); OpenBEATs is pre-norm (``layer_norm_first``, final LayerNorm after the last layer).
   Attention adds a gated relative-position bias: ONE bucket table (``relative_attention_bias``,
   320 buckets, max distance 800) shared by all layers -- stored under every layer's name in
   the release file, as the official module does -- gated per query and head by
   ``a * (b * grep_a - 1) + 2``, where ``a`` and ``b`` are the sigmoids of the sums of the two
   halves (4 + 4 outputs) of ``grep_linear`` applied to the head's unscaled query;
6. window embedding = mean over all tokens of the last layer's output (768; 1024 for large).

Where this differs from the official code (none changes the numbers beyond float rounding):
attention is computed with ``scaled_dot_product_attention`` with the gated bias as an additive
mask, instead of the official max-subtracted ``* 32`` rescaling (softmax is shift-invariant);
the bias is computed once per forward and reused by every layer (the official code passes it
from layer to layer; ESPnet's flash path recomputes it from the same shared table); no padding
mask is used, like the RMIS wrapper (padded windows are encoded whole). Paper vs wrapper: the
pooling stated for BEATs (mean of the last layer, BASELINES.md) is what the wrapper computes; no
difference was found for this family. OpenBEATs is not shipped by the RMIS harness; it is run
exactly like BEATs (same front-end, normalisation and pooling), which is also what the OpenBEATs
authors' ESPnet front-end (``beats_frontend``: wave x 2**15, the same fbank and statistics)
computes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rmis.encoders import Encoder
from rmis.errors import RMISError
from rmis.frontends import kaldi_fbank
from rmis.weights import Pretrained, load_strict, read_weights, register_family

FBANK_MEAN = 15.41663
FBANK_STD = 6.55582
SAMPLE_RATE = 16_000
#: Samples needed for one 16-frame patch row (25 ms frames every 10 ms at 16 kHz).
MIN_SAMPLES = 400 + 15 * 160


@dataclass(frozen=True)
class BEATsConfig:
    """Architecture numbers; field names and defaults are those of the official ``BEATsConfig``
    (so the ``cfg`` dict of a release file maps onto it; training-only keys are ignored)."""

    input_patch_size: int = 16
    embed_dim: int = 512
    conv_bias: bool = False
    encoder_layers: int = 12
    encoder_embed_dim: int = 768
    encoder_ffn_embed_dim: int = 3072
    encoder_attention_heads: int = 12
    activation_fn: str = "gelu"
    layer_norm_first: bool = False
    deep_norm: bool = False
    conv_pos: int = 128
    conv_pos_groups: int = 16
    relative_position_embedding: bool = False
    num_buckets: int = 320
    max_distance: int = 1280
    gru_rel_pos: bool = False
    finetuned_model: bool = False
    predictor_class: int = 527

    @classmethod
    def from_cfg(cls, cfg: Mapping[str, Any]) -> BEATsConfig:
        names = {f.name for f in fields(cls)}
        out = cls(**{k: v for k, v in cfg.items() if k in names})
        if out.activation_fn not in _ACTIVATIONS:
            raise RMISError(
                f"BEATs cfg activation_fn={out.activation_fn!r} is not supported "
                f"(supported: {', '.join(_ACTIVATIONS)}; the released checkpoints use gelu)"
            )
        if out.deep_norm and out.layer_norm_first:
            raise RMISError("BEATs cfg sets both deep_norm and layer_norm_first (invalid)")
        if out.encoder_embed_dim % out.encoder_attention_heads:
            raise RMISError("BEATs cfg: encoder_embed_dim not divisible by the number of heads")
        return out


def _gelu(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x.float()).type_as(x)  # the official gelu: exact erf form, in float32


def _gelu_accurate(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


_ACTIVATIONS = {
    "gelu": _gelu,
    "gelu_accurate": _gelu_accurate,
    "relu": F.relu,
    "tanh": torch.tanh,
    "linear": lambda x: x,
}


def relative_position_buckets(
    length: int, num_buckets: int, max_distance: int, device=None
) -> torch.Tensor:
    """``[length, length]`` bucket index of key ``j`` for query ``i`` (T5-style, bidirectional):
    half the buckets per sign; exact below ``num_buckets // 4``, then logarithmic up to
    ``max_distance``; computed in float32 like the official code."""
    pos = torch.arange(length, device=device)
    rel = pos[None, :] - pos[:, None]  # j - i
    half = num_buckets // 2
    out = (rel > 0).long() * half
    rel = rel.abs()
    exact = half // 2
    large = (
        exact
        + (torch.log(rel.float() / exact) / math.log(max_distance / exact) * (half - exact)).long()
    )
    large = torch.clamp(large, max=half - 1)
    return out + torch.where(rel < exact, rel, large)


class MultiheadAttention(nn.Module):
    """Self-attention with the gated relative-position bias (official parameter names)."""

    def __init__(self, cfg: BEATsConfig) -> None:
        super().__init__()
        d, h = cfg.encoder_embed_dim, cfg.encoder_attention_heads
        self.num_heads, self.head_dim = h, d // h
        self.num_buckets, self.max_distance = cfg.num_buckets, cfg.max_distance
        if cfg.relative_position_embedding:
            # values always come from the file (no init: normal_ is slow on the meta device)
            table = torch.zeros(cfg.num_buckets, h)
            self.relative_attention_bias = nn.Embedding(cfg.num_buckets, h, _weight=table)
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.q_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)
        self.gru_rel_pos = bool(cfg.gru_rel_pos)
        if self.gru_rel_pos:
            self.grep_linear = nn.Linear(self.head_dim, 8)
            self.grep_a = nn.Parameter(torch.ones(1, h, 1, 1))

    def compute_bias(self, length: int) -> torch.Tensor:
        """``[H, N, N]`` relative-position bias of a sequence of ``length`` tokens."""
        table = self.relative_attention_bias.weight
        buckets = relative_position_buckets(
            length, self.num_buckets, self.max_distance, device=table.device
        )
        return F.embedding(buckets, table).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, position_bias: torch.Tensor | None) -> torch.Tensor:
        b, n, d = x.shape
        h, hd = self.num_heads, self.head_dim
        q = self.q_proj(x).view(b, n, h, hd).transpose(1, 2)  # [B, H, N, hd]
        k = self.k_proj(x).view(b, n, h, hd).transpose(1, 2)
        v = self.v_proj(x).view(b, n, h, hd).transpose(1, 2)
        mask = None
        if position_bias is not None:
            mask = position_bias.unsqueeze(0).to(q.dtype)  # [1, H, N, N]
            if self.gru_rel_pos:
                gates = torch.sigmoid(self.grep_linear(q).view(b, h, n, 2, 4).sum(-1))
                gate_a, gate_b = gates[..., :1], gates[..., 1:]
                mask = (gate_a * (gate_b * self.grep_a - 1.0) + 2.0) * mask  # [B, H, N, N]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # scale hd ** -0.5
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d))


class TransformerSentenceEncoderLayer(nn.Module):
    def __init__(self, cfg: BEATsConfig) -> None:
        super().__init__()
        d = cfg.encoder_embed_dim
        self.self_attn = MultiheadAttention(cfg)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, cfg.encoder_ffn_embed_dim)
        self.fc2 = nn.Linear(cfg.encoder_ffn_embed_dim, d)
        self.final_layer_norm = nn.LayerNorm(d)
        self.layer_norm_first = cfg.layer_norm_first
        self.activation = _ACTIVATIONS[cfg.activation_fn]
        self.alpha = (2 * cfg.encoder_layers) ** 0.25 if cfg.deep_norm else 1.0

    def forward(self, x: torch.Tensor, position_bias: torch.Tensor | None) -> torch.Tensor:
        if self.layer_norm_first:
            x = x + self.self_attn(self.self_attn_layer_norm(x), position_bias)
            return x + self.fc2(self.activation(self.fc1(self.final_layer_norm(x))))
        x = self.self_attn_layer_norm(x * self.alpha + self.self_attn(x, position_bias))
        return self.final_layer_norm(x * self.alpha + self.fc2(self.activation(self.fc1(x))))


class WeightNormConv1d(nn.Module):
    """Grouped Conv1d whose weight is ``weight_g * weight_v / ||weight_v||`` with the norm over
    all dimensions but the kernel axis (``torch.nn.utils.weight_norm(conv, dim=2)``; same
    parameter names)."""

    def __init__(self, dim: int, kernel: int, groups: int) -> None:
        super().__init__()
        self.padding, self.groups = kernel // 2, groups
        self.weight_g = nn.Parameter(torch.ones(1, 1, kernel))
        self.weight_v = nn.Parameter(torch.full((dim, dim // groups, kernel), 0.02))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.weight_v
        weight = v * (self.weight_g / v.norm(dim=(0, 1), keepdim=True))
        return F.conv1d(x, weight, self.bias, padding=self.padding, groups=self.groups)


class TransformerEncoder(nn.Module):
    def __init__(self, cfg: BEATsConfig) -> None:
        super().__init__()
        d = cfg.encoder_embed_dim
        if d % cfg.conv_pos_groups:
            raise RMISError("BEATs cfg: encoder_embed_dim not divisible by conv_pos_groups")
        self.pos_conv = nn.Sequential(WeightNormConv1d(d, cfg.conv_pos, cfg.conv_pos_groups))
        self.trim = 1 if cfg.conv_pos % 2 == 0 else 0  # the official SamePad
        self.layers = nn.ModuleList(
            TransformerSentenceEncoderLayer(cfg) for _ in range(cfg.encoder_layers)
        )
        self.relative = bool(cfg.relative_position_embedding)
        if self.relative:  # one table, shared by every layer (and saved under every name)
            for layer in self.layers[1:]:
                layer.self_attn.relative_attention_bias = self.layers[
                    0
                ].self_attn.relative_attention_bias
        self.layer_norm_first = cfg.layer_norm_first
        self.layer_norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.pos_conv[0](x.transpose(1, 2))
        if self.trim:
            conv = conv[:, :, : -self.trim]
        x = x + F.gelu(conv).transpose(1, 2)
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        bias = self.layers[0].self_attn.compute_bias(x.shape[1]) if self.relative else None
        for layer in self.layers:
            x = layer(x, bias)
        return self.layer_norm(x) if self.layer_norm_first else x


class BEATs(nn.Module):
    """The BEATs encoder with the official parameter names (no fine-tuning head)."""

    def __init__(self, cfg: BEATsConfig) -> None:
        super().__init__()
        self.cfg = cfg
        p = cfg.input_patch_size
        self.patch_embedding = nn.Conv2d(
            1, cfg.embed_dim, kernel_size=p, stride=p, bias=cfg.conv_bias
        )
        self.layer_norm = nn.LayerNorm(cfg.embed_dim)
        self.post_extract_proj = (
            nn.Linear(cfg.embed_dim, cfg.encoder_embed_dim)
            if cfg.embed_dim != cfg.encoder_embed_dim
            else None
        )
        self.encoder = TransformerEncoder(cfg)

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        """Normalised fbank ``[B, T, F]`` -> last-layer tokens ``[B, N, D]``."""
        x = self.patch_embedding(fbank.unsqueeze(1).to(self.patch_embedding.weight.dtype))
        x = self.layer_norm(x.flatten(2).transpose(1, 2))  # [B, T/16 * F/16, C], time-major
        if self.post_extract_proj is not None:
            x = self.post_extract_proj(x)
        return self.encoder(x)


def beats_fbank(windows: torch.Tensor) -> torch.Tensor:
    """16 kHz windows ``[B, L]`` -> normalised fbank ``[B, T, 128]`` (steps 1-2 above)."""
    fbank = kaldi_fbank(
        windows.float(),
        SAMPLE_RATE,
        num_mel_bins=128,
        frame_length_ms=25.0,
        frame_shift_ms=10.0,
        window_type="povey",
        dither=0.0,
        htk_compat=False,  # the RMIS config's value; without energy it changes nothing
        scale_int16=True,
    )
    return (fbank - FBANK_MEAN) / (2 * FBANK_STD)


def _share_check(state: dict[str, torch.Tensor], cfg: BEATsConfig, where: str) -> None:
    """The shared relative-position table must be the same under every layer's name."""
    if not cfg.relative_position_embedding:
        return
    name = "encoder.layers.{}.self_attn.relative_attention_bias.weight"
    first = state.get(name.format(0))
    for i in range(1, cfg.encoder_layers):
        other = state.get(name.format(i))
        if first is not None and other is not None and not torch.equal(first, other):
            raise RMISError(
                f"{where}: the relative-position table of layer {i} differs from layer 0's; "
                "BEATs shares one table across all layers (not an official release file?)"
            )


class BEATsEncoder(Encoder):
    """BEATs / OpenBEATs adapter: 16 kHz windows -> mean of the last layer's tokens."""

    sample_rate = SAMPLE_RATE

    def __init__(self, spec: Pretrained, checkpoint: str | None = None) -> None:
        super().__init__()
        source = checkpoint or spec.sources[0]
        if checkpoint is None and "/" not in source and not Path(source).exists():
            raise RMISError(
                f"{spec.name} needs its weights file {source!r}, which rmis cannot download: "
                f"get it from {' or '.join(spec.sources[1:]) or 'its authors'} and pass "
                "--checkpoint PATH"
            )
        weights = read_weights(source, spec)
        if not isinstance(weights.config, Mapping):
            raise RMISError(
                f"{weights.path}: no 'cfg' dict in the file; {spec.family} release files are "
                "torch files {'cfg': dict, 'model': state_dict}"
            )
        self.cfg = BEATsConfig.from_cfg(weights.config)
        self.model = BEATs(self.cfg)
        _share_check(weights.state_dict, self.cfg, str(weights.path))
        load_strict(self.model, weights.state_dict, str(weights.path))
        self.name = spec.name
        self.dim = self.cfg.encoder_embed_dim
        self.weights_sha256 = weights.sha256
        self.revision = weights.revision

    def embed(self, windows: torch.Tensor, sample_rate: int) -> torch.Tensor:
        if sample_rate != SAMPLE_RATE:
            raise RMISError(f"{self.name} takes 16 kHz windows, got {sample_rate} Hz")
        if windows.shape[-1] < MIN_SAMPLES:
            raise RMISError(
                f"{self.name}: a window of {windows.shape[-1]} samples is shorter than one "
                f"16-frame patch ({MIN_SAMPLES} samples at 16 kHz)"
            )
        return self.model(beats_fbank(windows)).mean(dim=1)


#: Released architectures (the files' ``cfg`` is authoritative; used when building shapes
#: without a file, e.g. parameter counts on the meta device).
BEATS_ITER3_ARCH = {
    "input_patch_size": 16,
    "embed_dim": 512,
    "conv_bias": False,
    "encoder_layers": 12,
    "encoder_embed_dim": 768,
    "encoder_ffn_embed_dim": 3072,
    "encoder_attention_heads": 12,
    "activation_fn": "gelu",
    "layer_norm_first": False,
    "deep_norm": True,
    "conv_pos": 128,
    "conv_pos_groups": 16,
    "relative_position_embedding": True,
    "num_buckets": 320,
    "max_distance": 800,
    "gru_rel_pos": True,
    "finetuned_model": False,
}
OPENBEATS_BASE_ARCH = {**BEATS_ITER3_ARCH, "layer_norm_first": True, "deep_norm": False}
OPENBEATS_LARGE_ARCH = {
    **OPENBEATS_BASE_ARCH,
    "encoder_layers": 24,
    "encoder_embed_dim": 1024,
    "encoder_ffn_embed_dim": 4096,
    "encoder_attention_heads": 16,
}

_FRONTEND = (
    "16 kHz wave x 2^15, Kaldi fbank 128 mel, 25/10 ms, povey; (x - 15.41663) / (2 * 6.55582)"
)
_DROP_BEATS = (r"^predictor\.",)
#: ESPnet BeatsEncoder helpers (padding-mask kernels) and an optional layer-weighting vector.
_DROP_OPENBEATS = (
    r"^predictor\.",
    r"^patch_embedding_pad\.",
    r"^raw2fbank_pad\.",
    r"^layer_weights$",
)
_KEY_MAP_WEIGHT_NORM = (
    (r"^encoder\.pos_conv\.0\.parametrizations\.weight\.original0$", "encoder.pos_conv.0.weight_g"),
    (r"^encoder\.pos_conv\.0\.parametrizations\.weight\.original1$", "encoder.pos_conv.0.weight_v"),
)

_BEATS_ITER3 = Pretrained(
    name="beats-iter3",
    family="BEATs",
    variant="iter3",
    sources=(
        "BEATs_iter3.pt",
        "https://1drv.ms/u/s!AqeByhGUtINrgcpxJUNDxg4eU0r-vA?e=qezPJ5",
    ),
    file_format="torch",
    state_path=("model",),
    config_path=("cfg",),
    key_map=_KEY_MAP_WEIGHT_NORM,
    drop=_DROP_BEATS,
    sample_rate=SAMPLE_RATE,
    frontend=_FRONTEND,
    pooling="mean of the last layer's tokens",
    dim=768,
    params_millions=90.31,
    license="MIT (microsoft/unilm)",
    paper="Chen et al., BEATs: Audio Pre-Training with Acoustic Tokenizers, ICML 2023",
    arch=BEATS_ITER3_ARCH,
)
# OpenBEATs: the same file layout and front-end; ESPnet's extra padding kernels dropped
_OPENBEATS = {
    "family": "OpenBEATs",
    "drop": _DROP_OPENBEATS,
    "license": "see the OpenBEATs release (shikhar7ssu on the Hugging Face hub)",
    "paper": "Bharadwaj et al., OpenBEATs, WASPAA 2025, arXiv:2507.14129",
}

TABLE: tuple[Pretrained, ...] = (
    _BEATS_ITER3,
    replace(
        _BEATS_ITER3,
        name="openbeats-base",
        variant="base",
        sources=("hf://shikhar7ssu/OpenBEATs-Base-i3",),
        dim=768,
        params_millions=90.31,
        arch=OPENBEATS_BASE_ARCH,
        **_OPENBEATS,
    ),
    replace(
        _BEATS_ITER3,
        name="openbeats-large",
        variant="large",
        sources=("hf://shikhar7ssu/OpenBEATs-Large-i3",),
        dim=1024,
        params_millions=311.38,
        arch=OPENBEATS_LARGE_ARCH,
        **_OPENBEATS,
    ),
)


#: Keys ESPnet's BeatsConfig adds to the ``cfg`` of an OpenBEATs file (pre-training only).
_ESPNET_CFG_EXTRAS = {
    "decoder_embed_dim": 768,
    "decoder_pos_trainable": False,
    "decoder_attention_heads": 12,
    "decoder_mlp_ratio": 4.0,
    "decoder_layers": 2,
    "codebook_vocab_size": 1024,
    "mask_ratio": 0.75,
    "use_flash_attn": True,
}
_TRAINING_CFG = {
    "dropout": 0.0,
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
    "encoder_layerdrop": 0.05,
    "dropout_input": 0.0,
    "layer_wise_gradient_decay_ratio": 0.6,
    "predictor_dropout": 0.0,
    "predictor_class": 527,
}


def release_checkpoint(name: str, seed: int = 0, **arch: Any) -> dict[str, Any]:
    """A random-weight checkpoint of variant ``name`` in its authors' file layout (for tests and
    benchmarks): ``{'cfg': dict, 'model': state_dict}``; for OpenBEATs with ESPnet's extra cfg
    keys and its two padding-mask kernels. ``arch`` overrides the released architecture."""
    spec = next((s for s in TABLE if s.name == name), None)
    if spec is None:
        raise RMISError(f"no BEATs/OpenBEATs variant {name!r}")
    cfg = {**spec.arch, **_TRAINING_CFG, **arch}
    gen = torch.Generator().manual_seed(seed)
    model = BEATs(BEATsConfig.from_cfg(cfg))
    with torch.no_grad():
        for pname, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=gen)
            if pname.endswith(("norm.weight", "weight_g", "grep_a")):
                param.copy_(1.0 + 0.2 * noise)  # scales around 1
            elif pname.endswith("relative_attention_bias.weight"):
                param.copy_(noise)  # a bias that matters
            elif param.ndim > 1:
                param.copy_(noise / math.sqrt(param[0].numel()))  # unit gain per fan-in
            else:
                param.copy_(0.1 * noise)
    state = dict(model.state_dict())
    if spec.family == "OpenBEATs":
        cfg = {**cfg, **_ESPNET_CFG_EXTRAS}
        p = cfg["input_patch_size"]
        state["patch_embedding_pad.weight"] = torch.ones(1, 1, p, p)
        state["raw2fbank_pad.weight"] = torch.ones(1, 1, 400)
    return {"cfg": cfg, "model": state}


def random_checkpoint(name: str, path: str | Path, seed: int = 0, **arch: Any) -> Path:
    """Write a random-weight release file of variant ``name`` (:func:`release_checkpoint`, the
    ``BEATs_iter3.pt`` / OpenBEATs layout) to ``path`` with ``torch.save``; returns the path to
    pass as ``--checkpoint``. ``arch`` overrides ``cfg`` entries (``encoder_layers=1`` ...)."""
    torch.save(release_checkpoint(name, seed, **arch), path)
    return Path(path)


def _factory(spec: Pretrained, checkpoint: str | None = None) -> BEATsEncoder:
    return BEATsEncoder(spec, checkpoint=checkpoint)


register_family(TABLE, _factory)

__all__ = [
    "BEATs",
    "BEATsConfig",
    "BEATsEncoder",
    "FBANK_MEAN",
    "FBANK_STD",
    "TABLE",
    "beats_fbank",
    "random_checkpoint",
    "relative_position_buckets",
    "release_checkpoint",
]
