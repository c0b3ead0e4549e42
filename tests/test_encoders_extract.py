"""Encoder registry, plugins, and the extraction engine (windows, batching, cache, resume)."""

from __future__ import annotations

import os
from importlib.metadata import EntryPoint
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import rmis.encoders as encoders
from rmis.encoders import Encoder, EncoderInfo, load_encoder, parse_options, register_encoder
from rmis.errors import RMISError
from rmis.extract import FileItem, encoder_fingerprint, extract
from rmis.store import EmbeddingStore, store_key


class Stats(Encoder):
    """Toy encoder: [mean square, max |x|, window length] per window; counts windows seen."""

    sample_rate = None

    def __init__(self, scale: float = 1.0, fail_after: int | None = None) -> None:
        super().__init__()
        self.scale = scale
        self.fail_after = fail_after
        self.seen = 0

    def embed(self, windows: torch.Tensor, sample_rate: int) -> torch.Tensor:
        self.seen += len(windows)
        if self.fail_after is not None and self.seen > self.fail_after:
            raise KeyboardInterrupt
        x = windows.double()
        length = torch.full((len(x),), float(x.shape[1]), dtype=torch.float64)
        return torch.stack([x.pow(2).mean(1), x.abs().amax(1), length], 1) * self.scale


register_encoder(EncoderInfo(name="test-stats", family="test", variant="stats", factory=Stats))


def write(path: Path, x: np.ndarray, sr: int = 1000) -> FileItem:
    sf.write(path, x, sr, subtype="FLOAT")
    return FileItem(path.name, str(path))


@pytest.fixture
def files(tmp_path: Path) -> list[FileItem]:
    rng = np.random.default_rng(0)
    return [write(tmp_path / f"f{i}.wav", rng.normal(size=1000 + 700 * i)) for i in range(6)]


def test_registry_and_options() -> None:
    assert "logspec" in [i.name for i in encoders.list_encoders()]
    with pytest.raises(RMISError, match="did you mean 'logspec'"):
        load_encoder("logspek")
    with pytest.raises(
        RMISError, match=r"does not take option\(s\) \['bands'\]; it takes: band_hz"
    ):
        load_encoder("logspec", bands=3)
    assert parse_options(["a=1", "b=0.5", "c=true", "d=x=y", "e=none"]) == {
        "a": 1,
        "b": 0.5,
        "c": True,
        "d": "x=y",
        "e": None,
    }
    with pytest.raises(RMISError, match="key=value"):
        parse_options(["novalue"])


def test_entry_point_plugin(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "my_rmis_plugin.py").write_text(
        "from rmis.encoders import Encoder, EncoderInfo, register_encoder\n"
        "class Zero(Encoder):\n"
        "    sample_rate = 16000\n"
        "    def embed(self, x, sr):\n"
        "        return x[:, :4] * 0 + 1\n"
        "register_encoder(EncoderInfo(name='plugin-zero', family='plugin', variant='z',"
        " factory=Zero))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = EntryPoint(name="zero", value="my_rmis_plugin", group="rmis.encoders")
    monkeypatch.setattr(encoders, "entry_points", lambda group: [ep])
    monkeypatch.setattr(encoders, "_loaded", False)
    enc = load_encoder("plugin-zero")
    assert enc.sample_rate == 16000 and enc.info.family == "plugin"


def test_file_embedding_is_mean_of_window_embeddings(files: list[FileItem]) -> None:
    enc = load_encoder("test-stats")
    res = extract(files, enc, window_seconds=1.0, batch_size=4, num_workers=0)
    for item in files:
        x, _ = sf.read(item.path)
        starts = [0] if len(x) <= 1000 else list(range(0, len(x) - 999, 1000))
        if len(x) > 1000 and len(x) - (starts[-1] + 1000) >= 50:
            starts.append(len(x) - 1000)
        feats = []
        for s in starts:
            w = x[s : s + 1000] - x[s : s + 1000].mean()
            feats.append([np.mean(w**2), np.abs(w).max(), 1000])
        np.testing.assert_allclose(res.embeddings[item.id], np.mean(feats, 0), rtol=1e-5)


def test_batch_size_and_workers_do_not_change_embeddings(files: list[FileItem]) -> None:
    enc = load_encoder("logspec")
    a = extract(files, enc, window_seconds=1.0, batch_size=1, num_workers=0).embeddings
    b = extract(files, enc, window_seconds=1.0, batch_size=7, num_workers=2).embeddings
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6)


