"""CED: the release's plain state dict (front-end buffers, init_bn, outputlayer) loaded strictly
through the real path; front-end, BatchNorm, transformer and pooling against a float64 numpy
reference of the official equations; full-size shapes on the meta device; the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from _audio_transformer_ref import np_embedding, np_hann_periodic, np_htk_filters, np_log_mel
from typer.testing import CliRunner

from rmis.cli import app
from rmis.encoders import get_encoder_info, load_encoder
from rmis.errors import RMISError
from rmis.models.ced import (
    AudioTransformer,
    AudioTransformerConfig,
    ced_arch,
    random_ced_state,
)

DIMS = {"tiny": 192, "mini": 256, "small": 384, "base": 768}
HEADS = {"tiny": 3, "mini": 4, "small": 6, "base": 12}
PAPER_PARAMS = {"tiny": 5.5, "mini": 9.6, "small": 22, "base": 86}  # Table 3, millions


def noise(n: int, seed: int = 0, scale: float = 0.1) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=n) * scale).astype(np.float32)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A ced-tiny release file cut to two blocks: the whole state dict as torch.save writes it."""
    path = tmp_path_factory.mktemp("ced") / "audiotransformer_tiny_mAP_4814.pt"
    torch.save(random_ced_state("tiny", seed=3, depth=2), path)
    return path


def official_keys(d: int, depth: int) -> set[str]:
    """The key set of the official AudioTransformer (mean pooling) + its AudioSet head."""
    keys = {
        "front_end.0.spectrogram.window",
        "front_end.0.mel_scale.fb",
        "time_pos_embed",
        "freq_pos_embed",
        "patch_embed.proj.weight",
        "patch_embed.proj.bias",
        "norm.weight",
        "norm.bias",
        "outputlayer.0.weight",
        "outputlayer.0.bias",
        "outputlayer.1.weight",
        "outputlayer.1.bias",
    }
    keys |= {
        f"init_bn.1.{n}"
        for n in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    }
    for b in range(depth):
        for m in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"):
            keys |= {f"blocks.{b}.{m}.weight", f"blocks.{b}.{m}.bias"}
    return keys


@pytest.mark.parametrize("variant", list(DIMS))
def test_full_size_layout_shapes_params_and_metadata(variant) -> None:
    d = DIMS[variant]
    with torch.device("meta"):
        model = AudioTransformer(AudioTransformerConfig.from_dict(ced_arch(variant)))
    state = model.state_dict()
    head = {
        "outputlayer.0.weight",
        "outputlayer.0.bias",
        "outputlayer.1.weight",
        "outputlayer.1.bias",
    }
    assert set(state) | head == official_keys(d, 12)
    assert state["time_pos_embed"].shape == (1, d, 1, 63)  # 1012 // 16
    assert state["freq_pos_embed"].shape == (1, d, 4, 1)
    assert state["patch_embed.proj.weight"].shape == (d, 1, 16, 16)
    assert state["front_end.0.mel_scale.fb"].shape == (257, 64)
    assert state["front_end.0.spectrogram.window"].shape == (512,)
    assert state["init_bn.1.weight"].shape == (64,)
    assert model.blocks[0].attn.heads == HEADS[variant]
    n = sum(p.numel() for p in model.parameters()) + 2 * d + 527 * d + 527  # + AudioSet head
    info = get_encoder_info(f"ced-{variant}")
    assert (info.family, info.variant, info.dim, info.sample_rate) == ("CED", variant, d, 16_000)
    assert info.params_millions == pytest.approx(n / 1e6, abs=0.01)
    assert info.params_millions == pytest.approx(PAPER_PARAMS[variant], rel=0.03)
    assert "zenodo.org" in info.checkpoints[0]


def test_release_file_layout_and_strict_load(tiny) -> None:
    state = torch.load(tiny, weights_only=True)
    assert set(state) == official_keys(192, 2)  # a plain state dict, nothing around it
    enc = load_encoder("ced-tiny", checkpoint=str(tiny))
    assert not any(k.startswith("outputlayer") for k in enc.state_dict())  # head dropped
    assert len(enc.weights_sha256) == 64
    own = enc.model.state_dict()
    for k, v in own.items():
        assert torch.equal(v, state[k]), k


def test_strict_loading_errors(tmp_path, tiny) -> None:
    state = torch.load(tiny, weights_only=True)
    del state["blocks.1.mlp.fc2.bias"]
    torch.save(state, tmp_path / "cut.pt")
    with pytest.raises(RMISError, match=r"missing keys \['blocks.1.mlp.fc2.bias'\]"):
        load_encoder("ced-tiny", checkpoint=str(tmp_path / "cut.pt"))
    with pytest.raises(RMISError, match="shape mismatch"):  # a tiny file given as ced-mini
        load_encoder("ced-mini", checkpoint=str(tiny))
    state = torch.load(tiny, weights_only=True)
    state["blocks.0.extra"] = torch.zeros(1)
    torch.save(state, tmp_path / "extra.pt")
    with pytest.raises(RMISError, match="unexpected keys"):
        load_encoder("ced-tiny", checkpoint=str(tmp_path / "extra.pt"))
    torch.save({"model": state}, tmp_path / "wrapped.pt")
    with pytest.raises(RMISError, match="not a state dict"):
        load_encoder("ced-tiny", checkpoint=str(tmp_path / "wrapped.pt"))


