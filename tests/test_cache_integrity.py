"""Issue 9 section 1: cached embeddings never belong to other code, are never broken, and
``--recompute`` replaces them."""

from __future__ import annotations

import csv
import importlib
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

import rmis.encoders as encoders
from rmis.cli import app
from rmis.encoders import Encoder, EncoderInfo, adapter_source_sha256, load_encoder
from rmis.errors import RMISError
from rmis.extract import FileItem, encoder_fingerprint, extract
from rmis.store import EmbeddingStore, store_key

runner = CliRunner()
RATE = 1000
N = 16  # files in :func:`dataset`, one group each (k = 5 needs 5 train groups)


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


# --- encoders used here ---------------------------------------------------------------------


class AbsMax(Encoder):
    """[max |x|, 1] per window: separates the two classes of :func:`dataset` perfectly."""

    sample_rate = None

    def embed(self, windows: torch.Tensor, sample_rate: int) -> torch.Tensor:
        x = windows.abs()
        return torch.stack([x, torch.ones_like(x)], dim=-1).amax(dim=1)


class NaNOnLoud(Encoder):
    """[mean x^2, max |x|] per window, but NaN for a window with a sample above 10 while
    :attr:`broken` (a bug the user then fixes)."""

    sample_rate = None
    broken = True

    def embed(self, windows: torch.Tensor, sample_rate: int) -> torch.Tensor:
        out = torch.stack([windows.pow(2).mean(1), windows.abs().amax(1)], dim=1)
        if self.broken:
            loud = windows.abs().amax(1) > 10
            out[loud] = float("nan")
        return out


encoders.register_encoder(
    EncoderInfo(name="test-absmax", family="test", variant="absmax", factory=AbsMax)
)
encoders.register_encoder(
    EncoderInfo(name="test-nan-loud", family="test", variant="nan", factory=NaNOnLoud)
)


# --- data -----------------------------------------------------------------------------------


def dataset(folder: Path, loud: str | None = None) -> Path:
    """Manifest of N one-second files at 1 kHz, one group each: class ``a`` Gaussian noise
    (std 1: mean |x| 0.80, max |x| about 3.2), class ``b`` uniform noise on [-1.6, 1.6] (mean
    |x| 0.80 too, max |x| 1.6). ``loud``: that file gets a sample of 50 in its second half."""
    rng = np.random.default_rng(7)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(N):
        label = "a" if i % 2 == 0 else "b"
        x = rng.normal(size=RATE) if label == "a" else rng.uniform(-1.6, 1.6, size=RATE)
        name = f"{label}{i}.wav"
        if name == loud:
            x[700] = 50.0
        sf.write(folder / name, x, RATE, subtype="FLOAT")
        rows.append([name, label, f"g{i}"])
    manifest = folder / "data.csv"
    with open(manifest, "w", newline="") as fh:
        csv.writer(fh).writerows([["path", "label", "group"], *rows])
    return manifest


def result_of(results_dir: Path) -> dict:
    """The one dataset result under ``results_dir`` (whatever the layout)."""
    found = [p for p in results_dir.rglob("*.json") if p.name != "run.json"]
    assert len(found) == 1, found
    return json.loads(found[0].read_text())


def data_items(data: Path) -> list[FileItem]:
    return [FileItem(p.name, str(p)) for p in sorted(data.glob("*.wav"))]


def cached_vectors(cache_dir: Path, data: Path) -> dict[str, np.ndarray]:
    """Every embedding of a file of ``data`` stored under ``cache_dir`` (all stores), by file
    name, via the store's own reader."""
    out: dict[str, np.ndarray] = {}
    for key_file in cache_dir.glob("embeddings/*/*/key.json"):
        out.update(EmbeddingStore(key_file.parent).vectors(data_items(data)))
    return out


def make_store(tmp: Path, enc, window: float) -> EmbeddingStore:
    key, parts = store_key(encoder_fingerprint(enc, {}), window, "fp32")
    return EmbeddingStore(tmp / "cache" / key, parts)


