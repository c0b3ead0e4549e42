"""The embedding store: one embedding per (encoder configuration, file), shared by every
dataset, manifest and process that contains the file.

* A store is a folder per encoder configuration (:func:`store_key`: encoder fingerprint,
  preprocessing version, resampler, window, precision, input rate), under
  ``CACHE/embeddings/<model>/<key>/``, holding ``key.json`` (the key's components) and ``.npz``
  files of the matrix layout (``ids`` + one float32 ``emb`` matrix) whose ids are *file keys*
  (:func:`file_key`): a hash of the file's real path, size and modification time, or, when the
  user asks for it, of its content.
* Writers add ``part.<host>.<pid>.<ns>.<rand>.npz`` files, each written atomically under a
  name no other process, rank or host can produce; nothing is ever rewritten in place.
* :meth:`EmbeddingStore.consolidate` merges the parts holding a dataset's files into one
  ``seg.<ns>.<rand>.npz`` segment, written before anything is deleted; it deletes only files
  whose every row is in it, and never a part of a writer that may still be running.
* :meth:`EmbeddingStore.lookup` reads every file's id array (small; cached per process, names
  are immutable) and loads the matrix only of the files holding wanted rows.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import socket
import time
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rmis.audio import DEFAULT_RESAMPLER, PREPROCESSING_VERSION, is_source
from rmis.io import atomic_write_bytes, atomic_write_json, embedding_matrix_bytes, read_npz_member

log = logging.getLogger(__name__)

#: Layout version of the store (part of every store key).
STORE_VERSION = "1"
#: How files are identified: ``stat`` (real path, size, modification time; free) or
#: ``content`` (SHA-256 of the bytes; reads every file, survives moves and copies).
IDENTITIES = ("stat", "content")
#: A part of another host (whose writer cannot be checked) counts as abandoned after this.
STALE_SECONDS = 24 * 3600


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def file_key(path: Any, identity: str = "stat") -> str:
    """The store id of a file (or audio source, :func:`rmis.audio.is_source`).

    ``stat``: its real path (symlinks resolved), size and modification time, so a rewritten
    file is a new file and the same file reached through a link or another manifest is the
    same; ``content``: a SHA-256 of its bytes (the same recording anywhere). A file that cannot
    be read gets a key no stored row has (extraction reports it)."""
    if identity not in IDENTITIES:
        raise ValueError(f"unknown file identity {identity!r}; choose one of {IDENTITIES}")
    try:
        if identity == "content":
            h = hashlib.sha256()
            if is_source(path):
                h.update(path.read_bytes())
            else:
                with open(path, "rb") as fh:
                    for block in iter(lambda: fh.read(1 << 20), b""):
                        h.update(block)
            return "c" + h.hexdigest()[:31]
        if is_source(path):
            return "s" + _digest(f"{path.stamp}\0{path}\0{path.size}")[:31]
        st = os.stat(path)
        return "f" + _digest(f"{os.path.realpath(path)}\0{st.st_size}\0{st.st_mtime_ns}")[:31]
    except (OSError, ValueError):
        return "x" + _digest(f"unreadable\0{path}")[:31]


def store_key(
    encoder_fp: dict[str, Any],
    window_seconds: float,
    precision: str,
    input_rate: int | None = None,
    resampler: str = DEFAULT_RESAMPLER,
) -> tuple[str, dict[str, Any]]:
    """(key, its components): everything besides the file that could change an embedding."""
    parts = {
        "store_version": STORE_VERSION,
        "encoder": encoder_fp,
        "preprocessing_version": PREPROCESSING_VERSION,
        "resampler": resampler,
        "window_seconds": window_seconds,
        "precision": precision,
        "input_rate": input_rate,
    }
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:32], parts


def _host() -> str:
    name = "".join(c if c.isalnum() or c in "-_" else "_" for c in socket.gethostname())
    return name[:40] or "host"


def _writer_alive(name: str, now: float, mtime: float) -> bool:
    """Whether the process that wrote part ``name`` may still be running."""
    fields = name.split(".")
    try:
        host, pid = fields[1], int(fields[2])
    except (IndexError, ValueError):
        return False
    if host != _host():
        return now - mtime < STALE_SECONDS
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


class EmbeddingStore:
    """Per-file embeddings of one encoder configuration (see the module docstring).

    Args:
        directory: the store's folder (created on the first write).
        parts: the key's components (written to ``key.json``).
        identity: how :meth:`keys` identifies files: ``stat`` or ``content``.
    """

    def __init__(
        self, directory: str | os.PathLike, parts: dict[str, Any] | None = None, identity="stat"
    ) -> None:
        if identity not in IDENTITIES:
            raise ValueError(f"unknown file identity {identity!r}; choose one of {IDENTITIES}")
        self.dir = Path(directory)
        self.parts = parts or {}
        self.identity = identity
        self.written: list[str] = []  # names of the parts this object wrote
        self._ids: dict[str, np.ndarray] = {}

    # -- reading ---------------------------------------------------------------------------------

    def keys(self, items: Sequence[Any]) -> list[str]:
        """The file key of each item (an object with ``.path``, or a path)."""
        return [file_key(getattr(i, "path", i), self.identity) for i in items]

    def files(self) -> list[Path]:
        """Segments, then parts, each in name order."""
        if not self.dir.is_dir():
            return []
        return sorted(self.dir.glob("seg.*.npz")) + sorted(self.dir.glob("part.*.npz"))

    def _file_ids(self, f: Path) -> list[str] | None:
        """The ids of a store file (read once per process: names are never reused)."""
        if f.name not in self._ids:
            try:
                with np.load(f, allow_pickle=False) as npz:
                    if sorted(npz.files) != ["emb", "ids"]:
                        log.warning("ignoring embedding file %s: not an ids + emb matrix", f)
                        return None
                    ids = npz["ids"]
            except FileNotFoundError:
                raise
            except (OSError, ValueError, zipfile.BadZipFile) as exc:
                log.warning("ignoring unreadable embedding file %s: %s", f, exc)
                return None
            if ids.dtype.kind != "U" or ids.ndim != 1:
                log.warning("ignoring embedding file %s: ids are not strings", f)
                return None
            self._ids[f.name] = ids.tolist()
        return self._ids[f.name]

    def _rows(self, f: Path) -> np.ndarray | None:
        try:
            mat = read_npz_member(f, "emb")
        except FileNotFoundError:
            raise
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            log.warning("ignoring unreadable embedding file %s: %s", f, exc)
            return None
        ids = self._ids.get(f.name)
        if mat.ndim != 2 or ids is None or mat.shape[0] != len(ids):
            log.warning("ignoring malformed embedding file %s: shape %s", f, mat.shape)
            return None
        if not np.issubdtype(mat.dtype, np.floating):
            log.warning("ignoring embedding file %s: dtype %s", f, mat.dtype)
            return None
        return mat

    def _scan(self, want: set[str], files: list[Path]) -> tuple[dict[str, np.ndarray], dict]:
        """Rows of ``want`` in ``files`` (first file wins) and which file gave each."""
        out: dict[str, np.ndarray] = {}
        source: dict[str, list[str]] = {}
        for f in files:
            ids = self._file_ids(f)
            if not ids:
                continue
            hit = [i for i, k in enumerate(ids) if k in want and k not in out]
            if not hit:
                continue
            mat = self._rows(f)
            if mat is None:
                continue
            rows = mat if len(hit) == len(ids) else mat[hit]
            finite = np.isfinite(rows).all(axis=1)
            if not finite.all():
                log.warning(
                    "ignoring %d non-finite embeddings in %s (they are recomputed)",
                    int((~finite).sum()),
                    f,
                )
            got = [ids[i] for i, ok in zip(hit, finite.tolist(), strict=True) if ok]
            out.update(zip(got, rows[finite] if not finite.all() else rows, strict=True))
            source[f.name] = got
        return out, source

    def vectors(self, items: Sequence[Any]) -> dict[str, np.ndarray]:
        """``{item.id: vector}`` of the stored ones among ``items`` (objects with ``.id`` and
        ``.path``, e.g. :class:`rmis.extract.FileItem`)."""
        keys = self.keys(items)
        found = self.lookup(keys)
        return {i.id: found[k] for i, k in zip(items, keys, strict=True) if k in found}

    def lookup_all(self) -> dict[str, np.ndarray]:
        """Every stored row (``{file key: vector}``)."""
        keys: set[str] = set()
        for f in self.files():
            try:
                ids = self._file_ids(f)
            except FileNotFoundError:
                continue
            keys.update(ids or ())
        return self.lookup(keys)

    def lookup(self, keys: Iterable[str]) -> dict[str, np.ndarray]:
        """``{file key: vector}`` of the stored ones among ``keys``."""
        return self._lookup(set(keys))[0]

    def _lookup(self, want: set[str]) -> tuple[dict[str, np.ndarray], dict]:
        for _ in range(5):  # a file merged away while we read: list again
            try:
                return self._scan(want, self.files())
            except FileNotFoundError:
                continue
        return self._scan(want, [f for f in self.files() if f.exists()])

    # -- writing ---------------------------------------------------------------------------------

    def _write(self, prefix: str, rows: dict[str, np.ndarray]) -> list[str]:
        """Write ``rows`` as new files (one per vector length), atomically; their names."""
        if not rows:
            return []
        if not (self.dir / "key.json").exists():
            atomic_write_json(self.dir / "key.json", self.parts)
        by_dim: dict[int, list[str]] = {}
        for k, v in rows.items():
            by_dim.setdefault(int(v.shape[-1]), []).append(k)
        names = []
        for keys in by_dim.values():
            name = f"{prefix}.{time.time_ns()}.{secrets.token_hex(3)}.npz"
            mat = np.stack([np.asarray(rows[k], dtype=np.float32) for k in keys])
            atomic_write_bytes(self.dir / name, embedding_matrix_bytes(keys, mat))
            self._ids[name] = list(keys)
            names.append(name)
        return names

    def add(self, rows: dict[str, np.ndarray]) -> None:
        """Store finished embeddings (``{file key: float32 vector}``) as a new part."""
        self.written += self._write(f"part.{_host()}.{os.getpid()}", rows)

    def consolidate(self, keys: Iterable[str], own: Iterable[str] = ()) -> None:
        """Merge the parts holding rows of ``keys`` into one new segment, then delete every part
        all of whose rows are now in segments, unless its writer may still be running (parts
        named in ``own`` are this job's: finished). Nothing is deleted before the segment is
        written; readers that meet a vanished file list the folder again."""
        want = set(keys)
        parts = []
        for f in self.dir.glob("part.*.npz") if self.dir.is_dir() else ():
            try:
                parts.append(self._file_ids(f))
            except FileNotFoundError:
                continue
        if not any(k in want for ids in parts if ids for k in ids):
            return  # nothing of these files in parts: no matrix is read
        rows, source = self._lookup(want)
        from_parts = {
            k: rows[k] for name, ks in source.items() if name.startswith("part.") for k in ks
        }
        if not from_parts:
            return
        new = self._write("seg", from_parts)
        own = set(own) | set(self.written)
        now = time.time()
        for f in self.dir.glob("part.*.npz"):
            try:
                ids = self._file_ids(f)
                mtime = f.stat().st_mtime
            except FileNotFoundError:
                continue
            if f.name in new or ids is None or not rows.keys() >= set(ids):
                continue
            if f.name in own or not _writer_alive(f.name, now, mtime):
                f.unlink(missing_ok=True)
                self._ids.pop(f.name, None)
        for tmp in self.dir.glob(".*.tmp"):  # left by a writer killed mid-write
            try:
                if now - tmp.stat().st_mtime > 3600:
                    tmp.unlink(missing_ok=True)
            except FileNotFoundError:
                continue

    def discard(self, keys: Iterable[str]) -> int:
        """Remove the rows of ``keys`` (``--recompute``): every file holding some is rewritten
        without them (new file first, then the old one deleted). Returns the rows removed."""
        drop = set(keys)
        removed = 0
        for f in self.files():
            try:
                ids = self._file_ids(f)
            except FileNotFoundError:
                continue
            if ids is None:
                continue
            gone = np.array([k in drop for k in ids], dtype=bool)
            if not gone.any():
                continue
            mat = self._rows(f)
            if mat is not None and not gone.all():
                keep = {ids[i]: mat[i] for i in np.flatnonzero(~gone)}
                prefix = "seg" if f.name.startswith("seg.") else f"part.{_host()}.{os.getpid()}"
                self._write(prefix, keep)
            f.unlink(missing_ok=True)
            self._ids.pop(f.name, None)
            removed += int(gone.sum())
        return removed


__all__ = ["IDENTITIES", "STORE_VERSION", "EmbeddingStore", "file_key", "store_key"]
