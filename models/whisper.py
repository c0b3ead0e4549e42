"""Whisper encoders (Radford et al., ICML 2023): ``whisper-tiny``, ``whisper-base``,
``whisper-small``, ``whisper-medium``, ``whisper-large-v3``.

The paper (appendix A.3.1) uses only the encoder of the five official pre-trained checkpoints
(``openai/whisper-*``, no fine-tuning). Per 16-kHz window of ``L`` samples (``L`` <= 30 s):

1. features = ``transformers.WhisperFeatureExtractor`` of the checkpoint's
   ``preprocessor_config.json`` (80 mel bins; 128 for large-v3, the config's
   ``num_mel_bins``): the window zero-padded to 30 s (480 000 samples: the encoder's positional
   table requires exactly 3000 frames), STFT n_fft 400 / hop 160 with a periodic hann window,
   centred (reflect), power 2, the last frame dropped, Slaney mel filters, ``log10(max(x,
   1e-10))``, floored at the row's max - 8, ``(x + 4) / 4`` -> ``[n_mels, 3000]``; computed here
   in torch (float32, outside any autocast) as the extractor's own torch path does;
2. ``transformers.WhisperEncoder`` -> ``[1500, d_model]`` (conv stride 2); it takes no
   attention mask (it always attends over all 1500 frames, padding included, as in Whisper);
3. window embedding = mean of the last layer over the VALID frames (default ``-o pool=valid``):
   the window's ``ceil(L / 160)`` mel frames (the extractor's ``attention_mask``), i.e.
   ``(n - 1) // 2 + 1`` encoder frames: 1000 mel / 500 encoder frames for a 10-s window;
   ``-o pool=all`` averages all 1500 -> 384 / 512 / 768 / 1024 / 1280.

Weights: the hub folder (``config.json``, ``preprocessor_config.json``, ``model.safetensors`` or
shards + index). The official files are ``WhisperForConditionalGeneration`` checkpoints, the
encoder under ``model.encoder.``; a ``WhisperModel`` checkpoint (``encoder.``) loads too: the
layout is read from the key names, and only the encoder's tensors are read (the decoder's never
are). The trap of ``WhisperEncoder.from_pretrained(<full checkpoint>)`` (no key matches, the
encoder silently keeps random weights, only a log warning says so) cannot happen: the encoder is
built on the meta device and every parameter and buffer must come from the file, else an error
lists what is missing.

``params_millions`` = parameters of the released checkpoint (encoder + decoder; the output
projection is tied to the token embedding), computed from the real ``config.json`` numbers
(:data:`ARCH`) on the meta device; the encoders alone have 8.21 / 20.59 / 88.15 / 307.22 /
636.97 M.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rmis.encoders import Encoder
from rmis.errors import RMISError
from rmis.weights import Pretrained, register_family

SAMPLE_RATE = 16_000
POOLS = ("valid", "all")
#: where the encoder sits in the two checkpoint layouts (first = the official files')
PREFIXES = ("model.encoder.", "encoder.")

#: ``config.json`` numbers of the released checkpoints (others are ``WhisperConfig``'s defaults:
#: 1500 source / 448 target positions)
ARCH: dict[str, dict[str, Any]] = {
    v: {
        "d_model": d,
        "encoder_layers": n,
        "decoder_layers": n,
        "encoder_attention_heads": h,
        "decoder_attention_heads": h,
        "encoder_ffn_dim": 4 * d,
        "decoder_ffn_dim": 4 * d,
        "vocab_size": vocab,
        "num_mel_bins": mels,
        "max_source_positions": 1500,
        "max_target_positions": 448,
    }
    for v, (d, n, h, vocab, mels) in {
        "tiny": (384, 4, 6, 51865, 80),
        "base": (512, 6, 8, 51865, 80),
        "small": (768, 12, 12, 51865, 80),
        "medium": (1024, 24, 16, 51865, 80),
        "large-v3": (1280, 32, 20, 51866, 128),
    }.items()
}

# variant: parameters of the released checkpoint in M (WhisperForConditionalGeneration)
_PARAMS = {"tiny": 37.76, "base": 72.59, "small": 241.73, "medium": 763.86, "large-v3": 1543.49}

TABLE = tuple(
    Pretrained(
        name=f"whisper-{v}",
        family="Whisper",
        variant=v,
        sources=(f"hf://openai/whisper-{v}",),
        file_format="hf-folder",
        state_path=(),
        prefix=PREFIXES[0],
        sample_rate=SAMPLE_RATE,
        frontend=f"Whisper log-mel ({ARCH[v]['num_mel_bins']} bins, 25/10 ms), window "
        "zero-padded to 30 s (3000 frames)",
        pooling="mean of the last layer over the window's valid frames (500 of 1500 for 10 s)",
        dim=ARCH[v]["d_model"],
        params_millions=_PARAMS[v],
        license="MIT",
        paper="Radford et al., Robust speech recognition via large-scale weak supervision, "
        "ICML 2023 (arXiv:2212.04356)",
        arch=ARCH[v],
    )
    for v in ARCH
)


class WhisperFeatures(nn.Module):
    """``WhisperFeatureExtractor`` in torch: ``[B, L]`` -> ``[B, n_mels, n_samples // hop]``.

    ``filters`` is the extractor's ``mel_filters`` (``[n_fft // 2 + 1, n_mels]``)."""

    def __init__(self, filters: torch.Tensor, n_fft: int, hop: int, n_samples: int) -> None:
        super().__init__()
        self.n_fft, self.hop, self.n_samples = n_fft, hop, n_samples
        self.register_buffer("filters", filters.float(), persistent=False)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        with torch.autocast(windows.device.type, enabled=False):
            x = F.pad(windows.float(), (0, self.n_samples - windows.shape[-1]))
            stft = torch.stft(x, self.n_fft, self.hop, window=self.window, return_complex=True)
            power = stft[..., :-1].abs().square()
            mel = self.filters.T @ power
            log = torch.clamp(mel, min=1e-10).log10()
            peak = log.amax(dim=(1, 2), keepdim=True)
            log = torch.maximum(log, peak - 8.0)
            return (log + 4.0) / 4.0

    def valid_frames(self, n_samples: int) -> int:
        """Mel frames of ``n_samples`` real samples (the extractor's ``attention_mask``)."""
        return math.ceil(n_samples / self.hop)


class WhisperEncoderAdapter(Encoder):
    """Adapter of a ``WhisperEncoder``: 16-kHz windows -> mean of the last layer."""

    sample_rate = SAMPLE_RATE
    version = "1"

    def __init__(
        self,
        model: nn.Module,
        features: WhisperFeatures,
        pool: str = "valid",
        name: str = "whisper",
    ) -> None:
        super().__init__()
        if pool not in POOLS:
            raise RMISError(f"{name}: -o pool={pool!r} is not one of {', '.join(POOLS)}")
        self.model = model
        self.features = features
        self.pool = pool
        self.name = name

    def embed(self, windows: torch.Tensor, sample_rate: int) -> torch.Tensor:
        if sample_rate != SAMPLE_RATE:
            raise RMISError(f"{self.name} takes {SAMPLE_RATE} Hz windows, got {sample_rate} Hz")
        n = windows.shape[-1]
        if n > self.features.n_samples:
            raise RMISError(
                f"{self.name}: a window of {n / SAMPLE_RATE:g} s is longer than Whisper's "
                f"{self.features.n_samples / SAMPLE_RATE:g}-s input"
            )
        feats = self.features(windows)
        dtype = self.model.conv1.weight.dtype
        hidden = self.model(feats.to(dtype)).last_hidden_state
        if self.pool == "valid":
            hidden = hidden[:, : self.encoder_frames(n)]
        return hidden.mean(dim=1).float()

    def encoder_frames(self, n_samples: int) -> int:
        """Encoder frames of a window of ``n_samples`` (conv2: kernel 3, padding 1, stride 2)."""
        stride = self.model.conv2.stride[0]
        return (self.features.valid_frames(n_samples) - 1) // stride + 1


def build(
    spec: Pretrained, checkpoint: str | None = None, pool: str = "valid"
) -> WhisperEncoderAdapter:
    """Build ``WhisperEncoder`` from the checkpoint's ``config.json`` (meta device) and load
    its encoder tensors strictly, from either layout (:mod:`rmis.models.hf_audio`)."""
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    from rmis.models.hf_audio import build_strict, read_hub_weights, whisper_feature_extractor

    if pool not in POOLS:
        raise RMISError(f"{spec.name}: -o pool={pool!r} is not one of {', '.join(POOLS)}")
    source = checkpoint or spec.sources[0]
    hw = read_hub_weights(source, spec, prefixes=PREFIXES)
    cfg = WhisperConfig.from_dict(hw.config)
    model = build_strict(lambda: WhisperEncoder(cfg), hw.state_dict, f"{spec.name} {source}")
    fe = whisper_feature_extractor(hw.preprocessor, feature_size=cfg.num_mel_bins)
    if fe.feature_size != cfg.num_mel_bins:
        raise RMISError(
            f"{spec.name}: the preprocessor makes {fe.feature_size} mel bins but the encoder "
            f"takes num_mel_bins={cfg.num_mel_bins}"
        )
    frames = cfg.max_source_positions * model.conv1.stride[0] * model.conv2.stride[0]
    if fe.nb_max_frames != frames:
        raise RMISError(
            f"{spec.name}: the preprocessor makes {fe.nb_max_frames} frames but the encoder "
            f"requires {frames}"
        )
    features = WhisperFeatures(
        torch.from_numpy(fe.mel_filters), fe.n_fft, fe.hop_length, fe.n_samples
    )
    enc = WhisperEncoderAdapter(model, features, pool=pool, name=spec.name)
    enc.weights_sha256 = hw.sha256
    enc.revision = hw.revision
    return enc


register_family(TABLE, build)


# --- random-weight releases (tests, benchmarks) -----------------------------------------------

#: a tiny architecture (tests): 2 encoder layers, width 32, a 100-token decoder
TINY_ARCH = {
    "d_model": 32,
    "encoder_layers": 2,
    "decoder_layers": 1,
    "encoder_attention_heads": 2,
    "decoder_attention_heads": 2,
    "encoder_ffn_dim": 64,
    "decoder_ffn_dim": 64,
    "vocab_size": 100,
    "max_target_positions": 32,
    "pad_token_id": 1,
    "bos_token_id": 2,
    "eos_token_id": 2,
    "decoder_start_token_id": 3,
    "suppress_tokens": [],
    "begin_suppress_tokens": [],
}


def random_checkpoint(
    name: str,
    path: str | Path,
    seed: int = 0,
    shards: int = 1,
    layout: str = "full",
    **arch: Any,
) -> Path:
    """Write a random-weight hub folder of variant ``name``: ``layout="full"`` is the official
    ``WhisperForConditionalGeneration`` file (``model.encoder.*``, ``model.decoder.*``; the
    tied ``proj_out`` not stored), ``"model"`` a ``WhisperModel`` one (``encoder.*``,
    ``decoder.*``); the variant's ``config.json`` numbers overridden by ``arch``, and its
    ``preprocessor_config.json`` (``num_mel_bins`` bins)."""
    from transformers import (
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperModel,
    )

    from rmis.models.wav2vec2 import random_state
    from rmis.weights import write_hub_folder

    spec = next((s for s in TABLE if s.name == name), None)
    if spec is None:
        raise RMISError(f"{name} is not a Whisper variant ({[s.name for s in TABLE]})")
    if layout not in ("full", "model"):
        raise RMISError(f"layout {layout!r}: 'full' or 'model'")
    cfg = WhisperConfig(**{**spec.arch, **arch})
    cls = WhisperForConditionalGeneration if layout == "full" else WhisperModel
    cfg.architectures = [cls.__name__]
    with torch.device("meta"):
        model = cls(cfg)
    state = random_state(model, seed)
    state.pop("proj_out.weight", None)  # tied to model.decoder.embed_tokens.weight
    fe = WhisperFeatureExtractor(feature_size=cfg.num_mel_bins)
    return write_hub_folder(path, cfg, state, shards=shards, preprocessor=fe)
