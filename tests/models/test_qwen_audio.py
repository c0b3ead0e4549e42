"""Qwen2-Audio / Qwen2.5-Omni / Audio Flamingo 3 audio towers: each from a tiny random
configuration saved in the FULL multimodal hub layout (config.json of the whole model, sharded
bf16 safetensors + index, a language model whose tensors are large but must stay unread),
loaded through the real path, compared with a direct call of the transformers encoder on the
same Whisper features and pooling, run through ``rmis check-model``; strict-loading errors;
registry metadata against the released sizes on the meta device."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import safetensors
import safetensors.torch
import torch
from typer.testing import CliRunner

from rmis.cli import app
from rmis.encoders import get_encoder_info, load_encoder
from rmis.errors import RMISError
from rmis.models.hf_audio import meta_params
from rmis.models.qwen_audio import WHISPER_LARGE_AUDIO, encoder_classes
from rmis.weights import write_hub_folder

NAMES = ("qwen2-audio-7b", "qwen2.5-omni-7b", "audio-flamingo-3")
TINY_AUDIO = {
    "d_model": 32,
    "encoder_layers": 2,
    "encoder_attention_heads": 2,
    "encoder_ffn_dim": 64,
    "num_mel_bins": 128,
    "max_source_positions": 1500,  # the 30-s input the Whisper-style encoders require
}
VOCAB, HIDDEN = 100_000, 128  # the LM's embedding/head: 2 x 25.6 MB in bf16, never read
TINY_TEXT = {
    "vocab_size": VOCAB,
    "hidden_size": HIDDEN,
    "intermediate_size": 256,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
}


def noise(n: int, seed: int, scale: float = 0.1) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=n) * scale).astype(np.float32)


def full_config(name: str) -> dict:
    """config.json of the whole multimodal model, tiny sizes."""
    if name == "qwen2-audio-7b":
        from transformers import Qwen2AudioConfig

        cfg = Qwen2AudioConfig(audio_config=TINY_AUDIO, text_config=TINY_TEXT)
    elif name == "audio-flamingo-3":
        from transformers import AudioFlamingo3Config

        cfg = AudioFlamingo3Config(audio_config=TINY_AUDIO, text_config=TINY_TEXT)
    else:
        from transformers import Qwen2_5OmniConfig

        audio = {**TINY_AUDIO, "n_window": 100, "output_dim": 48}
        cfg = Qwen2_5OmniConfig(thinker_config={"audio_config": audio, "text_config": TINY_TEXT})
    d = cfg.to_dict()
    json.dumps(d)
    return d


def lm_tensors(name: str, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """What sits beside the audio tower in the real checkpoints (hub key names)."""
    lm = "thinker.model." if name == "qwen2.5-omni-7b" else "language_model.model."
    head = "thinker.lm_head." if name == "qwen2.5-omni-7b" else "language_model.lm_head."
    out = {
        f"{lm}embed_tokens.weight": torch.randn(VOCAB, HIDDEN, generator=gen),
        f"{head}weight": torch.randn(VOCAB, HIDDEN, generator=gen),
        f"{lm}norm.weight": torch.ones(HIDDEN),
    }
    for proj, shape in {
        "self_attn.q_proj.weight": (HIDDEN, HIDDEN),
        "self_attn.k_proj.weight": (64, HIDDEN),
        "mlp.gate_proj.weight": (256, HIDDEN),
    }.items():
        out[f"{lm}layers.0.{proj}"] = torch.randn(*shape, generator=gen)
    if name == "qwen2-audio-7b":
        out["multi_modal_projector.linear.weight"] = torch.randn(HIDDEN, 32, generator=gen)
        out["multi_modal_projector.linear.bias"] = torch.zeros(HIDDEN)
    elif name == "audio-flamingo-3":
        out["multi_modal_projector.linear_1.weight"] = torch.randn(HIDDEN, 32, generator=gen)
        out["multi_modal_projector.linear_2.weight"] = torch.randn(HIDDEN, HIDDEN, generator=gen)
    else:
        out["thinker.visual.patch_embed.proj.weight"] = torch.randn(64, 3, 2, 14, 14, generator=gen)
        out["talker.model.embed_tokens.weight"] = torch.randn(VOCAB, 64, generator=gen)
        out["token2wav.code2wav_bigvgan_model.conv_pre.weight"] = torch.randn(64, 80, 7)
    return {k: v.to(torch.bfloat16) for k, v in out.items()}


def audio_prefix(name: str) -> str:
    return "thinker.audio_tower." if name == "qwen2.5-omni-7b" else "audio_tower."


def reference_encoder(name: str, seed: int = 0):
    """The transformers encoder at the tiny size with random weights rounded to bf16 (the
    checkpoint's dtype), and its config."""
    enc_cls, cfg_cls = encoder_classes(name)
    sub = full_config(name)
    sub = sub["thinker_config"]["audio_config"] if "thinker_config" in sub else sub["audio_config"]
    cfg = cfg_cls.from_dict(sub)
    torch.manual_seed(seed)
    model = enc_cls(cfg).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for v in model.state_dict().values():
            v.copy_((0.1 * torch.randn(v.shape, generator=gen)).to(torch.bfloat16).float())
    return model, cfg


def write_checkpoint(folder: Path, name: str, drop: str | None = None) -> Path:
    """The full hub layout: config.json (+ preprocessor for the Qwen models), 3 shards + index:
    shard 1 = audio tower + projector + a small LM tensor, shards 2-3 = the large LM tensors."""
    folder.mkdir(parents=True, exist_ok=True)
    model, _ = reference_encoder(name)
    audio = {audio_prefix(name) + k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}
    if drop:
        del audio[audio_prefix(name) + drop]
    lm = lm_tensors(name, torch.Generator().manual_seed(1))
    big = [k for k in lm if lm[k].numel() >= VOCAB * 64]
    small = {k: v for k, v in lm.items() if k not in big}
    shards = [{**audio, **small}, {big[0]: lm[big[0]]}, {k: lm[k] for k in big[1:]}]
    pre = None
    if name != "audio-flamingo-3":  # AF3: the family default extractor (128 mel)
        from transformers import WhisperFeatureExtractor

        pre = WhisperFeatureExtractor(feature_size=128)
    return write_hub_folder(folder, full_config(name), shards, preprocessor=pre)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("towers")
    return {n: write_checkpoint(root / n, n) for n in NAMES}


def direct(name: str, model, feats: torch.Tensor, mask: torch.Tensor):
    """The transformers models' own audio path (``get_audio_features`` / the masked call of
    ``Qwen2AudioModel.forward``), then the mean over the valid output frames."""
    with torch.no_grad():
        if name == "qwen2-audio-7b":
            from transformers.masking_utils import create_bidirectional_mask

            feat_lens, out_lens = model._get_feat_extract_output_lengths(mask.sum(-1))
            n = (feats.shape[-1] - 2) // 2 + 1
            seq = torch.arange(n)[None].expand(feats.shape[0], n)
            m2d = (~(seq >= feat_lens[:, None])).long()
            attn = create_bidirectional_mask(
                config=model.config,
                inputs_embeds=torch.zeros(feats.shape[0], n, 1),
                attention_mask=m2d,
            )
            h = model(feats, attention_mask=attn).last_hidden_state
            return torch.stack([h[i, : out_lens[i]].mean(0) for i in range(len(h))])
        if name == "audio-flamingo-3":
            h = model(feats, input_features_mask=mask).last_hidden_state
            _, out_lens = model._get_feat_extract_output_lengths(mask.sum(-1))
            return torch.stack([h[i, : out_lens[i]].mean(0) for i in range(len(h))])
        lens = mask.sum(-1)
        flat = feats.permute(0, 2, 1)[mask.bool()].permute(1, 0)
        conv_lens, out_lens = model._get_feat_extract_output_lengths(lens)
        h = model(flat, feature_lens=lens, aftercnn_lens=conv_lens).last_hidden_state
        return torch.stack([p.mean(0) for p in h.split(out_lens.tolist())])


def features(waves: np.ndarray):
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor(feature_size=128)
    out = fe(list(waves), sampling_rate=16_000, return_tensors="pt", return_attention_mask=True)
    return out["input_features"].float(), out["attention_mask"].long()


@pytest.mark.parametrize("name", NAMES)
def test_loads_only_the_audio_tower_and_matches_the_direct_call(name, checkpoints, monkeypatch):
    folder = checkpoints[name]
    opened: list[str] = []
    read: list[str] = []
    real_open = safetensors.safe_open

    class Spy:
        def __init__(self, path, *a, **k):
            opened.append(Path(path).name)
            self.fh = real_open(path, *a, **k)

        def __enter__(self):
            self.inner = self.fh.__enter__()
            return self

        def __exit__(self, *exc):
            return self.fh.__exit__(*exc)

        def keys(self):
            return self.inner.keys()

        def metadata(self):
            return self.inner.metadata()

        def get_tensor(self, key):
            read.append(key)
            return self.inner.get_tensor(key)

    monkeypatch.setattr(safetensors, "safe_open", Spy)
    enc = load_encoder(name, checkpoint=str(folder))
    monkeypatch.undo()
    n_audio = len(enc.model.state_dict())
    assert set(opened) == {"model-00001-of-00003.safetensors"}  # LM shards never opened
    assert len(read) == n_audio and all(k.startswith(audio_prefix(name)) for k in read)
    assert len(enc.weights_sha256) == 64 and enc.revision is None

    ref, _ = reference_encoder(name)
    for k, v in ref.state_dict().items():  # every tensor from the checkpoint (bf16 -> fp32)
        got = enc.model.state_dict()[k]
        assert got.dtype == torch.float32 and torch.equal(got, v), k
    for k, v in [*enc.model.named_parameters(), *enc.model.named_buffers()]:
        assert not v.is_meta, k
    if name == "qwen2.5-omni-7b":  # the non-persistent sinusoid table, computed, not loaded
        assert torch.equal(
            enc.model.positional_embedding.positional_embedding,
            ref.positional_embedding.positional_embedding,
        )

    padded = np.zeros(160_000, np.float32)  # a 3-s file's last window, zero-padded to 10 s
    padded[:48_000] = noise(48_000, 2, 0.3)
    waves = np.stack([noise(160_000, 1), padded])
    feats, mask = features(waves)
    assert feats.shape == (2, 128, 3000) and mask.sum(-1).tolist() == [1000, 1000]
    got = enc.embed(torch.from_numpy(waves), 16_000)
    want = direct(name, ref, feats, mask)
    dim = 48 if name == "qwen2.5-omni-7b" else 32
    assert got.shape == want.shape == (2, dim)
    assert (got - want).abs().max() < 1e-5
    # pool=all: the whole padded 30 s is the clip
    enc_all = load_encoder(name, checkpoint=str(folder), pool="all")
    ones = torch.ones_like(mask)
    got_all = enc_all.embed(torch.from_numpy(waves), 16_000)
    assert (got_all - direct(name, ref, feats, ones)).abs().max() < 1e-5
    assert (got_all - got).abs().max() > 1e-4


def test_omni_project_option(checkpoints) -> None:
    folder = str(checkpoints["qwen2.5-omni-7b"])
    enc = load_encoder("qwen2.5-omni-7b", checkpoint=folder, project=False)
    waves = np.stack([noise(160_000, 4), noise(160_000, 5)])
    got = enc.embed(torch.from_numpy(waves), 16_000)
    assert got.shape == (2, 32)
    ref, _ = reference_encoder("qwen2.5-omni-7b")
    feats, mask = features(waves)
    captured = []
    ref.ln_post.register_forward_hook(lambda _m, _i, out: captured.append(out))
    projected = direct("qwen2.5-omni-7b", ref, feats, mask)
    want = torch.stack([p.mean(0) for p in captured[0].split([250, 250])])
    assert (got - want).abs().max() < 1e-5
    assert (enc.model.proj(want) - projected).abs().max() < 1e-5  # proj is affine: mean commutes
    with pytest.raises(RMISError, match="does not take option"):
        load_encoder("qwen2-audio-7b", checkpoint=folder, project=False)


PEAK_SCRIPT = """
import re, sys
import safetensors.torch
from transformers import WhisperFeatureExtractor
from transformers.masking_utils import create_bidirectional_mask
from rmis.encoders import load_encoder
from rmis.models.qwen_audio import encoder_classes
encoder_classes("qwen2-audio-7b")
def kib(field):
    return int(re.search(field + r":\\s+(\\d+)", open("/proc/self/status").read()).group(1))
def growth(fn):
    open("/proc/self/clear_refs", "w").write("5")  # VmHWM := VmRSS
    base = kib("VmRSS")
    out = fn()
    return (kib("VmHWM") - base) / 1024, out
folder = sys.argv[1]
load_encoder("qwen2-audio-7b", checkpoint=folder)  # lazy imports and caches warmed
load_mb, enc = growth(lambda: load_encoder("qwen2-audio-7b", checkpoint=folder))
def read_lm():
    shard = safetensors.torch.load_file(folder + "/model-00002-of-00003.safetensors")
    return sum(float(t.float().sum()) for t in shard.values())  # touch every page
shard_mb, _ = growth(read_lm)
print(load_mb, shard_mb)
"""


def test_peak_memory_stays_near_the_encoder(checkpoints) -> None:
    """In a fresh process (everything imported first), loading the tower raises the peak RSS
    by far less than the LM's 49 MB; reading one LM shard (24 MB)
    visibly raises it (the meter works)."""
    import subprocess
    import sys

    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc (VmHWM reset through clear_refs)")
    out = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, str(checkpoints["qwen2-audio-7b"])],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    load_mb, shard_mb = map(float, out.stdout.split()[-2:])
    lm_mb = 2 * VOCAB * HIDDEN * 2 / 2**20
    assert load_mb < lm_mb / 4, (load_mb, lm_mb)
    assert shard_mb > lm_mb / 4, (shard_mb, lm_mb)  # the meter sees an LM read


