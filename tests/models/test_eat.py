"""EAT: the hub release folder (config.json + model.safetensors, keys under ``model.``), strict
loading, and one window against a float64 numpy implementation of the hub remote code's
``extract_features`` behind the RMIS wrapper's front-end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_audiomae import block_np, features_np, ln_np, patches_np

from rmis.encoders import get_encoder_info, load_encoder
from rmis.errors import RMISError
from rmis.models.eat import EATViT, eat_config, hub_config, official_positions, random_hub_folder

TINY = {"embed_dim": 128, "depth": 2, "num_heads": 2}


def write_folder(path, seed: int = 0, finetuned: bool = False, **overrides):
    """A random-weight hub folder of the TINY config (:func:`random_hub_folder`)."""
    return random_hub_folder(path, seed, finetuned, **{**TINY, **overrides})


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("eat") / "EAT-base_epoch30_pretrain")


def eat_np(state: dict, x: np.ndarray, heads: int) -> np.ndarray:
    """The remote code's ``EAT.encode`` (post-norm AltBlocks) -> CLS of the last layer."""
    s = {k[len("model.") :]: v.double().numpy() for k, v in state.items()}
    z = patches_np(x, s["local_encoder.proj.weight"], s["local_encoder.proj.bias"])
    z = z + s["fixed_positional_encoder.positions"][0, : len(z)]
    z = np.concatenate([s["extra_tokens"][0], z])
    z = ln_np(z, s["pre_norm.weight"], s["pre_norm.bias"])
    depth = len({k.split(".")[1] for k in s if k.startswith("blocks.")})
    for i in range(depth):
        z = block_np(z, s, f"blocks.{i}.", heads, pre_norm=False)
    return z[0]


def test_hub_folder_loads_and_registry_metadata(folder) -> None:
    enc = load_encoder("eat-base", checkpoint=str(folder))
    assert len(enc.weights_sha256) == 64 and enc.sample_rate == 16_000
    assert (enc.cfg.embed_dim, enc.cfg.depth, enc.cfg.num_heads) == (128, 2, 2)
    # a path to the weights file inside the folder works too
    load_encoder("eat-base", checkpoint=str(folder / "model.safetensors"))
    for name, variant, dim, repo in (
        ("eat-base", "base30", 768, "hf://worstchan/EAT-base_epoch30_pretrain"),
        ("eat-large", "large", 1024, "hf://worstchan/EAT-large_epoch20_pretrain"),
    ):
        info = get_encoder_info(name)
        assert (info.family, info.variant, info.dim, info.checkpoints[0]) == (
            "EAT",
            variant,
            dim,
            repo,
        )
    with torch.inference_mode():
        assert enc.embed(torch.randn(2, 160_000) * 0.1, 16_000).shape == (2, 128)


@pytest.mark.parametrize(
    "name,dim,depth,params", [("eat-base", 768, 12, 88), ("eat-large", 1024, 24, 310)]
)
def test_full_size_shapes_without_running(name, dim, depth, params) -> None:
    spec = get_encoder_info(name).factory.args[0]
    cfg, max_length, fixed = eat_config(hub_config(**spec.arch), name)
    with torch.device("meta"):
        vit = EATViT(cfg, max_length, fixed)
        out = vit(torch.empty(2, 1, 1024, 128))
    assert out.shape == (2, 513, dim)
    shapes = {k: tuple(v.shape) for k, v in vit.state_dict().items()}
    assert shapes["fixed_positional_encoder.positions"] == (1, 768 * 8, dim)
    assert shapes["local_encoder.proj.weight"] == (dim, 1, 16, 16)
    assert shapes["extra_tokens"] == (1, 1, dim) and shapes["pre_norm.weight"] == (dim,)
    assert shapes[f"blocks.{depth - 1}.attn.qkv.weight"] == (3 * dim, dim)
    assert f"blocks.{depth}.norm1.weight" not in shapes
    per_block = 4 * dim + (3 * dim * dim + 3 * dim) + (dim * dim + dim) + (8 * dim * dim + 5 * dim)
    want = depth * per_block + 256 * dim + dim + dim + 2 * dim  # patch conv, CLS, pre_norm
    total = want + 768 * 8 * dim  # with the fixed table
    assert sum(p.numel() for p in vit.parameters() if p.requires_grad) == want
    assert sum(p.numel() for p in vit.parameters()) == total
    assert abs(total / 1e6 - params) / params < 0.03  # the paper's Table 3 (88 M / 310 M)


def test_positions_as_the_remote_code_builds_them() -> None:
    """get_2d_sincos_pos_embed_flexible(D, (max_length, 8)) written out (float32, as there)."""
    d, rows, cols = 16, 6, 8
    got = official_positions(d, rows, cols)[0].numpy()
    grid_w, grid_h = np.meshgrid(
        np.arange(cols, dtype=np.float32), np.arange(rows, dtype=np.float32)
    )

    def code(pos):
        omega = np.arange(d // 4, dtype=np.float32)
        omega /= d / 4.0
        omega = 1.0 / 10000**omega
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    want = np.concatenate([code(grid_w), code(grid_h)], axis=1)
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_one_window_matches_float64_reference(folder) -> None:
    from safetensors.torch import load_file

    wave = np.random.default_rng(5).normal(size=24_000).astype(np.float32) * 0.1
    state = load_file(str(folder / "model.safetensors"))
    x = features_np(wave.astype(np.float64))
    ref = eat_np(state, x, heads=2)
    enc = load_encoder("eat-base", checkpoint=str(folder))
    with torch.inference_mode():
        got = enc.embed(torch.from_numpy(wave)[None], 16_000)[0].double().numpy()
        arch = enc.vit.double()(torch.from_numpy(x)[None, None])[0, 0].numpy()
    assert got.shape == ref.shape == (128,)
    np.testing.assert_allclose(arch, ref, atol=1e-9)
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_finetuned_folder_head_is_dropped_and_bad_configs_refused(tmp_path, folder) -> None:
    ft = write_folder(tmp_path / "ft", finetuned=True)
    x = torch.randn(1, 16_000) * 0.1
    with torch.inference_mode():
        a = load_encoder("eat-base", checkpoint=str(ft)).embed(x, 16_000)
        b = load_encoder("eat-base", checkpoint=str(write_folder(tmp_path / "pt"))).embed(x, 16_000)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    cfg = json.loads((folder / "config.json").read_text())
    for changes, match in (
        ({"layer_norm_first": True}, "layer_norm_first"),
        ({"depth": 3}, r"missing.*blocks\.2\."),
    ):
        other = tmp_path / f"wrong{len(match)}"
        other.mkdir()
        (other / "config.json").write_text(json.dumps({**cfg, **changes}))
        (other / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
        with pytest.raises(RMISError, match=match):
            load_encoder("eat-base", checkpoint=str(other))


def test_cli_check_model_and_embed(tmp_path, folder) -> None:
    import soundfile as sf
    from typer.testing import CliRunner

    from rmis.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["check-model", "eat-large", "--checkpoint", str(folder)])
    assert r.exit_code == 0, r.output
    wav = tmp_path / "a.wav"
    sf.write(wav, np.random.default_rng(0).normal(size=8_000 * 12) * 0.1, 8_000)
    out = tmp_path / "x.npz"
    args = ["embed", "eat-base", str(wav), "--checkpoint", str(folder), "--out", str(out)]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    with np.load(out) as z:
        assert [z[k].shape for k in z.files] == [(128,)]
