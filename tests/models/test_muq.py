"""MuQ (``muq-msd``): the hub release's layout (``config.json`` + ``model.safetensors`` under
``model.``, every tensor the official ``MuQ`` module holds), strict loading, the whole window
(front-end, conv front, conformer with rotary positions, pooling) against a float64 numpy
evaluation of the official equations, full-size shapes on the meta device, and the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from rmis.cli import app
from rmis.encoders import get_encoder_info, load_encoder
from rmis.errors import RMISError
from rmis.frontends import muq_mel
from rmis.models.muq import (
    TABLE,
    MuQConfig,
    MuQModel,
    official_shapes,
    random_release,
    release_config,
)

SR = 24_000
MEAN, STD = 6.768444971712967, 18.417922652295623
#: Size in bytes of the released ``model.safetensors`` (OpenMuQ/MuQ-large-msd-iter, revision
#: 0562a578, SHA-256 273febab...), as pinned by projects that download it.
RELEASE_BYTES = 1_333_825_096

runner = CliRunner()


#: what the embedding never uses (declared in TABLE.drop)
UNUSED = (
    "model.linear.",
    "model.cls_token",
    "model.rvq.",
    "model.conformer.pos_conv_embed.",
    "model.conformer.embed_positions.",
)


SMALL = {
    "conv_dim": 4,
    "encoder_dim": 32,
    "encoder_depth": 2,
    "codebook_size": 64,
    "rvq_n_codebooks": 2,
}
SMALL_W2V = {"heads": 4, "intermediate": 48, "kernel": 7, "pos_groups": 4, "pos_kernel": 16}


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    cfg = release_config(**SMALL, **SMALL_W2V)
    return random_release(tmp_path_factory.mktemp("muq") / "MuQ-small", cfg)


@pytest.fixture(scope="module")
def encoder(release):
    return load_encoder("muq-msd", checkpoint=str(release))


# ---- float64 numpy reference of the official equations ------------------------------------


def htk_filters(n_freqs: int, sr: int, n_mels: int) -> np.ndarray:
    """torchaudio.functional.melscale_fbanks(htk, norm None, 0 .. sr // 2): [n_freqs, n_mels]."""

    def mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    freqs = np.linspace(0, sr // 2, n_freqs)
    pts = 700.0 * (10 ** (np.linspace(mel(0.0), mel(sr // 2), n_mels + 2) / 2595.0) - 1.0)
    fb = np.zeros((n_freqs, n_mels))
    for j in range(n_mels):
        left, centre, right = pts[j], pts[j + 1], pts[j + 2]
        up = (freqs - left) / (centre - left)
        down = (right - freqs) / (right - centre)
        fb[:, j] = np.maximum(0.0, np.minimum(up, down))
    return fb


def reference_mel(x: np.ndarray) -> np.ndarray:
    """MelSTFT(n_fft 2048, hop 240, is_db) of torchaudio, then [..., :-1] and the model's stat
    normalisation: [128, T]."""
    n_fft, hop = 2048, 240
    padded = np.pad(x, n_fft // 2, mode="reflect")
    n = 1 + (len(padded) - n_fft) // hop
    win = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    frames = np.stack([padded[i * hop : i * hop + n_fft] * win for i in range(n)])
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2  # [T, 1025]
    mel = (power @ htk_filters(n_fft // 2 + 1, SR, 128)).T  # [128, T]
    db = 10.0 * np.log10(np.maximum(mel, 1e-10))
    return (db[:, :-1] - MEAN) / STD


def conv2d(x, w, b, stride):
    """x [Ci, H, W], w [Co, Ci, 3, 3], padding 1."""
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(1, 2))
    win = win[:, :: stride[0], :: stride[1]]  # [Ci, H', W', 3, 3]
    return np.einsum("chwij,ocij->ohw", win, w) + b[:, None, None]


def batch_norm(x, s, p, axis=0):
    shape = [1] * x.ndim
    shape[axis] = -1
    mean, var = s[f"{p}.running_mean"].reshape(shape), s[f"{p}.running_var"].reshape(shape)
    scale, shift = s[f"{p}.weight"].reshape(shape), s[f"{p}.bias"].reshape(shape)
    return (x - mean) / np.sqrt(var + 1e-5) * scale + shift


def layer_norm(x, s, p, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * s[f"{p}.weight"] + s[f"{p}.bias"]


def linear(x, s, p):
    y = x @ s[f"{p}.weight"].T
    return y + s[f"{p}.bias"] if f"{p}.bias" in s else y


def swish(x):
    return x / (1.0 + np.exp(-x))


def reference_embedding(s: dict, cfg: dict, wave: np.ndarray) -> np.ndarray:
    """The official inference path, float64, one window, one loop per layer/head."""
    w2v = cfg["w2v2_config"]
    heads, k = w2v["num_attention_heads"], w2v["conv_depthwise_kernel_size"]
    x = reference_mel(wave)[None]  # [1, 128, T] (channel, freq, time)
    for b in range(2):
        p = f"model.conv.conv.{b}"
        out = batch_norm(
            conv2d(x, s[f"{p}.conv1.weight"], s[f"{p}.conv1.bias"], (2, 2)), s, f"{p}.bn1"
        )
        out = np.maximum(out, 0.0)
        out = batch_norm(
            conv2d(out, s[f"{p}.conv2.weight"], s[f"{p}.conv2.bias"], (1, 1)), s, f"{p}.bn2"
        )
        short = batch_norm(
            conv2d(x, s[f"{p}.conv3.weight"], s[f"{p}.conv3.bias"], (2, 2)), s, f"{p}.bn3"
        )
        x = np.maximum(short + out, 0.0)
    c, f, t = x.shape
    h = linear(x.transpose(2, 0, 1).reshape(t, c * f), s, "model.conv.linear")  # [T', D]
    d = h.shape[1]
    hd = d // heads
    inv = 1.0 / (10000.0 ** (np.arange(0, hd, 2) / hd))
    ang = np.arange(t)[:, None] * inv[None, :]
    cos, sin = np.cos(np.concatenate([ang, ang], 1)), np.sin(np.concatenate([ang, ang], 1))
    for i in range(cfg["encoder_depth"]):
        p = f"model.conformer.layers.{i}"

        def ffn(y, name, p=p):
            y = linear(y, s, f"{p}.{name}.intermediate_dense")
            return linear(swish(y), s, f"{p}.{name}.output_dense")

        h = h + 0.5 * ffn(layer_norm(h, s, f"{p}.ffn1_layer_norm"), "ffn1")
        a_in = layer_norm(h, s, f"{p}.self_attn_layer_norm")
        att = np.zeros_like(h)
        q_all = np.empty_like(h)
        k_all = np.empty_like(h)
        for j in range(heads):  # rotary on the INPUT of the q/k projections, per head slice
            sl = slice(j * hd, (j + 1) * hd)
            xj = a_in[:, sl]
            rot = np.concatenate([-xj[:, hd // 2 :], xj[:, : hd // 2]], axis=1)
            q_all[:, sl] = xj * cos + rot * sin
        k_all[:] = q_all
        q = linear(q_all, s, f"{p}.self_attn.linear_q")
        kk = linear(k_all, s, f"{p}.self_attn.linear_k")
        v = linear(a_in, s, f"{p}.self_attn.linear_v")
        for j in range(heads):
            sl = slice(j * hd, (j + 1) * hd)
            scores = q[:, sl] @ kk[:, sl].T / math.sqrt(hd)
            prob = np.exp(scores - scores.max(1, keepdims=True))
            prob /= prob.sum(1, keepdims=True)
            att[:, sl] = prob @ v[:, sl]
        h = h + linear(att, s, f"{p}.self_attn.linear_out")
        cm = f"{p}.conv_module"
        y = layer_norm(h, s, f"{cm}.layer_norm").T  # [D, T]
        y = s[f"{cm}.pointwise_conv1.weight"][:, :, 0] @ y  # [2D, T]
        y = y[:d] * (1.0 / (1.0 + np.exp(-y[d:])))  # GLU
        yp = np.pad(y, ((0, 0), ((k - 1) // 2, (k - 1) // 2)))
        dw = s[f"{cm}.depthwise_conv.weight"][:, 0, :]  # [D, k]
        y = np.stack([(yp[:, i2 : i2 + k] * dw).sum(1) for i2 in range(y.shape[1])], axis=1)
        y = swish(batch_norm(y, s, f"{cm}.batch_norm", axis=0))
        y = s[f"{cm}.pointwise_conv2.weight"][:, :, 0] @ y
        h = h + y.T
        h = h + 0.5 * ffn(layer_norm(h, s, f"{p}.ffn2_layer_norm"), "ffn2")
        h = layer_norm(h, s, f"{p}.final_layer_norm")
    h = layer_norm(h, s, "model.conformer.layer_norm", eps=w2v["layer_norm_eps"])
    return h.mean(0)


def read_release(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return {k: v.astype(np.float64) for k, v in load_file(folder / "model.safetensors").items()}


# ---- tests ---------------------------------------------------------------------------------


def test_registered_metadata() -> None:
    info = get_encoder_info("muq-msd")
    assert (info.family, info.variant, info.sample_rate, info.dim) == ("MuQ", "msd", SR, 1024)
    assert info.checkpoints[0] == "hf://OpenMuQ/MuQ-large-msd-iter"
    assert len(TABLE) == 1 and TABLE[0].prefix == "model."


def test_release_folder_loads_strictly_and_only_unused_tensors_are_dropped(release, encoder):
    cfg = json.loads((release / "config.json").read_text())
    official = set(official_shapes(cfg))
    used = {k for k in official if not k.startswith(UNUSED)}
    assert {f"model.{k}" for k in encoder.model.state_dict()} == used
    assert len(encoder.weights_sha256) == 64
    # the weights file inside the folder works as --checkpoint too
    again = load_encoder("muq-msd", checkpoint=str(release / "model.safetensors"))
    x = torch.randn(1, 12_000, generator=torch.Generator().manual_seed(1)) * 0.1
    torch.testing.assert_close(again.embed(x, SR), encoder.embed(x, SR))


@pytest.mark.parametrize("damage", ["missing", "unexpected", "shape"])
def test_strict_loading_lists_what_is_wrong(release, tmp_path, damage) -> None:
    from safetensors.torch import load_file

    state = load_file(release / "model.safetensors")
    key = "model.conformer.layers.1.self_attn.linear_k.weight"
    if damage == "missing":
        del state[key]
    elif damage == "unexpected":
        state["model.conformer.layers.1.self_attn.linear_pos.weight"] = state[key].clone()
    else:
        state[key] = state[key][:, :-1].contiguous()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text((release / "config.json").read_text())
    save_file(state, str(bad / "model.safetensors"))
    with pytest.raises(RMISError, match=damage):
        load_encoder("muq-msd", checkpoint=str(bad))


def test_window_matches_float64_reference(release, encoder) -> None:
    cfg = json.loads((release / "config.json").read_text())
    wave = np.random.default_rng(0).normal(size=14_400) * 0.1  # 0.6 s -> 60 frames, 15 tokens
    got = encoder.embed(torch.tensor(wave, dtype=torch.float32)[None], SR)[0].double().numpy()
    want = reference_embedding(read_release(release), cfg, wave)
    assert got.shape == (32,)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_frontend_and_pooling(encoder) -> None:
    x = torch.randn(1, 240_000, generator=torch.Generator().manual_seed(2)) * 0.1
    mel = muq_mel(x)
    assert mel.shape == (1, 128, 1000)
    np.testing.assert_allclose(
        mel[0, :, :40].double().numpy(),
        reference_mel(x[0, :12_000].double().numpy())[:, :40],
        atol=2e-4,
    )  # the first 40 frames only see the first 12 000 samples (+ the 1024 padding)
    with torch.inference_mode():
        tokens = encoder.model(mel)
        assert tokens.shape == (1, 250, 32)
        torch.testing.assert_close(encoder.embed(x, SR), tokens.mean(1))
    with pytest.raises(RMISError, match="24000 Hz"):
        encoder.embed(x, 16_000)


def test_full_size_on_meta_device() -> None:
    cfg = release_config()
    arch = MuQConfig.from_json(cfg)
    assert arch == MuQConfig.from_json({**TABLE[0].arch, "stat": cfg["stat"]})
    with torch.device("meta"):
        model = MuQModel(arch)
        tokens = model(torch.zeros(1, 128, 1000))
    assert tokens.shape == (1, 250, 1024) == (1, 250, TABLE[0].dim)
    n = sum(p.numel() for p in model.parameters()) / 1e6
    assert n == pytest.approx(TABLE[0].params_millions, abs=0.05)
    official = official_shapes(cfg)
    own = {f"model.{k}": tuple(v.shape) for k, v in model.state_dict().items()}
    assert own == {k: s for k, (s, _) in official.items() if not k.startswith(UNUSED)}
    # the official tensor list accounts for the released file's size (bar its JSON header)
    nbytes = sum(math.prod(s) * (8 if t == torch.int64 else 4) for s, t in official.values())
    assert 0 < RELEASE_BYTES - nbytes < 100_000


@pytest.mark.parametrize(
    "change, match",
    [
        ({"stat": {"melspec_2048_mean": 1.0, "melspec_2048_std": STD}}, "stat"),
        ({"label_rate": 33}, "label_rate"),
        ({"n_mels": 64}, "n_mels"),
        ({"features": ["melspec_2048", "cqt"]}, "features"),
    ],
)
def test_config_the_port_does_not_compute_is_refused(change, match) -> None:
    with pytest.raises(RMISError, match=match):
        MuQConfig.from_json(release_config(**change))


def test_check_model_and_embed_cli(release, tmp_path) -> None:
    result = runner.invoke(app, ["check-model", "muq-msd", "--checkpoint", str(release)])
    assert result.exit_code == 0, result.output
    wav = tmp_path / "a.wav"
    sf.write(wav, np.random.default_rng(3).normal(size=24_000).astype(np.float32) * 0.1, 16_000)
    out = tmp_path / "emb.npz"
    result = runner.invoke(
        app, ["embed", "muq-msd", str(wav), "--checkpoint", str(release), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    emb = np.load(out)
    assert [emb[k].shape for k in emb.files] == [(32,)]
    assert np.isfinite(emb[emb.files[0]]).all()
