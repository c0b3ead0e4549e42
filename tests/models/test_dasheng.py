"""DaSheng and MiDaShengLM: the release formats (``{'model', 'config'}``; a sharded hub folder
whose language-model tensors are never read) loaded strictly through the real path; the whole
window against a float64 numpy reference of the official equations; the per-window dB floor
(batch independence, unlike the official batch-wide one); full-size shapes on the meta device;
the CLI for every name."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from _audio_transformer_ref import np_embedding, np_hann_periodic, np_htk_filters
from typer.testing import CliRunner

import rmis.weights
from rmis.cli import app
from rmis.encoders import get_encoder_info, load_encoder
from rmis.errors import RMISError
from rmis.models.ced import AudioTransformer, AudioTransformerConfig
from rmis.models.dasheng import (
    DASHENG_DEFAULTS,
    DASHENG_TABLE,
    MIDASHENGLM_ARCH,
    MIDASHENGLM_DEFAULTS,
    dasheng_config,
    midashenglm_release,
    random_dasheng_checkpoint,
)

FULL = {"base": (768, 12, 12, 85), "0.6B": (1280, 32, 16, 630), "1.2B": (1536, 40, 24, 1130)}
SMALL = {"embed_dim": 64, "depth": 2, "num_heads": 4}


def noise(n: int, seed: int = 0, scale: float = 0.1) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=n) * scale).astype(np.float32)


def encoder_keys(depth: int, layer_scale: bool) -> set[str]:
    """The official AudioTransformerMAE_Encoder's state-dict keys (mean pooling)."""
    keys = {
        "front_end.0.spectrogram.window",
        "front_end.0.mel_scale.fb",
        "time_pos_embed",
        "freq_pos_embed",
        "patch_embed.proj.weight",
        "patch_embed.proj.bias",
        "norm.weight",
        "norm.bias",
    }
    keys |= {
        f"init_bn.1.{n}"
        for n in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    }
    for b in range(depth):
        for m in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"):
            keys |= {f"blocks.{b}.{m}.weight", f"blocks.{b}.{m}.bias"}
        if layer_scale:
            keys |= {f"blocks.{b}.ls1.gamma", f"blocks.{b}.ls2.gamma"}
    return keys


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Small release-format files of the three DaSheng names (one per variant)."""
    root = tmp_path_factory.mktemp("dasheng")
    out = {}
    for i, (variant, tag) in enumerate((("base", "base"), ("0.6B", "06b"), ("1.2B", "12b"))):
        out[variant] = root / f"dasheng_{tag}.pt"
        torch.save(random_dasheng_checkpoint(variant, seed=i, **SMALL), out[variant])
    return out


@pytest.mark.parametrize("variant", list(FULL))
def test_full_size_shapes_params_and_metadata(variant) -> None:
    d, depth, heads, paper = FULL[variant]
    spec = next(s for s in DASHENG_TABLE if s.variant == variant)
    with torch.device("meta"):
        model = AudioTransformer(
            AudioTransformerConfig.from_dict(
                {**DASHENG_DEFAULTS, "target_length": 1008, **spec.arch}
            )
        )
    state = model.state_dict()
    assert set(state) == encoder_keys(depth, False)
    assert state["patch_embed.proj.weight"].shape == (d, 1, 64, 4)
    assert state["time_pos_embed"].shape == (1, d, 1, 252)
    assert state["freq_pos_embed"].shape == (1, d, 1, 1)
    assert model.blocks[0].attn.heads == heads
    n = sum(p.numel() for p in model.parameters()) / 1e6
    info = get_encoder_info(spec.name)
    assert (info.family, info.variant, info.dim) == ("DaSheng", variant, d)
    assert info.params_millions == pytest.approx(n, abs=0.01)
    assert info.params_millions == pytest.approx(paper, rel=0.01)


def test_midashenglm_full_size_and_metadata() -> None:
    with torch.device("meta"):
        model = AudioTransformer(
            AudioTransformerConfig.from_dict(MIDASHENGLM_ARCH, **MIDASHENGLM_DEFAULTS)
        )
    assert set(model.state_dict()) == encoder_keys(32, True)
    assert model.state_dict()["patch_embed.proj.weight"].shape == (1280, 1, 64, 4)
    info = get_encoder_info("midashenglm-7b")
    assert (info.family, info.variant, info.dim) == ("MiDaShengLM", "7B", 1280)
    n = sum(p.numel() for p in model.parameters()) / 1e6
    assert info.params_millions == pytest.approx(n, abs=0.01)


def test_variant_numbers_are_forced_as_the_official_loader_does() -> None:
    spec = next(s for s in DASHENG_TABLE if s.variant == "0.6B")
    with torch.device("meta"):
        state = {"patch_embed.proj.weight": torch.empty(1280, 1, 64, 4)}
        state |= {f"blocks.{b}.norm1.weight": torch.empty(1280) for b in range(32)}
    # a release config holding the training defaults (1536/24/24) or nothing: the weights
    # have the variant's width and depth, so 1280/32/16 wins, as in the official code
    for config in ({"embed_dim": 1536, "depth": 24, "num_heads": 24}, {}, None):
        cfg = dasheng_config(spec, config, state)
        assert (cfg.embed_dim, cfg.depth, cfg.num_heads) == (1280, 32, 16)
        assert cfg.patch_size == (64, 4) and cfg.target_length == 1008
    with pytest.raises(RMISError, match="not a dict"):
        dasheng_config(spec, ["x"], state)


def test_release_format_and_strict_load(files, tmp_path) -> None:
    obj = torch.load(files["base"], weights_only=True)
    assert set(obj) == {"model", "config"} and isinstance(obj["config"], dict)
    assert set(obj["model"]) == encoder_keys(2, False)
    for variant, path in files.items():
        enc = load_encoder(f"dasheng-{variant.lower()}", checkpoint=str(path))
        assert enc.model.cfg.embed_dim == 64 and enc.model.cfg.patch_size == (64, 4)
        assert len(enc.weights_sha256) == 64
    obj["model"].pop("front_end.0.mel_scale.fb")
    torch.save(obj, tmp_path / "cut.pt")
    with pytest.raises(RMISError, match="front_end.0.mel_scale.fb"):
        load_encoder("dasheng-base", checkpoint=str(tmp_path / "cut.pt"))
    torch.save(obj["model"], tmp_path / "bare.pt")
    with pytest.raises(RMISError, match="no model entry"):
        load_encoder("dasheng-base", checkpoint=str(tmp_path / "bare.pt"))


def test_window_matches_float64_reference(files) -> None:
    enc = load_encoder("dasheng-base", checkpoint=str(files["base"]))
    state = torch.load(files["base"], weights_only=True)["model"]
    x = noise(160_000, 4)
    with torch.inference_mode():
        got = enc.embed(torch.from_numpy(x)[None], 16_000)[0].double().numpy()
    ref = np_embedding(x, state, heads=4, patch=(64, 4))
    assert got.shape == (64,)
    assert np.abs(got - ref).max() / np.abs(ref).max() < 2e-4


def test_db_floor_per_window_not_per_batch(files) -> None:
    """The official AmplitudeToDB floors the whole batch at its loudest window - 120 dB; here
    each window has its own floor, so a window's embedding never depends on its batch."""
    enc = load_encoder("dasheng-base", checkpoint=str(files["base"]))
    quiet = noise(32_000, 5, scale=1.0)
    quiet[16_000:] = 0.0  # > 120 dB of range in this window alone
    x = torch.from_numpy(np.stack([noise(32_000, 6, scale=1000.0), quiet]))
    with torch.inference_mode():
        both = enc.embed(x, 16_000)
        alone = enc.embed(x[1:], 16_000)
        assert torch.allclose(both[1], alone[0], atol=1e-5)
        # the official batch-wide floor changes the quiet window's features and embedding
        m = enc.model
        mel = 10 * torch.log10(torch.clamp(_power_mel(m, x), min=1e-10))
        batch_floor = torch.maximum(mel, mel.amax() - 120)
        official = m.tokens(batch_floor).mean(1)
        assert (official[1] - alone[0]).abs().max() > 1e-3