def eval_args(manifest: Path, results: Path, cache: Path, model: str, *extra: str) -> list:
    return [
        "eval",
        model,
        "--manifest",
        manifest,
        "--workers",
        "0",
        "--runs",
        "2",
        "--results-dir",
        results,
        "--cache-dir",
        cache,
        *extra,
    ]


# --- the cache key follows the adapter's code -----------------------------------------------

ADAPTER = """
import torch

from rmis.encoders import Encoder, EncoderInfo, register_encoder


class MyEncoder(Encoder):
    sample_rate = None

    def embed(self, windows, sample_rate):
        x = windows.abs()
        frames = torch.stack([x, torch.ones_like(x)], dim=-1)  # [B, L, 2]
        return frames.REDUCE(dim=1)


register_encoder(
    EncoderInfo(name="test-my-encoder", family="Mine", variant="base", factory=MyEncoder)
)
"""


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch):
    """``write(source)``: (re)write the user's adapter module ``rmis_test_my_encoder`` and
    import it afresh, as a new process would after the user edited the file."""
    name = "rmis_test_my_encoder"
    folder = tmp_path / "user_code"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # no stale .pyc within one second
    encoders.list_encoders()  # built-ins in place before the registry is copied
    monkeypatch.setattr(encoders, "_REGISTRY", dict(encoders._REGISTRY))

    def write(source: str):
        (folder / f"{name}.py").write_text(source)
        sys.modules.pop(name, None)
        encoders._REGISTRY.pop("test-my-encoder", None)
        importlib.invalidate_caches()
        return importlib.import_module(name)

    yield write
    sys.modules.pop(name, None)


def test_editing_the_adapter_invalidates_the_cache(tmp_path: Path, user_module) -> None:
    """The README's "Add your encoder" scenario: mean -> amax must not print the old score."""
    manifest = dataset(tmp_path / "data")
    cache = tmp_path / "cache"
    user_module(ADAPTER.replace("REDUCE", "mean"))
    r = invoke(*eval_args(manifest, tmp_path / "r1", cache, "test-my-encoder"))
    assert r.exit_code == 0, r.output
    mean = result_of(tmp_path / "r1")

    user_module(ADAPTER.replace("REDUCE", "amax"))
    r = invoke(*eval_args(manifest, tmp_path / "r2", cache, "test-my-encoder"))
    assert r.exit_code == 0, r.output
    edited = result_of(tmp_path / "r2")
    prov = edited["provenance"]
    assert (prov["files_embedded"], prov["files_reused_from_cache"]) == (N, 0)
    assert prov["embedding_cache_key"] != mean["provenance"]["embedding_cache_key"]
    assert edited["model"]["adapter_sha256"] != mean["model"]["adapter_sha256"]

    r = invoke(*eval_args(manifest, tmp_path / "r3", tmp_path / "fresh", "test-my-encoder"))
    assert r.exit_code == 0, r.output
    fresh = result_of(tmp_path / "r3")
    assert fresh["provenance"]["files_reused_from_cache"] == 0
    # max |x| separates Gaussian (about 3.2) from uniform (1.6) noise; the mean does not
    assert edited["score"] == fresh["score"] == 100.0
    assert mean["score"] < 100.0
    # the model block records the hash of the module file as it now is
    assert edited["model"]["adapter_sha256"] == adapter_source_sha256(
        encoders.get_encoder_info("test-my-encoder").factory
    )


