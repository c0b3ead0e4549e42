"""ECHO: the authors' release formats (hub ``model.safetensors`` folder, Zenodo ``.pth``), strict
loading, and the whole window against a float64 numpy evaluation of the official equations."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from rmis.encoders import get_encoder_info, load_encoder
from rmis.errors import RMISError
from rmis.models.echo import (
    KEY_MAP,
    TABLE,
    EchoConfig,
    EchoViT,
    ReleaseLayout,
    band_centres,
    frequency_code,
    log_spectrogram,
    release_state,
)

SPECS = {s.variant: s for s in TABLE}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("echo")
    hub = root / "echo-tiny-0828"  # the hub folder: weights beside the authors' model code
    hub.mkdir()
    tiny = release_state(24, 2, 3, seed=1)
    save_file(tiny, str(hub / "model.safetensors"))
    (hub / "audioMAE_band_upgrade.py").write_text("# the authors' model code\n")
    (hub / "README.md").write_text("ECHO tiny\n")
    small = release_state(24, 1, 6, seed=2)
    pth = root / "echo-small.pth"  # Zenodo: {'encoder': state_dict, 'model_type': ...}
    torch.save({"encoder": small, "model_type": "small"}, pth)
    short = root / "short.safetensors"  # a 128-frame position table, to exercise segmenting
    save_file(release_state(24, 1, 3, rows=9, seed=3), str(short))
    return {"hub": hub, "tiny": tiny, "pth": pth, "small": small, "short": short}


# ---------------------------------------------------------------------- full-size layout


@pytest.mark.parametrize("variant", ["tiny", "small"])
def test_release_keys_shapes_and_params_at_full_size(variant) -> None:
    arch = dict(SPECS[variant].arch)
    with torch.device("meta"):
        release = ReleaseLayout(arch["embed_dim"], arch["depth"], arch["num_heads"])
        ours = EchoViT(EchoConfig(**arch))
    mapped = {}
    for k, v in release.state_dict().items():
        for pat, rep in KEY_MAP:
            k = re.sub(pat, rep, k)
        mapped[k] = tuple(v.shape)
    assert mapped == {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    n = sum(p.numel() for p in ours.parameters() if p.requires_grad) / 1e6
    assert n == pytest.approx(SPECS[variant].params_millions, abs=0.005)
    info = get_encoder_info(f"echo-{variant}")
    assert (info.family, info.variant, info.sample_rate) == ("ECHO", variant, None)
    hub = {"tiny": "echo-tiny-0828", "small": "echo-small-0824"}[variant]
    assert info.checkpoints[0] == f"hf://yucongzh/{hub}"


def test_registry_dims_follow_the_band_count(ckpts) -> None:
    enc = load_encoder("echo-tiny", checkpoint=str(ckpts["hub"]))
    assert (enc.band_dim, enc.band_bins, enc.sample_rate) == (24, 32, None)
    for sr, nb in ((16_000, 7), (44_100, 18), (48_000, 19), (8_000, 4)):
        with torch.inference_mode():
            assert enc.embed(torch.randn(2, sr) * 0.1, sr).shape == (2, nb * 24)
    # the released sizes: 16 kHz -> 7 bands -> 2688 (small) / 1344 (tiny)
    assert 7 * SPECS["small"].arch["embed_dim"] == 2688
    assert 7 * SPECS["tiny"].arch["embed_dim"] == 1344


# ---------------------------------------------------------------------- loading


def test_release_formats_load_strictly(ckpts) -> None:
    a = load_encoder("echo-tiny", checkpoint=str(ckpts["hub"]))
    b = load_encoder("echo-tiny", checkpoint=str(ckpts["hub"] / "model.safetensors"))
    assert a.weights_sha256 == b.weights_sha256 and len(a.weights_sha256) == 64
    assert a.cfg.depth == 2 and a.cfg.num_heads == 3 and a.cfg.spec_len == 2000
    small = load_encoder("echo-small", checkpoint=str(ckpts["pth"]))
    assert small.cfg.num_heads == 6 and small.cfg.depth == 1
    torch.testing.assert_close(
        small.vit.encoder.layers[0].attn.qkv.weight,
        ckpts["small"]["encoder.layers.0.self_attn.in_proj_weight"],
    )
    x = torch.randn(1, 16_000) * 0.1
    with torch.inference_mode():
        torch.testing.assert_close(a.embed(x, 16_000), b.embed(x, 16_000), rtol=0, atol=0)


def test_strict_loading_errors(tmp_path, ckpts) -> None:
    from safetensors.torch import save_file

    extra = dict(ckpts["tiny"], **{"decoder_embed.weight": torch.zeros(2, 2)})
    save_file(extra, str(tmp_path / "extra.safetensors"))
    with pytest.raises(RMISError, match="unexpected keys.*decoder_embed"):
        load_encoder("echo-tiny", checkpoint=str(tmp_path / "extra.safetensors"))
    missing = {k: v for k, v in ckpts["tiny"].items() if k != "norm.bias"}
    save_file(missing, str(tmp_path / "missing.safetensors"))
    with pytest.raises(RMISError, match="missing keys.*norm.bias"):
        load_encoder("echo-tiny", checkpoint=str(tmp_path / "missing.safetensors"))
    prefixed = {f"model.{k}": v for k, v in ckpts["tiny"].items()}
    save_file(prefixed, str(tmp_path / "prefixed.safetensors"))
    with pytest.raises(RMISError, match="not an ECHO encoder state dict"):
        load_encoder("echo-tiny", checkpoint=str(tmp_path / "prefixed.safetensors"))
    torch.save({"model": ckpts["small"]}, tmp_path / "other.pth")
    with pytest.raises(RMISError, match="encoder"):
        load_encoder("echo-small", checkpoint=str(tmp_path / "other.pth"))


# ---------------------------------------------------------------------- numerics


def ref_spectrogram(wave: np.ndarray, sr: int) -> np.ndarray:
    """float64 ``[F, T]``: periodic Hann frames 25/10 ms, |rfft|, log(+1e-9), normalised."""
    n_fft, hop = 25 * sr // 1000, 10 * sr // 1000
    win = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    frames = np.array(
        [wave[i * hop : i * hop + n_fft] * win for i in range((len(wave) - n_fft) // hop + 1)]
    )
    return ((np.log(np.abs(np.fft.rfft(frames, axis=1)) + 1e-9) + 5.874158) / (2 * 5.223174)).T


def ref_embed(state: dict, spec: np.ndarray, sr: int, heads: int) -> np.ndarray:
    """The official ``extract_features`` of one ``[F, T]`` segment, written out in float64."""
    s = {k: v.double().numpy() for k, v in state.items()}
    d = s["cls_token"].shape[-1]
    n_fft = 25 * sr // 1000
    n_freqs, t = spec.shape
    p = -(-t // 16)
    erf = np.vectorize(math.erf)

    def ln(v, name, eps=1e-6):
        mu, var = v.mean(-1, keepdims=True), v.var(-1, keepdims=True)
        return (v - mu) / np.sqrt(var + eps) * s[name + ".weight"] + s[name + ".bias"]

    out = []
    for start in range(0, n_freqs, 32):
        end = min(start + 32, n_freqs)
        band = spec[start:end]
        band = np.concatenate([np.zeros((32 - len(band), t)), band])  # padded BELOW
        band = np.pad(band, ((0, 0), (0, p * 16 - t)))
        kernel = s["patch_embed.proj.weight"][:, 0]  # [D, 32, 16]
        z = np.array([(kernel * band[:, i * 16 : (i + 1) * 16]).sum((1, 2)) for i in range(p)])
        z = z + s["patch_embed.proj.bias"] + s["pos_embed"][0, 1 : p + 1]
        c = ((start + end - 1) / 2) * sr / n_fft / (sr / 2)
        code = np.zeros(d)
        w = np.exp(np.arange(0, d, 2) * (-math.log(10000.0) / d))
        code[0::2], code[1::2] = np.sin(c * 25 * w), np.cos(c * 25 * w)
        z = np.concatenate([s["cls_token"][0] + code, z + code])
        for i in range(len({k.split(".")[2] for k in s if k.startswith("encoder.layers.")})):
            q_ = f"encoder.layers.{i}."
            qkv = z @ s[q_ + "self_attn.in_proj_weight"].T + s[q_ + "self_attn.in_proj_bias"]
            q, k, v = (qkv[:, j * d : (j + 1) * d] for j in range(3))
            hd = d // heads
            outs = []
            for h in range(heads):
                sl = slice(h * hd, (h + 1) * hd)
                a = q[:, sl] @ k[:, sl].T / math.sqrt(hd)
                a = np.exp(a - a.max(1, keepdims=True))
                outs.append(a / a.sum(1, keepdims=True) @ v[:, sl])
            att = np.concatenate(outs, 1) @ s[q_ + "self_attn.out_proj.weight"].T
            z = ln(z + att + s[q_ + "self_attn.out_proj.bias"], q_ + "norm1")
            h1 = z @ s[q_ + "linear1.weight"].T + s[q_ + "linear1.bias"]
            h1 = 0.5 * h1 * (1 + erf(h1 / math.sqrt(2)))
            z = ln(z + h1 @ s[q_ + "linear2.weight"].T + s[q_ + "linear2.bias"], q_ + "norm2")
        out.append(ln(z, "norm")[0])
    return np.concatenate(out)


@pytest.mark.parametrize(("sr", "seconds"), [(16_000, 10.0), (44_100, 1.5)])
def test_whole_window_matches_float64_reference(ckpts, sr, seconds) -> None:
    wave = np.random.default_rng(sr).normal(size=int(sr * seconds)).astype(np.float32) * 0.1
    enc = load_encoder("echo-tiny", checkpoint=str(ckpts["hub"]))
    with torch.inference_mode():
        got = enc.embed(torch.from_numpy(wave)[None], sr)[0].double().numpy()
    ref = ref_embed(ckpts["tiny"], ref_spectrogram(wave.astype(np.float64), sr), sr, heads=3)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=2e-4, rtol=0)


def test_front_end_matches_numpy() -> None:
    wave = np.random.default_rng(0).normal(size=25_600).astype(np.float32)
    got = log_spectrogram(torch.from_numpy(wave)[None], 25_600)[0].double().numpy()
    np.testing.assert_allclose(got, ref_spectrogram(wave.astype(np.float64), 25_600).T, atol=2e-5)
    with pytest.raises(RMISError, match="shorter than one STFT frame"):
        log_spectrogram(torch.zeros(1, 100), 16_000)


def test_band_centres_and_frequency_code_closed_form() -> None:
    c = band_centres(201, 32, 16_000)  # n_fft 400: 40 Hz per bin; last band = bins 192..200
    assert len(c) == 7
    assert c[0] == pytest.approx(15.5 * 40 / 8000) and c[-1] == pytest.approx(196 * 40 / 8000)
    code = frequency_code(torch.tensor([0.0, 0.5]), 8).numpy()
    w = 10000.0 ** (-np.arange(0, 8, 2) / 8)
    np.testing.assert_allclose(code[1, 0::2], np.sin(12.5 * w), atol=1e-6)
    np.testing.assert_allclose(code[1, 1::2], np.cos(12.5 * w), atol=1e-6)
    np.testing.assert_allclose(code[0], np.tile([0.0, 1.0], 4), atol=0)


def test_inputs_longer_than_the_position_table_are_segmented(ckpts) -> None:
    """The official rule: 2000-frame (here 128) chunks, the rest as the LAST chunk, averaged."""
    from safetensors.torch import load_file

    sr, n = 8_000, 128
    wave = np.random.default_rng(5).normal(size=int(sr * 3.05)).astype(np.float32) * 0.1
    enc = load_encoder("echo-tiny", checkpoint=str(ckpts["short"]))
    assert enc.cfg.spec_len == n
    with torch.inference_mode():
        got = enc.embed(torch.from_numpy(wave)[None], sr)[0].double().numpy()
    spec = ref_spectrogram(wave.astype(np.float64), sr)  # 301 frames
    segs = [spec[:, i * n : (i + 1) * n] for i in range(spec.shape[1] // n)] + [spec[:, -n:]]
    state = load_file(str(ckpts["short"]))
    ref = np.mean([ref_embed(state, s_, sr, heads=3) for s_ in segs], axis=0)
    np.testing.assert_allclose(got, ref, atol=2e-4, rtol=0)


def test_batch_independence_and_final_norm_option(ckpts) -> None:
    enc = load_encoder("echo-tiny", checkpoint=str(ckpts["hub"]))
    x = torch.randn(3, 44_100) * 0.1
    with torch.inference_mode():
        together = enc.embed(x, 44_100)
        alone = torch.cat([enc.embed(x[i : i + 1], 44_100) for i in range(3)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    other = load_encoder("echo-tiny", checkpoint=str(ckpts["hub"]), final_norm_eps=1e-5)
    assert other.vit.norm.eps == 1e-5 and enc.vit.norm.eps == 1e-6


# ---------------------------------------------------------------------- command line


def test_cli_check_model_and_embed(tmp_path, ckpts) -> None:
    import soundfile as sf
    from typer.testing import CliRunner

    from rmis.cli import app

    runner = CliRunner()
    wav = tmp_path / "a.wav"
    sf.write(wav, np.random.default_rng(1).normal(size=16_000 * 12) * 0.1, 16_000)
    for name, ckpt in (("echo-tiny", ckpts["hub"]), ("echo-small", ckpts["pth"])):
        args = ["check-model", name, "--checkpoint", str(ckpt), "--window-seconds", "0.3"]
        r = runner.invoke(app, args)
        assert r.exit_code == 0, r.output
        out = tmp_path / f"{name}.npz"
        args = ["embed", name, str(wav), "--checkpoint", str(ckpt), "--out", str(out)]
        r = runner.invoke(app, args)
        assert r.exit_code == 0, r.output
        assert np.load(out)[str(wav)].shape == (7 * 24,)  # 16 kHz: 7 bands of D = 24
