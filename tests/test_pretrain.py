"""The FISHER pre-training recipe (recipes/fisher_pretrain.py): it learns, resumes exactly,
scales to two processes unchanged, and writes an encoder the inference path loads."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rmis.models.fisher import FisherViT, sincos_positions, variant_config

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "fisher_pretrain.py"


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


fp = _load("fisher_pretrain", RECIPE)
corpus_mod = _load("synth_corpus", ROOT / "recipes" / "synth_corpus.py")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A small disjoint corpus: 1 recording per FD class (2 channels, 20 s), 2 AD clips per
    machine section (40 files)."""
    out = tmp_path_factory.mktemp("corpus")
    corpus_mod.write_corpus(out, recordings=1, clips=2)
    return out


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def _losses(out: Path) -> list[float]:
    return [r["loss"] for r in _log(out) if "loss" in r]


def _run(*args: str) -> None:
    fp.main(["--preset", "debug", "--probe-every", "0", *args])


# ------------------------------------------------------------------------------------------------
# pieces, against hand-computed values
# ------------------------------------------------------------------------------------------------


def test_rates_bands_and_clones_by_hand() -> None:
    tiny, small = fp.Config(**fp.PRESETS["tiny"]), fp.Config(**fp.PRESETS["small"])
    assert fp.batch_rates(tiny) == [4000, 8000, 12000, 16000, 20000, 24000, 28000]
    assert fp.batch_rates(small) == list(range(2000, 32000, 2000))
    assert (tiny.band_width, small.band_width) == (100, 50)
    # n_fft = 25 ms: 700 samples at 28 kHz -> 351 bins -> 3 bands of 100; 4 kHz: 51 bins,
    # padded to one band; 16 kHz: 201 bins -> 2 bands
    assert [fp.n_bands(tiny, sr) for sr in (4000, 16000, 28000)] == [1, 2, 3]
    # m_b = 64 cloned bands per GPU batch: 24 clips x 3 bands = 72 > 64 -> 1 clone;
    # 24 x 1 = 24 -> 2 clones; EAT's 16 clones are the upper bound
    assert fp.n_clones(tiny, 24, 28000) == 1
    assert fp.n_clones(tiny, 24, 8000) == 2
    assert fp.n_clones(tiny, 1, 8000) == 16
    # schedule: linear warm-up to 5e-4 at 40 k steps, cosine to 0 at 400 k
    assert fp.lr_at(tiny, 0) == pytest.approx(5e-4 / 40_000)
    assert fp.lr_at(tiny, 40_000) == pytest.approx(5e-4)
    assert fp.lr_at(tiny, 220_000) == pytest.approx(2.5e-4)
    assert fp.lr_at(tiny, 400_000) == pytest.approx(0.0, abs=1e-12)
    assert fp.ema_at(tiny, 0) == 0.9998 and fp.ema_at(tiny, 10**6) == 0.99999
    assert fp.ema_at(tiny, 50_000) == pytest.approx((0.9998 + 0.99999) / 2)


def test_small_band_count() -> None:
    small = fp.Config(**fp.PRESETS["small"])
    # 30 kHz: n_fft = 750, 376 bins, // 50 -> 7 bands
    assert fp.n_bands(small, 30000) == 7


def test_inverse_block_mask_keeps_exact_count_in_blocks() -> None:
    rng = np.random.default_rng(0)
    rows, cols, keep = 64, 6, round(64 * 6 * 0.2)
    assert keep == 77
    idx = fp.inverse_block_mask(rng, rows, cols, keep, 5)
    assert len(idx) == keep and len(set(idx.tolist())) == keep
    assert np.all(np.diff(idx) > 0) and idx.min() >= 0 and idx.max() < rows * cols
    # kept patches come in blocks: most kept patches have a kept 4-neighbour
    grid = np.zeros((rows, cols), bool)
    grid.flat[idx] = True
    pad = np.pad(grid, 1)
    neighbours = pad[:-2, 1:-1] | pad[2:, 1:-1] | pad[1:-1, :-2] | pad[1:-1, 2:]
    assert (neighbours & grid).sum() >= 0.9 * keep
    # a uniform random choice would leave far more isolated patches
    rand = np.zeros((rows, cols), bool)
    rand.flat[rng.choice(rows * cols, keep, replace=False)] = True
    padr = np.pad(rand, 1)
    nr = padr[:-2, 1:-1] | padr[2:, 1:-1] | padr[1:-1, :-2] | padr[1:-1, 2:]
    assert (nr & rand).sum() < 0.7 * keep


