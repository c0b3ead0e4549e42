"""AudioMAE (Huang et al., "Masked Autoencoders that Listen", NeurIPS 2022): ``audiomae-base``.

What one 10-s window (16 kHz) becomes, as the official RMIS wrapper computes it
(``models/audiomae/audiomae.py`` + ``rmis/model_conf/audiomae/base.yaml`` of jianganbai/RMIS):

1. Kaldi fbank (:func:`rmis.frontends.kaldi_fbank`): 128 mel bins, 25 ms / 10 ms frames, the
   symmetric ``hanning`` window, ``htk_compat``, dither 0, no energy, the wave NOT scaled by
   2**15 -> ``[998, 128]``;
2. zero-padded (or cropped) to 1024 frames, THEN normalised ``(x + 4.2677393) / (2 * 4.5689974)``,
   so the padded rows hold ``4.2677393 / 9.1379948``, not 0 (:func:`fbank_1024`, shared by EAT);
3. ViT-B/16: 16 x 16 patches at stride 16 (64 time x 8 frequency patches, time-major), the
   checkpoint's ``pos_embed`` added (row 0 to the CLS token), CLS prepended, 12 pre-norm blocks;
4. the window embedding is the mean of the 512 patch tokens of the last block (CLS excluded),
   then a LayerNorm with unit weight and zero bias (eps 1e-6): 768 values.

Where the paper / release and the official wrapper differ (we follow the wrapper):

* The wrapper builds timm's fine-tuning ViT with ``global_pool=True``: its ``fc_norm`` is not in
  the pre-training file ``pretrained.pth`` and, the load being non-strict, stays at its
  initialisation (weight 1, bias 0), while the checkpoint's final ``norm`` is never used. So here
  the final LayerNorm has no parameters and ``norm.*`` is a declared ``drop``, like the decoder
  tensors (``decoder_*``) and ``mask_token`` (the wrapper deletes/ignores them too). Loading is
  otherwise strict.
* ``pos_embed`` is read from the checkpoint, as the wrapper does. The pre-training code built it
  with ``get_2d_sincos_pos_embed_flexible(D, patch_hw)`` where ``patch_hw`` is (8, 64)
  (frequency, time) while the patches are ordered time-major (64 x 8): token ``i`` carries the
  sin-cos code of ``i % 64`` in its first half and of ``i // 64`` in its second, not of its
  (time, frequency) cell. The released table is used unchanged (:func:`official_pos_embed` writes
  it this way for tests).
* The paper fine-tunes with a CLS-free mean; the RMIS paper's appendix states the same pooling
  (mean of patch tokens); there is no difference in pooling, only in the unused ``norm``.

The architecture numbers come from the checkpoint's tensor shapes (width, depth, MLP width,
patch size); the head count is the released one (12) for width 768 and ``width // 64``
(the head width of every released ViT) otherwise.
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
from rmis.frontends import kaldi_fbank
from rmis.models.fisher import Block, FisherConfig, sincos_positions
from rmis.weights import Pretrained, load_strict, read_weights, register_family

SAMPLE_RATE = 16_000
FBANK_MEAN = -4.2677393
FBANK_STD = 4.5689974
TARGET_FRAMES = 1024
MEL_BINS = 128
HEAD_DIM = 64


def fbank_1024(windows: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """``[B, L]`` 16-kHz windows -> ``[B, 1, 1024, 128]`` normalised Kaldi fbank (AudioMAE, EAT).

    Padding/cropping to 1024 frames happens BEFORE the normalisation, as in both official
    wrappers.
    """
    if sample_rate != SAMPLE_RATE:
        raise RMISError(
            f"AudioMAE/EAT take {SAMPLE_RATE} Hz input, got {sample_rate} Hz (the harness "
            "resamples to the encoder's rate)"
        )
    feats = kaldi_fbank(
        windows.float(),
        sample_rate,
        num_mel_bins=MEL_BINS,
        frame_length_ms=25.0,
        frame_shift_ms=10.0,
        window_type="hanning",
        dither=0.0,
        htk_compat=True,
        use_energy=False,
    )
    t = feats.shape[1]
    if t < TARGET_FRAMES:
        feats = F.pad(feats, (0, 0, 0, TARGET_FRAMES - t))
    else:
        feats = feats[:, :TARGET_FRAMES]
    return ((feats - FBANK_MEAN) / (2 * FBANK_STD)).unsqueeze(1)


@dataclass(frozen=True)
class ViTConfig:
    """Architecture numbers of a spectrogram ViT (AudioMAE and EAT)."""

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    patch_size: int = 16
    stride: int = 16
    in_chans: int = 1
    target_length: int = TARGET_FRAMES
    mel_bins: int = MEL_BINS
    norm_eps: float = 1e-6
    norm_affine: bool = True
    layer_norm_first: bool = True

    @property
    def grid(self) -> tuple[int, int]:
        """Patches along (time, frequency)."""
        p, s = self.patch_size, self.stride
        return (self.target_length - p) // s + 1, (self.mel_bins - p) // s + 1

    @property
    def num_patches(self) -> int:
        rows, cols = self.grid
        return rows * cols

    def blocks(self) -> nn.ModuleList:
        """``depth`` transformer blocks with the timm / data2vec parameter names (FISHER's
        :class:`~rmis.models.fisher.Block`: fused ``qkv`` with bias, exact GELU MLP)."""
        if self.embed_dim % self.num_heads:
            raise RMISError(f"width {self.embed_dim} is not divisible by {self.num_heads} heads")
        cfg = FisherConfig(
            embed_dim=self.embed_dim,
            depth=self.depth,
            num_heads=self.num_heads,
            mlp_ratio=self.mlp_ratio,
            norm_eps=self.norm_eps,
            norm_affine=self.norm_affine,
            layer_norm_first=self.layer_norm_first,
        )
        return nn.ModuleList(Block(cfg) for _ in range(self.depth))


class PatchEmbed(nn.Module):
    """Conv2d patch embedding, tokens flattened time-major (``[N, rows * cols, D]``)."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(
            cfg.in_chans, cfg.embed_dim, kernel_size=cfg.patch_size, stride=cfg.stride
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class AudioMAEViT(nn.Module):
    """The AudioMAE encoder with the official (timm) parameter names."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.embed_dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        rows, cols = cfg.grid
        self.pos_embed = nn.Parameter(official_pos_embed(d, rows, cols), requires_grad=False)
        self.patch_embed = PatchEmbed(cfg)
        self.blocks = cfg.blocks()

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 1, 1024, 128]`` -> last block's tokens ``[B, 1 + patches, D]`` (CLS first)."""
        pos = self.pos_embed.to(x.dtype)
        x = self.patch_embed(x) + pos[:, 1:]
        cls = (self.cls_token.to(x.dtype) + pos[:, :1]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        for blk in self.blocks:
            x = blk(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 1, 1024, 128]`` -> ``[B, D]``: mean of patch tokens, parameter-free LayerNorm."""
        pooled = self.tokens(x)[:, 1:].mean(dim=1)
        return F.layer_norm(pooled, (pooled.shape[-1],), eps=self.cfg.norm_eps)


def official_pos_embed(dim: int, rows: int, cols: int) -> torch.Tensor:
    """``pos_embed`` ``[1, 1 + rows * cols, dim]`` as AudioMAE's pre-training builds it: a zero row
    for the CLS token, then the sin-cos table of the grid (cols, rows) (see the module doc)."""
    table = sincos_positions(dim, cols, rows)
    return torch.cat([torch.zeros(1, dim), table], dim=0)[None]


def config_from_state(state: dict[str, torch.Tensor], arch: dict[str, Any]) -> ViTConfig:
    """Width, depth, MLP width and patch size from the tensors; the rest from ``arch``."""
    try:
        proj = state["patch_embed.proj.weight"]
        d = int(state["cls_token"].shape[-1])
        hidden = int(state["blocks.0.mlp.fc1.weight"].shape[0])
    except KeyError as exc:
        raise RMISError(
            f"not an AudioMAE checkpoint: no {exc.args[0]!r} in its 'model' state dict "
            "(expected the pre-training file pretrained.pth)"
        ) from None
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    heads = int(arch["num_heads"]) if d == arch["embed_dim"] else max(1, d // HEAD_DIM)
    return ViTConfig(
        embed_dim=d,
        depth=depth,
        num_heads=heads,
        mlp_ratio=hidden / d,
        patch_size=int(proj.shape[-1]),
        stride=int(proj.shape[-1]),
        in_chans=int(proj.shape[1]),
        layer_norm_first=True,
    )


class AudioMAE(Encoder):
    """AudioMAE adapter: 16 kHz windows -> 768-d (mean of patch tokens + plain LayerNorm)."""

    sample_rate = SAMPLE_RATE

    def __init__(self, spec: Pretrained, checkpoint: str | None = None) -> None:
        super().__init__()
        source = checkpoint or spec.sources[0]
        weights = read_weights(source, spec)
        self.cfg = config_from_state(weights.state_dict, dict(spec.arch))
        self.vit = AudioMAEViT(self.cfg)
        load_strict(self.vit, weights.state_dict, str(weights.path))
        self.weights_sha256 = weights.sha256
        self.revision = weights.revision

    def embed(self, windows: torch.Tensor, sample_rate: int) -> torch.Tensor:
        return self.vit(fbank_1024(windows, sample_rate))


#: the fbank front-end every AudioMAE/EAT variant declares
FRONTEND = (
    "kaldi fbank 128 mel, 25/10 ms, hanning, htk_compat, dither 0; pad/crop to 1024 frames, "
    "then (x + 4.2677393) / (2 * 4.5689974)"
)

PRETRAINED = (
    Pretrained(
        name="audiomae-base",
        family="AudioMAE",
        variant="base",
        sources=(
            "pretrained.pth",
            "https://drive.google.com/file/d/1ni_DV4dRf7GxM8k-Eirx71WP9Gg89wwu",
        ),
        file_format="torch",
        state_path=("model",),
        drop=(r"^decoder", r"^mask_token$", r"^norm\."),
        sample_rate=SAMPLE_RATE,
        frontend=FRONTEND,
        pooling="mean of the last block's patch tokens (no CLS), LayerNorm without affine",
        dim=768,
        params_millions=85.0,
        license="CC BY-NC 4.0",
        paper="Huang et al., Masked Autoencoders that Listen, NeurIPS 2022",
        arch={"embed_dim": 768, "depth": 12, "num_heads": 12, "mlp_ratio": 4.0, "patch_size": 16},
    ),
)

register_family(PRETRAINED, AudioMAE)


def randomize(module: nn.Module, seed: int) -> None:
    """Random weights in place (LayerNorm weights around 1); fixed position tables left as
    built."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if not p.requires_grad:
                continue
            noise = torch.randn(p.shape, generator=gen) * 0.05
            p.copy_(noise + (1.0 if "norm" in name and name.endswith("weight") else 0.0))


def pretraining_state(
    seed: int = 0, decoder_embed_dim: int = 512, decoder_depth: int = 8, **arch: Any
) -> dict[str, torch.Tensor]:
    """The ``model`` dict of an AudioMAE pre-training checkpoint (``MaskedAutoencoderViT``),
    random weights: the encoder tensors (:class:`ViTConfig` numbers, ViT-B by default, updated
    by ``arch``), the encoder's final ``norm``, ``mask_token`` and a Swin decoder of
    ``decoder_depth`` blocks (16 heads, 4 x 4 windows). The decoder and ``norm`` are dropped on
    loading; their layout is the release's in kind (names, nesting), not verified tensor by
    tensor against the real file."""
    cfg = ViTConfig(**{**PRETRAINED[0].arch, **arch})
    vit = AudioMAEViT(cfg)
    randomize(vit, seed)
    state = dict(vit.state_dict())
    gen = torch.Generator().manual_seed(seed + 100)
    d, dec = cfg.embed_dim, decoder_embed_dim

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * 0.05

    state.update(
        {
            "norm.weight": 3.0 + r(d),  # unused by the wrapper: must not matter
            "norm.bias": 1.0 + r(d),
            "decoder_embed.weight": r(dec, d),
            "decoder_embed.bias": r(dec),
            "mask_token": r(1, 1, dec),
            "decoder_pos_embed": official_pos_embed(dec, *cfg.grid),
        }
    )
    for i in range(decoder_depth):
        p = f"decoder_blocks.{i}."
        state.update(
            {
                p + "norm1.weight": 1 + r(dec),
                p + "norm1.bias": r(dec),
                p + "attn.relative_position_bias_table": r(49, 16),
                p + "attn.relative_position_index": torch.zeros(16, 16, dtype=torch.long),
                p + "attn.qkv.weight": r(3 * dec, dec),
                p + "attn.qkv.bias": r(3 * dec),
                p + "attn.proj.weight": r(dec, dec),
                p + "attn.proj.bias": r(dec),
                p + "norm2.weight": 1 + r(dec),
                p + "norm2.bias": r(dec),
                p + "mlp.fc1.weight": r(4 * dec, dec),
                p + "mlp.fc1.bias": r(4 * dec),
                p + "mlp.fc2.weight": r(dec, 4 * dec),
                p + "mlp.fc2.bias": r(dec),
            }
        )
    patch = cfg.patch_size**2 * cfg.in_chans
    state.update(
        {
            "decoder_norm.weight": 1 + r(dec),
            "decoder_norm.bias": r(dec),
            "decoder_pred.weight": r(patch, dec),
            "decoder_pred.bias": r(patch),
        }
    )
    return state


def random_checkpoint(name: str, path: str | Path, seed: int = 0, **arch: Any) -> Path:
    """Write a random-weight ``pretrained.pth`` of ``name`` (``audiomae-base``) at ``path``:
    ``{'model': pretraining_state(...)}`` with ``torch.save``; ``arch`` overrides the encoder
    numbers (``embed_dim``, ``depth``, ``num_heads`` ...) and ``decoder_embed_dim`` /
    ``decoder_depth``. Returns the path."""
    if name != PRETRAINED[0].name:
        raise RMISError(f"no AudioMAE variant {name!r} (known: {PRETRAINED[0].name!r})")
    torch.save({"model": pretraining_state(seed, **arch)}, path)
    return Path(path)


__all__ = [
    "AudioMAE",
    "AudioMAEViT",
    "PatchEmbed",
    "ViTConfig",
    "config_from_state",
    "fbank_1024",
    "official_pos_embed",
    "pretraining_state",
    "random_checkpoint",
]
