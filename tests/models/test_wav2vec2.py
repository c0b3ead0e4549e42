"""Wav2Vec 2.0: tiny random configurations saved in the real hub layouts (a
``Wav2Vec2ForCTC`` file like base-960h: group norm, no attention mask, one ``model.safetensors``;
a ``Wav2Vec2ForPreTraining`` file like XLS-R: layer norm, attention mask, sharded + index; both
with the positional conv's legacy ``weight_g`` / ``weight_v``), loaded through
``load_encoder``, compared with transformers' own loading + ``Wav2Vec2FeatureExtractor`` (same
features, same pooling), strictness, ``rmis check-model``."""

from __future__ import annotations

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
from rmis.models.wav2vec2 import ARCH, TINY_ARCH, random_checkpoint
from rmis.weights import write_hub_folder

transformers = pytest.importorskip("transformers")
from transformers import (  # noqa: E402
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2ForCTC,
    Wav2Vec2ForPreTraining,
)

NAMES = {
    "base": "wav2vec2-base",
    "large": "wav2vec2-large",
    "1B": "wav2vec2-1b",
    "2B": "wav2vec2-2b",
}
DIMS = {"base": 768, "large": 1024, "1B": 1280, "2B": 1920}


def save_hub(folder: Path, state, config: Wav2Vec2Config, mask: bool) -> Path:
    fe = Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=mask)
    return write_hub_folder(folder, config, state, preprocessor=fe)


def release(folder: Path, kind: str, seed: int = 0, shards: int = 1) -> Path:
    """``kind`` "ctc" (base-960h: Wav2Vec2ForCTC, group norm) or "xlsr" (XLS-R:
    Wav2Vec2ForPreTraining, layer norm), tiny."""
    name = "wav2vec2-base" if kind == "ctc" else "wav2vec2-large"
    return random_checkpoint(name, folder, seed=seed, shards=shards, **TINY_ARCH)


@pytest.fixture(scope="module")
def ctc(tmp_path_factory) -> Path:
    return release(tmp_path_factory.mktemp("w2v") / "base-960h", "ctc", seed=1)


@pytest.fixture(scope="module")
def xlsr(tmp_path_factory) -> Path:
    return release(tmp_path_factory.mktemp("w2v") / "xls-r", "xlsr", seed=2, shards=3)


def noise(n: int, seed: int, scale: float = 0.1) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=n) * scale).astype(np.float32)


def windows() -> np.ndarray:
    last = np.zeros(160_000, np.float32)  # a 3-s file's last window, zero-padded to 10 s
    last[:48_000] = noise(48_000, 4, 0.3)
    return np.stack([noise(160_000, 3), last])


def reference(folder: Path, cls, waves: np.ndarray) -> torch.Tensor:
    """transformers end to end: its loading (legacy weight-norm names included), its feature
    extractor (normalisation, attention mask if the checkpoint takes one), mean of the last
    hidden state."""
    fe = Wav2Vec2FeatureExtractor.from_pretrained(folder)
    inputs = fe(list(waves), sampling_rate=16_000, return_tensors="pt")
    model = cls.from_pretrained(folder).eval()
    with torch.inference_mode():
        hidden = model.wav2vec2(**inputs).last_hidden_state
    return hidden.mean(1)


@pytest.mark.parametrize("variant", list(DIMS))
def test_metadata_and_params_from_real_configs(variant) -> None:
    info = get_encoder_info(NAMES[variant])
    assert (info.family, info.variant, info.dim, info.sample_rate) == (
        "Wav2Vec 2.0",
        variant,
        DIMS[variant],
        16_000,
    )
    hub = "wav2vec2-base-960h" if variant == "base" else f"wav2vec2-xls-r-{variant.lower()}"
    hub = hub.replace("xls-r-large", "xls-r-300m")
    assert info.checkpoints[0] == f"hf://facebook/{hub}"
    cfg = Wav2Vec2Config(**ARCH[variant])
    cls = Wav2Vec2ForCTC if variant == "base" else Wav2Vec2ForPreTraining
    assert cfg.architectures == [cls.__name__]
    n = meta_params(lambda: cls(cfg))
    assert info.params_millions == pytest.approx(n / 1e6, abs=0.01)
    assert cfg.hidden_size == DIMS[variant]


