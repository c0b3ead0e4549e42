"""Wav2Vec 2.0 (Baevski et al., NeurIPS 2020; XLS-R: Babu et al., Interspeech 2022):
``wav2vec2-base``, ``wav2vec2-large``, ``wav2vec2-1b``, ``wav2vec2-2b``.

The paper (appendix A.3.1) evaluates four official checkpoints: ``facebook/wav2vec2-base-960h``
(base, fine-tuned for English CTC), ``facebook/wav2vec2-xls-r-300m`` (large), ``-xls-r-1b``
(1B) and ``-xls-r-2b`` (2B) (pre-trained only), "extract the frame-level embeddings from the
encoder and mean-pool them along the time axis".

Per 16-kHz window:

1. features = ``transformers.Wav2Vec2FeatureExtractor`` of the checkpoint's
   ``preprocessor_config.json`` (``do_normalize: true`` in all four): per-window zero mean, unit
   variance ``(x - mean) / sqrt(var + 1e-7)``, computed here in torch (float32, outside any
   autocast) exactly as the extractor does in numpy;
2. ``transformers.Wav2Vec2Model`` (the CNN feature encoder, 49 frames/s, then the transformer);
   the attention mask follows the extractor's ``return_attention_mask`` (true for the XLS-R
   checkpoints, whose ``feat_extract_norm`` is ``"layer"``; false for base-960h, ``"group"``,
   which must not be given one). The harness hands over whole windows only (the last window of
   a file is zero-padded to 10 s and that padding is part of the window, as for every model),
   so there is never padding INSIDE a batch row: the mask, when the checkpoint takes one, is
   all ones over the window (what the extractor returns for an unpadded input) and changes
   nothing but is passed for fidelity;
3. window embedding = mean over the frames of the last hidden state -> 768 / 1024 / 1280 / 1920.
   ``-o pool=valid`` (default) averages over the frames of the window's valid samples, which
   for this model are all of them (see 2), so it equals ``-o pool=all``; the option exists so
   that every transformers adapter takes the same ``pool`` values.

Weights: the hub folder (``config.json``, ``preprocessor_config.json``, safetensors). The files
are full ``Wav2Vec2ForCTC`` (base-960h) or ``Wav2Vec2ForPreTraining`` (XLS-R) checkpoints with
the encoder under ``wav2vec2.``; only those tensors are read (prefix stripped), so the heads
(``lm_head``; ``quantizer``, ``project_q``, ``project_hid``) are dropped by design. The
positional convolution's weight norm is stored as ``weight_g`` / ``weight_v`` in these
(pre-``parametrizations``) files and renamed to ``parametrizations.weight.original0/1``. Every
parameter and buffer of the ``Wav2Vec2Model`` must come from the file (strict).

``params_millions`` = parameters of the released checkpoint (heads included), computed from the
real ``config.json`` numbers (:data:`ARCH`) on the meta device; the encoder itself has
94.37 / 315.44 / 962.50 / 2159.26 M.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from rmis.encoders import Encoder
from rmis.errors import RMISError
from rmis.weights import Pretrained, register_family, write_hub_folder

SAMPLE_RATE = 16_000
POOLS = ("valid", "all")

#: ``config.json`` numbers of the released checkpoints that differ from ``Wav2Vec2Config``'s
#: defaults where it matters for the size (conv stack 7 x 512, kernels 10,3,3,3,3,2,2, strides
#: 5,2,2,2,2,2,2 and the 128-tap, 16-group positional conv are the defaults in all four).
ARCH: dict[str, dict[str, Any]] = {
    "base": {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "conv_bias": False,
        "feat_extract_norm": "group",
        "do_stable_layer_norm": False,
        "vocab_size": 32,
        "architectures": ["Wav2Vec2ForCTC"],
    },
    "large": {
        "hidden_size": 1024,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "intermediate_size": 4096,
        "conv_bias": True,
        "feat_extract_norm": "layer",
        "do_stable_layer_norm": True,
        "codevector_dim": 768,
        "proj_codevector_dim": 768,
        "architectures": ["Wav2Vec2ForPreTraining"],
    },
    "1B": {
        "hidden_size": 1280,
        "num_hidden_layers": 48,
        "num_attention_heads": 16,
        "intermediate_size": 5120,
        "conv_bias": True,
        "feat_extract_norm": "layer",
        "do_stable_layer_norm": True,
        "codevector_dim": 1024,
        "proj_codevector_dim": 1024,
        "architectures": ["Wav2Vec2ForPreTraining"],
    },
    "2B": {
        "hidden_size": 1920,
        "num_hidden_layers": 48,
        "num_attention_heads": 16,
        "intermediate_size": 7680,
        "conv_bias": True,
        "feat_extract_norm": "layer",
        "do_stable_layer_norm": True,
        "codevector_dim": 1024,
        "proj_codevector_dim": 1024,
        "architectures": ["Wav2Vec2ForPreTraining"],
    },
}

# variant: (registry name, hub id, embedding dim, parameters of the released checkpoint in M)
_VARIANTS = {
    "base": ("wav2vec2-base", "facebook/wav2vec2-base-960h", 768, 94.40),
    "large": ("wav2vec2-large", "facebook/wav2vec2-xls-r-300m", 1024, 317.39),
    "1B": ("wav2vec2-1b", "facebook/wav2vec2-xls-r-1b", 1280, 965.51),
    "2B": ("wav2vec2-2b", "facebook/wav2vec2-xls-r-2b", 1920, 2162.93),
}

#: the positional conv's weight norm as stored by pre-``parametrizations`` checkpoints
KEY_MAP = (
    (r"\.weight_g$", ".parametrizations.weight.original0"),
    (r"\.weight_v$", ".parametrizations.weight.original1"),
)

TABLE = tuple(
    Pretrained(
        name=name,
        family="Wav2Vec 2.0",
        variant=v,
        sources=(f"hf://{hub}",),
        file_format="hf-folder",
        state_path=(),
        prefix="wav2vec2.",
        key_map=KEY_MAP,
        sample_rate=SAMPLE_RATE,
        frontend="16 kHz wave, per-window zero-mean unit-variance (Wav2Vec2FeatureExtractor)",
        pooling="mean of the last hidden state over the window's frames",
        dim=dim,
        params_millions=params,
        license="Apache-2.0",
        paper=(
            "Baevski et al., wav2vec 2.0: A framework for self-supervised learning of speech "
            "representations, NeurIPS 2020 (arXiv:2006.11477)"
            if v == "base"
            else "Babu et al., XLS-R: Self-supervised cross-lingual speech representation "
            "learning at scale, Interspeech 2022 (arXiv:2111.09296)"
        ),
        arch=ARCH[v],
    )
    for v, (name, hub, dim, params) in _VARIANTS.items()
)


def normalize(windows: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """``Wav2Vec2FeatureExtractor``'s ``do_normalize``: per row ``(x - mean) / sqrt(var + eps)``
    (population variance), in float32."""
    x = windows.float()
    mean = x.mean(dim=-1, keepdim=True)
    var = (x - mean).square().mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps)


class Wav2Vec2Encoder(Encoder):
    """Adapter of a ``Wav2Vec2Model``: 16-kHz windows -> mean of the last hidden state."""

    sample_rate = SAMPLE_RATE
    version = "1"

    def __init__(
        self,
        model: nn.Module,
        *,
        do_normalize: bool = True,
        attention_mask: bool = False,
        pool: str = "valid",
        name: str = "wav2vec2",
    ) -> None:
        super().__init__()
        if pool not in POOLS:
            raise RMISError(f"{name}: -o pool={pool!r} is not one of {', '.join(POOLS)}")
        self.model = model
        self.do_normalize = do_normalize
        self.attention_mask = attention_mask
        self.pool = pool
        self.name = name

    def embed(self, windows: torch.Tensor, sample_rate: int) -> torch.Tensor:
        if sample_rate != SAMPLE_RATE:
            raise RMISError(f"{self.name} takes {SAMPLE_RATE} Hz windows, got {sample_rate} Hz")
        with torch.autocast(windows.device.type, enabled=False):
            x = normalize(windows) if self.do_normalize else windows.float()
        # whole windows: every sample is valid, the mask (if the checkpoint takes one) is ones
        mask = None
        if self.attention_mask:
            mask = torch.ones(x.shape, dtype=torch.long, device=x.device)
        hidden = self.model(x, attention_mask=mask).last_hidden_state
        # pool=valid: the frames of the valid samples = all frames of a whole window
        return hidden.mean(dim=1).float()


def build(spec: Pretrained, checkpoint: str | None = None, pool: str = "valid") -> Wav2Vec2Encoder:
    """Build ``Wav2Vec2Model`` from the checkpoint's ``config.json`` (meta device) and load the
    ``wav2vec2.*`` tensors strictly (:mod:`rmis.models.hf_audio`)."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from rmis.models.hf_audio import build_strict, read_hub_weights

    if pool not in POOLS:
        raise RMISError(f"{spec.name}: -o pool={pool!r} is not one of {', '.join(POOLS)}")
    source = checkpoint or spec.sources[0]
    hw = read_hub_weights(source, spec)
    cfg = Wav2Vec2Config.from_dict(hw.config)
    where = f"{spec.name} {source}"
    model = build_strict(lambda: Wav2Vec2Model(cfg), hw.state_dict, where)
    # the extractor's behaviour: its preprocessor_config.json, else what the config implies
    pre = hw.preprocessor or {
        "do_normalize": True,
        "return_attention_mask": cfg.feat_extract_norm == "layer",
    }
    rate = pre.get("sampling_rate", SAMPLE_RATE)
    if rate != SAMPLE_RATE:
        raise RMISError(f"{spec.name}: preprocessor sampling_rate {rate}, expected {SAMPLE_RATE}")
    enc = Wav2Vec2Encoder(
        model,
        do_normalize=bool(pre.get("do_normalize", True)),
        attention_mask=bool(pre.get("return_attention_mask", False)),
        pool=pool,
        name=spec.name,
    )
    enc.weights_sha256 = hw.sha256
    enc.revision = hw.revision
    return enc


