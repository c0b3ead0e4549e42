"""PaSST (``passt-base``): the release file's layout, strict loading, and the whole window (front
end, patch grid, positions, blocks, pooling) against a float64 numpy evaluation of the official
equations; full-size shapes on the meta device."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import erf

from rmis.encoders import get_encoder_info, load_encoder
from rmis.errors import RMISError
from rmis.models.passt import (
    ARCH,
    TABLE,
    PasstConfig,
    PasstNet,
    passt_params_millions,
    random_checkpoint,
    release_shapes,
)

SMALL = {"embed_dim": 128, "depth": 2, "mlp_hidden": 512}  # 2 heads of 64
SR = 32_000


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return random_checkpoint(
        "passt-base", tmp_path_factory.mktemp("passt") / "passt-small.pt", seed=0, **SMALL
    )


@pytest.fixture(scope="module")
def encoder(ckpt):
    return load_encoder("passt-base", checkpoint=str(ckpt))


# ---- float64 numpy reference of the official equations ------------------------------------


def kaldi_mel_banks(n_mels: int, n_fft: int, sr: int, fmin: float, fmax: float) -> np.ndarray:
    """torchaudio.compliance.kaldi.get_mel_banks (no VTLN) + the zero Nyquist column PaSST
    appends: [n_mels, n_fft // 2 + 1]."""

    def mel(f):
        return 1127.0 * np.log(1.0 + np.asarray(f, dtype=np.float64) / 700.0)

    lo, hi = mel(fmin), mel(fmax)
    delta = (hi - lo) / (n_mels + 1)
    m = mel(sr / n_fft * np.arange(n_fft // 2))
    out = np.zeros((n_mels, n_fft // 2 + 1))
    for b in range(n_mels):
        left, centre, right = lo + b * delta, lo + (b + 1) * delta, lo + (b + 2) * delta
        up = (m - left) / (centre - left)
        down = (right - m) / (right - centre)
        out[b, : n_fft // 2] = np.maximum(0.0, np.minimum(up, down))
    return out


def reference_mel(x: np.ndarray) -> np.ndarray:
    """PaSST's eval front-end for one window, float64 -> [128, T]."""
    y = x[1:] - 0.97 * x[:-1]
    n_fft, hop, win = 1024, 320, 800
    n = np.arange(win)
    window = np.zeros(n_fft)
    window[(n_fft - win) // 2 : (n_fft - win) // 2 + win] = 0.5 - 0.5 * np.cos(
        2 * np.pi * n / (win - 1)
    )  # symmetric hann(800), centred in 1024
    padded = np.pad(y, n_fft // 2, mode="reflect")
    frames = 1 + (len(padded) - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    power = np.abs(np.fft.rfft(padded[idx] * window, axis=1)) ** 2  # [T, 513]
    mel = kaldi_mel_banks(128, n_fft, SR, 0.0, 15_000.0) @ power.T
    return (np.log(mel + 1e-5) + 4.5) / 5.0


def _ln(x, w, b, eps=1e-6):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def reference_tokens(mel: np.ndarray, sd: dict[str, np.ndarray], heads: int) -> np.ndarray:
    """The official PaSST forward_features (eval) on one [128, T] mel, up to the final norm."""
    w, b = sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"]  # [D, 1, p, p]
    d, p = w.shape[0], w.shape[-1]
    stride = 10
    nf = (mel.shape[0] - p) // stride + 1
    nt = min((mel.shape[1] - p) // stride + 1, sd["time_new_pos_embed"].shape[-1])
    grid = np.zeros((d, nf, nt))
    for f in range(nf):
        for t in range(nt):
            patch = mel[f * stride : f * stride + p, t * stride : t * stride + p]
            grid[:, f, t] = w[:, 0].reshape(d, -1) @ patch.reshape(-1) + b
    grid = grid + sd["time_new_pos_embed"][0][:, :, :nt] + sd["freq_new_pos_embed"][0]
    x = grid.reshape(d, -1).T  # token f * nt + t
    cls = sd["cls_token"][0] + sd["new_pos_embed"][0, :1]
    dist = sd["dist_token"][0] + sd["new_pos_embed"][0, 1:]
    x = np.concatenate([cls, dist, x])
    hd = d // heads
    i = 0
    while f"blocks.{i}.norm1.weight" in sd:
        g = lambda k: sd[f"blocks.{i}.{k}"]  # noqa: B023, E731
        h = _ln(x, g("norm1.weight"), g("norm1.bias"))
        qkv = h @ g("attn.qkv.weight").T + g("attn.qkv.bias")
        q, k, v = (qkv[:, j * d : (j + 1) * d].reshape(-1, heads, hd) for j in range(3))
        att = np.einsum("nhc,mhc->hnm", q, k) * hd**-0.5
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        o = np.einsum("hnm,mhc->nhc", att, v).reshape(-1, d)
        x = x + o @ g("attn.proj.weight").T + g("attn.proj.bias")
        h = _ln(x, g("norm2.weight"), g("norm2.bias"))
        h = h @ g("mlp.fc1.weight").T + g("mlp.fc1.bias")
        h = 0.5 * h * (1 + erf(h / np.sqrt(2)))
        x = x + h @ g("mlp.fc2.weight").T + g("mlp.fc2.bias")
        i += 1
    return _ln(x, sd["norm.weight"], sd["norm.bias"])


def _np_state(path) -> dict[str, np.ndarray]:
    return {k: v.double().numpy() for k, v in torch.load(path, weights_only=True).items()}


# ---- tests ----------------------------------------------------------------------------------

OFFICIAL_TOP = {
    "cls_token": (1, 1, 768),
    "dist_token": (1, 1, 768),
    "new_pos_embed": (1, 2, 768),
    "freq_new_pos_embed": (1, 768, 12, 1),
    "time_new_pos_embed": (1, 768, 1, 99),
    "patch_embed.proj.weight": (768, 1, 16, 16),
    "patch_embed.proj.bias": (768,),
    "norm.weight": (768,),
    "norm.bias": (768,),
    "head.0.weight": (768,),
    "head.0.bias": (768,),
    "head.1.weight": (527, 768),
    "head.1.bias": (527,),
    "head_dist.weight": (527, 768),
    "head_dist.bias": (527,),
}
OFFICIAL_BLOCK = {
    "norm1.weight": (768,),
    "norm1.bias": (768,),
    "attn.qkv.weight": (2304, 768),
    "attn.qkv.bias": (2304,),
    "attn.proj.weight": (768, 768),
    "attn.proj.bias": (768,),
    "norm2.weight": (768,),
    "norm2.bias": (768,),
    "mlp.fc1.weight": (3072, 768),
    "mlp.fc1.bias": (3072,),
    "mlp.fc2.weight": (768, 3072),
    "mlp.fc2.bias": (768,),
}


def test_full_size_release_layout_and_shapes_on_meta() -> None:
    """The released PaSST-S (official models/passt.py, distilled, 527 classes): every key and
    shape of the release file, the parameter count, and the 1190-token sequence, never run."""
    cfg = PasstConfig.from_arch(ARCH)
    shapes = release_shapes(cfg)
    expected = dict(OFFICIAL_TOP)
    for i in range(12):
        expected.update({f"blocks.{i}.{k}": s for k, s in OFFICIAL_BLOCK.items()})
    assert shapes == expected
    with torch.device("meta"):
        net = PasstNet(cfg)
    # the adapter's module holds exactly the non-classifier tensors
    assert set(net.state_dict()) == {k for k in expected if not k.startswith("head")}
    total = sum(int(np.prod(s)) for s in shapes.values())
    assert total / 1e6 == pytest.approx(passt_params_millions(cfg), abs=1e-9)
    assert TABLE[0].params_millions == pytest.approx(total / 1e6, abs=0.01)
    meta_state = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    assert PasstConfig.from_state_dict(meta_state) == cfg  # architecture read from the shapes
    with torch.device("meta"):  # the blocks keep the shape (run at small size below)
        tokens = net.tokens(torch.empty(2, 128, 1000))
    assert tuple(tokens.shape) == (2, 1190, 768)


def test_registry_metadata() -> None:
    info = get_encoder_info("passt-base")
    assert (info.family, info.variant, info.sample_rate) == ("PaSST", "base", 32_000)
    assert info.dim == 768 and "1190 tokens" in info.pooling
    assert info.checkpoints[0].endswith("passt-s-f128-p16-s10-ap.476-swa.pt")


def test_release_format_loads_strictly(ckpt, encoder) -> None:
    obj = torch.load(ckpt, weights_only=True)  # a flat state dict, as released
    cfg = PasstConfig.from_arch({**ARCH, **SMALL})
    assert {k: tuple(v.shape) for k, v in obj.items()} == release_shapes(cfg)
    assert encoder.cfg == PasstConfig(embed_dim=128, depth=2, num_heads=2, mlp_hidden=512)
    assert len(encoder.weights_sha256) == 64
    got = encoder.net.state_dict()
    assert all(torch.equal(got[k], obj[k]) for k in got)


def test_strict_loading_lists_bad_keys(tmp_path, ckpt) -> None:
    state = torch.load(ckpt, weights_only=True)
    bad = dict(state)
    bad["blocks.0.mlp.fc2.weight"] = bad["blocks.0.mlp.fc2.weight"][:, :-1]
    del bad["norm.bias"]
    bad["blocks.0.attn.extra"] = torch.zeros(1)
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(RMISError) as err:
        load_encoder("passt-base", checkpoint=str(tmp_path / "bad.pt"))
    msg = str(err.value)
    assert "norm.bias" in msg and "blocks.0.attn.extra" in msg and "fc2.weight" in msg
    torch.save({"model": state}, tmp_path / "nested.pt")  # not the release layout
    with pytest.raises(RMISError):
        load_encoder("passt-base", checkpoint=str(tmp_path / "nested.pt"))


def test_frontend_matches_numpy_reference() -> None:
    from rmis.frontends import passt_mel

    x = np.random.default_rng(1).normal(size=(2, 320_000)) * 0.1
    got = passt_mel(torch.from_numpy(x).float()).double().numpy()
    assert got.shape == (2, 128, 1000)
    for i in range(2):
        ref = reference_mel(x[i])
        assert np.abs(got[i] - ref).max() < 3e-4


@pytest.fixture(scope="module")
def window(ckpt):
    """One 10-s window (mean removed, as the harness gives it) and its float64 reference:
    numpy front-end, then the official forward up to the final norm -> [1190, D]."""
    x = np.random.default_rng(3).normal(size=320_000) * 0.1
    x -= x.mean()
    mel = reference_mel(x)
    return x, mel, reference_tokens(mel, _np_state(ckpt), heads=2)


def test_network_matches_float64_reference(encoder, window) -> None:
    """Patch grid, positions, blocks and final norm on a given mel, full 10-s geometry."""
    _, mel, ref = window
    with torch.inference_mode():
        got = encoder.net(torch.from_numpy(mel).float()[None])[0].double().numpy()
    assert got.shape == ref.shape == (1190, 128)
    assert np.abs(got - ref).max() < 3e-5


def test_whole_window_embedding_matches_reference(encoder, window) -> None:
    """Waveform -> front-end -> network -> mean over all 1190 tokens (class + distillation)."""
    x, _, ref = window
    with torch.inference_mode():
        got = encoder.embed(torch.from_numpy(x).float()[None], SR)[0].double().numpy()
    assert got.shape == (128,)
    np.testing.assert_allclose(got, ref.mean(0), atol=1e-5, rtol=0)
    # not the authors' wrapper pooling ((cls + dist) / 2): the class tokens are only 2 of 1190
    assert np.abs(ref.mean(0) - ref[:2].mean(0)).max() > 1e-2


def test_short_and_long_windows(encoder) -> None:
    net = encoder.net
    with torch.inference_mode():
        mel = torch.randn(1, 128, 1200)
        long = net(mel)  # past the 99 time positions: cut to them, as the official code does
        assert long.shape == (1, 2 + 12 * 99, 128)
        assert torch.allclose(long, net(mel[..., :1000]), atol=1e-5)
        short = encoder.embed(torch.randn(2, SR), SR)  # 1 s: first 9 time positions
        assert short.shape == (2, 128)
    with pytest.raises(RMISError, match="shorter than one patch"):
        encoder.embed(torch.randn(1, 3000), SR)
    with pytest.raises(RMISError, match="32000-Hz"):
        encoder.embed(torch.randn(1, SR), 16_000)


def test_cli_check_model_and_embed(tmp_path, ckpt) -> None:
    import soundfile as sf
    from typer.testing import CliRunner

    from rmis.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["check-model", "passt-base", "--checkpoint", str(ckpt)])
    assert r.exit_code == 0, r.output
    wav = tmp_path / "a.wav"
    sf.write(wav, np.random.default_rng(4).normal(size=48_000 * 3) * 0.1, 48_000)
    out = tmp_path / "emb.npz"
    r = runner.invoke(
        app, ["embed", "passt-base", str(wav), "--checkpoint", str(ckpt), "--out", str(out)]
    )
    assert r.exit_code == 0, r.output
    emb = np.load(out)
    assert emb[str(wav)].shape == (128,) and np.isfinite(emb[str(wav)]).all()
