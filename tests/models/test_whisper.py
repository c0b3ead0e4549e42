"""Whisper encoders: tiny random configurations saved in the real hub layouts
(``WhisperForConditionalGeneration``: ``model.encoder.*`` + decoder, one file; ``WhisperModel``:
``encoder.*``, sharded + index), loaded through ``load_encoder``, compared with transformers'
own loading + ``WhisperFeatureExtractor`` (same features, same pooling), the
``WhisperEncoder.from_pretrained`` trap, ``rmis check-model`` and ``rmis eval``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from rmis import models
from rmis.cli import app
from rmis.encoders import get_encoder_info, load_encoder
from rmis.errors import RMISError
from rmis.models.hf_audio import meta_params
from rmis.models.whisper import ARCH, TINY_ARCH, random_checkpoint
from rmis.weights import write_hub_folder

transformers = pytest.importorskip("transformers")
from transformers import (  # noqa: E402
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperModel,
)
from transformers.models.whisper.modeling_whisper import WhisperEncoder  # noqa: E402

TINY = {k: v for k, v in TINY_ARCH.items() if k != "encoder_layers"}
DIMS = {"tiny": 384, "base": 512, "small": 768, "medium": 1024, "large-v3": 1280}


def tiny_config(**kw) -> WhisperConfig:
    cfg = WhisperConfig(**{**ARCH["tiny"], **TINY_ARCH, **kw})
    cfg.architectures = ["WhisperForConditionalGeneration"]
    return cfg


def save_hub(folder: Path, state, config, mels: int) -> Path:
    fe = WhisperFeatureExtractor(feature_size=mels)
    return write_hub_folder(folder, config, state, preprocessor=fe)


def full_checkpoint(folder: Path, seed: int = 0, shards: int = 1, name="whisper-tiny", **kw):
    """The official layout (``model.encoder.*`` + ``model.decoder.*``), tiny."""
    return random_checkpoint(name, folder, seed=seed, shards=shards, **{**TINY_ARCH, **kw})


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    return full_checkpoint(tmp_path_factory.mktemp("whisper") / "whisper-tiny", seed=1)


def noise(n: int, seed: int, scale: float = 0.1) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=n) * scale).astype(np.float32)


def windows() -> np.ndarray:
    last = np.zeros(160_000, np.float32)  # a 3-s file's last window, zero-padded to 10 s
    last[:48_000] = noise(48_000, 2, 0.3)
    return np.stack([noise(160_000, 1), last])


def reference(folder: Path, waves: np.ndarray, frames: int | None) -> torch.Tensor:
    """transformers end to end: its own loading, its feature extractor, the encoder's last
    hidden state averaged over the first ``frames`` frames (None: all)."""
    fe = WhisperFeatureExtractor.from_pretrained(folder)
    feats = fe(list(waves), sampling_rate=16_000, return_tensors="pt").input_features
    model = WhisperForConditionalGeneration.from_pretrained(folder).eval()
    with torch.inference_mode():
        hidden = model.get_encoder()(feats).last_hidden_state
    return hidden[:, :frames].mean(1)


@pytest.mark.parametrize("variant", list(DIMS))
def test_metadata_and_params_from_real_configs(variant) -> None:
    info = get_encoder_info(f"whisper-{variant}")
    assert (info.family, info.variant, info.dim, info.sample_rate) == (
        "Whisper",
        variant,
        DIMS[variant],
        16_000,
    )
    assert info.checkpoints[0] == f"hf://openai/whisper-{variant}"
    assert info.license == "MIT"
    cfg = WhisperConfig(**ARCH[variant])
    n = meta_params(lambda: WhisperForConditionalGeneration(cfg))
    assert info.params_millions == pytest.approx(n / 1e6, abs=0.01)
    assert cfg.d_model == DIMS[variant]
    assert cfg.num_mel_bins == (128 if variant == "large-v3" else 80)


def test_matches_transformers_valid_and_all_frames(release) -> None:
    waves = windows()
    x = torch.from_numpy(waves)
    enc = load_encoder("whisper-tiny", checkpoint=str(release))
    with torch.inference_mode():
        got = enc.embed(x, 16_000)
    ref = reference(release, waves, 500)  # 10 s of 30: the first 1000 mel / 500 encoder frames
    assert got.shape == (2, 32) and got.dtype == torch.float32
    assert torch.allclose(got, ref, atol=1e-5, rtol=0), (got - ref).abs().max()
    everything = load_encoder("whisper-tiny", checkpoint=str(release), pool="all")
    with torch.inference_mode():
        got_all = everything.embed(x, 16_000)
    ref_all = reference(release, waves, None)
    assert torch.allclose(got_all, ref_all, atol=1e-5, rtol=0)
    assert not torch.allclose(got_all, got, atol=1e-3)
    # a 1-s window: ceil(16000 / 160) = 100 mel frames -> 50 encoder frames
    short = waves[:, :16_000]
    with torch.inference_mode():
        got_short = enc.embed(torch.from_numpy(short), 16_000)
    assert enc.encoder_frames(16_000) == 50 and enc.encoder_frames(160_000) == 500
    assert torch.allclose(got_short, reference(release, short, 50), atol=1e-5, rtol=0)


def test_features_match_the_extractor(release) -> None:
    waves = windows()
    enc = load_encoder("whisper-tiny", checkpoint=str(release))
    fe = WhisperFeatureExtractor.from_pretrained(release)
    out = fe(list(waves), sampling_rate=16_000, return_tensors="pt", return_attention_mask=True)
    got = enc.features(torch.from_numpy(waves))
    assert got.shape == (2, 80, 3000)
    assert (got - out.input_features).abs().max() < 1e-5
    assert int(out.attention_mask[0].sum()) == enc.features.valid_frames(160_000) == 1000


def test_strict_loading_and_the_from_pretrained_trap(tmp_path, release) -> None:
    enc = load_encoder("whisper-tiny", checkpoint=str(release))
    from safetensors import safe_open

    with safe_open(str(release / "model.safetensors"), "pt") as fh:
        stored = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    own = enc.model.state_dict()
    assert set(own) == {k[len("model.encoder.") :] for k in stored if k.startswith("model.enc")}
    for k, v in own.items():
        assert torch.equal(v, stored["model.encoder." + k]), k
    # the trap this adapter avoids: WhisperEncoder.from_pretrained on the full checkpoint
    # matches no key and silently keeps random weights
    trapped = WhisperEncoder.from_pretrained(release)
    assert not torch.equal(trapped.conv1.weight, stored["model.encoder.conv1.weight"])
    # a missing encoder tensor is an error naming it, never a random weight
    cut = dict(stored)
    del cut["model.encoder.layers.1.fc2.bias"]
    folder = save_hub(tmp_path / "cut", cut, tiny_config(), 80)
    with pytest.raises(RMISError, match=r"missing keys \['layers.1.fc2.bias'\]"):
        load_encoder("whisper-tiny", checkpoint=str(folder))
    # a decoder-only file: no tensor under model.encoder. / encoder.
    dec = {k: v for k, v in stored.items() if not k.startswith("model.encoder.")}
    folder = save_hub(tmp_path / "dec", dec, tiny_config(), 80)
    with pytest.raises(RMISError, match="no tensor"):
        load_encoder("whisper-tiny", checkpoint=str(folder))
    with pytest.raises(RMISError, match="pool"):
        load_encoder("whisper-tiny", checkpoint=str(release), pool="cls")
    with pytest.raises(RMISError, match="longer than"):
        enc.embed(torch.zeros(1, 16_000 * 31), 16_000)


def test_whisper_model_layout_sharded(tmp_path, release) -> None:
    """A ``WhisperModel`` checkpoint (``encoder.*``, ``decoder.*``), sharded with an index:
    same encoder, same embedding as the full layout; shards without encoder tensors unread."""
    full = WhisperForConditionalGeneration.from_pretrained(release)
    bare = WhisperModel(full.config)
    bare.load_state_dict(full.model.state_dict())
    cfg = bare.config
    cfg.architectures = ["WhisperModel"]
    folder = write_hub_folder(
        tmp_path / "bare", cfg, bare.state_dict(), shards=3, preprocessor=WhisperFeatureExtractor()
    )
    assert (folder / "model.safetensors.index.json").is_file()
    a = load_encoder("whisper-tiny", checkpoint=str(folder))
    b = load_encoder("whisper-tiny", checkpoint=str(release))
    x = torch.from_numpy(windows())
    with torch.inference_mode():
        assert torch.equal(a.embed(x, 16_000), b.embed(x, 16_000))
    assert a.weights_sha256 != b.weights_sha256 and len(a.weights_sha256) == 64


def test_large_v3_128_mels_and_mismatch(tmp_path) -> None:
    folder = full_checkpoint(tmp_path / "v3", seed=4, shards=2, name="whisper-large-v3")
    enc = load_encoder("whisper-large-v3", checkpoint=str(folder))
    waves = windows()
    with torch.inference_mode():
        got = enc.embed(torch.from_numpy(waves), 16_000)
    assert enc.features.filters.shape == (201, 128)
    assert torch.allclose(got, reference(folder, waves, 500), atol=1e-5, rtol=0)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(folder)  # wrong preprocessor
    with pytest.raises(RMISError, match="128"):
        load_encoder("whisper-large-v3", checkpoint=str(folder))


def test_check_model_cli_every_name(tmp_path, release) -> None:
    r = CliRunner().invoke(
        app, ["check-model", "whisper-tiny", "--checkpoint", str(release)], env={"COLUMNS": "200"}
    )
    assert r.exit_code == 0, r.output
    for name in ("whisper-base", "whisper-small", "whisper-medium"):
        folder = models.random_checkpoint(name, tmp_path / name, encoder_layers=1, **TINY)
        enc = load_encoder(name, checkpoint=str(folder))
        with torch.inference_mode():
            assert enc.embed(torch.zeros(1, 16_000), 16_000).shape == (1, 32)


def test_eval_whisper_tiny_on_synth(tmp_path, synth_cache) -> None:
    release = full_checkpoint(tmp_path / "one-layer", seed=5, encoder_layers=1)
    args = [
        "eval",
        "whisper-tiny",
        "--suite",
        "synth",
        "--datasets",
        "synth_fd16k",
        "--checkpoint",
        str(release),
        "--results-dir",
        str(tmp_path / "res"),
        "--cache-dir",
        str(synth_cache),
        "--runs",
        "2",
        "--workers",
        "0",
    ]
    r = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    path = next((tmp_path / "res" / "whisper-tiny").rglob("synth_fd16k.json"))
    res = json.loads(path.read_text())
    assert res["dim"] == 32
    assert (res["model"]["family"], res["model"]["variant"]) == ("Whisper", "tiny")
    assert 0 <= res["score"] <= 100 and len(res["runs"]) == 2
