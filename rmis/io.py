"""Small file helpers: atomic writes and reading embedding archives."""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from rmis.errors import RMISError


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename.

    A reader never sees a half-written file, and an interrupted write leaves the old file (or
    nothing) in place. The file gets the permissions of a plain ``open(path, "w")``
    (``0o666`` minus the umask), not the private ``0o600`` of a temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if hasattr(os, "fchmod"):  # POSIX
                os.fchmod(fh.fileno(), default_file_mode())
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def default_file_mode() -> int:
    """``0o666`` minus the process's umask: the mode ``open(path, "w")`` gives a new file."""
    mask = os.umask(0o022)  # reading the umask means setting it; restored at once
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically write UTF-8 ``text`` to ``path``."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON (floats at full precision)."""
    atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def read_embeddings(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read an ``.npz`` holding one 1-D float array per file id (key = file id).

    Raises:
        RMISError: unreadable archive, a non-1-D or non-numeric entry, mixed dimensions,
            NaN/Inf or all-zero vectors; the message names the file id.
    """
    path = Path(path)
    if not path.is_file():
        raise RMISError(f"embeddings file {str(path)!r} does not exist")
    how = "write it with numpy.savez(path, **{file_id: vector})"
    if not zipfile.is_zipfile(path):
        raise RMISError(f"embeddings file {str(path)!r} is not a valid .npz archive; {how}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            emb = {key: npz[key] for key in npz.files}
    except ValueError as exc:
        if "pickle" in str(exc):  # object arrays: never unpickled
            raise RMISError(
                f"embeddings file {str(path)!r} holds object (pickled) arrays, which rmis does "
                f"not load; store numeric 1-D vectors: {how}"
            ) from None
        raise RMISError(
            f"embeddings file {str(path)!r} is not a valid .npz archive; {how}"
        ) from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError):
        raise RMISError(
            f"embeddings file {str(path)!r} is not a valid .npz archive (damaged or truncated); "
            f"{how}"
        ) from None
    if not emb:
        raise RMISError(f"embeddings file {str(path)!r} holds no arrays")
    dims: dict[int, str] = {}
    for key, vec in emb.items():
        if not isinstance(vec, np.ndarray):  # a zip member that is not a .npy array
            raise RMISError(
                f"{str(path)!r}: entry {key!r} is not a numpy array; write the file with "
                "numpy.savez(path, **{file_id: vector})"
            )
        if vec.ndim != 1 or not np.issubdtype(vec.dtype, np.number) or np.iscomplexobj(vec):
            raise RMISError(
                f"{str(path)!r}: entry {key!r} must be a 1-D real vector, got shape {vec.shape} "
                f"dtype {vec.dtype}"
            )
        dims.setdefault(vec.shape[0], key)
        if len(dims) > 1:
            (d1, k1), (d2, k2) = list(dims.items())[:2]
            raise RMISError(
                f"{str(path)!r}: mixed embedding dimensions: {k1!r} has {d1}, {k2!r} has {d2}"
            )
        if not np.isfinite(vec).all():
            raise RMISError(f"{str(path)!r}: embedding of {key!r} contains NaN or Inf")
        if not np.any(vec):
            raise RMISError(
                f"{str(path)!r}: embedding of {key!r} is all zeros; its cosine similarity is "
                "undefined"
            )
    return emb