def test_forward_features_matches_inference_and_drops_masked_patches() -> None:
    torch.manual_seed(0)
    vit = FisherViT(variant_config("tiny", depth=2, embed_dim=32, num_heads=2)).eval()
    spec = torch.randn(2, 998, 201)
    with torch.no_grad():
        ref = vit(spec)
        bands, nb = vit.bands(spec)
        out, layers = vit.forward_features(bands)
        assert len(layers) == 2 and torch.equal(layers[-1], out)  # post-norm: no final norm
        assert torch.allclose(out[:, 0].reshape(2, -1), ref, atol=1e-6)
        n = vit.grid()[0] * vit.grid()[1]
        assert vit.grid() == (64, 6) and out.shape == (2 * nb, 1 + n, 32)
        every = torch.arange(n).expand(bands.shape[0], -1)
        assert torch.allclose(vit.forward_features(bands, every)[0], out, atol=1e-6)
        keep = torch.tensor([[0, 7, 100, 383]]).expand(bands.shape[0], -1)
        a, _ = vit.forward_features(bands, keep)
        # change a masked patch (token 1 = rows 0-15, bins 16-31): nothing changes
        b2 = bands.clone()
        b2[:, :, :16, 16:32] += 5.0
        b, _ = vit.forward_features(b2, keep)
        assert a.shape == (bands.shape[0], 5, 32) and torch.equal(a, b)
        # change a kept one (token 7 = rows 16-31, bins 16-31): the output changes
        b2 = bands.clone()
        b2[:, :, 16:32, 16:32] += 5.0
        assert not torch.allclose(vit.forward_features(b2, keep)[0], a)


def test_teacher_targets_and_loss_by_hand() -> None:
    torch.manual_seed(1)
    vit = FisherViT(variant_config("tiny", depth=3, embed_dim=16, num_heads=2)).eval()
    bands = torch.randn(2, 1, 1024, 100)
    t_band, t_patch = fp.teacher_targets(vit, bands)
    _, layers = vit.forward_features(bands)
    # independent: per layer, per channel z-score over the 384 patches (population std,
    # eps 1e-5), averaged over the 3 layers, then per patch z-score over the 16 channels
    ref = 0
    for h in layers:
        p = h[:, 1:].double()
        sd = torch.sqrt(p.var(1, unbiased=False, keepdim=True) + 1e-5)
        ref = ref + (p - p.mean(1, keepdim=True)) / sd
    ref = ref / 3
    sd = torch.sqrt(ref.var(2, unbiased=False, keepdim=True) + 1e-5)
    ref = (ref - ref.mean(2, keepdim=True)) / sd
    assert torch.allclose(t_patch.double(), ref, atol=1e-4)
    assert torch.allclose(t_band.double(), ref.mean(1), atol=1e-4)
    assert t_band.abs().max() > 0.01  # not the zero vector
    # loss: band MSE + patch MSE on masked places only
    s_band = torch.zeros(2, 16)
    s_patch = t_patch.clone()
    keep = torch.tensor([[0, 1], [2, 3]])
    s_patch[:, :4] += 1.0  # error only on kept places (0, 1 for item 0) and (2, 3 for item 1)
    s_patch[0, 2] += 2.0  # masked place of item 0: squared error 4 on one of 2 * 382 places
    loss, l_band, l_patch = fp.fisher_loss(s_band, s_patch, t_band, t_patch, keep)
    assert l_band.item() == pytest.approx(t_band.pow(2).mean().item())
    # item 0 masked places: 2 has error 3 (1 + 2), 3 has error 1; item 1: 0, 1 have error 1
    assert l_patch.item() == pytest.approx((9 + 1 + 1 + 1) / (2 * 382), rel=1e-5)
    assert loss.item() == pytest.approx(l_band.item() + l_patch.item())


# ------------------------------------------------------------------------------------------------
# the recipe end to end
# ------------------------------------------------------------------------------------------------


# The learning check: one short run (debug preset, 200 steps of batch 4, peak lr 2e-3 after 20
# warm-up steps, cosine to 0 at step 200; about 35 s on 2 CPU cores) must lower the loss AND lift
# the k-NN probe of the student (CLS embedding, synth_fd25k6, 10 sealed runs) by PROBE_GAIN
# points over its initialisation. Measured (macro accuracy, %, step 0 -> 200) per seed:
#   seed 0: 45.66 -> 64.90 (+19.2)   1: 42.16 -> 52.31 (+10.2)   2: 43.77 -> 60.55 (+16.8)
#   seed 3: 42.66 -> 56.99 (+14.3)   4: 44.08 -> 55.04 (+11.0)   5: 44.98 -> 56.06 (+11.1)
#   seed 6: 52.28 -> 47.82 (-4.5)    7: 44.57 -> 51.48 (+6.9)
# The run is deterministic: 1 thread instead of 2, or 1e-6 relative noise on the initial
# weights, gives seed 0's figures again. Broken losses, seed 0: lr 0 or a loss without gradient
# leave the probe at 45.66 (+0.0); each band regressing another band's targets still lowers the
# loss as far (2.03 -> 1.20) but lifts the probe by +2.5 only (seed 3: +1.5). The gain is not
# guaranteed for every seed (seed 6 peaks at step 50, then falls), hence the fixed seed.
PROBE_GAIN = 8.0