register_family(TABLE, build)


# --- random-weight releases (tests, benchmarks) -----------------------------------------------


def random_state(model: nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """``model``'s state dict with random values of a sensible scale (norm scales and weight-norm
    magnitudes around 1, matrices of unit gain per fan-in, small biases)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in model.state_dict().items():
        noise = torch.randn(v.shape, generator=gen)
        if k.endswith(("norm.weight", "original0", "weight_g")):
            out[k] = 1 + 0.2 * noise
        elif v.ndim > 1:
            out[k] = noise / v[0].numel() ** 0.5
        else:
            out[k] = 0.1 * noise
    return out


def legacy_weight_norm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``parametrizations.weight.original0/1`` -> ``weight_g`` / ``weight_v`` (the names in
    the hub files, saved before torch's parametrizations)."""
    out = {}
    for k, v in state.items():
        k = k.replace("parametrizations.weight.original0", "weight_g")
        out[k.replace("parametrizations.weight.original1", "weight_v")] = v
    return out


#: a tiny architecture (tests): 2 layers, width 32, a 7 x 32 conv stack (still 49 frames/s)
TINY_ARCH = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "conv_dim": (32,) * 7,
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 2,
    "codevector_dim": 16,
    "proj_codevector_dim": 16,
    "num_codevectors_per_group": 8,
    "num_codevector_groups": 2,
}


