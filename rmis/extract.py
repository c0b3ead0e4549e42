"""Extraction engine: files -> windows -> encoder -> one embedding per file, cached on disk.

* Files stream through a DataLoader (decoding and resampling in worker processes); memory holds
  a few files' windows and one batch, never a dataset.
* Windows of consecutive files are packed into batches of ``batch_size`` and run under
  ``torch.inference_mode`` (optionally fp16/bf16 autocast on GPU); a file's embedding is the
  mean of its window embeddings (accumulated in float64).
* Embeddings are cached under a key that fingerprints everything that could change them
  (:func:`cache_key`); finished files are written every few seconds as atomic part files, so an
  interrupted or failing run loses nothing and a rerun computes only what is missing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import zipfile
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from rmis.audio import (
    DEFAULT_RESAMPLER,
    PREPROCESSING_VERSION,
    RESAMPLERS,
    is_source,
    load_windows,
)
from rmis.encoders import Encoder, adapter_source_sha256
from rmis.errors import RMISError
from rmis.io import atomic_write_bytes, atomic_write_json, embedding_matrix_bytes, npz_matrix

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def check_precision(precision: str, device: str | torch.device) -> None:
    """``precision`` is known and usable on ``device`` (fp16/bf16 autocast needs a CUDA GPU);
    cheap, so commands call it before any work.

    Raises:
        RMISError: an unknown precision, or fp16/bf16 on a non-CUDA device.
    """
    if precision not in PRECISIONS:
        raise RMISError(f"unknown --precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if PRECISIONS[precision] is None:
        return
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError, ValueError):
        kind = str(device)
    if kind != "cuda":
        raise RMISError(
            f"--precision {precision} needs a GPU device; use fp32 on {device} (or run on a "
            "CUDA GPU with --device cuda)"
        )


@dataclass(frozen=True)
class FileItem:
    """One file to embed: its id (result key) and its path on disk, or an audio source read
    lazily in the decoding worker (:func:`rmis.audio.is_source`, e.g. a Parquet row)."""

    id: str
    path: Any


def manifest_hash(items: Sequence[FileItem]) -> str:
    """SHA-256 over the sorted (file id, size in bytes) of a dataset: identifies its content
    as released (recorded in results; stable across machines)."""
    h = hashlib.sha256()
    for item in sorted(items, key=lambda i: i.id):
        size = item.path.size if is_source(item.path) else os.path.getsize(item.path)
        h.update(f"{item.id}\t{size}\n".encode())
    return h.hexdigest()


def _stat_hash(items: Sequence[FileItem]) -> str:
    """Hash of modification times (of sources: their stamps, e.g. a dataset's fingerprint): a
    rewritten file invalidates cached embeddings."""
    h = hashlib.sha256()
    for item in sorted(items, key=lambda i: i.id):
        stamp = item.path.stamp if is_source(item.path) else os.stat(item.path).st_mtime_ns
        h.update(f"{item.id}\t{stamp}\n".encode())
    return h.hexdigest()


def encoder_fingerprint(encoder: Encoder, options: dict[str, Any]) -> dict[str, Any]:
    """What identifies an encoder's outputs: name, adapter version, a hash of the adapter's
    source code (:func:`rmis.encoders.adapter_source_sha256`), weights, options."""
    info = getattr(encoder, "info", None)
    return {
        "model": info.name if info else type(encoder).__name__,
        "adapter": f"{type(encoder).__module__}.{type(encoder).__qualname__}",
        "adapter_version": getattr(encoder, "version", "1"),
        "adapter_sha256": adapter_source_sha256(encoder),
        "weights_sha256": encoder.weights_sha256,
        "revision": encoder.revision,
        "options": {k: options[k] for k in sorted(options)},
    }


def cache_key(
    encoder_fp: dict[str, Any],
    items: Sequence[FileItem],
    window_seconds: float,
    precision: str,
    input_rate: int | None = None,
    resampler: str = DEFAULT_RESAMPLER,
) -> tuple[str, dict[str, Any]]:
    """(key, its components): encoder fingerprint, preprocessing version, resampler, window,
    precision and the dataset's manifest and modification-time hashes."""
    parts = {
        "encoder": encoder_fp,
        "preprocessing_version": PREPROCESSING_VERSION,
        "resampler": resampler,
        "window_seconds": window_seconds,
        "precision": precision,
        "input_rate": input_rate,
        "manifest_sha256": manifest_hash(items),
        "stat_sha256": _stat_hash(items),
    }
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:32], parts


