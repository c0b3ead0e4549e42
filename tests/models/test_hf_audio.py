"""models/hf_audio.py: prefix-only lazy reads from a sharded hub folder (hub ids fetch only the
shards that hold the prefix), meta-device strict building (no random weight survives, the
non-persistent buffers are computed, none left on meta), pooling helper, feature helper."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rmis.errors import RMISError
from rmis.models.hf_audio import (
    build_strict,
    masked_mean,
    read_hub_weights,
    whisper_feature_extractor,
    whisper_features,
)
from rmis.weights import Pretrained, write_hub_folder

SPEC = Pretrained(name="toy", family="Toy", variant="x", sources=("hf://toy/toy",))


def omni_tiny():
    from transformers.models.qwen2_5_omni.configuration_qwen2_5_omni import (
        Qwen2_5OmniAudioEncoderConfig,
    )
    from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import Qwen2_5OmniAudioEncoder

    cfg = Qwen2_5OmniAudioEncoderConfig(
        d_model=32,
        encoder_layers=1,
        encoder_attention_heads=2,
        encoder_ffn_dim=64,
        num_mel_bins=16,
        output_dim=24,
        max_source_positions=100,
    )
    return Qwen2_5OmniAudioEncoder, cfg


def sharded(folder: Path, tensors: dict[str, dict[str, torch.Tensor]]) -> Path:
    """A toy hub folder with one shard per entry (``model-0000i-of-0000n`` names, in order)."""
    names = [f"model-{i:05d}-of-{len(tensors):05d}.safetensors" for i in range(1, len(tensors) + 1)]
    assert list(tensors) == names, "shards are named model-0000i-of-0000n, in order"
    return write_hub_folder(folder, {"model_type": "toy"}, list(tensors.values()))


def test_prefix_candidates_and_only_needed_shards(tmp_path, monkeypatch) -> None:
    a = {"model.audio_tower.w": torch.ones(2), "model.language_model.x": torch.zeros(3)}
    lm = {"model.language_model.y": torch.zeros(1000)}
    folder = sharded(
        tmp_path / "f",
        {"model-00001-of-00002.safetensors": a, "model-00002-of-00002.safetensors": lm},
    )
    hw = read_hub_weights(str(folder), SPEC, prefixes=("audio_tower.", "model.audio_tower."))
    assert hw.prefix == "model.audio_tower." and set(hw.state_dict) == {"w"}
    assert hw.preprocessor is None and hw.config == {"model_type": "toy"} and hw.revision is None
    with pytest.raises(RMISError, match=r"no tensor .* under 'thinker\.audio_tower\.'"):
        read_hub_weights(str(folder), SPEC, prefixes=("thinker.audio_tower.",))

    # a hub id: the JSON files first, then only the shard holding the prefix
    calls = []

    def fake_snapshot_download(repo_id, revision=None, allow_patterns=None):
        calls.append((repo_id, revision, list(allow_patterns)))
        snap = tmp_path / "snap" / "0123abcd"
        if not snap.exists():
            snap.parent.mkdir(exist_ok=True)
            snap.mkdir()
            for f in folder.glob("*.json"):
                (snap / f.name).write_bytes(f.read_bytes())
        for pat in allow_patterns:
            if pat.endswith(".safetensors") and (folder / pat).is_file():
                (snap / pat).write_bytes((folder / pat).read_bytes())
        return str(snap)

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    hw = read_hub_weights("hf://toy/toy@v1", SPEC, prefixes=("model.audio_tower.",))
    assert hw.revision == "0123abcd" and set(hw.state_dict) == {"w"}
    assert calls == [
        ("toy/toy", "v1", ["*.json"]),
        ("toy/toy", "v1", ["*.json", "model-00001-of-00002.safetensors"]),
    ]


def test_hub_offline_without_cache_is_a_clear_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(RMISError, match="cannot get 'nobody/nothing' from the Hugging Face hub"):
        read_hub_weights("hf://nobody/nothing", SPEC, prefixes=("audio_tower.",))


def test_build_strict_no_random_weight_and_buffers_computed() -> None:
    cls, cfg = omni_tiny()
    torch.manual_seed(0)
    ref = cls(cfg).eval()
    state = {k: v.clone().to(torch.bfloat16) for k, v in ref.state_dict().items()}
    n = len(state)
    model = build_strict(lambda: cls(cfg), state, "toy")
    assert not state  # consumed: each checkpoint tensor released once cast
    assert len(model.state_dict()) == n
    for k, v in model.state_dict().items():
        assert v.dtype == torch.float32
        assert torch.equal(v, ref.state_dict()[k].to(torch.bfloat16).float()), k
    pe = model.positional_embedding.positional_embedding  # non-persistent: computed here
    assert not pe.is_meta and torch.equal(pe, ref.positional_embedding.positional_embedding)
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])


def test_build_strict_lists_missing_unexpected_and_mis_shaped() -> None:
    cls, cfg = omni_tiny()
    good = cls(cfg).state_dict()
    cut = {k: v for k, v in good.items() if k != "ln_post.weight"}
    with pytest.raises(RMISError, match=r"missing keys \['ln_post.weight'\] \(1\)"):
        build_strict(lambda: cls(cfg), dict(cut), "toy ckpt")
    with pytest.raises(RMISError, match=r"unexpected keys \['extra'\]"):
        build_strict(lambda: cls(cfg), {**good, "extra": torch.zeros(1)}, "toy ckpt")
    with pytest.raises(RMISError, match=r"shape mismatch \(1\) proj.bias"):
        build_strict(lambda: cls(cfg), {**good, "proj.bias": torch.zeros(5)}, "toy ckpt")


def test_build_strict_refuses_an_init_that_overwrites_loaded_tensors() -> None:
    """A model whose _init_weights ignores transformers' 'already initialised' flags (writes in
    place) on a module with a non-persistent buffer: caught, not silently randomised."""
    from transformers import PretrainedConfig, PreTrainedModel

    class Table(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(3))
            self.register_buffer("table", torch.arange(3.0), persistent=False)

    class Toy(PreTrainedModel):
        config_class = PretrainedConfig

        def __init__(self, config) -> None:
            super().__init__(config)
            self.t = Table()
            self.post_init()

        def _init_weights(self, module) -> None:
            if isinstance(module, Table):
                module.table.copy_(torch.arange(3.0))
                module.scale.data.normal_()  # the trap

    with pytest.raises(RMISError, match="overwrote the checkpoint tensor t.scale"):
        build_strict(lambda: Toy(PretrainedConfig()), {"t.scale": torch.ones(3) * 7}, "toy")


def test_masked_mean_and_whisper_features() -> None:
    h = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    got = masked_mean(h, torch.tensor([1, 3]))
    assert torch.equal(got, torch.stack([h[0, :1].mean(0), h[1, :3].mean(0)]))
    fe = whisper_feature_extractor(None, feature_size=128)
    w = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 160_000)).astype(np.float32))
    feats, mask = whisper_features(fe, w)
    assert feats.shape == (2, 128, 3000) and mask.sum(-1).tolist() == [1000, 1000]
    assert whisper_feature_extractor({"feature_size": 80}, feature_size=128).feature_size == 80
    with pytest.raises(RMISError, match="exceed the 30-s input"):
        whisper_features(fe, torch.zeros(1, 480_001))
