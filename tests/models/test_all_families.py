"""Every baseline name of issue 10, end to end from a tiny random checkpoint in its authors'
release format (written by the family's ``random_checkpoint``, dispatched by
:func:`rmis.models.random_checkpoint`): ``rmis eval NAME --suite synth --datasets synth_fd16k``
exits 0 with the registry's family/variant (= the paper's Table 3 row) and the expected
dimension, then ``rmis embed`` gives the same dimension; the leaderboard shows the family rows.

The tiny configurations keep one or two layers and a small width, so the dimension checked is
the tiny width (what the registry's pooling rule gives for it; ECHO: 7 bands x width at 16 kHz),
except for CED, whose release files hold no config: the width is the variant's (the registry
dim) and only the depth is cut. That the registry dim is the released width is checked on the
tables themselves.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rmis.cli import app
from rmis.encoders import get_encoder_info
from rmis.models import random_checkpoint

BEATS = {
    "embed_dim": 32,
    "encoder_layers": 1,
    "encoder_embed_dim": 32,
    "encoder_ffn_embed_dim": 32,
    "encoder_attention_heads": 2,
    "conv_pos": 8,
    "conv_pos_groups": 4,
    "num_buckets": 16,
    "max_distance": 50,
}
VIT = {"embed_dim": 32, "depth": 1, "num_heads": 2}
MUQ = {
    "conv_dim": 4,
    "encoder_dim": 32,
    "encoder_depth": 1,
    "codebook_size": 64,
    "rvq_n_codebooks": 2,
    "heads": 4,
    "intermediate": 48,
    "kernel": 7,
    "pos_groups": 4,
    "pos_kernel": 16,
}
ECHO = {"embed_dim": 24, "depth": 1}  # divisible by the 3 (tiny) and 6 (small) heads

#: name -> (release file or hub-folder name, tiny architecture, expected dim at 16 kHz)
CASES: dict[str, tuple[str, dict, int]] = {
    "beats-iter3": ("BEATs_iter3.pt", BEATS, 32),
    "openbeats-base": ("OpenBEATs-Base-i3.pt", BEATS, 32),
    "openbeats-large": ("OpenBEATs-Large-i3.pt", BEATS, 32),
    "audiomae-base": ("pretrained.pth", {**VIT, "decoder_embed_dim": 32, "decoder_depth": 1}, 32),
    "eat-base": ("EAT-base_epoch30_pretrain", VIT, 32),
    "eat-large": ("EAT-large_epoch20_pretrain", VIT, 32),
    "ced-tiny": ("audiotransformer_tiny_mAP_4814.pt", {"depth": 1}, 192),
    "ced-mini": ("audiotransformer_mini_mAP_4896.pt", {"depth": 1}, 256),
    "ced-small": ("audiotransformer_small_mAP_4958.pt", {"depth": 1}, 384),
    "ced-base": ("audiotransformer_base_mAP_4999.pt", {"depth": 1}, 768),
    "dasheng-base": ("dasheng_base.pt", VIT, 32),
    "dasheng-0.6b": ("dasheng_06b.pt", VIT, 32),
    "dasheng-1.2b": ("dasheng_12b.pt", VIT, 32),
    "midashenglm-7b": ("midashenglm-7b", VIT, 32),
    # 64 wide: the release holds no head count, PaSST reads it as width / 64
    "passt-base": ("passt-s-f128-p16-s10-ap.476-swa.pt", {**VIT, "embed_dim": 64}, 64),
    "muq-msd": ("MuQ-large-msd-iter", MUQ, 32),
    "echo-tiny": ("echo-tiny-0828", ECHO, 7 * 24),
    "echo-small": ("echo-small-0824", ECHO, 7 * 24),
}
TABLE3 = {  # the paper's Table 3 rows (family, variant)
    "beats-iter3": ("BEATs", "iter3"),
    "openbeats-base": ("OpenBEATs", "base"),
    "openbeats-large": ("OpenBEATs", "large"),
    "audiomae-base": ("AudioMAE", "base"),
    "eat-base": ("EAT", "base30"),
    "eat-large": ("EAT", "large"),
    "ced-tiny": ("CED", "tiny"),
    "ced-mini": ("CED", "mini"),
    "ced-small": ("CED", "small"),
    "ced-base": ("CED", "base"),
    "dasheng-base": ("DaSheng", "base"),
    "dasheng-0.6b": ("DaSheng", "0.6B"),
    "dasheng-1.2b": ("DaSheng", "1.2B"),
    "midashenglm-7b": ("MiDaShengLM", "7B"),
    "passt-base": ("PaSST", "base"),
    "muq-msd": ("MuQ", "msd"),
    "echo-tiny": ("ECHO", "tiny"),
    "echo-small": ("ECHO", "small"),
}
RELEASED_DIM = {  # the paper's embedding sizes (16 kHz for ECHO: 7 bands)
    "beats-iter3": 768,
    "openbeats-base": 768,
    "openbeats-large": 1024,
    "audiomae-base": 768,
    "eat-base": 768,
    "eat-large": 1024,
    "ced-tiny": 192,
    "ced-mini": 256,
    "ced-small": 384,
    "ced-base": 768,
    "dasheng-base": 768,
    "dasheng-0.6b": 1280,
    "dasheng-1.2b": 1536,
    "midashenglm-7b": 1280,
    "passt-base": 768,
    "muq-msd": 1024,
    "echo-tiny": 7 * 192,
    "echo-small": 7 * 384,
}

runner = CliRunner()


def invoke(*args) -> object:
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """One results folder for every name (the leaderboard test reads them all)."""
    return tmp_path_factory.mktemp("all_families_results")


def test_the_eighteen_names_are_registered_as_table3_rows() -> None:
    assert set(CASES) == set(TABLE3) == set(RELEASED_DIM) and len(CASES) == 18
    for name, (family, variant) in TABLE3.items():
        info = get_encoder_info(name)
        assert (info.family, info.variant) == (family, variant), name
        spec = info.factory.args[0]  # the family table's Pretrained row
        arch = spec.arch
        width = arch.get("encoder_embed_dim") or arch.get("encoder_dim") or arch["embed_dim"]
        if family == "ECHO":
            assert info.dim == spec.dim == f"n_bands x {width}"
            assert 7 * width == RELEASED_DIM[name]
        else:
            assert info.dim == width == RELEASED_DIM[name], name


@pytest.mark.parametrize("name", list(CASES))
def test_eval_and_embed_from_a_tiny_release_checkpoint(name, tmp_path, synth_cache, results):
    file_name, arch, dim = CASES[name]
    ckpt = random_checkpoint(name, tmp_path / file_name, seed=0, **arch)
    assert ckpt.exists()
    r = invoke(
        "eval", name, "--suite", "synth", "--datasets", "synth_fd16k", "--checkpoint", ckpt,
        "--runs", 2, "--workers", 0, "--results-dir", results, "--cache-dir", synth_cache,
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    found = list((results / name).rglob("synth_fd16k.json"))
    assert len(found) == 1, found
    res = json.loads(found[0].read_text())
    assert (res["model"]["family"], res["model"]["variant"]) == TABLE3[name]
    assert res["model"]["name"] == name and len(res["model"]["weights_sha256"]) == 64
    assert res["dim"] == dim
    assert 0 <= res["score"] <= 100 and len(res["runs"]) == 2
    assert res["n_files"] == 160 and res["provenance"]["files_embedded"] == res["n_files"]
    wav = next((synth_cache / "synth" / "synth_fd16k").glob("*.wav"))
    out = tmp_path / "x.npz"
    r = invoke("embed", name, wav, "--checkpoint", ckpt, "--out", out)
    assert r.exit_code == 0, r.output
    with np.load(out) as z:
        vectors = [z[k] for k in z.files]
    assert [v.shape for v in vectors] == [(dim,)] and np.isfinite(vectors[0]).all()


def test_leaderboard_shows_the_family_rows(results) -> None:
    done = sorted(p.name for p in results.iterdir() if p.is_dir())
    if not done:
        pytest.skip("no eval above ran (deselected)")
    r = invoke("leaderboard", "--suite", "synth", "--results-dir", results, "--format", "markdown")
    assert r.exit_code == 0, r.output
    for name in done:
        family, variant = TABLE3[name]
        assert f"| {family} | {variant} |" in r.output, (name, r.output)