class EmbeddingCache:
    """On-disk embeddings of one (encoder, dataset) under one key.

    Layout: ``<dir>/key.json`` (the key's components), ``<dir>/part-*.npz`` (files finished
    so far, each written atomically) and, once complete, ``<dir>/embeddings.npz``; each
    ``.npz`` holds ``ids`` (file ids) and ``emb`` (one float32 row per id).
    """

    def __init__(self, directory: Path, parts: dict[str, Any]) -> None:
        self.dir = Path(directory)
        self.parts = parts

    def load(self) -> dict[str, np.ndarray]:
        """All embeddings stored so far (complete file first, then parts), in either layout
        (one float32 matrix plus an id array, or, as older rmis wrote them, one member per file
        id). Non-finite vectors (written by older versions of rmis) are dropped with a warning:
        they get recomputed."""
        out: dict[str, np.ndarray] = {}
        for f in [self.dir / "embeddings.npz", *sorted(self.dir.glob("part-*.npz"))]:
            if f.is_file():
                try:
                    with np.load(f, allow_pickle=False) as npz:
                        matrix = npz_matrix(npz)
                        if matrix is None:
                            found = {_unkey(k): npz[k] for k in npz.files}
                except (OSError, ValueError, zipfile.BadZipFile) as exc:  # a damaged part
                    log.warning("ignoring unreadable cache file %s: %s", f, exc)
                    continue
                if matrix is not None:
                    ids, mat = matrix
                    if mat.ndim == 2 and len(ids) == mat.shape[0]:
                        good = np.zeros(len(ids), dtype=bool)
                        if np.issubdtype(mat.dtype, np.number) and not np.iscomplexobj(mat):
                            good = np.isfinite(mat).all(axis=1)
                        for i in np.flatnonzero(good):  # checked at once
                            out[ids[i]] = mat[i]
                        found = {ids[i]: mat[i] for i in np.flatnonzero(~good)}  # warned below
                    else:
                        log.warning("ignoring malformed cache file %s: shape %s", f, mat.shape)
                        continue
                for fid, vec in found.items():
                    if (
                        vec.ndim == 1
                        and np.issubdtype(vec.dtype, np.number)
                        and np.isfinite(vec).all()
                    ):
                        out[fid] = vec
                    else:
                        out.pop(fid, None)
                        log.warning(
                            "ignoring the cached embedding of %r in %s: not a finite vector "
                            "(it is recomputed)",
                            fid,
                            f,
                        )
        return out

    def clear(self) -> None:
        """Drop every stored embedding (``--recompute``); the key file stays."""
        for f in [self.dir / "embeddings.npz", *self.dir.glob("part-*.npz")]:
            f.unlink(missing_ok=True)

    def add(self, embeddings: dict[str, np.ndarray]) -> None:
        """Store finished embeddings as a new part (atomically)."""
        if not embeddings:
            return
        if not (self.dir / "key.json").exists():
            atomic_write_json(self.dir / "key.json", self.parts)
        n = len(list(self.dir.glob("part-*.npz")))
        atomic_write_bytes(self.dir / f"part-{n:05d}-{os.getpid()}.npz", _npz_bytes(embeddings))

    def finalize(self, embeddings: dict[str, np.ndarray]) -> None:
        """Write the complete set as one file and drop the parts."""
        if not (self.dir / "key.json").exists():
            atomic_write_json(self.dir / "key.json", self.parts)
        atomic_write_bytes(self.dir / "embeddings.npz", _npz_bytes(embeddings))
        for part in self.dir.glob("part-*.npz"):
            part.unlink(missing_ok=True)


def _key(file_id: str) -> str:
    # npz keys are zip member names: keep ids readable but unambiguous
    return file_id.replace("%", "%25").replace("/", "%2F")


def _unkey(key: str) -> str:
    return key.replace("%2F", "/").replace("%25", "%")


def _npz_bytes(embeddings: dict[str, np.ndarray]) -> bytes:
    """One float32 matrix plus an id array (:func:`rmis.io.embedding_matrix_bytes`) when the
    vectors share a length and are float32 (extraction's output, stored bit for bit); otherwise
    (mixed dimensions) the older layout of one member per file id, which is read as well."""
    vecs = list(embeddings.values())
    if (
        vecs
        and all(v.ndim == 1 and v.dtype == np.float32 for v in vecs)
        and (len({v.shape for v in vecs}) == 1)
    ):
        return embedding_matrix_bytes(list(embeddings), np.stack(vecs))
    import io

    buf = io.BytesIO()
    np.savez(buf, **{_key(k): v for k, v in embeddings.items()})
    return buf.getvalue()


