"""The audio towers of three 7B audio-language models: ``qwen2-audio-7b`` (Qwen2-Audio),
``qwen2.5-omni-7b`` (Qwen2.5-Omni) and ``audio-flamingo-3`` (Audio Flamingo 3).

Only the audio encoder is built and only its tensors are read (lazily, from the shards the index
lists for them: see ``models/hf_audio.py``); the language model (and Qwen2.5-Omni's talker and
vocoder) is never instantiated nor read.

=================  ====================================  ===========================  ========
registry name      encoder (transformers)                tensors (hub names)          dim
=================  ====================================  ===========================  ========
qwen2-audio-7b     ``Qwen2AudioEncoder(audio_config)``   ``audio_tower.*``            1280
qwen2.5-omni-7b    ``Qwen2_5OmniAudioEncoder(            ``thinker.audio_tower.*``    3584
                   thinker_config.audio_config)``                                     (1280)
audio-flamingo-3   ``AudioFlamingo3Encoder(audio_config)`` ``audio_tower.*``          1280
=================  ====================================  ===========================  ========

(A checkpoint re-saved by transformers 5 may name them ``model.audio_tower.*``: accepted too.)

Per 16-kHz window ``[B, L]`` (10 s in the benchmark), as the three models' own
``get_audio_features`` do it:

1. ``WhisperFeatureExtractor`` (the checkpoint's ``preprocessor_config.json``, else 128 mel,
   n_fft 400, hop 160, 30 s): log-mel padded to 3000 frames, and the mask of the valid mel
   frames ``n = ceil(L / 160)`` (1000 for a 10-s window: the whole window is valid, the rest of
   the 30 s is padding).
2. Encoder, with the valid frames only:

   * Qwen2-Audio: all 3000 frames through the convolutions (1500 after the stride-2 conv), an
     attention mask over the first ``(n - 1) // 2 + 1`` of them (built like
     ``Qwen2AudioModel``: ``create_bidirectional_mask``), stride-2 average pooling, LayerNorm
     -> 750 frames, of which the first ``((n - 1) // 2 + 1 - 2) // 2 + 1`` are valid (250).
   * Qwen2.5-Omni: only the ``n`` valid frames are given (``feature_lens``; the model cuts them
     into chunks of ``2 * n_window`` frames and attends within chunks), pooled by 2 ->
     ``((n - 1) // 2 + 1 - 2) // 2 + 1`` frames (250) after ``ln_post`` and ``proj``.
   * Audio Flamingo 3: all 3000 frames, ``input_features_mask`` = the mel mask (the encoder
     derives its attention mask from it), pooled by 2 + LayerNorm -> 750 frames, valid as
     Qwen2-Audio's (250).

3. Window embedding = mean of the last hidden state over the valid output frames.

Options (``-o key=value``):

- ``pool=valid`` (default) as above; ``pool=all``: the whole padded 30-s input counts as the
  clip (every mel frame valid: no attention mask, Qwen2.5-Omni gets ``feature_lens`` 3000) and
  the mean is over all 750 output frames.
- Qwen2.5-Omni only: ``project=true`` (default, BASELINES.md: 3584, the audio tower's own
  output ``proj(ln_post(.))``, the vectors the LM receives) or ``project=false`` (1280, the
  ``ln_post`` output before the projection).

Parameters (registry): counted on the meta device from the released configs' audio sizes
(d_model 1280, 32 layers, 20 heads, ffn 5120, 128 mel, 1500 positions; Qwen2.5-Omni also
n_window 100 and output_dim 3584), ``tests/models/test_qwen_audio.py`` recounts them.
"""

from __future__ import annotations

from typing import Any

import torch

from rmis.encoders import Encoder
from rmis.errors import RMISError
from rmis.models.hf_audio import (
    SAMPLE_RATE,
    build_strict,
    masked_mean,
    read_hub_weights,
    sub_config,
    whisper_feature_extractor,
    whisper_features,
)
from rmis.weights import Pretrained, register_family

#: the released audio encoders' sizes (config.json of each hub checkpoint)
WHISPER_LARGE_AUDIO = {
    "d_model": 1280,
    "encoder_layers": 32,
    "encoder_attention_heads": 20,
    "encoder_ffn_dim": 5120,
    "num_mel_bins": 128,
    "max_source_positions": 1500,
}
FEATURES = "Whisper log-mel 128 bins (n_fft 400, hop 160), padded to 30 s; mask of valid frames"