def test_missing_audio_tensor_is_listed(tmp_path) -> None:
    for name, key in (
        ("qwen2-audio-7b", "layers.1.fc2.bias"),
        ("qwen2.5-omni-7b", "audio_bos_eos_token.weight"),
    ):
        folder = write_checkpoint(tmp_path / name, name, drop=key)
        with pytest.raises(RMISError, match=rf"missing keys \['{re.escape(key)}'\] \(1\)"):
            load_encoder(name, checkpoint=str(folder))
    # the wrong model's folder: no tensor under the audio prefix, found keys listed
    with pytest.raises(RMISError, match="no tensor .* is under 'thinker.audio_tower.'"):
        load_encoder("qwen2.5-omni-7b", checkpoint=str(tmp_path / "qwen2-audio-7b"))


@pytest.mark.parametrize("name", NAMES)
def test_check_model_cli(name, checkpoints) -> None:
    r = CliRunner().invoke(
        app, ["check-model", name, "--checkpoint", str(checkpoints[name])], env={"COLUMNS": "200"}
    )
    assert r.exit_code == 0, r.output


def test_from_pretrained_reads_the_same_layout(checkpoints) -> None:
    """transformers' own loader of the full model finds every key of our test layout where the
    real checkpoints have it (legacy hub names) and the same audio tensors."""
    from transformers import Qwen2AudioForConditionalGeneration

    folder = checkpoints["qwen2-audio-7b"]
    full, info = Qwen2AudioForConditionalGeneration.from_pretrained(
        str(folder), dtype=torch.float32, output_loading_info=True
    )
    assert not info["unexpected_keys"]
    assert not [k for k in info["missing_keys"] if "audio_tower" in k]
    enc = load_encoder("qwen2-audio-7b", checkpoint=str(folder))
    for k, v in full.model.audio_tower.state_dict().items():
        assert torch.equal(v, enc.model.state_dict()[k]), k


@pytest.mark.parametrize("name", NAMES)
def test_registry_metadata_and_released_sizes(name) -> None:
    info = get_encoder_info(name)
    enc_cls, cfg_cls = encoder_classes(name)
    sizes = dict(WHISPER_LARGE_AUDIO)
    if name == "qwen2.5-omni-7b":
        sizes |= {"n_window": 100, "output_dim": 3584}
    cfg = cfg_cls(**sizes)
    n = meta_params(lambda: enc_cls(cfg))
    assert info.params_millions == pytest.approx(n / 1e6, abs=0.01)
    family = {"qwen2-audio-7b": "Qwen2-Audio", "qwen2.5-omni-7b": "Qwen2.5-Omni"}
    assert (info.family, info.variant) == (family.get(name, "Audio Flamingo 3"), "7B")
    assert info.sample_rate == 16_000 and info.license and info.paper
    assert info.dim == (3584 if name == "qwen2.5-omni-7b" else 1280)
    assert info.checkpoints[0].startswith("hf://")