def random_checkpoint(
    name: str, path: str | Path, seed: int = 0, shards: int = 1, **arch: Any
) -> Path:
    """Write a random-weight hub folder of variant ``name`` in its release layout: a full
    ``Wav2Vec2ForCTC`` (base) or ``Wav2Vec2ForPreTraining`` (XLS-R) state dict (encoder under
    ``wav2vec2.``, heads beside it, legacy ``weight_g`` / ``weight_v``), the variant's
    ``config.json`` numbers overridden by ``arch`` and its ``preprocessor_config.json``
    (``return_attention_mask`` true for the layer-norm XLS-R models)."""
    from transformers import (
        Wav2Vec2Config,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForCTC,
        Wav2Vec2ForPreTraining,
    )

    spec = next((s for s in TABLE if s.name == name), None)
    if spec is None:
        raise RMISError(f"{name} is not a Wav2Vec 2.0 variant ({[s.name for s in TABLE]})")
    cfg = Wav2Vec2Config(**{**spec.arch, **arch})
    cls = Wav2Vec2ForCTC if cfg.architectures == ["Wav2Vec2ForCTC"] else Wav2Vec2ForPreTraining
    torch.manual_seed(seed)
    with torch.device("meta"):
        model = cls(cfg)
    state = legacy_weight_norm(random_state(model, seed))
    fe = Wav2Vec2FeatureExtractor(
        do_normalize=True, return_attention_mask=cfg.feat_extract_norm == "layer"
    )
    return write_hub_folder(path, cfg, state, shards=shards, preprocessor=fe)
