"""Extraction engine: files -> windows -> encoder -> one embedding per file, stored per file.

* Files stream through a DataLoader (decoding and resampling in worker processes); memory holds
  a few files' windows and one batch, never a dataset.
* Windows of consecutive files are packed into batches of ``batch_size`` and run under
  ``torch.inference_mode`` (optionally fp16/bf16 autocast on GPU); a file's embedding is the
  mean of its window embeddings (accumulated in float64).
* Embeddings live in the per-file store (:mod:`rmis.store`) of the encoder configuration, so a
  file is embedded once wherever it appears; finished files are written every few seconds as
  atomic part files, so an interrupted or failing run loses nothing and a rerun computes only
  what is missing.
* Under ``torchrun`` (:mod:`rmis.distributed`) rank 0 splits the missing files into shares of
  equal duration and every rank embeds its own.
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
from rmis.distributed import duration, shares
from rmis.encoders import Encoder, adapter_source_sha256
from rmis.errors import RMISError
from rmis.io import npz_matrix
from rmis.store import EmbeddingStore

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


def legacy_cache_key(
    encoder_fp: dict[str, Any],
    items: Sequence[FileItem],
    window_seconds: float,
    precision: str,
    input_rate: int | None = None,
    resampler: str = DEFAULT_RESAMPLER,
) -> str:
    """The key of the per-dataset cache folders of rmis before the per-file store
    (``CACHE/embeddings/<model>/<dataset>-<key>``): their vectors are moved into the store
    (:func:`import_legacy_cache`)."""
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
    return hashlib.sha256(blob).hexdigest()[:32]


def read_legacy_cache(directory: Path) -> dict[str, np.ndarray]:
    """The finite vectors of a per-dataset cache folder of older rmis (``embeddings.npz`` and
    ``part-*.npz``, in either npz layout), by file id."""
    out: dict[str, np.ndarray] = {}
    for f in [directory / "embeddings.npz", *sorted(directory.glob("part-*.npz"))]:
        if not f.is_file():
            continue
        try:
            with np.load(f, allow_pickle=False) as npz:
                layout = npz_matrix(npz)
                if layout is None:
                    found = {_unkey(k): npz[k] for k in npz.files}
                else:
                    found = dict(zip(layout[0], layout[1], strict=True))
        except (OSError, ValueError, zipfile.BadZipFile) as exc:  # a damaged part
            log.warning("ignoring unreadable cache file %s: %s", f, exc)
            continue
        for fid, vec in found.items():
            ok = vec.ndim == 1 and np.issubdtype(vec.dtype, np.number)
            if ok and np.isfinite(vec).all():
                out[fid] = np.asarray(vec, dtype=np.float32)
            else:
                out.pop(fid, None)
    return out


def import_legacy_cache(directory: Path, items: Sequence[FileItem], store: EmbeddingStore) -> int:
    """Move the vectors of an older per-dataset cache folder into ``store`` (rows of files
    still in ``items``), then delete the folder; returns how many were moved."""
    import shutil

    found = read_legacy_cache(directory)
    keep = [i for i in items if i.id in found]
    rows = dict(zip(store.keys(keep), (found[i.id] for i in keep), strict=True))
    store.add(rows)
    store.consolidate(rows)
    shutil.rmtree(directory, ignore_errors=True)
    log.info("moved %d embeddings of %s into the per-file store", len(rows), directory)
    return len(rows)


def _unkey(key: str) -> str:
    # npz member names of the per-file-id layout: "/" and "%" escaped
    return key.replace("%2F", "/").replace("%25", "%")


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


def save_seconds() -> float:
    """How often finished embeddings are written to the store: ``$RMIS_SAVE_SECONDS`` (default
    10; 0 writes after every file)."""
    try:
        return max(0.0, float(os.environ.get("RMIS_SAVE_SECONDS", "10")))
    except ValueError:
        raise RMISError(
            f"RMIS_SAVE_SECONDS={os.environ['RMIS_SAVE_SECONDS']!r} is not a number of seconds"
        ) from None


def extract(
    items: Sequence[FileItem],
    encoder: Encoder,
    *,
    window_seconds: float,
    expected_rate: int | None = None,
    store: EmbeddingStore | None = None,
    batch_size: int = 32,
    num_workers: int | None = None,
    precision: str = "fp32",
    skip_bad_files: bool = False,
    progress: Any = None,
    checkpoint_seconds: float | None = None,
    input_rate: int | None = None,
    recompute: bool = False,
    resampler: str = DEFAULT_RESAMPLER,
    dist: Any = None,
) -> ExtractResult:
    """Embed files (one vector per file), reusing and filling ``store``.

    Args:
        items: files to embed.
        encoder: a loaded encoder (its ``sample_rate``: None = native rate).
        window_seconds: window length in seconds.
        expected_rate: the dataset's native rate (files at another rate are errors).
        store: where to reuse and store embeddings, per file (None: no caching).
        batch_size: windows per forward pass.
        num_workers: DataLoader worker processes (default: one per spare core, at most 4).
        precision: ``fp32``, or ``fp16``/``bf16`` autocast (GPU only).
        skip_bad_files: list unreadable or invalid files instead of failing.
        progress: a ``rich.progress.Progress`` to report files to (optional).
        checkpoint_seconds: how often finished embeddings are written to the store (default:
            :func:`save_seconds`).
        input_rate: feed the encoder at this rate instead of its own (compatibility quirks).
        recompute: ignore the vectors of ``items`` in ``store`` and replace them (they are
            dropped first).
        resampler: ``sinc`` (the benchmark's, default) or ``soxr`` (:func:`rmis.audio.resample`).
        dist: a :class:`rmis.distributed.Dist` (``torchrun``): every rank calls this with the
            same items; rank 0 plans, every rank embeds its share into ``store`` (required), and
            rank 0 returns the embeddings of all (the others return none).

    An encoder output with NaN or Inf is an error naming the file and the window (with
    ``skip_bad_files``: the file is skipped with that reason); such vectors are never cached.
    """
    if resampler not in RESAMPLERS:
        raise RMISError(f"unknown resampler {resampler!r}; choose one of {', '.join(RESAMPLERS)}")
    if dist is not None and store is None:
        raise ValueError("a distributed extraction needs a store to meet in")
    check_precision(precision, encoder.device)
    started = time.perf_counter()
    main = dist is None or dist.is_main
    keys = store.keys(items) if store is not None else [i.id for i in items]
    done: dict[str, np.ndarray] = {}
    if main and store is not None:
        if recompute:
            store.discard(keys)
        done = store.lookup(keys)
    todo, seen = [], set(done)
    for j, k in enumerate(keys):  # one item per missing file (a file may be listed twice)
        if k not in seen:
            seen.add(k)
            todo.append(j)
    reused = sum(k in done for k in keys)
    mine = todo
    if dist is not None:
        plan = None
        if main:
            parts = shares([duration(items[j].path) for j in todo], dist.world)
            plan = [[todo[i] for i in share] for share in parts]
        plan = dist.broadcast(plan)
        mine = plan[dist.rank]
    counter = dist.counter() if dist is not None else None
    task = None
    if progress is not None and main:
        task = progress.add_task("embedding", total=len(items), completed=reused)
    poller = None
    if counter is not None and task is not None and counter.store is not None:
        from rmis.distributed import Poller

        poller = Poller(counter, lambda n: progress.update(task, completed=reused + n))
        task_local = None
    else:
        task_local = task

    def advance(n: int = 1) -> None:
        if task_local is not None:
            progress.advance(task_local, n)
        if counter is not None:
            counter.add(n)

    error = None
    try:
        fresh, skipped, n_windows = _embed(
            [FileItem(keys[j], items[j].path) for j in mine],
            {keys[j]: items[j].id for j in mine},
            encoder,
            window_seconds=window_seconds,
            expected_rate=expected_rate,
            store=store,
            batch_size=batch_size,
            num_workers=num_workers,
            precision=precision,
            skip_bad_files=skip_bad_files,
            advance=advance,
            checkpoint_seconds=save_seconds() if checkpoint_seconds is None else checkpoint_seconds,
            input_rate=input_rate,
            resampler=resampler,
        )
    except RMISError as exc:
        if dist is None:
            raise
        error, fresh, skipped, n_windows = str(exc), {}, {}, 0
    computed, windows, own = len(fresh), n_windows, list(store.written) if store else []
    if dist is not None:
        outcome = dist.gather((error, skipped, computed, n_windows, own))
        if poller is not None:
            poller.stop()
        dist.agree(error)
        if not main:
            return ExtractResult({}, {}, computed, 0, time.perf_counter() - started, windows)
        skipped = {k: v for o in outcome for k, v in o[1].items()}
        computed = sum(o[2] for o in outcome)
        windows = sum(o[3] for o in outcome)
        own = [name for o in outcome for name in o[4]]
    if dist is not None:  # every rank's vectors, from their parts
        fresh = store.lookup([k for k in keys if k not in done])
    if store is not None:
        store.consolidate(keys, own)
    done.update(fresh)
    by_id = {items[j].id: done[k] for j, k in enumerate(keys) if k in done}
    return ExtractResult(
        embeddings=by_id,
        skipped={items[j].id: skipped[k] for j, k in enumerate(keys) if k in skipped},
        computed=computed,
        reused=reused,
        seconds=time.perf_counter() - started,
        windows=windows,
    )


def _embed(
    todo: list[FileItem],
    names: dict[str, str],
    encoder: Encoder,
    *,
    window_seconds: float,
    expected_rate: int | None,
    store: EmbeddingStore | None,
    batch_size: int,
    num_workers: int | None,
    precision: str,
    skip_bad_files: bool,
    advance: Any,
    checkpoint_seconds: float,
    input_rate: int | None,
    resampler: str,
) -> tuple[dict[str, np.ndarray], dict[str, str], int]:
    """Embed ``todo`` (ids: store keys; ``names``: key -> the file id messages use), saving
    finished vectors to ``store`` every ``checkpoint_seconds`` and on the way out, whatever
    happens. Returns (vectors by key, reasons of skipped files by key, windows)."""
    fresh: dict[str, np.ndarray] = {}
    skipped: dict[str, str] = {}
    if not todo:
        return fresh, skipped, 0
    saved: set[str] = set()
    n_windows = 0
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
        torch.autocast(encoder.device.type, dtype=PRECISIONS[precision])
        if PRECISIONS[precision] is not None
        else nullcontext()
    )
    batcher = _Batcher(encoder, encoder.device, batch_size, autocast, names)
    last_save = time.perf_counter()

    def save() -> None:
        if store is not None:
            store.add({k: v for k, v in fresh.items() if k not in saved})
        saved.update(fresh)

    def collect(finished: list[tuple[str, np.ndarray]]) -> None:
        for key, vec in finished:
            fresh[key] = vec
            advance()
        for key, reason in batcher.take_bad():  # non-finite output: never cached
            if not skip_bad_files:
                raise RMISError(reason + "; or skip the file (rmis eval --skip-bad-files)")
            skipped[key] = reason
            advance()

    try:
        for i, windows, rate, error in loader:
            item = todo[i]
            if error is not None:
                if not skip_bad_files:
                    collect(batcher.flush())  # the files before it are kept
                    raise RMISError(error)
                skipped[item.id] = error
                advance()
                continue
            n_windows += len(windows)
            collect(batcher.add(item.id, windows, rate))
            if time.perf_counter() - last_save >= checkpoint_seconds:
                save()
                last_save = time.perf_counter()
        collect(batcher.flush())
    finally:  # whatever happens, keep what was computed
        save()
    return fresh, skipped, n_windows


class _Batcher:
    """Packs windows of consecutive files into batches; yields finished files' mean vectors."""

    def __init__(
        self,
        encoder: Encoder,
        device: torch.device,
        batch_size: int,
        autocast: Any,
        names: dict[str, str] | None = None,
    ) -> None:
        self.encoder = encoder
        self.names = names or {}  # id -> what messages call the file
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
            files = sorted({self.names.get(o, o) for o in owners})
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
                name = self.names.get(fid, fid)
                self._reject(
                    fid,
                    f"model {self.name!r} returned NaN or Inf for window {window} (counting "
                    f"from 0) of file {name!r}; nothing of this file was cached; fix the encoder "
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
                        f"model {self.name!r}: the mean embedding of file "
                        f"{self.names.get(fid, fid)!r} overflows "
                        "float32; nothing of this file was cached; fix the encoder's scale",
                    )
            start = stop
        return finished