class AudioTowerEncoder(Encoder):
    """Adapter of one 7B model's audio tower (see the module doc); ``model`` is the
    transformers encoder, ``fe`` its ``WhisperFeatureExtractor``."""

    sample_rate = SAMPLE_RATE
    version = "1"
    kind = ""

    def __init__(
        self,
        model: torch.nn.Module,
        fe: Any,
        pool: str,
        sha256: str | None,
        revision: str | None,
        project: bool = True,
    ) -> None:
        super().__init__()
        if pool not in ("valid", "all"):
            raise RMISError(f"option pool must be 'valid' or 'all', got {pool!r}")
        self.model = model
        self.fe = fe
        self.pool = pool
        self.project = bool(project)
        self.weights_sha256 = sha256
        self.revision = revision

    def features(self, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log-mel [B, n_mels, 3000], mel mask [B, 3000])`` on the model's device; with
        ``pool=all`` the mask is all ones."""
        feats, mask = whisper_features(self.fe, windows)
        if self.pool == "all":
            mask = torch.ones_like(mask)
        p = next(self.model.parameters())
        return feats.to(p.device, p.dtype), mask.to(p.device)

    def embed(self, windows: torch.Tensor, sample_rate: int) -> torch.Tensor:
        if sample_rate != SAMPLE_RATE:
            raise RMISError(f"{type(self).__name__}: needs {SAMPLE_RATE} Hz, got {sample_rate}")
        feats, mask = self.features(windows)
        with torch.inference_mode():
            return self.encode(feats, mask).float()

    def encode(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class Qwen2AudioTower(AudioTowerEncoder):
    def encode(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        from transformers.masking_utils import create_bidirectional_mask

        m = self.model
        conv_lens, out_lens = m._get_feat_extract_output_lengths(mask.sum(-1))
        n = (feats.shape[-1] - 2) // 2 + 1  # frames after the stride-2 convolution
        valid = (torch.arange(n, device=feats.device)[None, :] < conv_lens[:, None]).long()
        attn = create_bidirectional_mask(
            config=m.config,
            inputs_embeds=torch.zeros(feats.shape[0], n, 1, dtype=feats.dtype, device=feats.device),
            attention_mask=valid,
        )
        hidden = m(feats, attention_mask=attn).last_hidden_state
        return masked_mean(hidden, out_lens)


class AudioFlamingo3Tower(AudioTowerEncoder):
    def encode(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = self.model
        hidden = m(feats, input_features_mask=mask).last_hidden_state
        _, out_lens = m._get_feat_extract_output_lengths(mask.sum(-1))
        return masked_mean(hidden, out_lens)


class Qwen25OmniTower(AudioTowerEncoder):
    def encode(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = self.model
        lens = mask.sum(-1)
        flat = feats.permute(0, 2, 1)[mask.bool()].permute(1, 0)  # [n_mels, sum(lens)]
        conv_lens, out_lens = m._get_feat_extract_output_lengths(lens)
        captured: list[torch.Tensor] = []
        hook = None
        if not self.project:
            hook = m.ln_post.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            hidden = m(flat, feature_lens=lens, aftercnn_lens=conv_lens).last_hidden_state
        finally:
            if hook is not None:
                hook.remove()
        if not self.project:
            hidden = captured[0]
        pieces = hidden.split(out_lens.tolist(), dim=0)
        return torch.stack([p.mean(0) for p in pieces])


# ---------------------------------------------------------------------------------------------
# the three variants

_FAMILIES: dict[str, dict[str, Any]] = {
    # name: prefixes of the hub names (then transformers 5's), config path, encoder class
    "qwen2-audio-7b": {
        "prefixes": ("audio_tower.", "model.audio_tower."),
        "config": ("audio_config",),
        "module": "transformers.models.qwen2_audio.modeling_qwen2_audio",
        "encoder": "Qwen2AudioEncoder",
        "config_class": "Qwen2AudioEncoderConfig",
        "adapter": Qwen2AudioTower,
    },
    "qwen2.5-omni-7b": {
        "prefixes": ("thinker.audio_tower.",),
        "config": ("thinker_config", "audio_config"),
        "module": "transformers.models.qwen2_5_omni.modeling_qwen2_5_omni",
        "encoder": "Qwen2_5OmniAudioEncoder",
        "config_class": "Qwen2_5OmniAudioEncoderConfig",
        "adapter": Qwen25OmniTower,
    },
    "audio-flamingo-3": {
        "prefixes": ("audio_tower.", "model.audio_tower."),
        "config": ("audio_config",),
        "module": "transformers.models.audioflamingo3.modeling_audioflamingo3",
        "encoder": "AudioFlamingo3Encoder",
        "config_class": "AudioFlamingo3EncoderConfig",
        "adapter": AudioFlamingo3Tower,
    },
}

QWEN_AUDIO_TABLE = (
    Pretrained(
        name="qwen2-audio-7b",
        family="Qwen2-Audio",
        variant="7B",
        sources=("hf://Qwen/Qwen2-Audio-7B",),
        file_format="hf-folder",
        prefix="audio_tower.",
        sample_rate=SAMPLE_RATE,
        frontend=FEATURES,
        pooling="mean of the last hidden state over the valid frames (250 of 750 for 10 s)",
        dim=1280,
        params_millions=636.97,  # Qwen2AudioEncoder at the released sizes, meta device
        license="Apache-2.0",
        paper="Chu et al., Qwen2-Audio Technical Report, 2024 (arXiv:2407.10759)",
        arch=WHISPER_LARGE_AUDIO,
    ),
    Pretrained(
        name="qwen2.5-omni-7b",
        family="Qwen2.5-Omni",
        variant="7B",
        sources=("hf://Qwen/Qwen2.5-Omni-7B",),
        file_format="hf-folder",
        prefix="thinker.audio_tower.",
        sample_rate=SAMPLE_RATE,
        frontend=FEATURES + " (only the valid frames are encoded: feature_lens)",
        pooling="mean of the audio tower's output frames (after proj; -o project=false: "
        "ln_post output, 1280)",
        dim=3584,
        params_millions=639.65,  # Qwen2_5OmniAudioEncoder (proj to 3584 included), meta device
        license="Apache-2.0 (model card: license other, apache-2.0)",
        paper="Xu et al., Qwen2.5-Omni Technical Report, 2025 (arXiv:2503.20215)",
        arch={**WHISPER_LARGE_AUDIO, "n_window": 100, "output_dim": 3584},
    ),
    Pretrained(
        name="audio-flamingo-3",
        family="Audio Flamingo 3",
        variant="7B",
        sources=("hf://nvidia/audio-flamingo-3-hf",),
        file_format="hf-folder",
        prefix="audio_tower.",
        sample_rate=SAMPLE_RATE,
        frontend=FEATURES + " (input_features_mask)",
        pooling="mean of the last hidden state over the valid frames (250 of 750 for 10 s)",
        dim=1280,
        params_millions=636.97,  # AudioFlamingo3Encoder at the released sizes, meta device
        license="NVIDIA OneWay Noncommercial License (non-commercial use only)",
        paper="Goel et al., Audio Flamingo 3: Advancing Audio Intelligence with Fully Open "
        "Large Audio Language Models, 2025 (arXiv:2507.08128)",
        arch=WHISPER_LARGE_AUDIO,
    ),
)


def encoder_classes(name: str) -> tuple[type, type]:
    """(encoder class, encoder config class) of a registry name."""
    import importlib

    fam = _FAMILIES[name]
    mod = importlib.import_module(fam["module"])
    cfg_mod = importlib.import_module(fam["module"].replace(".modeling_", ".configuration_"))
    return getattr(mod, fam["encoder"]), getattr(cfg_mod, fam["config_class"])


def build_audio_tower(
    spec: Pretrained,
    checkpoint: str | None = None,
    pool: str = "valid",
    project: bool = True,
) -> AudioTowerEncoder:
    """Read the audio tower's tensors only and build the adapter (strict, see module doc)."""
    fam = _FAMILIES[spec.name]
    if pool not in ("valid", "all"):
        raise RMISError(f"{spec.name}: option pool must be 'valid' or 'all', got {pool!r}")
    if not isinstance(project, bool):
        raise RMISError(f"{spec.name}: option project must be true or false, got {project!r}")
    source = checkpoint or spec.sources[0]
    hw = read_hub_weights(source, spec, prefixes=fam["prefixes"])
    encoder_cls, config_cls = encoder_classes(spec.name)
    cfg = config_cls.from_dict(sub_config(hw.config, fam["config"], spec))
    model = build_strict(lambda: encoder_cls(cfg), hw.state_dict, f"{spec.name} {source}")
    fe = whisper_feature_extractor(hw.preprocessor, feature_size=cfg.num_mel_bins)
    if fe.feature_size != cfg.num_mel_bins:
        raise RMISError(
            f"{spec.name}: preprocessor_config.json gives {fe.feature_size} mel bins, the audio "
            f"encoder takes {cfg.num_mel_bins}"
        )
    return fam["adapter"](model, fe, pool, hw.sha256, hw.revision, project=project)


def _audio_options(checkpoint: str | None = None, pool: str = "valid") -> None:
    """Options of Qwen2-Audio and Audio Flamingo 3 (never called)."""


def _omni_options(checkpoint: str | None = None, pool: str = "valid", project: bool = True):
    """Options of Qwen2.5-Omni (never called)."""


register_family(
    tuple(s for s in QWEN_AUDIO_TABLE if s.name != "qwen2.5-omni-7b"),
    build_audio_tower,
    options=_audio_options,
)
register_family(
    tuple(s for s in QWEN_AUDIO_TABLE if s.name == "qwen2.5-omni-7b"),
    build_audio_tower,
    options=_omni_options,
)