@pytest.mark.parametrize("kind", ["ctc", "xlsr"])
def test_matches_transformers(kind, ctc, xlsr) -> None:
    folder, name, cls = (
        (ctc, "wav2vec2-base", Wav2Vec2ForCTC)
        if kind == "ctc"
        else (xlsr, "wav2vec2-large", Wav2Vec2ForPreTraining)
    )
    waves = windows()
    enc = load_encoder(name, checkpoint=str(folder))
    assert enc.attention_mask is (kind == "xlsr")  # the preprocessor's return_attention_mask
    with torch.inference_mode():
        got = enc.embed(torch.from_numpy(waves), 16_000)
        every = load_encoder(name, checkpoint=str(folder), pool="all")
        assert torch.equal(every.embed(torch.from_numpy(waves), 16_000), got)
    ref = reference(folder, cls, waves)
    assert got.shape == (2, 32) and got.dtype == torch.float32
    assert torch.allclose(got, ref, atol=1e-5, rtol=0), (got - ref).abs().max()


def test_strict_loading_heads_dropped_legacy_names(tmp_path, ctc, xlsr) -> None:
    from safetensors import safe_open

    enc = load_encoder("wav2vec2-large", checkpoint=str(xlsr))
    stored = {}
    for f in sorted(xlsr.glob("*.safetensors")):
        with safe_open(str(f), "pt") as fh:
            stored.update({k: fh.get_tensor(k) for k in fh.keys()})  # noqa: SIM118
    assert any(k.startswith(("quantizer.", "project_q.", "project_hid.")) for k in stored)
    own = enc.model.state_dict()
    conv = "encoder.pos_conv_embed.conv."
    assert conv + "parametrizations.weight.original0" in own
    for k, v in own.items():
        src = k.replace("parametrizations.weight.original0", "weight_g")
        src = src.replace("parametrizations.weight.original1", "weight_v")
        assert torch.equal(v, stored["wav2vec2." + src]), k
    assert len(own) == sum(k.startswith("wav2vec2.") for k in stored)
    # the transformers 5 names (a checkpoint re-saved with parametrizations) load as well
    with safe_open(str(ctc / "model.safetensors"), "pt") as fh:
        state = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    modern = {
        k.replace("weight_g", "parametrizations.weight.original0").replace(
            "weight_v", "parametrizations.weight.original1"
        ): v
        for k, v in state.items()
    }
    cfg = Wav2Vec2Config.from_pretrained(ctc)
    folder = save_hub(tmp_path / "modern", modern, cfg, mask=False)
    x = torch.from_numpy(windows())
    with torch.inference_mode():
        a = load_encoder("wav2vec2-base", checkpoint=str(folder)).embed(x, 16_000)
        b = load_encoder("wav2vec2-base", checkpoint=str(ctc)).embed(x, 16_000)
    assert torch.equal(a, b)
    cut = dict(state)
    del cut["wav2vec2.encoder.layers.1.final_layer_norm.bias"]
    folder = save_hub(tmp_path / "cut", cut, cfg, mask=False)
    missing = r"missing keys \['encoder.layers.1.final_layer_norm.bias'\]"
    with pytest.raises(RMISError, match=missing):
        load_encoder("wav2vec2-base", checkpoint=str(folder))
    heads = {k: v for k, v in state.items() if not k.startswith("wav2vec2.")}
    folder = save_hub(tmp_path / "heads", heads, cfg, mask=False)
    with pytest.raises(RMISError, match="no tensor"):
        load_encoder("wav2vec2-base", checkpoint=str(folder))
    with pytest.raises(RMISError, match="pool"):
        load_encoder("wav2vec2-base", checkpoint=str(ctc), pool="cls")
    with pytest.raises(RMISError, match="16000"):
        load_encoder("wav2vec2-base", checkpoint=str(ctc)).embed(x, 8_000)


def test_check_model_cli_every_name(tmp_path, ctc, xlsr) -> None:
    runner = CliRunner()
    for name, folder in (("wav2vec2-base", ctc), ("wav2vec2-large", xlsr)):
        r = runner.invoke(
            app, ["check-model", name, "--checkpoint", str(folder)], env={"COLUMNS": "200"}
        )
        assert r.exit_code == 0, r.output
    for name in ("wav2vec2-1b", "wav2vec2-2b"):  # the architecture comes from config.json
        folder = models.random_checkpoint(name, tmp_path / name, **TINY_ARCH)
        enc = load_encoder(name, checkpoint=str(folder))
        assert enc.info.name == name and enc.attention_mask
        with torch.inference_mode():
            assert enc.embed(torch.zeros(2, 16_000), 16_000).shape == (2, 32)
