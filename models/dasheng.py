"""DaSheng (Dinkel et al., "Scaling up masked audio encoder learning for general audio
classification", Interspeech 2024): ``dasheng-base``, ``dasheng-0.6b``, ``dasheng-1.2b``; and the
audio encoder of MiDaShengLM (Xiaomi, arXiv:2508.03983): ``midashenglm-7b``.

The architecture is CED's audio transformer (:class:`rmis.models.ced.AudioTransformer`) with
64 x 4 patches (the whole mel axis, 40 ms): one token per 4 frames, 250 tokens for a 10-s
window. Per 16-kHz window, as the official RMIS wrapper (``models/dasheng``,
``rmis/model_conf/dasheng/*.yaml``: ``feat_type: wav``) computes it:

1. the waveform goes in; mel from the checkpoint's buffers (periodic hann(512), 64 HTK bins
   0-8 kHz), n_fft 512, hop 160, centred, power 2; dB with ``top_db`` 120;
2. BatchNorm over the mel bins (``init_bn.1``), Conv2d 64 x 4 patches;
3. the token grid is encoded in pieces of ``target_length // 4`` = 252 tokens (one piece for
   10 s), each with ``time_pos_embed[..., :t]`` + ``freq_pos_embed``; pre-norm blocks
   (LayerScale ``ls1/ls2.gamma`` where the config sets ``init_values``); final LayerNorm;
4. window embedding = mean over the tokens -> 768 / 1280 / 1536 (1280 for MiDaShengLM).

Where this adapter and the official code differ:

- The dB floor (``top_db``): the official ``AmplitudeToDB`` gets the whole batch ``[B, 64, T]``
  and torchaudio reads the first dimension as channels, so the floor is the max over the WHOLE
  BATCH minus 120 dB and a window's embedding depends on which windows share its batch. Here
  the floor is computed per window (the batch-independent reading, what a batch of one gives
  in the official code). It only matters for windows with more than 120 dB of range.
- Architecture numbers: the official ``from_pretrained`` builds the model from the file's
  ``config`` dict with ``embed_dim`` / ``depth`` / ``num_heads`` forced per variant
  (768/12/12, 1280/32/16, 1536/40/24); the same here (the table's ``arch``) whenever the
  weights have the variant's width and depth; a checkpoint of another size (custom, or the
  tests' small ones) is built from its own ``config``, where the official code would fail.

Release formats:

- DaSheng (Zenodo 11511780 ``dasheng_*.pt``): a torch file ``{'model': state_dict, 'config':
  dict}``; the state dict holds the front-end buffers (``front_end.0.spectrogram.window``,
  ``front_end.0.mel_scale.fb``) and loads unchanged, strictly.
- MiDaShengLM (hub ``mispeech/midashenglm-7b``): a folder with ``config.json`` (encoder numbers
  under ``audio_encoder_config``) and sharded safetensors with an index. Only the
  ``audio_encoder.*`` tensors are read (lazily, by key prefix; the 7B language model is never
  loaded). Key renames: ``init_bn.X`` -> ``init_bn.1.X`` (its BatchNorm is not wrapped in a
  Sequential). Its front-end buffers are not stored (its code makes them non-persistent): they
  are built as its code builds them (periodic hann window, HTK filters), in float32 (the
  bf16 release run in bf16 would round them; we run float32). A BatchNorm
  ``num_batches_tracked`` missing from the file is set to 0 (it never affects inference).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from rmis.errors import RMISError
from rmis.models.ced import (
    SAMPLE_RATE,
    AudioTransformer,
    AudioTransformerConfig,
    AudioTransformerEncoder,
    randomize,
)
from rmis.weights import (
    Pretrained,
    load_strict,
    read_weights,
    register_family,
    write_hub_folder,
)

#: defaults of the official ``AudioTransformerMAE_Encoder`` (DaSheng's release config)
DASHENG_DEFAULTS: dict[str, Any] = {
    "patch_size": (64, 4),
    "patch_stride": (64, 4),
    "embed_dim": 768,
    "depth": 12,
    "num_heads": 8,
    "mlp_ratio": 4.0,
    "qkv_bias": True,
    "init_values": None,
    "target_length": 1008,
    "n_fft": 512,
    "n_mels": 64,
    "hop_size": 160,
    "win_size": 512,
    "f_min": 0.0,
    "f_max": 8000.0,
    "center": True,
    "top_db": 120.0,
}

#: defaults of MiDaShengLM's ``DashengConfig`` (``audio_encoder_config`` in its config.json)
MIDASHENGLM_DEFAULTS: dict[str, Any] = {
    **DASHENG_DEFAULTS,
    "patch_size": (16, 16),
    "patch_stride": (16, 16),
    "num_heads": 12,
    "target_length": 1012,
}

_DASHENG_URL = "https://zenodo.org/records/11511780/files/dasheng_{tag}.pt?download=1"
# variant: (file tag, embed_dim, depth, heads, parameters in M; Table 3: 85 / 630 / 1130)
_DASHENG = {
    "base": ("base", 768, 12, 12, 85.45),
    "0.6B": ("06b", 1280, 32, 16, 630.33),
    "1.2B": ("12b", 1536, 40, 24, 1134.05),
}

_PAPER = (
    "Dinkel et al., Scaling up masked audio encoder learning for general audio "
    "classification, Interspeech 2024"
)
_FRONTEND = (
    "waveform in; in-model mel 512/160 centred, 64 HTK bins 0-8 kHz, dB top_db 120 per "
    "window, BatchNorm over mel bins"
)

DASHENG_TABLE = tuple(
    Pretrained(
        name=f"dasheng-{v.lower()}",
        family="DaSheng",
        variant=v,
        sources=(_DASHENG_URL.format(tag=tag), f"mispeech/dasheng-{v} (Zenodo 11511780)"),
        file_format="torch",
        state_path=("model",),
        config_path=("config",),
        sample_rate=SAMPLE_RATE,
        frontend=_FRONTEND,
        pooling="mean over the last layer's tokens",
        dim=d,
        params_millions=params,
        license="Apache-2.0",
        paper=_PAPER,
        arch={"embed_dim": d, "depth": depth, "num_heads": heads},
    )
    for v, (tag, d, depth, heads, params) in _DASHENG.items()
)

#: MiDaShengLM-7B's audio encoder (DaSheng 0.6B layout with LayerScale, 64 x 4 patches)
MIDASHENGLM_ARCH: dict[str, Any] = {
    "embed_dim": 1280,
    "depth": 32,
    "num_heads": 16,
    "patch_size": [64, 4],
    "patch_stride": [64, 4],
    "target_length": 1008,
    "init_values": 1e-5,
}

MIDASHENGLM_TABLE = (
    Pretrained(
        name="midashenglm-7b",
        family="MiDaShengLM",
        variant="7B",
        sources=("hf://mispeech/midashenglm-7b",),
        file_format="hf-folder",
        prefix="audio_encoder.",
        key_map=((r"^init_bn\.(?!\d)", "init_bn.1."),),
        sample_rate=SAMPLE_RATE,
        frontend=_FRONTEND,
        pooling="mean over the audio encoder's last-layer tokens (before the projector)",
        dim=1280,
        params_millions=630.42,  # the audio encoder only (the 7B LM is not loaded)
        license="Apache-2.0 (weights: see the model card)",
        paper="Xiaomi, MiDashengLM: Efficient audio understanding with general audio "
        "captions (arXiv:2508.03983)",
        arch=MIDASHENGLM_ARCH,
    ),
)


def dasheng_config(
    spec: Pretrained, file_config: Any, state: dict[str, torch.Tensor]
) -> AudioTransformerConfig:
    """The architecture of a DaSheng release: the file's ``config`` dict over the official
    defaults, with ``embed_dim`` / ``depth`` / ``num_heads`` forced to the variant's (as the
    official ``dasheng_base`` / ``dasheng_06B`` / ``dasheng_12B`` force them) whenever the
    weights have the variant's width and depth. A checkpoint of another size (a custom or
    test model) is built from its own config instead."""
    if file_config is not None and not isinstance(file_config, dict):
        raise RMISError(f"{spec.name}: the checkpoint's 'config' is not a dict")
    values = {**DASHENG_DEFAULTS, **(file_config or {})}
    proj = state.get("patch_embed.proj.weight")
    width = int(proj.shape[0]) if proj is not None else None
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    if (width, depth) == (spec.arch["embed_dim"], spec.arch["depth"]):
        values.update(spec.arch)
    return AudioTransformerConfig.from_dict(values)


def midashenglm_config(file_config: Any) -> AudioTransformerConfig:
    """The audio encoder's numbers from MiDaShengLM's ``config.json``
    (``audio_encoder_config``, over its ``DashengConfig`` defaults)."""
    enc = file_config.get("audio_encoder_config") if isinstance(file_config, dict) else None
    if not isinstance(enc, dict):
        raise RMISError(
            "midashenglm-7b: config.json has no 'audio_encoder_config'; give the model's hub "
            "folder (mispeech/midashenglm-7b)"
        )
    if enc.get("sample_rate", SAMPLE_RATE) != SAMPLE_RATE:
        raise RMISError(f"midashenglm-7b: audio encoder rate {enc['sample_rate']} is not 16 kHz")
    cfg = AudioTransformerConfig.from_dict(enc, **MIDASHENGLM_DEFAULTS)
    if cfg.patch_stride[1] != 4:
        # its code cuts the token grid in pieces of target_length // 4, ours by stride
        raise RMISError(f"midashenglm-7b: unsupported patch stride {cfg.patch_stride}")
    return cfg


def build_dasheng(spec: Pretrained, checkpoint: str | None = None) -> AudioTransformerEncoder:
    """Read a DaSheng release ``{'model', 'config'}`` and build its adapter (strict)."""
    source = checkpoint or spec.sources[0]
    weights = read_weights(source, spec)
    model = AudioTransformer(dasheng_config(spec, weights.config, weights.state_dict))
    load_strict(model, weights.state_dict, f"{spec.name} checkpoint {source}")
    return AudioTransformerEncoder(model, weights.sha256, weights.revision)


def build_midashenglm(spec: Pretrained, checkpoint: str | None = None) -> AudioTransformerEncoder:
    """Read MiDaShengLM's audio encoder (``audio_encoder.*`` only) and build its adapter."""
    source = checkpoint or spec.sources[0]
    weights = read_weights(source, spec)
    model = AudioTransformer(midashenglm_config(weights.config))
    state = {**model.default_front_end(), **weights.state_dict}
    state.setdefault("init_bn.1.num_batches_tracked", torch.tensor(0, dtype=torch.long))
    load_strict(model, state, f"{spec.name} checkpoint {source}")
    return AudioTransformerEncoder(model, weights.sha256, weights.revision)