def _power_mel(m: AudioTransformer, x: torch.Tensor) -> torch.Tensor:
    spec = (
        torch.stft(
            x, 512, 160, window=m.front_end[0].spectrogram.window, center=True, return_complex=True
        ).abs()
        ** 2
    )
    return (spec.transpose(1, 2) @ m.front_end[0].mel_scale.fb).transpose(1, 2)


@pytest.fixture(scope="module")
def mdlm(tmp_path_factory):
    """A MiDaShengLM hub folder (:func:`midashenglm_release`): config.json, two bf16 shards +
    index; shard 2 holds only the language model, shard 1 the audio encoder (its BatchNorm
    unwrapped, no front-end buffers), the projector and one LM tensor."""
    root = tmp_path_factory.mktemp("midashenglm-7b")
    return midashenglm_release(root, seed=0, init_values=0.1, **SMALL)


def test_midashenglm_reads_only_the_audio_encoder(mdlm, monkeypatch) -> None:
    folder, state = mdlm
    opened, read = [], []
    real = rmis.weights._safe_open

    class Spy:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            self.inner = self.fh.__enter__()
            return self

        def __exit__(self, *a):
            return self.fh.__exit__(*a)

        def keys(self):
            return self.inner.keys()

        def metadata(self):
            return self.inner.metadata()

        def get_tensor(self, k):
            read.append(k)
            return self.inner.get_tensor(k)

    def spy(path, spec):
        opened.append(path.name)
        return Spy(real(path, spec))

    monkeypatch.setattr(rmis.weights, "_safe_open", spy)
    enc = load_encoder("midashenglm-7b", checkpoint=str(folder))
    assert "model-00002-of-00002.safetensors" not in opened
    assert read and all(k.startswith("audio_encoder.") for k in read)
    assert len(enc.weights_sha256) == 64
    own = enc.model.state_dict()
    assert torch.equal(
        own["init_bn.1.running_var"], state["init_bn.1.running_var"].bfloat16().float()
    )
    assert own["blocks.1.ls2.gamma"].dtype == torch.float32
    # the front-end buffers are built as its code builds them
    assert (
        np.abs(
            own["front_end.0.mel_scale.fb"].numpy() - np_htk_filters(257, 16_000, 64, 0.0, 8000.0)
        ).max()
        < 1e-6
    )
    assert (
        np.abs(own["front_end.0.spectrogram.window"].numpy() - np_hann_periodic(512)).max() < 1e-6
    )