class _WindowDataset(Dataset):
    def __init__(
        self,
        items: Sequence[FileItem],
        window_seconds: float,
        target_rate: int | None,
        expected_rate: int | None,
        skip_bad: bool,
        resampler: str = DEFAULT_RESAMPLER,
    ) -> None:
        self.resampler = resampler
        self.items = list(items)
        self.window_seconds = window_seconds
        self.target_rate = target_rate
        self.expected_rate = expected_rate
        self.skip_bad = skip_bad

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, int, str | None]:
        try:
            windows, rate = load_windows(
                self.items[i].path,
                self.window_seconds,
                self.target_rate,
                self.expected_rate,
                self.resampler,
            )
        except RMISError as exc:
            # the message travels as text, raised (or listed) by the main process: raised in a
            # worker, torch would re-raise it wrapped in its "Caught ... in DataLoader worker
            # process" text with the worker's traceback
            return i, None, 0, str(exc)
        # a tensor travels from a worker through shared memory, an array through a pipe
        return i, torch.from_numpy(windows), rate, None


def _identity(batch: Any) -> Any:
    return batch


@dataclass
class ExtractResult:
    embeddings: dict[str, np.ndarray]
    skipped: dict[str, str]
    computed: int
    reused: int
    seconds: float
    windows: int


def extract(
    items: Sequence[FileItem],
    encoder: Encoder,
    *,
    window_seconds: float,
    expected_rate: int | None = None,
    cache: EmbeddingCache | None = None,
    batch_size: int = 32,
    num_workers: int | None = None,
    precision: str = "fp32",
    skip_bad_files: bool = False,
    progress: Any = None,
    checkpoint_seconds: float = 10.0,
    input_rate: int | None = None,
    recompute: bool = False,
    resampler: str = DEFAULT_RESAMPLER,
) -> ExtractResult:
    """Embed files (one vector per file), reusing and filling ``cache``.

    Args:
        items: files to embed.
        encoder: a loaded encoder (its ``sample_rate``: None = native rate).
        window_seconds: window length in seconds.
        expected_rate: the dataset's native rate (files at another rate are errors).
        cache: where to reuse and store embeddings (None: no caching).
        batch_size: windows per forward pass.
        num_workers: DataLoader worker processes (default: one per spare core, at most 4).
        precision: ``fp32``, or ``fp16``/``bf16`` autocast (GPU only).
        skip_bad_files: list unreadable or invalid files instead of failing.
        progress: a ``rich.progress.Progress`` to report files to (optional).
        checkpoint_seconds: how often finished embeddings are written to the cache.
        input_rate: feed the encoder at this rate instead of its own (compatibility quirks).
        recompute: ignore the vectors in ``cache`` and replace them (they are dropped first).
        resampler: ``sinc`` (the benchmark's, default) or ``soxr`` (:func:`rmis.audio.resample`).

    An encoder output with NaN or Inf is an error naming the file and the window (with
    ``skip_bad_files``: the file is skipped with that reason); such vectors are never cached.
    """
    if resampler not in RESAMPLERS:
        raise RMISError(f"unknown resampler {resampler!r}; choose one of {', '.join(RESAMPLERS)}")
    device = encoder.device
    check_precision(precision, device)
    started = time.perf_counter()
    if cache is not None and recompute:
        cache.clear()
    done = cache.load() if cache is not None else {}
    done = {k: v for k, v in done.items() if k in {i.id for i in items}}
    todo = [i for i in items if i.id not in done]
    reused = len(done)
    task = progress.add_task("embedding", total=len(items), completed=reused) if progress else None
    fresh: dict[str, np.ndarray] = {}
    skipped: dict[str, str] = {}
    n_windows = 0
    if todo:
        workers = num_workers if num_workers is not None else min(4, max(0, os.cpu_count() - 1))
        loader = DataLoader(
            _WindowDataset(
                todo,
                window_seconds,
                input_rate or encoder.sample_rate,
                expected_rate,
                skip_bad_files,
                resampler,
            ),
            batch_size=None,
            shuffle=False,
            num_workers=workers,
            collate_fn=_identity,
            prefetch_factor=2 if workers else None,
            persistent_workers=False,
        )
        autocast = (
            torch.autocast(device.type, dtype=PRECISIONS[precision])
            if PRECISIONS[precision] is not None
            else nullcontext()
        )
        batcher = _Batcher(encoder, device, batch_size, autocast)
        last_save = time.perf_counter()

        def collect(finished: list[tuple[str, np.ndarray]]) -> None:
            for fid, vec in finished:
                fresh[fid] = vec
                if task is not None:
                    progress.advance(task)
            for fid, reason in batcher.take_bad():  # non-finite output: never cached
                if not skip_bad_files:
                    raise RMISError(reason + "; or skip the file (rmis eval --skip-bad-files)")
                skipped[fid] = reason
                if task is not None:
                    progress.advance(task)

        try:
            for i, windows, rate, error in loader:
                item = todo[i]
                if error is not None:
                    if not skip_bad_files:
                        raise RMISError(error)
                    skipped[item.id] = error
                    if task is not None:
                        progress.advance(task)
                    continue
                n_windows += len(windows)
                collect(batcher.add(item.id, windows, rate))
                if cache is not None and time.perf_counter() - last_save > checkpoint_seconds:
                    cache.add({k: fresh[k] for k in fresh if k not in done})
                    done.update(fresh)
                    last_save = time.perf_counter()
            collect(batcher.flush())
        finally:  # whatever happens, keep what was computed
            if cache is not None:
                cache.add({k: v for k, v in fresh.items() if k not in done})
    done.update(fresh)
    if cache is not None and not skipped:
        cache.finalize(done)
    return ExtractResult(
        embeddings={i.id: done[i.id] for i in items if i.id in done},
        skipped=skipped,
        computed=len(fresh),
        reused=reused,
        seconds=time.perf_counter() - started,
        windows=n_windows,
    )