def test_front_end_buffers_and_log_mel_against_numpy() -> None:
    model = AudioTransformer(AudioTransformerConfig.from_dict({**ced_arch("tiny"), "depth": 1}))
    buffers = model.default_front_end()
    window = np_hann_periodic(512)
    fb = np_htk_filters(257, 16_000, 64, 0.0, 8000.0)
    assert np.abs(buffers["front_end.0.spectrogram.window"].numpy() - window).max() < 1e-6
    assert np.abs(buffers["front_end.0.mel_scale.fb"].numpy() - fb).max() < 1e-6
    model.load_state_dict({**model.state_dict(), **buffers})
    # a loud window and one with > 120 dB of range (a silent half): per-window floors
    loud = noise(16_000, 1)
    quiet = noise(16_000, 2, scale=1.0)
    quiet[8000:] = 0.0
    got = model.log_mel(torch.from_numpy(np.stack([loud, quiet]))).numpy()
    assert got.shape == (2, 64, 101)
    for i, w in enumerate((loud, quiet)):
        ref = np_log_mel(w, window, fb)
        assert np.abs(got[i] - ref).max() < 2e-3
    assert got[1].min() == pytest.approx(got[1].max() - 120, abs=1e-3)  # its own floor


def test_window_embedding_matches_float64_reference(tiny) -> None:
    enc = load_encoder("ced-tiny", checkpoint=str(tiny))
    state = torch.load(tiny, weights_only=True)
    padded = np.zeros(160_000, np.float32)  # a 3-s file's window: zero-padded to 10 s
    padded[:48_000] = noise(48_000, 6, scale=0.3)
    waves = np.stack([noise(160_000, 5), padded])
    with torch.inference_mode():
        got = enc.embed(torch.from_numpy(waves), 16_000).double().numpy()
    assert got.shape == (2, 192)
    for i in range(2):
        ref = np_embedding(waves[i], state, heads=3, patch=(16, 16))
        err = np.abs(got[i] - ref).max() / np.abs(ref).max()
        assert err < 2e-4, err


def test_batch_independence_and_long_windows(tiny) -> None:
    enc = load_encoder("ced-tiny", checkpoint=str(tiny))
    quiet = noise(32_000, 7, scale=1e-4)
    quiet[:16_000] = 0.0
    x = torch.from_numpy(np.stack([noise(32_000, 8, scale=10.0), quiet]))
    with torch.inference_mode():
        both = enc.embed(x, 16_000)
        alone = enc.embed(x[1:], 16_000)
        assert torch.allclose(both[1:], alone, atol=1e-5)
        # over 1012 frames: the grid is encoded in pieces of the positional table's length
        long = torch.from_numpy(noise(16_000 * 11, 9))
        spec = enc.model.log_mel(long[None])
        tokens = enc.model.tokens(spec)
        assert tokens.shape == (1, 4 * (1101 // 16), 192)
        x = enc.model.init_bn[1](spec[:, :, None]).transpose(1, 2)
        grid = enc.model.patch_embed.proj(x)
        first = enc.model._encode(grid[..., :63])
        assert torch.allclose(tokens[:, : first.shape[1]], first, atol=1e-5)
        assert torch.allclose(enc.embed(long[None], 16_000), tokens.mean(1), atol=1e-6)


def test_check_model_and_embed_cli(tmp_path, tiny) -> None:
    r = CliRunner().invoke(
        app, ["check-model", "ced-tiny", "--checkpoint", str(tiny)], env={"COLUMNS": "200"}
    )
    assert r.exit_code == 0, r.output
    wave = noise(16_000 * 3, 11)
    sf.write(tmp_path / "a.wav", wave, 16_000, subtype="FLOAT")
    out = tmp_path / "emb.npz"
    r = CliRunner().invoke(
        app,
        [
            "embed",
            "ced-tiny",
            str(tmp_path / "a.wav"),
            "--checkpoint",
            str(tiny),
            "--out",
            str(out),
        ],
        env={"COLUMNS": "200"},
    )
    assert r.exit_code == 0, r.output
    got = next(iter(np.load(out).values()))
    # the benchmark's windowing: one window, its mean removed, zero-padded to 10 s
    x = np.zeros(160_000, np.float32)
    x[: wave.size] = wave - wave.mean()
    enc = load_encoder("ced-tiny", checkpoint=str(tiny))
    with torch.inference_mode():
        ref = enc.embed(torch.from_numpy(x)[None], 16_000)[0].numpy()
    assert got.shape == (192,) and np.abs(got - ref).max() < 1e-4
    for variant in ("mini", "small", "base"):  # every name, from a depth-cut release file
        ckpt = tmp_path / f"ced_{variant}.pt"
        torch.save(random_ced_state(variant, seed=2, depth=1), ckpt)
        out = tmp_path / f"{variant}.npz"
        r = CliRunner().invoke(
            app,
            [
                "embed",
                f"ced-{variant}",
                str(tmp_path / "a.wav"),
                "--checkpoint",
                str(ckpt),
                "--out",
                str(out),
            ],
        )
        assert r.exit_code == 0, r.output
        assert next(iter(np.load(out).values())).shape == (DIMS[variant],)


def test_eval_ced_tiny_on_synth(tmp_path, synth_cache) -> None:
    ckpt = tmp_path / "ced_tiny_depth1.pt"
    torch.save(random_ced_state("tiny", seed=1, depth=1), ckpt)
    args = [
        "eval",
        "ced-tiny",
        "--suite",
        "synth",
        "--datasets",
        "synth_fd16k",
        "--checkpoint",
        str(ckpt),
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
    res = json.loads(next((tmp_path / "res" / "ced-tiny").rglob("synth_fd16k.json")).read_text())
    assert res["dim"] == 192
    assert (res["model"]["family"], res["model"]["variant"]) == ("CED", "tiny")
    assert 0 <= res["score"] <= 100 and len(res["runs"]) == 2