def _cache(tmp: Path, enc: Encoder, options) -> EmbeddingStore:
    key, parts = store_key(encoder_fingerprint(enc, options), 1.0, "fp32")
    return EmbeddingStore(tmp / "cache" / key, parts)


def test_cache_reuse_staleness_and_resume(tmp_path: Path, files: list[FileItem]) -> None:
    enc = load_encoder("test-stats")
    first = extract(files, enc, window_seconds=1.0, num_workers=0, store=_cache(tmp_path, enc, {}))
    assert (first.computed, first.reused) == (6, 0)
    again = extract(files, enc, window_seconds=1.0, num_workers=0, store=_cache(tmp_path, enc, {}))
    assert (again.computed, again.reused) == (0, 6)
    for k in first.embeddings:
        np.testing.assert_array_equal(first.embeddings[k], again.embeddings[k])
    # other options -> another key -> nothing reused
    enc2 = load_encoder("test-stats", scale=2.0)
    other = extract(
        files,
        enc2,
        window_seconds=1.0,
        num_workers=0,
        store=_cache(tmp_path, enc2, {"scale": 2.0}),
    )
    assert other.computed == 6
    # a rewritten file (another modification time) is a new file: only it is embedded again
    os.utime(files[0].path, ns=(1, 1))
    changed = extract(
        files, enc, window_seconds=1.0, num_workers=0, store=_cache(tmp_path, enc, {})
    )
    assert (changed.computed, changed.reused) == (1, 5)


def test_interrupted_run_resumes(tmp_path: Path, files: list[FileItem]) -> None:
    enc = load_encoder("test-stats", fail_after=7)
    cache = _cache(tmp_path, enc, {})
    with pytest.raises(KeyboardInterrupt):
        extract(
            files,
            enc,
            window_seconds=1.0,
            batch_size=1,
            num_workers=0,
            store=cache,
            checkpoint_seconds=0.0,
        )
    kept = EmbeddingStore(cache.dir).vectors(files)
    assert 0 < len(kept) < 6 and not list(cache.dir.glob("seg.*"))
    resumed = extract(
        files, load_encoder("test-stats"), window_seconds=1.0, num_workers=0, store=cache
    )
    assert resumed.reused == len(kept) and resumed.computed == 6 - len(kept)
    fresh = extract(files, load_encoder("test-stats"), window_seconds=1.0, num_workers=0)
    for k in fresh.embeddings:
        np.testing.assert_allclose(resumed.embeddings[k], fresh.embeddings[k], rtol=1e-6)
    # the interrupted run's parts and the resumed run's are merged into one segment
    assert len(list(cache.dir.glob("seg.*.npz"))) == 1 and not list(cache.dir.glob("part.*"))


def test_bad_files_fail_or_are_skipped(tmp_path: Path, files: list[FileItem]) -> None:
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFFxxxxWAVEjunk")
    items = [*files, FileItem("broken.wav", str(bad))]
    enc = load_encoder("test-stats")
    with pytest.raises(RMISError, match="broken.wav"):
        extract(items, enc, window_seconds=1.0, num_workers=0)
    res = extract(items, enc, window_seconds=1.0, num_workers=0, skip_bad_files=True)
    assert list(res.skipped) == ["broken.wav"] and len(res.embeddings) == 6


def test_precision_needs_gpu(files: list[FileItem]) -> None:
    with pytest.raises(RMISError, match="needs a GPU"):
        extract(files, load_encoder("logspec"), window_seconds=1.0, precision="bf16")


def test_parameter_free_encoder_knows_its_device() -> None:
    enc = load_encoder("logspec", device="meta")
    assert enc.device == torch.device("meta")
    with pytest.raises(RMISError, match="needs a GPU device; use fp32 on meta"):
        extract([], enc, window_seconds=1.0, precision="fp16")