def test_adapter_hash_follows_module_base_classes_and_shared_front_ends(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    front = tmp_path / "front.py"
    front.write_text("def feats(x):\n    return x.abs()\n")
    base = tmp_path / "rmis_test_base.py"
    base.write_text(
        "from rmis.encoders import Encoder\nclass Base(Encoder):\n    sample_rate = None\n"
    )
    child = tmp_path / "rmis_test_child.py"
    child_src = (
        "import rmis_test_base\nfrom rmis.frontends_testonly import feats\n"
        "import numpy\n"  # a module outside rmis.models / rmis.frontends: not hashed
        "class Child(rmis_test_base.Base):\n"
        "    def embed(self, w, sr):\n        return feats(w)[:, :2]\n"
    )
    child.write_text(child_src)

    def load() -> type:
        for name in ("rmis_test_base", "rmis_test_child", "rmis.frontends_testonly"):
            sys.modules.pop(name, None)
        importlib.invalidate_caches()
        spec = importlib.util.spec_from_file_location("rmis.frontends_testonly", front)
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, "rmis.frontends_testonly", module)
        spec.loader.exec_module(module)
        monkeypatch.setitem(
            sys.modules, "rmis_test_base", importlib.import_module("rmis_test_base")
        )
        mod = importlib.import_module("rmis_test_child")
        monkeypatch.setitem(sys.modules, "rmis_test_child", mod)
        return mod.Child

    first = adapter_source_sha256(load())
    assert adapter_source_sha256(load()) == first  # same code, same hash
    assert adapter_source_sha256(load()()) == first  # an instance or its class
    # the shared front end changes -> the adapter's hash changes
    front.write_text("def feats(x):\n    return x.abs() * 2\n")
    after_front = adapter_source_sha256(load())
    assert after_front != first
    # a base class's module changes -> it changes again
    base.write_text(base.read_text() + "    version = '1'\n")
    after_base = adapter_source_sha256(load())
    assert after_base not in (first, after_front)
    # and the module itself
    child.write_text(child_src + "# edited\n")
    assert adapter_source_sha256(load()) not in (first, after_front, after_base)


def test_builtin_adapters_hash_their_own_files() -> None:
    from rmis.models.fisher import Fisher

    logspec = type(load_encoder("logspec"))
    assert len(adapter_source_sha256(logspec)) == 64
    assert adapter_source_sha256(logspec) != adapter_source_sha256(Fisher)
    fp = encoder_fingerprint(load_encoder("logspec"), {})
    assert fp["adapter_sha256"] == adapter_source_sha256(logspec)
    assert fp["adapter_version"] == "1"  # `version` stays in the key too


def test_class_without_source_warns_and_uses_its_name(caplog) -> None:
    namespace: dict = {"Encoder": Encoder, "__name__": "rmis_test_nowhere"}
    exec(  # noqa: S102 - a class defined interactively, with no source file
        compile("class Ghost(Encoder):\n    sample_rate = None\n", "<stdin>", "exec"), namespace
    )
    with caplog.at_level(logging.WARNING, logger="rmis.encoders"):
        digest = adapter_source_sha256(namespace["Ghost"])
    assert len(digest) == 64
    assert "no source code found" in caplog.text and "Ghost" in caplog.text


# --- --recompute ----------------------------------------------------------------------------


def test_recompute_replaces_poisoned_cache(tmp_path: Path) -> None:
    manifest = dataset(tmp_path / "data")
    cache = tmp_path / "cache"
    r = invoke(*eval_args(manifest, tmp_path / "r1", cache, "test-absmax"))
    assert r.exit_code == 0, r.output
    truth = result_of(tmp_path / "r1")
    assert truth["score"] == 100.0
    right = cached_vectors(cache, tmp_path / "data")
    assert sorted(right) == sorted(f"{'ab'[i % 2]}{i}.wav" for i in range(N))
    # poison the same key: every file gets a0's vector -> one prediction for all test files
    (npz,) = cache.glob("embeddings/*/*/seg.*.npz")
    with np.load(npz) as z:
        ids = z["ids"]
    np.savez(npz, ids=ids, emb=np.tile(right["a0.wav"], (len(ids), 1)))

    r = invoke(*eval_args(manifest, tmp_path / "r2", cache, "test-absmax"))
    assert r.exit_code == 0, r.output
    stale = result_of(tmp_path / "r2")
    assert stale["provenance"]["files_reused_from_cache"] == N  # the test can fail...
    assert stale["score"] == 50.0  # ...the poisoned vectors are used without --recompute

    r = invoke(*eval_args(manifest, tmp_path / "r3", cache, "test-absmax", "--recompute"))
    assert r.exit_code == 0, r.output
    redone = result_of(tmp_path / "r3")
    prov = redone["provenance"]
    assert (prov["files_embedded"], prov["files_reused_from_cache"]) == (N, 0)
    assert redone["score"] == 100.0
    after = cached_vectors(cache, tmp_path / "data")
    assert sorted(after) == sorted(right)
    for fid, vec in right.items():
        np.testing.assert_array_equal(after[fid], vec)


