"""Checkpoint sources: local .pt / .safetensors, hub ids (offline-aware) and URLs (cached)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import rmis.checkpoints as ck
from rmis.encoders import load_encoder
from rmis.errors import RMISError
from rmis.models.fisher import random_checkpoint


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return random_checkpoint("tiny", tmp_path_factory.mktemp("ck") / "FISHER-tiny.pt")


def test_safetensors_with_cfg_metadata_equals_pt(tmp_path: Path, tiny: Path) -> None:
    from safetensors.torch import save_file

    obj = torch.load(tiny, weights_only=True)
    save_file(
        {k: v.contiguous() for k, v in obj["model"].items()},
        tmp_path / "w.safetensors",
        metadata={"cfg": json.dumps(obj["cfg"])},
    )
    a = load_encoder("fisher-tiny", checkpoint=str(tiny))
    b = load_encoder("fisher-tiny", checkpoint=str(tmp_path / "w.safetensors"))
    x = torch.randn(1, 16_000)
    with torch.inference_mode():
        torch.testing.assert_close(a.embed(x, 16_000), b.embed(x, 16_000))
    assert b.weights_sha256 != a.weights_sha256  # the hash is of the file actually read


def test_hub_id_uses_huggingface_hub(tmp_path: Path, tiny: Path, monkeypatch) -> None:
    import huggingface_hub

    snap = tmp_path / "models--jiangab--FISHER-tiny-0723" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "FISHER-tiny.pt").write_bytes(tiny.read_bytes())
    calls = []

    def fake_snapshot_download(repo_id, revision=None, allow_patterns=None):
        calls.append((repo_id, revision))
        return str(snap)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    enc = load_encoder("fisher-tiny")  # default source: the released hub id
    assert calls == [("jiangab/FISHER-tiny-0723", None)]
    assert enc.revision == "abc123"
    load_encoder("fisher-tiny", checkpoint="hf://jiangab/FISHER-tiny-0723@v1")
    assert calls[-1] == ("jiangab/FISHER-tiny-0723", "v1")


def test_hub_offline_error_says_what_to_do(monkeypatch) -> None:
    import huggingface_hub

    def offline(*a, **k):
        raise huggingface_hub.errors.LocalEntryNotFoundError("offline and not cached")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(RMISError, match="jiangab/FISHER-mini-0723.*--checkpoint PATH"):
        load_encoder("fisher-mini")


def test_url_downloaded_once_into_cache(tmp_path: Path, tiny: Path, monkeypatch) -> None:
    monkeypatch.setenv("RMIS_CACHE_DIR", str(tmp_path / "cache"))
    opened = []

    def fake_urlopen(url, timeout=None):
        opened.append(url)
        return open(tiny, "rb")

    monkeypatch.setattr(ck.urllib.request, "urlopen", fake_urlopen)
    url = "https://example.invalid/fisher/FISHER-tiny.pt?dl=1"
    a = load_encoder("fisher-tiny", checkpoint=url)
    b = load_encoder("fisher-tiny", checkpoint=url)
    assert len(opened) == 1 and a.weights_sha256 == b.weights_sha256
    cached = list((tmp_path / "cache" / "checkpoints").iterdir())
    assert [p.name.split("-", 1)[1] for p in cached] == ["FISHER-tiny.pt"]


def test_url_failure_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("RMIS_CACHE_DIR", str(tmp_path / "cache"))

    def no_network(url, timeout=None):
        raise OSError("network unreachable")

    monkeypatch.setattr(ck.urllib.request, "urlopen", no_network)
    with pytest.raises(RMISError, match="cannot download .*--checkpoint PATH"):
        load_encoder("fisher-tiny", checkpoint="https://example.invalid/x.pt")
    assert not any((tmp_path / "cache" / "checkpoints").iterdir())
