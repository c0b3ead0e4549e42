"""AudioMAE: the authors' pre-training file layout, strict loading, and one window against a
float64 numpy implementation of the official equations (torchaudio's Kaldi fbank, timm's ViT,
the RMIS wrapper's padding / normalisation / pooling)."""

from __future__ import annotations

import argparse
import math

import numpy as np
import pytest
import torch
from scipy.special import erf

from rmis.encoders import get_encoder_info, load_encoder
from rmis.errors import RMISError
from rmis.models.audiomae import (
    FBANK_MEAN,
    FBANK_STD,
    AudioMAEViT,
    ViTConfig,
    fbank_1024,
    official_pos_embed,
    random_checkpoint,
)

TINY = {"embed_dim": 128, "depth": 2, "num_heads": 2}  # head width 64, like ViT-B


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("audiomae") / "pretrained.pth"
    # a tiny encoder and a one-block decoder of width 64, in the pre-training file layout
    return random_checkpoint("audiomae-base", path, decoder_embed_dim=64, decoder_depth=1, **TINY)


# ------------------------------------------------------------------------- numpy references


def kaldi_fbank_np(wave: np.ndarray, sr: int = 16_000, bins: int = 128) -> np.ndarray:
    """float64 torchaudio.compliance.kaldi.fbank: hanning, htk_compat, dither 0, no energy."""
    size, shift, nfft = 400, 160, 512
    n = 1 + (len(wave) - size) // shift
    frames = np.stack([wave[i * shift : i * shift + size] for i in range(n)]).astype(np.float64)
    frames = frames - frames.mean(1, keepdims=True)
    frames = frames - 0.97 * np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(size) / (size - 1))  # symmetric
    power = np.abs(np.fft.rfft(frames * window, n=nfft)) ** 2

    def mel(f):
        return 1127.0 * np.log(1.0 + f / 700.0)

    lo, hi = mel(20.0), mel(sr / 2)
    delta = (hi - lo) / (bins + 1)
    m = mel(np.arange(nfft // 2) * sr / nfft)
    fb = np.zeros((nfft // 2 + 1, bins))
    for b in range(bins):
        left, center, right = lo + b * delta, lo + (b + 1) * delta, lo + (b + 2) * delta
        up = (m - left) / (center - left)
        down = (right - m) / (right - center)
        fb[:-1, b] = np.where((m > left) & (m < right), np.where(m <= center, up, down), 0.0)
    return np.log(np.maximum(power @ fb, np.finfo(np.float32).eps))


def features_np(wave: np.ndarray) -> np.ndarray:
    """The RMIS wrapper: fbank, zero-pad to 1024 frames, THEN normalise -> [1024, 128]."""
    x = kaldi_fbank_np(wave)
    x = np.concatenate([x, np.zeros((1024 - len(x), 128))])[:1024]
    return (x - FBANK_MEAN) / (FBANK_STD * 2)


def ln_np(v, w=None, b=None, eps=1e-6):
    out = (v - v.mean(-1, keepdims=True)) / np.sqrt(v.var(-1, keepdims=True) + eps)
    return out if w is None else out * w + b


def block_np(z, s, p, heads, pre_norm):
    """One timm (pre-norm) or data2vec (post-norm) block, explicit per-head softmax."""
    d = z.shape[1]

    def attn(v):
        qkv = v @ s[p + "attn.qkv.weight"].T + s[p + "attn.qkv.bias"]
        q, k, val = (qkv[:, j * d : (j + 1) * d] for j in range(3))
        out = []
        for h in range(heads):
            sl = slice(h * d // heads, (h + 1) * d // heads)
            a = q[:, sl] @ k[:, sl].T * (d // heads) ** -0.5
            a = np.exp(a - a.max(1, keepdims=True))
            out.append(a / a.sum(1, keepdims=True) @ val[:, sl])
        return np.concatenate(out, 1) @ s[p + "attn.proj.weight"].T + s[p + "attn.proj.bias"]

    def mlp(v):
        h = v @ s[p + "mlp.fc1.weight"].T + s[p + "mlp.fc1.bias"]
        h = 0.5 * h * (1 + erf(h / math.sqrt(2)))
        return h @ s[p + "mlp.fc2.weight"].T + s[p + "mlp.fc2.bias"]

    def norm(v, name):
        return ln_np(v, s[p + name + ".weight"], s[p + name + ".bias"])

    if pre_norm:
        z = z + attn(norm(z, "norm1"))
        return z + mlp(norm(z, "norm2"))
    z = norm(z + attn(z), "norm1")
    return norm(z + mlp(z), "norm2")


def patches_np(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """16 x 16 patches at stride 16, time-major: token (t, f) = t * 8 + f."""
    tokens = [
        (weight[:, 0] * x[t * 16 : (t + 1) * 16, f * 16 : (f + 1) * 16]).sum((1, 2))
        for t in range(x.shape[0] // 16)
        for f in range(x.shape[1] // 16)
    ]
    return np.array(tokens) + bias


def audiomae_np(state: dict, x: np.ndarray, heads: int) -> np.ndarray:
    """timm ViT forward_features of the RMIS wrapper (global_pool, fresh fc_norm)."""
    s = {k: v.double().numpy() for k, v in state.items()}
    z = patches_np(x, s["patch_embed.proj.weight"], s["patch_embed.proj.bias"])
    z = z + s["pos_embed"][0, 1:]
    z = np.concatenate([s["cls_token"][0] + s["pos_embed"][0, :1], z])
    depth = len({k.split(".")[1] for k in s if k.startswith("blocks.")})
    for i in range(depth):
        z = block_np(z, s, f"blocks.{i}.", heads, pre_norm=True)
    return ln_np(z[1:].mean(0))  # fc_norm: weight 1, bias 0, eps 1e-6


# ------------------------------------------------------------------------------------ tests


def test_release_layout_loads_and_registry_metadata(ckpt) -> None:
    obj = torch.load(ckpt, weights_only=True)
    assert set(obj) == {"model"} and "decoder_pred.weight" in obj["model"]
    enc = load_encoder("audiomae-base", checkpoint=str(ckpt))
    assert len(enc.weights_sha256) == 64 and enc.sample_rate == 16_000
    assert enc.cfg.embed_dim == 128 and enc.cfg.depth == 2 and enc.cfg.num_heads == 2
    info = get_encoder_info("audiomae-base")
    assert (info.family, info.variant, info.sample_rate) == ("AudioMAE", "base", 16_000)
    assert info.params_millions == 85.0 and "pretrained.pth" in info.checkpoints
    with torch.inference_mode():
        assert enc.embed(torch.randn(2, 160_000) * 0.1, 16_000).shape == (2, 128)


def test_full_size_shapes_and_parameter_count_without_running() -> None:
    arch = dict(get_encoder_info("audiomae-base").factory.args[0].arch)
    with torch.device("meta"):
        vit = AudioMAEViT(ViTConfig(**arch))
    shapes = {k: tuple(v.shape) for k, v in vit.state_dict().items()}
    assert shapes["pos_embed"] == (1, 513, 768) and shapes["cls_token"] == (1, 1, 768)
    assert shapes["patch_embed.proj.weight"] == (768, 1, 16, 16)
    assert shapes["blocks.11.attn.qkv.weight"] == (2304, 768)
    assert shapes["blocks.11.mlp.fc1.weight"] == (3072, 768)
    assert not any(k.startswith(("blocks.12", "norm", "fc_norm", "head")) for k in shapes)
    d = 768
    per_block = 4 * d + (3 * d * d + 3 * d) + (d * d + d) + (8 * d * d + 5 * d)
    want = 12 * per_block + 256 * d + d + d  # blocks, patch conv, cls
    got = sum(p.numel() for p in vit.parameters() if p.requires_grad)
    assert got == want and round(got / 1e6) == 85  # the paper's 85 M
    with torch.device("meta"):
        out = vit(torch.empty(2, 1, 1024, 128))
    assert out.shape == (2, 768)


def test_official_pos_embed_layout() -> None:
    """get_2d_sincos_pos_embed_flexible(D, (8, 64), cls_token=True) as written (float64)."""
    d = 16
    table = official_pos_embed(d, 64, 8)[0].double().numpy()
    grid_w, grid_h = np.meshgrid(np.arange(64.0), np.arange(8.0))  # (8, 64): w first

    def code(pos):
        omega = 1.0 / 10000 ** (np.arange(d // 4) / (d / 4))
        out = pos.reshape(-1)[:, None] * omega[None]
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    want = np.concatenate([np.zeros((1, d)), np.concatenate([code(grid_w), code(grid_h)], 1)])
    np.testing.assert_allclose(table, want, atol=1e-5)
    # token 9 = (time 1, frequency 1) carries the codes of 9 % 64 and 9 // 64, not of (1, 1)
    np.testing.assert_allclose(table[1 + 9, : d // 2], code(np.array([9.0]))[0], atol=1e-6)


def test_frontend_pads_before_normalising() -> None:
    wave = np.random.default_rng(1).normal(size=16_000).astype(np.float32) * 0.1
    got = fbank_1024(torch.from_numpy(wave)[None], 16_000)[0, 0].double().numpy()
    ref = features_np(wave.astype(np.float64))
    assert got.shape == ref.shape == (1024, 128)
    np.testing.assert_allclose(got, ref, atol=1e-4)
    np.testing.assert_allclose(got[98:], -FBANK_MEAN / (2 * FBANK_STD), atol=1e-6)
    long = fbank_1024(torch.randn(1, 16_000 * 11), 16_000)
    assert long.shape == (1, 1, 1024, 128)  # cropped
    with pytest.raises(RMISError, match="16000 Hz"):
        fbank_1024(torch.zeros(1, 16_000), 8_000)


def test_one_window_matches_float64_reference(ckpt) -> None:
    wave = np.random.default_rng(3).normal(size=32_000).astype(np.float32) * 0.1
    state = torch.load(ckpt, weights_only=True)["model"]
    x = features_np(wave.astype(np.float64))
    ref = audiomae_np(state, x, heads=2)
    enc = load_encoder("audiomae-base", checkpoint=str(ckpt))
    with torch.inference_mode():
        got = enc.embed(torch.from_numpy(wave)[None], 16_000)[0].double().numpy()
        # the architecture alone, in float64 on the reference features
        vit64 = enc.vit.double()
        arch = vit64(torch.from_numpy(x)[None, None])[0].numpy()
    assert got.shape == ref.shape == (128,)
    np.testing.assert_allclose(arch, ref, atol=1e-9)
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_checkpoint_norm_and_decoder_are_not_used(tmp_path, ckpt) -> None:
    state = torch.load(ckpt, weights_only=True)["model"]
    state["norm.weight"] = torch.full_like(state["norm.weight"], 7.0)
    state["decoder_pred.bias"] = torch.ones_like(state["decoder_pred.bias"])
    torch.save({"model": state}, tmp_path / "other.pth")
    x = torch.randn(2, 20_000) * 0.1
    with torch.inference_mode():
        a = load_encoder("audiomae-base", checkpoint=str(ckpt)).embed(x, 16_000)
        b = load_encoder("audiomae-base", checkpoint=str(tmp_path / "other.pth")).embed(x, 16_000)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_training_checkpoint_with_args_namespace_loads(tmp_path, ckpt) -> None:
    """The file as MAE's ``misc.save_model`` writes it: ``args`` is an argparse Namespace."""
    state = torch.load(ckpt, weights_only=True)["model"]
    args = argparse.Namespace(model="mae_vit_base_patch16", audio_exp=True, mask_ratio=0.8)
    torch.save({"model": state, "args": args, "epoch": 32}, tmp_path / "other.pth")
    x = torch.randn(2, 20_000) * 0.1
    with torch.inference_mode():
        a = load_encoder("audiomae-base", checkpoint=str(ckpt)).embed(x, 16_000)
        b = load_encoder("audiomae-base", checkpoint=str(tmp_path / "other.pth")).embed(x, 16_000)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_strict_loading_errors(tmp_path, ckpt) -> None:
    state = torch.load(ckpt, weights_only=True)["model"]
    bad = dict(state)
    bad.pop("blocks.1.norm2.bias")
    bad["fc_norm.weight"] = torch.ones(128)
    torch.save({"model": bad}, tmp_path / "bad.pth")
    with pytest.raises(RMISError, match=r"missing.*blocks.1.norm2.bias.*unexpected.*fc_norm"):
        load_encoder("audiomae-base", checkpoint=str(tmp_path / "bad.pth"))
    torch.save(state, tmp_path / "flat.pth")
    with pytest.raises(RMISError, match=r"flat.pth.*\['model'\]"):
        load_encoder("audiomae-base", checkpoint=str(tmp_path / "flat.pth"))


def test_cli_check_model_and_embed(tmp_path, ckpt) -> None:
    import soundfile as sf
    from typer.testing import CliRunner

    from rmis.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["check-model", "audiomae-base", "--checkpoint", str(ckpt)])
    assert r.exit_code == 0, r.output
    wav = tmp_path / "a.wav"
    sf.write(wav, np.random.default_rng(0).normal(size=44_100 * 3) * 0.1, 44_100)
    out = tmp_path / "x.npz"
    args = ["embed", "audiomae-base", str(wav), "--checkpoint", str(ckpt), "--out", str(out)]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    with np.load(out) as z:
        assert [z[k].shape for k in z.files] == [(128,)]