def test_interrupted_recompute_keeps_no_old_vector(tmp_path: Path) -> None:
    dataset(tmp_path / "data")
    items = data_items(tmp_path / "data")
    enc = load_encoder("test-absmax")
    cache = make_store(tmp_path, enc, 1.0)
    cache.add(dict.fromkeys(cache.keys(items), np.array([9.0, 9.0], np.float32)))
    cache.consolidate(cache.keys(items))
    assert len(cache.vectors(items)) == N

    class Stop(AbsMax):
        calls = 0

        def embed(self, windows, sample_rate):
            Stop.calls += 1
            if Stop.calls > 3:
                raise KeyboardInterrupt
            return super().embed(windows, sample_rate)

    stop = Stop()
    with pytest.raises(KeyboardInterrupt):
        extract(
            items,
            stop,
            window_seconds=1.0,
            batch_size=1,
            num_workers=0,
            store=cache,
            checkpoint_seconds=0.0,
            recompute=True,
        )
    kept = EmbeddingStore(cache.dir).vectors(items)
    assert len(kept) == 3 and all(kept[k][1] == 1.0 for k in kept)  # fresh vectors only


# --- non-finite encoder outputs -------------------------------------------------------------


@pytest.fixture
def loud_files(tmp_path: Path) -> list[FileItem]:
    dataset(tmp_path / "data", loud="a2.wav")
    return [FileItem(p.name, str(p)) for p in sorted((tmp_path / "data").glob("*.wav"))]


def test_nan_output_names_file_and_window_and_is_never_cached(
    tmp_path: Path, loud_files: list[FileItem]
) -> None:
    enc = load_encoder("test-nan-loud")
    cache = make_store(tmp_path, enc, 0.5)
    # 0.5-s windows: the sample of 50 at 0.7 s is in window 1 of a2.wav
    with pytest.raises(RMISError) as err:
        extract(loud_files, enc, window_seconds=0.5, batch_size=3, num_workers=0, store=cache)
    msg = str(err.value)
    assert "'a2.wav'" in msg and "window 1 " in msg and "'test-nan-loud'" in msg
    assert "NaN or Inf" in msg and "\n" not in msg
    assert "a2.wav" not in cache.vectors(loud_files)
    assert all(np.isfinite(v).all() for v in cache.vectors(loud_files).values())

    skipped = extract(
        loud_files,
        enc,
        window_seconds=0.5,
        batch_size=3,
        num_workers=0,
        store=cache,
        skip_bad_files=True,
    )
    assert list(skipped.skipped) == ["a2.wav"] and "window 1 " in skipped.skipped["a2.wav"]
    assert sorted(skipped.embeddings) == sorted(i.id for i in loud_files if i.id != "a2.wav")
    assert "a2.wav" not in cache.vectors(loud_files)

    fixed = load_encoder("test-nan-loud")
    fixed.broken = False  # the same key: only the missing file is computed
    res = extract(loud_files, fixed, window_seconds=0.5, batch_size=3, num_workers=0, store=cache)
    assert (res.computed, res.reused, res.skipped) == (1, N - 1, {})
    x, _ = sf.read(next(i.path for i in loud_files if i.id == "a2.wav"))
    windows = [x[:500] - x[:500].mean(), x[500:] - x[500:].mean()]
    expected = np.mean([[np.mean(w**2), np.abs(w).max()] for w in windows], axis=0)
    np.testing.assert_allclose(res.embeddings["a2.wav"], expected, rtol=1e-5)