register_family(DASHENG_TABLE, build_dasheng)
register_family(MIDASHENGLM_TABLE, build_midashenglm)


def dasheng_release_config(variant: str, **overrides: Any) -> dict[str, Any]:
    """A ``config`` dict like the one in DaSheng's release files (tests and tools)."""
    tag, d, depth, heads, _ = _DASHENG[variant]
    return {
        "embed_dim": d,
        "depth": depth,
        "num_heads": heads,
        "patch_size": [64, 4],
        "patch_stride": [64, 4],
        "target_length": 1008,
        "n_mels": 64,
        "n_fft": 512,
        "hop_size": 160,
        "win_size": 512,
        "f_min": 0,
        "f_max": 8000,
        "center": True,
        "pooling": "mean",
        **overrides,
    }


def random_dasheng_checkpoint(variant: str, seed: int = 0, **config_overrides: Any) -> dict:
    """``{'model': random state dict, 'config': dict}`` laid out as DaSheng's release files;
    ``config_overrides`` (e.g. a small ``embed_dim``/``depth``/``num_heads``) shape the model."""
    config = dasheng_release_config(variant, **config_overrides)
    model = AudioTransformer(AudioTransformerConfig.from_dict({**DASHENG_DEFAULTS, **config}))
    return {"model": randomize(model, seed), "config": config}


