"""BEATs (``beats-iter3``) and OpenBEATs (``openbeats-base``/``-large``): the release files'
layout, strict loading, and one whole window (Kaldi fbank, normalisation, patches, positional
convolution, gated relative-position attention, deep-norm / pre-norm layers, mean pooling)
against a float64 numpy evaluation of the official equations; full-size shapes on the meta
device; ``rmis check-model`` and ``rmis embed`` end to end."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.special import erf
from typer.testing import CliRunner

from rmis.cli import app
from rmis.encoders import get_encoder_info, load_encoder
from rmis.errors import RMISError
from rmis.models.beats import (
    FBANK_MEAN,
    FBANK_STD,
    TABLE,
    BEATs,
    BEATsConfig,
    beats_fbank,
    random_checkpoint,
    relative_position_buckets,
    release_checkpoint,
)

SR = 16_000
# 4 heads of 12; 16 buckets with max distance 50 (> the 47 of a 1-s window: the logarithmic
# buckets are used, and no distance falls exactly on a bucket boundary)
SMALL = {
    "embed_dim": 32,
    "encoder_layers": 2,
    "encoder_embed_dim": 48,
    "encoder_ffn_embed_dim": 64,
    "encoder_attention_heads": 4,
    "conv_pos": 8,
    "conv_pos_groups": 4,
    "num_buckets": 16,
    "max_distance": 50,
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("beats")
    return {
        "beats": random_checkpoint("beats-iter3", root / "BEATs_iter3.pt", seed=0, **SMALL),
        "openbeats": random_checkpoint("openbeats-base", root / "ob.pt", seed=1, **SMALL),
    }


# ---- float64 numpy reference of the official equations ------------------------------------


def reference_fbank(wave: np.ndarray) -> np.ndarray:
    """torchaudio.compliance.kaldi.fbank(wave * 2**15, num_mel_bins=128, 25/10 ms, povey,
    dither 0) in float64, then BEATs' normalisation -> [T, 128]."""
    x = wave.astype(np.float64) * 32768.0
    size, shift, n_fft = 400, 160, 512
    n = 1 + (len(x) - size) // shift
    frames = np.stack([x[i * shift : i * shift + size] for i in range(n)])
    frames = frames - frames.mean(1, keepdims=True)
    frames = frames - 0.97 * np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
    povey = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(size) / (size - 1))) ** 0.85
    power = np.abs(np.fft.rfft(frames * povey, n=n_fft, axis=1)) ** 2  # [T, 257]

    def mel(f):
        return 1127.0 * np.log(1.0 + np.asarray(f, dtype=np.float64) / 700.0)

    lo, hi = mel(20.0), mel(SR / 2)
    delta = (hi - lo) / 129
    m = mel(SR / n_fft * np.arange(n_fft // 2))
    banks = np.zeros((128, n_fft // 2 + 1))
    for b in range(128):
        left, centre, right = lo + b * delta, lo + (b + 1) * delta, lo + (b + 2) * delta
        up, down = (m - left) / (centre - left), (right - m) / (right - centre)
        banks[b, :-1] = np.maximum(0, np.minimum(up, down))
    fb = np.log(np.maximum(power @ banks.T, np.finfo(np.float32).eps))
    return (fb - 15.41663) / (2 * 6.55582)


def _ln(x, s, p):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-5) * s[p + ".weight"] + s[p + ".bias"]


def _gelu(x):
    return 0.5 * x * (1 + erf(x / math.sqrt(2)))


def _lin(x, s, p):
    return x @ s[p + ".weight"].T + s[p + ".bias"]


def reference_buckets(n: int, num_buckets: int, max_distance: int) -> np.ndarray:
    half = num_buckets // 2
    exact = half // 2
    out = np.zeros((n, n), dtype=np.int64)
    for i in range(n):
        for j in range(n):
            r = j - i
            base = half if r > 0 else 0
            r = abs(r)
            if r < exact:
                out[i, j] = base + r
            else:
                ratio = math.log(r / exact) / math.log(max_distance / exact)
                large = exact + int(ratio * (half - exact))
                out[i, j] = base + min(large, half - 1)
    return out


def _attention(z, s, p, h, bias):
    """Official self-attention with the gated relative-position bias, one head at a time."""
    q, k, v = (_lin(z, s, p + f"self_attn.{n}_proj") for n in "qkv")
    hd = z.shape[1] // h
    heads = []
    for hh in range(h):
        sl = slice(hh * hd, (hh + 1) * hd)
        scores = q[:, sl] @ k[:, sl].T / math.sqrt(hd)
        pairs = _lin(q[:, sl], s, p + "self_attn.grep_linear").reshape(-1, 2, 4).sum(-1)
        a, b = (1 / (1 + np.exp(-pairs))).T  # gates from the unscaled query
        gate = a * (b * s[p + "self_attn.grep_a"][0, hh, 0, 0] - 1) + 2
        scores = scores + gate[:, None] * bias[:, :, hh]
        e = np.exp(scores - scores.max(1, keepdims=True))
        heads.append(e / e.sum(1, keepdims=True) @ v[:, sl])
    return _lin(np.concatenate(heads, 1), s, p + "self_attn.out_proj")


def _ffn(z, s, p):
    return _lin(_gelu(_lin(z, s, p + "fc1")), s, p + "fc2")


def reference_embedding(ckpt: dict, wave: np.ndarray) -> np.ndarray:
    """One window, float64, straight from the official BEATs equations."""
    cfg = ckpt["cfg"]
    s = {k: v.double().numpy() for k, v in ckpt["model"].items()}
    d, h = cfg["encoder_embed_dim"], cfg["encoder_attention_heads"]
    fb = reference_fbank(wave)
    kernel = s["patch_embedding.weight"][:, 0]  # [C, 16, 16]
    tokens = [
        (kernel * fb[t * 16 : (t + 1) * 16, f * 16 : (f + 1) * 16]).sum((1, 2))
        for t in range(fb.shape[0] // 16)
        for f in range(128 // 16)
    ]
    x = _ln(np.array(tokens), s, "layer_norm")
    x = _lin(x, s, "post_extract_proj")
    # positional convolution: weight norm over all axes but the kernel, SamePad, GELU
    v, g = s["encoder.pos_conv.0.weight_v"], s["encoder.pos_conv.0.weight_g"]
    w = g * v / np.sqrt((v**2).sum((0, 1), keepdims=True))
    kk, groups = cfg["conv_pos"], cfg["conv_pos_groups"]
    pad = np.pad(x, ((kk // 2, kk // 2), (0, 0)))
    per = d // groups
    conv = np.zeros((len(x), d))
    for o in range(d):
        gi = o // per
        for t in range(len(x)):
            conv[t, o] = (w[o] * pad[t : t + kk, gi * per : (gi + 1) * per].T).sum()
    x = x + _gelu(conv + s["encoder.pos_conv.0.bias"])
    pre = cfg["layer_norm_first"]
    if not pre:
        x = _ln(x, s, "encoder.layer_norm")
    buckets = reference_buckets(len(x), cfg["num_buckets"], cfg["max_distance"])
    alpha = (2 * cfg["encoder_layers"]) ** 0.25 if cfg["deep_norm"] else 1.0
    for i in range(cfg["encoder_layers"]):
        p = f"encoder.layers.{i}."
        bias = s[p + "self_attn.relative_attention_bias.weight"][buckets]  # [N, N, H]
        if pre:
            x = x + _attention(_ln(x, s, p + "self_attn_layer_norm"), s, p, h, bias)
            x = x + _ffn(_ln(x, s, p + "final_layer_norm"), s, p)
        else:
            x = _ln(alpha * x + _attention(x, s, p, h, bias), s, p + "self_attn_layer_norm")
            x = _ln(alpha * x + _ffn(x, s, p), s, p + "final_layer_norm")
    if pre:
        x = _ln(x, s, "encoder.layer_norm")
    return x.mean(0)


# ---- tests ---------------------------------------------------------------------------------


def test_registry_metadata() -> None:
    rows = {
        "beats-iter3": ("BEATs", "iter3", 768),
        "openbeats-base": ("OpenBEATs", "base", 768),
        "openbeats-large": ("OpenBEATs", "large", 1024),
    }
    for name, (family, variant, dim) in rows.items():
        info = get_encoder_info(name)
        assert (info.family, info.variant, info.sample_rate) == (family, variant, SR)
        assert str(dim) in info.embedding and info.checkpoints
    assert [s.name for s in TABLE] == list(rows)


def test_official_key_layout() -> None:
    """Keys of the official BEATs module (unilm beats/BEATs.py + backbone.py) for one layer."""
    state = release_checkpoint("beats-iter3", encoder_layers=1)["model"]
    layer = "encoder.layers.0."
    want = {
        "patch_embedding.weight",
        "layer_norm.weight",
        "layer_norm.bias",
        "post_extract_proj.weight",
        "post_extract_proj.bias",
        "encoder.pos_conv.0.bias",
        "encoder.pos_conv.0.weight_g",
        "encoder.pos_conv.0.weight_v",
        "encoder.layer_norm.weight",
        "encoder.layer_norm.bias",
        layer + "self_attn.relative_attention_bias.weight",
        layer + "self_attn.grep_a",
        layer + "self_attn.grep_linear.weight",
        layer + "self_attn.grep_linear.bias",
        layer + "self_attn_layer_norm.weight",
        layer + "self_attn_layer_norm.bias",
        layer + "final_layer_norm.weight",
        layer + "final_layer_norm.bias",
    }
    for n in ("q_proj", "k_proj", "v_proj", "out_proj"):
        want |= {layer + f"self_attn.{n}.weight", layer + f"self_attn.{n}.bias"}
    for n in ("fc1", "fc2"):
        want |= {layer + f"{n}.weight", layer + f"{n}.bias"}
    assert set(state) == want
    assert state["encoder.pos_conv.0.weight_g"].shape == (1, 1, 128)
    assert state["encoder.pos_conv.0.weight_v"].shape == (768, 48, 128)
    assert state[layer + "self_attn.grep_a"].shape == (1, 12, 1, 1)
    assert state[layer + "self_attn.grep_linear.weight"].shape == (8, 64)
    assert state["patch_embedding.weight"].shape == (512, 1, 16, 16)


@pytest.mark.parametrize("spec", TABLE, ids=lambda s: s.name)
def test_full_size_shapes_on_meta(spec) -> None:
    with torch.device("meta"):
        model = BEATs(BEATsConfig.from_cfg(spec.arch))
    n = sum(p.numel() for p in model.parameters()) / 1e6  # the shared table counted once
    assert n == pytest.approx(spec.params_millions, abs=0.01)
    assert model.cfg.encoder_embed_dim == spec.dim
    layers = spec.arch["encoder_layers"]
    state = model.state_dict()
    table = "encoder.layers.{}.self_attn.relative_attention_bias.weight"
    assert all(table.format(i) in state for i in range(layers))  # saved under every layer
    assert state[table.format(layers - 1)].shape == (320, spec.arch["encoder_attention_heads"])
    assert state["post_extract_proj.weight"].shape == (spec.dim, 512)
    assert state[f"encoder.layers.{layers - 1}.fc1.weight"].shape == (4 * spec.dim, spec.dim)


def test_frontend_matches_float64_kaldi() -> None:
    wave = np.random.default_rng(0).normal(size=SR).astype(np.float32) * 0.1
    got = beats_fbank(torch.from_numpy(wave)[None]).numpy()[0]
    ref = reference_fbank(wave)
    assert got.shape == ref.shape == (98, 128)
    np.testing.assert_allclose(got, ref, atol=1e-4)  # float32 vs float64 rounding
    floor = (math.log(np.finfo(np.float32).eps) - FBANK_MEAN) / (2 * FBANK_STD)
    empty = np.where(np.all(np.abs(ref - floor) < 1e-9, axis=0))[0]
    assert len(empty) == 1  # the 128-bin / 16 kHz filter holding no FFT bin: at the floor
    assert beats_fbank(torch.zeros(1, 160_000)).shape == (1, 998, 128)


def test_buckets_match_formula() -> None:
    np.testing.assert_array_equal(
        relative_position_buckets(496, 320, 800).numpy(), reference_buckets(496, 320, 800)
    )
    np.testing.assert_array_equal(
        relative_position_buckets(48, 16, 50).numpy(), reference_buckets(48, 16, 50)
    )


@pytest.mark.parametrize(
    ("name", "key"), [("beats-iter3", "beats"), ("openbeats-base", "openbeats")]
)
def test_window_matches_float64_reference(files, name, key) -> None:
    ckpt = torch.load(files[key], weights_only=True)
    assert ckpt["cfg"]["deep_norm"] is (key == "beats")
    assert ckpt["cfg"]["layer_norm_first"] is (key == "openbeats")
    enc = load_encoder(name, checkpoint=str(files[key]))
    waves = np.random.default_rng(3).normal(size=(2, SR)).astype(np.float32) * 0.1
    waves[1] *= np.linspace(0, 3, SR, dtype=np.float32)
    with torch.inference_mode():
        got = enc.embed(torch.from_numpy(waves), SR).numpy()
    assert got.shape == (2, SMALL["encoder_embed_dim"])
    for i in range(2):
        ref = reference_embedding(ckpt, waves[i])
        np.testing.assert_allclose(got[i], ref, atol=2e-4 * np.abs(ref).max())


def test_openbeats_release_layout_and_key_map(files, tmp_path) -> None:
    ckpt = torch.load(files["openbeats"], weights_only=True)
    assert {"patch_embedding_pad.weight", "raw2fbank_pad.weight"} <= set(ckpt["model"])
    assert ckpt["cfg"]["use_flash_attn"] is True  # ESPnet cfg keys are ignored
    # the positional conv saved with torch.nn.utils.parametrizations.weight_norm
    renamed = dict(ckpt["model"])
    p = "encoder.pos_conv.0."
    renamed[p + "parametrizations.weight.original0"] = renamed.pop(p + "weight_g")
    renamed[p + "parametrizations.weight.original1"] = renamed.pop(p + "weight_v")
    other = tmp_path / "param.pt"
    torch.save({"cfg": ckpt["cfg"], "model": renamed}, other)
    x = torch.randn(1, 8000) * 0.1
    with torch.inference_mode():
        a = load_encoder("openbeats-base", checkpoint=str(files["openbeats"])).embed(x, SR)
        b = load_encoder("openbeats-base", checkpoint=str(other)).embed(x, SR)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    # BEATs' table does not drop ESPnet's helper kernels: strict loading names them
    with pytest.raises(RMISError, match="patch_embedding_pad"):
        load_encoder("beats-iter3", checkpoint=str(files["openbeats"]))


def test_strict_loading_and_shared_table(files, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RMISError, match="BEATs_iter3.pt.*--checkpoint"):
        load_encoder("beats-iter3")  # the default: the authors' file name, not downloadable
    ckpt = torch.load(files["beats"], weights_only=True)
    missing = dict(ckpt["model"])
    missing.pop("encoder.layers.1.fc2.bias")
    torch.save({"cfg": ckpt["cfg"], "model": missing}, tmp_path / "missing.pt")
    with pytest.raises(RMISError, match="fc2.bias"):
        load_encoder("beats-iter3", checkpoint=str(tmp_path / "missing.pt"))
    split = dict(ckpt["model"])
    key = "encoder.layers.1.self_attn.relative_attention_bias.weight"
    split[key] = split[key] + 1
    torch.save({"cfg": ckpt["cfg"], "model": split}, tmp_path / "split.pt")
    with pytest.raises(RMISError, match="shares one table"):
        load_encoder("beats-iter3", checkpoint=str(tmp_path / "split.pt"))
    torch.save({"model": ckpt["model"]}, tmp_path / "nocfg.pt")
    with pytest.raises(RMISError, match="cfg"):
        load_encoder("beats-iter3", checkpoint=str(tmp_path / "nocfg.pt"))
    enc = load_encoder("beats-iter3", checkpoint=str(files["beats"]))
    assert len(enc.weights_sha256) == 64
    with pytest.raises(RMISError, match="16 kHz"):
        enc.embed(torch.zeros(1, SR), 8_000)
    with pytest.raises(RMISError, match="shorter"):
        enc.embed(torch.zeros(1, 2_000), SR)
    with torch.inference_mode():  # a 10-s window: 998 frames -> 62 x 8 patches
        tokens = enc.model(beats_fbank(torch.randn(1, 10 * SR) * 0.1))
    assert tokens.shape == (1, 62 * 8, SMALL["encoder_embed_dim"])


def test_cli_check_model_and_embed(files, tmp_path) -> None:
    runner = CliRunner()
    args = ["check-model", "openbeats-large", "--checkpoint", str(files["openbeats"])]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    wave = np.random.default_rng(5).normal(size=3 * SR).astype(np.float32) * 0.1
    path = tmp_path / "a.wav"
    sf.write(path, wave, SR, subtype="FLOAT")
    out = tmp_path / "e.npz"
    args = ["embed", "beats-iter3", str(path), "--checkpoint", str(files["beats"])]
    r = runner.invoke(app, [*args, "--out", str(out)])
    assert r.exit_code == 0, r.output
    got = np.load(out)[str(path)]
    # the harness: one window, its mean removed, zero-padded to 10 s
    window = np.zeros(10 * SR, dtype=np.float32)
    window[: len(wave)] = wave - wave.mean()
    enc = load_encoder("beats-iter3", checkpoint=str(files["beats"]))
    with torch.inference_mode():
        want = enc.embed(torch.from_numpy(window)[None], SR).numpy()[0]
    np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(want).max())