def test_nan_output_cli_error_skip_and_rerun_after_fix(tmp_path: Path, monkeypatch) -> None:
    manifest = dataset(tmp_path / "data", loud="a2.wav")
    cache = tmp_path / "cache"
    r = invoke(*eval_args(manifest, tmp_path / "r1", cache, "test-nan-loud"))
    assert r.exit_code == 2 and "Traceback" not in r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and "'a2.wav'" in errors[0] and "window 0 " in errors[0]
    assert "a2.wav" not in cached_vectors(cache, tmp_path / "data")

    r = invoke(*eval_args(manifest, tmp_path / "r2", cache, "test-nan-loud", "--skip-bad-files"))
    assert r.exit_code == 0, r.output
    res = result_of(tmp_path / "r2")
    assert list(res["skipped_files"]) == ["a2.wav"]
    assert "NaN or Inf" in res["skipped_files"]["a2.wav"]
    assert res["n_files"] == N - 1
    assert "a2.wav" not in cached_vectors(cache, tmp_path / "data")

    monkeypatch.setattr(NaNOnLoud, "broken", False)  # the encoder is fixed
    r = invoke(*eval_args(manifest, tmp_path / "r3", cache, "test-nan-loud"))
    assert r.exit_code == 0, r.output
    res = result_of(tmp_path / "r3")
    prov = res["provenance"]
    assert (prov["files_embedded"], prov["files_reused_from_cache"]) == (1, N - 1)
    assert res["skipped_files"] == {} and res["n_files"] == N


def test_nan_output_in_embed_is_one_line(tmp_path: Path) -> None:
    dataset(tmp_path / "data", loud="a2.wav")
    r = invoke("embed", "test-nan-loud", tmp_path / "data" / "a2.wav", "--out", tmp_path / "e.npz")
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "NaN or Inf" in r.output and not (tmp_path / "e.npz").exists()


def test_non_finite_stored_rows_are_recomputed(
    tmp_path: Path, loud_files: list[FileItem], caplog
) -> None:
    enc = load_encoder("test-absmax")
    cache = make_store(tmp_path, enc, 1.0)
    reference = extract(loud_files, enc, window_seconds=1.0, num_workers=0).embeddings
    damaged = dict(reference)
    damaged["b3.wav"] = np.array([np.nan, 1.0], np.float32)  # a damaged or foreign file
    damaged["b5.wav"] = np.array([np.inf, 1.0], np.float32)
    cache.add({k: damaged[i.id] for i, k in zip(loud_files, cache.keys(loud_files), strict=True)})
    with caplog.at_level(logging.WARNING, logger="rmis.store"):
        res = extract(loud_files, enc, window_seconds=1.0, num_workers=0, store=cache)
    assert (res.computed, res.reused) == (2, N - 2)
    assert "2 non-finite" in caplog.text
    for fid, vec in reference.items():
        np.testing.assert_array_equal(res.embeddings[fid], vec)
    stored = EmbeddingStore(cache.dir).vectors(loud_files)
    assert np.isfinite(np.stack(list(stored.values()))).all() and len(stored) == N


def test_cache_of_older_rmis_moves_into_the_store(tmp_path: Path) -> None:
    from rmis.evaluate import manifest_dataset
    from rmis.extract import legacy_cache_key

    manifest = dataset(tmp_path / "data")
    ds = manifest_dataset(manifest, 0.5, "legacy")
    items = ds.items()
    enc = load_encoder("test-absmax")
    truth = extract(items, enc, window_seconds=ds.spec.window_seconds, num_workers=0).embeddings
    key = legacy_cache_key(encoder_fingerprint(enc, {}), items, ds.spec.window_seconds, "fp32")
    old = tmp_path / "cache" / "embeddings" / "test-absmax" / f"legacy-{key}"
    old.mkdir(parents=True)
    np.savez(old / "embeddings.npz", **{fid.replace("/", "%2F"): v for fid, v in truth.items()})
    r = invoke(
        *eval_args(manifest, tmp_path / "r", tmp_path / "cache", "test-absmax", "--name", "legacy")
    )
    assert r.exit_code == 0, r.output
    prov = result_of(tmp_path / "r")["provenance"]
    assert (prov["files_embedded"], prov["files_reused_from_cache"]) == (0, N)
    assert not old.exists()
    stored = cached_vectors(tmp_path / "cache", tmp_path / "data")
    assert all(np.array_equal(stored[fid], v) for fid, v in truth.items()) and len(stored) == N