def midashenglm_release(
    folder: str | Path, seed: int = 0, **arch: Any
) -> tuple[Path, dict[str, torch.Tensor]]:
    """Write a random-weight MiDaShengLM hub folder at ``folder``: ``config.json`` (its
    ``audio_encoder_config`` = :data:`MIDASHENGLM_ARCH` updated by ``arch``), two bf16 shards and
    ``model.safetensors.index.json``. Shard 1 holds the audio encoder (``audio_encoder.*``, its
    BatchNorm unwrapped as ``init_bn.*``, no front-end buffers: non-persistent in the release's
    code), the projector and one language-model tensor; shard 2 only language-model tensors.
    The language model (never read by the adapter) is a small stand-in of width 32, not the 7B
    one. Returns ``(folder, the encoder's float32 state dict before the bf16 cast)``."""
    root = Path(folder)
    enc_cfg = {
        **MIDASHENGLM_ARCH,
        "n_mels": 64,
        "n_fft": 512,
        "hop_length": 160,
        "win_length": 512,
        "f_min": 0.0,
        "f_max": 8000.0,
        "center": True,
        "sample_rate": SAMPLE_RATE,
        "qkv_bias": True,
        "mlp_ratio": 4.0,
        "outputdim": 527,
        **arch,
    }
    lm = 32  # stand-in language-model width
    config = {
        "architectures": ["MiDashengLMForConditionalGeneration"],
        "model_type": "midashenglm",
        "audio_encoder_config": enc_cfg,
        "subsample_factor": 5,
        "torch_dtype": "bfloat16",
        "text_config": {"hidden_size": lm, "model_type": "qwen2_5_omni_text"},
    }
    model = AudioTransformer(AudioTransformerConfig.from_dict(enc_cfg, **MIDASHENGLM_DEFAULTS))
    state = randomize(model, seed)
    audio = {}
    for k, v in state.items():
        if k.startswith("front_end."):
            continue
        audio["audio_encoder." + k.replace("init_bn.1.", "init_bn.")] = (
            v if k.endswith("num_batches_tracked") else v.to(torch.bfloat16)
        )
    g = torch.Generator().manual_seed(seed)
    d = model.cfg.embed_dim
    shard1 = {
        **audio,
        "audio_projector.net.0.weight": torch.randn(lm, d * 5, generator=g).bfloat16(),
        "audio_projector.net.2.weight": torch.randn(lm, lm, generator=g).bfloat16(),
        "decoder.model.embed_tokens.weight": torch.randn(50, lm, generator=g).bfloat16(),
    }
    shard2 = {
        "decoder.lm_head.weight": torch.randn(50, lm, generator=g).bfloat16(),
        "decoder.model.norm.weight": torch.ones(lm).bfloat16(),
    }
    return write_hub_folder(root, config, [shard1, shard2]), state


def random_checkpoint(name: str, path: str | Path, seed: int = 0, **arch: Any) -> Path:
    """Write a random-weight release of ``name`` at ``path``; returns the path to pass as
    ``--checkpoint``. ``dasheng-*``: the Zenodo file ``{'model', 'config'}``
    (:func:`random_dasheng_checkpoint`; ``arch`` overrides ``config`` entries such as
    ``embed_dim`` / ``depth`` / ``num_heads``); ``midashenglm-7b``: the hub folder
    (:func:`midashenglm_release`; ``arch`` overrides ``audio_encoder_config``)."""
    if name == "midashenglm-7b":
        return midashenglm_release(path, seed, **arch)[0]
    variant = next((s.variant for s in DASHENG_TABLE if s.name == name), None)
    if variant is None:
        known = [s.name for s in (*DASHENG_TABLE, *MIDASHENGLM_TABLE)]
        raise RMISError(f"no DaSheng/MiDaShengLM variant {name!r} (known: {known})")
    torch.save(random_dasheng_checkpoint(variant, seed, **arch), path)
    return Path(path)
