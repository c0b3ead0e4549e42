"""EAT (Chen et al., "EAT: Self-Supervised Pre-Training with Efficient Audio Transformer",
IJCAI 2024): ``eat-base`` (EAT-base, epoch 30) and ``eat-large`` (EAT-large, epoch 20).

The release the official RMIS wrapper loads (``models/eat/EAT.py``: ``AutoModel.from_pretrained(
..., trust_remote_code=True)``) is a hub folder: ``config.json`` (an ``EATConfig``) and
``model.safetensors`` whose keys sit under ``model.`` (``EATModel.model`` is the ``EAT`` module).
That remote code is ported here as a plain module with the same parameter names, so the folder
loads unchanged (strictly; a fine-tuned folder's ``fc_norm``/``head`` are a declared ``drop``).

What one 10-s window (16 kHz) becomes, as the wrapper computes it:

1. the AudioMAE front-end (:func:`rmis.models.audiomae.fbank_1024`): Kaldi fbank, 128 mel,
   hanning window, htk_compat, dither 0; zero-padded to 1024 frames BEFORE the normalisation
   ``(x + 4.2677393) / (2 * 4.5689974)`` (padded rows are not 0);
2. ``extract_features``: 16 x 16 patches at ``stride`` (time-major), plus the first rows of the
   fixed sin-cos table ``fixed_positional_encoder.positions`` (``max_length`` x ``mel_bins / 16``
   grid, built like MAE's ``get_2d_sincos_pos_embed_flexible``; read from the checkpoint),
   the CLS token (``extra_tokens``, no position) prepended, a LayerNorm (``pre_norm``), then
   the post-norm data2vec blocks (``x = LN1(x + Attn(x)); x = LN2(x + MLP(x))``); no final norm;
3. the window embedding is the CLS token of the last block: 768 (base) / 1024 (large).

The architecture is read from ``config.json``. Differences from the paper / wrapper: none in
what is computed; the paper's EAT is the fairseq data2vec model, and the hub port's encoder path
(used by the wrapper) is what is reproduced. Pre-norm blocks (``layer_norm_first``) are refused:
the remote code's pre-norm branch adds the MLP output to itself (a data2vec quirk) and no release
uses it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from rmis.encoders import Encoder
from rmis.errors import RMISError
from rmis.models.audiomae import FRONTEND, SAMPLE_RATE, PatchEmbed, ViTConfig, fbank_1024
from rmis.models.fisher import sincos_positions
from rmis.weights import (
    Pretrained,
    load_strict,
    read_weights,
    register_family,
    write_hub_folder,
)


def eat_config(config: Any, where: str) -> tuple[ViTConfig, int, bool]:
    """``(ViTConfig, max_length, fixed_positions)`` from the hub ``config.json`` (plain dict)."""
    if not isinstance(config, dict):
        raise RMISError(f"{where}: no config.json beside the weights (the EAT hub folder has one)")
    c = {**_DEFAULTS, **config}
    if c["layer_norm_first"]:
        raise RMISError(f"{where}: EAT config with layer_norm_first=true is not supported")
    if not c["qkv_bias"]:
        raise RMISError(f"{where}: EAT config with qkv_bias=false is not supported")
    img = c["img_size"]
    target = int(img[0]) if isinstance(img, (list, tuple)) else int(img)
    cfg = ViTConfig(
        embed_dim=int(c["embed_dim"]),
        depth=int(c["depth"]),
        num_heads=int(c["num_heads"]),
        mlp_ratio=float(c["mlp_ratio"]),
        patch_size=int(c["patch_size"]),
        stride=int(c["stride"]),
        in_chans=int(c["in_chans"]),
        target_length=target,
        mel_bins=int(c["mel_bins"]),
        norm_eps=float(c["norm_eps"]),
        norm_affine=bool(c["norm_affine"]),
        layer_norm_first=False,
    )
    return cfg, int(c["max_length"]), bool(c["fixed_positions"])


#: EATConfig defaults of the hub remote code (configuration_eat.py)
_DEFAULTS: dict[str, Any] = {
    "embed_dim": 768,
    "depth": 12,
    "num_heads": 12,
    "patch_size": 16,
    "stride": 16,
    "in_chans": 1,
    "mel_bins": 128,
    "max_length": 768,
    "mlp_ratio": 4.0,
    "qkv_bias": True,
    "layer_norm_first": False,
    "norm_eps": 1e-6,
    "norm_affine": True,
    "fixed_positions": True,
    "img_size": [1024, 128],
}


class _FixedPositions(nn.Module):
    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.positions = nn.Parameter(table, requires_grad=False)


class EATViT(nn.Module):
    """The hub ``EAT`` module (encoder path) with its parameter names (keys after ``model.``)."""

    def __init__(self, cfg: ViTConfig, max_length: int = 768, fixed_positions: bool = True):
        super().__init__()
        self.cfg = cfg
        d = cfg.embed_dim
        self.local_encoder = PatchEmbed(cfg)
        self.extra_tokens = nn.Parameter(torch.zeros(1, 1, d))
        self.fixed_positional_encoder = (
            _FixedPositions(official_positions(d, max_length, cfg.mel_bins // cfg.patch_size))
            if fixed_positions
            else None
        )
        self.blocks = cfg.blocks()
        self.pre_norm = nn.LayerNorm(d, eps=cfg.norm_eps, elementwise_affine=cfg.norm_affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 1, 1024, 128]`` -> last block's tokens ``[B, 1 + patches, D]`` (CLS first)."""
        x = self.local_encoder(x)
        if self.fixed_positional_encoder is not None:
            positions = self.fixed_positional_encoder.positions
            if x.shape[1] > positions.shape[1]:
                raise RMISError(
                    f"EAT: {x.shape[1]} patches exceed the position table ({positions.shape[1]})"
                )
            x = x + positions[:, : x.shape[1]].to(x.dtype)
        x = torch.cat([self.extra_tokens.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
        x = self.pre_norm(x)
        for blk in self.blocks:
            x = blk(x)
        return x


def official_positions(dim: int, max_length: int, cols: int) -> torch.Tensor:
    """``[1, max_length * cols, dim]``: the remote code's ``build_sincos_pos_embed`` (row ``i`` =
    time patch ``i // cols``, frequency patch ``i % cols``; frequency in the first half)."""
    return sincos_positions(dim, max_length, cols)[None]


class EAT(Encoder):
    """EAT adapter: 16 kHz windows -> CLS token of the last layer (768 / 1024)."""

    sample_rate = SAMPLE_RATE

    def __init__(self, spec: Pretrained, checkpoint: str | None = None) -> None:
        super().__init__()
        source = checkpoint or spec.sources[0]
        weights = read_weights(source, spec)
        self.cfg, max_length, fixed = eat_config(weights.config, str(weights.path))
        self.vit = EATViT(self.cfg, max_length, fixed)
        load_strict(self.vit, weights.state_dict, str(weights.path))
        self.weights_sha256 = weights.sha256
        self.revision = weights.revision

    def embed(self, windows: torch.Tensor, sample_rate: int) -> torch.Tensor:
        return self.vit(fbank_1024(windows, sample_rate))[:, 0]


def _spec(name: str, variant: str, repo: str, dim: int, params: float, arch: dict) -> Pretrained:
    return Pretrained(
        name=name,
        family="EAT",
        variant=variant,
        sources=(f"hf://{repo}",),
        file_format="hf-folder",
        prefix="model.",
        drop=(r"^fc_norm\.", r"^head\."),
        sample_rate=SAMPLE_RATE,
        frontend=FRONTEND,
        pooling="CLS token of the last layer",
        dim=dim,
        params_millions=params,
        license="MIT",
        paper="Chen et al., EAT: Self-Supervised Pre-Training with Efficient Audio Transformer, "
        "IJCAI 2024",
        arch=arch,
    )


PRETRAINED = (
    _spec(
        "eat-base",
        "base30",
        "worstchan/EAT-base_epoch30_pretrain",
        768,
        88.0,
        {"embed_dim": 768, "depth": 12, "num_heads": 12, "max_length": 768},
    ),
    _spec(
        "eat-large",
        "large",
        "worstchan/EAT-large_epoch20_pretrain",
        1024,
        310.0,
        {"embed_dim": 1024, "depth": 24, "num_heads": 16, "max_length": 768},
    ),
)

register_family(PRETRAINED, EAT)


def hub_config(**overrides: Any) -> dict[str, Any]:
    """``config.json`` as the hub folder holds it (``EATConfig`` fields + transformers' own),
    EAT-base's numbers updated by ``overrides``."""
    cfg = {
        "architectures": ["EATModel"],
        "auto_map": {
            "AutoConfig": "configuration_eat.EATConfig",
            "AutoModel": "modeling_eat.EATModel",
        },
        "model_type": "eat",
        "torch_dtype": "float32",
        "transformers_version": "4.51.3",
        "embed_dim": 768,
        "depth": 12,
        "num_heads": 12,
        "patch_size": 16,
        "stride": 16,
        "in_chans": 1,
        "mel_bins": 128,
        "max_length": 768,
        "num_classes": 527,
        "model_variant": "pretrain",
        "mlp_ratio": 4.0,
        "qkv_bias": True,
        "drop_rate": 0.0,
        "attn_drop_rate": 0.0,
        "activation_dropout": 0.0,
        "post_mlp_drop": 0.0,
        "start_drop_path_rate": 0.0,
        "end_drop_path_rate": 0.0,
        "layer_norm_first": False,
        "norm_eps": 1e-6,
        "norm_affine": True,
        "fixed_positions": True,
        "img_size": [1024, 128],
    }
    cfg.update(overrides)
    return cfg


def random_hub_folder(
    path: str | Path, seed: int = 0, finetuned: bool = False, **config: Any
) -> Path:
    """A random-weight hub folder at ``path``: ``config.json`` (:func:`hub_config` with
    ``config``) + ``model.safetensors`` (``model.*`` keys; a fine-tuned folder also holds
    ``fc_norm`` and the AudioSet ``head``)."""
    path = Path(path)
    cfg_json = hub_config(**config)
    if finetuned:
        cfg_json["model_variant"] = "finetune"
    cfg, max_length, fixed = eat_config(cfg_json, str(path))
    vit = EATViT(cfg, max_length, fixed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in vit.named_parameters():
            if p.requires_grad:
                w = 1.0 if "norm" in name and name.endswith("weight") else 0.0
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05 + w)
    state = {f"model.{k}": v.contiguous() for k, v in vit.state_dict().items()}
    if finetuned:
        d = cfg.embed_dim
        state["model.fc_norm.weight"] = torch.ones(d)
        state["model.fc_norm.bias"] = torch.zeros(d)
        state["model.head.weight"] = torch.randn(527, d, generator=gen)
        state["model.head.bias"] = torch.zeros(527)
    return write_hub_folder(path, cfg_json, state)


def random_checkpoint(
    name: str, path: str | Path, seed: int = 0, finetuned: bool = False, **arch: Any
) -> Path:
    """Write a random-weight hub folder of ``name`` (``eat-base`` / ``eat-large``) at ``path``
    (:func:`random_hub_folder` with the variant's numbers, updated by ``arch``: ``config.json``
    entries such as ``embed_dim`` / ``depth`` / ``num_heads``); returns the folder."""
    spec = next((s for s in PRETRAINED if s.name == name), None)
    if spec is None:
        raise RMISError(f"no EAT variant {name!r} (known: {[s.name for s in PRETRAINED]})")
    return random_hub_folder(path, seed, finetuned, **{**spec.arch, **arch})


__all__ = [
    "EAT",
    "EATViT",
    "eat_config",
    "hub_config",
    "official_positions",
    "random_checkpoint",
    "random_hub_folder",
]