class _Batcher:
    """Packs windows of consecutive files into batches; yields finished files' mean vectors."""

    def __init__(self, encoder: Encoder, device: torch.device, batch_size: int, autocast) -> None:
        self.encoder = encoder
        self.device = device
        self.batch_size = max(1, batch_size)
        self.autocast = autocast
        self.buffer: list[torch.Tensor] = []
        self.owners: list[str] = []
        self.rate: int | None = None
        self.pending: dict[str, list[Any]] = {}  # id -> [sum, windows done, windows total]
        self.bad: list[tuple[str, str]] = []  # (id, reason) of files with non-finite output
        info = getattr(encoder, "info", None)
        self.name = info.name if info is not None else type(encoder).__name__

    def take_bad(self) -> list[tuple[str, str]]:
        """Files found with a non-finite embedding since the last call (id, reason)."""
        out, self.bad = self.bad, []
        return out

    def _reject(self, fid: str, reason: str) -> None:
        """Forget a file (its remaining windows too) and report it."""
        self.pending.pop(fid, None)
        keep = [j for j, owner in enumerate(self.owners) if owner != fid]
        if len(keep) != len(self.owners):
            self.buffer = [self.buffer[j] for j in keep]
            self.owners = [self.owners[j] for j in keep]
        self.bad.append((fid, reason))

    def add(self, fid: str, windows: torch.Tensor, rate: int) -> list[tuple[str, np.ndarray]]:
        out = []
        if self.rate is not None and rate != self.rate:
            out += self.flush()
        self.rate = rate
        self.pending[fid] = [None, 0, len(windows)]
        self.buffer.extend(windows.unbind(0))
        self.owners.extend([fid] * len(windows))
        while len(self.buffer) >= self.batch_size:
            out += self._run(self.batch_size)
        return out

    def flush(self) -> list[tuple[str, np.ndarray]]:
        out = []
        while self.buffer:
            out += self._run(min(self.batch_size, len(self.buffer)))
        return out

    def _run(self, n: int) -> list[tuple[str, np.ndarray]]:
        batch = torch.stack(self.buffer[:n]).to(self.device)
        owners = self.owners[:n]
        del self.buffer[:n], self.owners[:n]
        try:
            with torch.inference_mode(), self.autocast:
                vecs = self.encoder.embed(batch, self.rate)
        except RMISError as exc:
            files = sorted(set(owners))
            raise RMISError(
                f"{exc} (while embedding windows of {files[:3]}"
                + (f" and {len(files) - 3} more files" if len(files) > 3 else "")
                + ")"
            ) from None
        vecs = vecs.detach().to("cpu", torch.float64).numpy()
        if vecs.ndim != 2 or vecs.shape[0] != n:
            raise RMISError(
                f"encoder returned shape {tuple(vecs.shape)} for a batch of {n} windows; "
                "expected [batch, dim]"
            )
        finite = np.isfinite(vecs).all(axis=1)
        finished = []
        start = 0
        while start < n:
            fid = owners[start]
            stop = start
            while stop < n and owners[stop] == fid:
                stop += 1
            entry = self.pending.get(fid)
            if entry is None:  # rejected earlier in this batch
                start = stop
                continue
            if not finite[start:stop].all():
                window = entry[1] + int(np.argmin(finite[start:stop]))
                self._reject(
                    fid,
                    f"model {self.name!r} returned NaN or Inf for window {window} (counting "
                    f"from 0) of file {fid!r}; nothing of this file was cached; fix the encoder "
                    f"(`rmis check-model {self.name}`)",
                )
                start = stop
                continue
            part = vecs[start:stop].sum(axis=0)
            entry[0] = part if entry[0] is None else entry[0] + part
            entry[1] += stop - start
            if entry[1] == entry[2]:
                mean = (entry[0] / entry[2]).astype(np.float32)
                del self.pending[fid]
                if np.isfinite(mean).all():
                    finished.append((fid, mean))
                else:
                    self._reject(
                        fid,
                        f"model {self.name!r}: the mean embedding of file {fid!r} overflows "
                        "float32; nothing of this file was cached; fix the encoder's scale",
                    )
            start = stop
        return finished