def test_midashenglm_window_matches_float64_reference(mdlm) -> None:
    folder, _ = mdlm
    enc = load_encoder("midashenglm-7b", checkpoint=str(folder))
    state = enc.model.state_dict()  # the bf16 release values, in float32
    x = noise(160_000, 7)
    with torch.inference_mode():
        got = enc.embed(torch.from_numpy(x)[None], 16_000)[0].double().numpy()
    ref = np_embedding(x, state, heads=4, patch=(64, 4))
    assert got.shape == (64,)
    assert np.abs(got - ref).max() / np.abs(ref).max() < 2e-4


def test_midashenglm_needs_its_config(tmp_path, mdlm) -> None:
    folder, _ = mdlm
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in folder.iterdir():
        (bad / f.name).symlink_to(f)
    (bad / "config.json").unlink()
    (bad / "config.json").write_text(json.dumps({"model_type": "midashenglm"}))
    with pytest.raises(RMISError, match="audio_encoder_config"):
        load_encoder("midashenglm-7b", checkpoint=str(bad))


def test_check_model_and_embed_cli_for_every_name(tmp_path, files, mdlm) -> None:
    runner = CliRunner()
    r = runner.invoke(
        app,
        ["check-model", "dasheng-base", "--checkpoint", str(files["base"])],
        env={"COLUMNS": "200"},
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        app, ["check-model", "midashenglm-7b", "--checkpoint", str(mdlm[0])], env={"COLUMNS": "200"}
    )
    assert r.exit_code == 0, r.output
    wav = tmp_path / "a.wav"
    sf.write(wav, noise(16_000 * 2, 8), 16_000, subtype="FLOAT")
    sources = {f"dasheng-{v.lower()}": files[v] for v in files} | {"midashenglm-7b": mdlm[0]}
    for name, source in sources.items():
        out = tmp_path / f"{name}.npz"
        r = runner.invoke(
            app,
            ["embed", name, str(wav), "--checkpoint", str(source), "--out", str(out)],
            env={"COLUMNS": "200"},
        )
        assert r.exit_code == 0, (name, r.output)
        vec = next(iter(np.load(out).values()))
        assert vec.shape == (64,) and np.isfinite(vec).all()