def test_loss_falls_and_probe_improves(tmp_path, corpus, synth_cache) -> None:
    out = tmp_path / "run"
    fp.main(
        [
            "--preset",
            "debug",
            "--seed",
            "0",
            "--data",
            str(corpus),
            "--out",
            str(out),
            "--max-steps",
            "200",
            "--total-steps",
            "200",
            "--warmup-steps",
            "20",
            "--lr",
            "2e-3",
            "--batch-size",
            "4",
            "--probe-every",
            "200",
            "--probe-runs",
            "10",
            "--probe-cache",
            str(synth_cache),
            "--probe-datasets",
            "synth_fd25k6",
            "--save-every",
            "200",
        ]
    )
    rows = _log(out)
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 200 and all(math.isfinite(x) for x in losses)
    # a loss without gradient (or with the targets taken from the student) stays flat
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 0.3
    probes = [r for r in rows if "probe" in r]
    assert [r["step"] for r in probes] == [0, 200]
    first, last = (r["probe"]["synth_fd25k6"] for r in probes)
    assert 0 <= first <= 100 and 0 <= last <= 100
    # a broken loss leaves the probe where it was (lr 0, no gradient) or lifts it by ~2 points
    assert last - first >= PROBE_GAIN, (first, last)
    for key in ("loss_band", "loss_patch", "lr", "ema", "bands_per_s", "sr_batch", "clones"):
        assert key in rows[1]
    assert (out / "curves.png").stat().st_size > 1000


def test_resume_continues_the_loss_curve_exactly(tmp_path, corpus) -> None:
    common = ["--data", str(corpus), "--batch-size", "2", "--total-steps", "6"]
    _run(*common, "--out", str(tmp_path / "a"), "--max-steps", "6")
    _run(*common, "--out", str(tmp_path / "b"), "--max-steps", "3")
    assert len(_losses(tmp_path / "b")) == 3
    _run(*common, "--out", str(tmp_path / "b"), "--max-steps", "6", "--resume")
    a, b = _losses(tmp_path / "a"), _losses(tmp_path / "b")
    assert len(a) == len(b) == 6
    np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)
    ea = torch.load(tmp_path / "a" / "encoder.pt", weights_only=True)["model"]
    eb = torch.load(tmp_path / "b" / "encoder.pt", weights_only=True)["model"]
    for k in ea:
        torch.testing.assert_close(eb[k], ea[k], rtol=1e-5, atol=1e-6)


def test_encoder_loads_through_the_registry_and_max_steps_zero(tmp_path, corpus) -> None:
    from rmis.encoders import load_encoder

    _run("--data", str(corpus), "--out", str(tmp_path / "z"), "--max-steps", "0")
    _run(
        "--data", str(corpus), "--out", str(tmp_path / "t"), "--max-steps", "2", "--batch-size", "2"
    )
    z = torch.load(tmp_path / "z" / "encoder.pt", weights_only=True)
    t = torch.load(tmp_path / "t" / "encoder.pt", weights_only=True)
    assert set(z) == {"cfg", "model"} and z["cfg"]["model"]["embed_dim"] == 64
    # the fixed sin-cos table of the released layout (max_length 128, max_freq 50)
    pos = z["model"]["modality_encoders.IMAGE.fixed_positional_encoder.positions"]
    assert torch.equal(pos[0], sincos_positions(64, 128, 50))
    # training moved the weights away from the random initialisation
    k = "blocks.0.attn.qkv.weight"
    assert not torch.allclose(z["model"][k], t["model"][k])
    enc = load_encoder("fisher-tiny", checkpoint=str(tmp_path / "t" / "encoder.pt"))
    x = torch.randn(2, 160_000) * 0.1
    emb = enc.embed(x, 16_000)
    assert emb.shape == (2, 2 * 64)  # 16 kHz: 2 bands of 100 bins, 64 dims each
    vit = FisherViT(variant_config("tiny", depth=4, embed_dim=64, num_heads=2))
    vit.load_state_dict(t["model"])
    from rmis.models.fisher import log_spectrogram

    with torch.no_grad():
        torch.testing.assert_close(emb, vit.eval()(log_spectrogram(x, 16_000)))


def test_bad_data_is_one_line_error(tmp_path) -> None:
    r = subprocess.run(
        [
            sys.executable,
            str(RECIPE),
            "--preset",
            "debug",
            "--data",
            str(tmp_path / "none"),
            "--out",
            str(tmp_path / "o"),
            "--max-steps",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("error: --data")
    assert "Traceback" not in r.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_equals_one_process(tmp_path, corpus) -> None:
    common = [
        "--preset",
        "debug",
        "--data",
        str(corpus),
        "--probe-every",
        "0",
        "--max-steps",
        "3",
        "--total-steps",
        "3",
    ]
    _run(*common[2:], "--out", str(tmp_path / "one"), "--batch-size", "2")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            str(_free_port()),
            str(RECIPE),
            *common,
            "--out",
            str(tmp_path / "two"),
            "--batch-size",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(one) == len(two) == 3
    np.testing.assert_allclose(two, one, rtol=1e-5)
    e1 = torch.load(tmp_path / "one" / "encoder.pt", weights_only=True)["model"]
    e2 = torch.load(tmp_path / "two" / "encoder.pt", weights_only=True)["model"]
    for k in e1:
        torch.testing.assert_close(e2[k], e1[k], rtol=1e-4, atol=1e-5)
