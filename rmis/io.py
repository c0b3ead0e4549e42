"""Small file helpers: atomic writes and reading embedding archives."""

from __future__ import annotations

import io
import json
import os
import struct
import tempfile
import zipfile
from collections.abc import Iterator, Mapping, Sequence
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


#: Members of the matrix layout of an embeddings ``.npz``: file ids and one float32 matrix.
IDS_KEY, MATRIX_KEY = "ids", "emb"
_HOW = (
    "write it with numpy.savez(path, ids=numpy.array(file_ids), emb=matrix) (one row per id) "
    "or numpy.savez(path, **{file_id: vector})"
)


def embedding_matrix_bytes(ids: Sequence[str], matrix: np.ndarray) -> bytes:
    """The ``.npz`` bytes of the matrix layout: ``ids`` (unicode strings, no pickle) and ``emb``
    (float32 ``[N, D]``, row ``i`` = embedding of ``ids[i]``).

    Raises:
        RMISError: ``matrix`` is not 2-D with one row per id, or ids repeat.
    """
    ids_a = np.array([str(i) for i in ids], dtype=np.str_).reshape(-1)
    mat = np.ascontiguousarray(matrix, dtype=np.float32)
    if mat.ndim != 2 or mat.shape[0] != ids_a.shape[0]:
        raise RMISError(
            f"an embedding matrix needs one row per file id: {ids_a.shape[0]} ids, matrix shape "
            f"{mat.shape}"
        )
    if len(set(ids_a.tolist())) != len(ids_a):
        raise RMISError("file ids of an embedding matrix must be unique")
    buf = io.BytesIO()
    np.savez(buf, **{IDS_KEY: ids_a, MATRIX_KEY: mat})
    return buf.getvalue()


def write_embedding_matrix(path: str | os.PathLike, ids: Sequence[str], matrix: np.ndarray) -> None:
    """Atomically write the matrix layout (:func:`embedding_matrix_bytes`) to ``path``."""
    atomic_write_bytes(path, embedding_matrix_bytes(ids, matrix))


def read_npz_member(path: str | os.PathLike, name: str) -> np.ndarray:
    """Array ``name`` of an ``.npz`` archive. A member stored uncompressed (as ``np.savez``
    writes them) is read straight from its place in the file, without the archive's buffered
    CRC pass (a 290 MB matrix in a fraction of a second); others through ``np.load``.

    Raises:
        KeyError: no such member. OSError, ValueError, zipfile.BadZipFile: a damaged file.
    """
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(name + ".npy")
    if info.compress_type == zipfile.ZIP_STORED:
        with open(path, "rb") as fh:
            fh.seek(info.header_offset)
            local = fh.read(30)
            if len(local) == 30 and local[:4] == b"PK\x03\x04":
                n, m = struct.unpack("<HH", local[26:30])
                fh.seek(info.header_offset + 30 + n + m)
                version = np.lib.format.read_magic(fh)
                if version in ((1, 0), (2, 0)):
                    read = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    shape, fortran, dtype = read(fh)
                    count = int(np.prod(shape, dtype=np.int64))
                    if not dtype.hasobject:
                        data = np.fromfile(fh, dtype=dtype, count=count)
                        if data.size != count:
                            raise ValueError(f"{path}: member {name!r} is truncated")
                        return data.reshape(shape, order="F" if fortran else "C")
    with np.load(path, allow_pickle=False) as npz:
        return npz[name]


def npz_matrix(npz: Any) -> tuple[list[str], np.ndarray] | None:
    """``(ids, matrix)`` when an open ``np.load`` archive has the matrix layout (exactly the
    members ``ids``, a 1-D unicode array, and ``emb``, a 2-D array), else None (the layout of
    one member per file id, whose members are numeric vectors, never matches)."""
    if sorted(npz.files) != sorted((IDS_KEY, MATRIX_KEY)):
        return None
    ids = npz[IDS_KEY]
    if ids.dtype.kind != "U" or ids.ndim != 1:
        return None
    return ids.tolist(), npz[MATRIX_KEY]


class EmbeddingMatrix(Mapping[str, np.ndarray]):
    """Embeddings as one ``[N, D]`` matrix plus its row ids; reads as ``{file id: row}``.

    :meth:`rows` stacks the rows of given ids with one fancy index (no per-id Python loop).
    """

    def __init__(self, ids: Sequence[str], matrix: np.ndarray) -> None:
        self.ids = list(ids)
        self.matrix = matrix
        self.index = {fid: i for i, fid in enumerate(self.ids)}

    def __getitem__(self, fid: str) -> np.ndarray:
        return self.matrix[self.index[fid]]

    def __contains__(self, fid: object) -> bool:
        return fid in self.index

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, ids: Sequence[str], dtype: Any = None) -> np.ndarray:
        """``[len(ids), D]`` rows of ``ids`` (all present), as ``dtype`` (None: as stored)."""
        where = np.fromiter((self.index[f] for f in ids), dtype=np.int64, count=len(ids))
        rows = self.matrix[where]
        return rows if dtype is None else rows.astype(dtype, copy=False)


def read_embeddings(path: str | os.PathLike) -> Mapping[str, np.ndarray]:
    """Read an embeddings ``.npz``: ``{file id: 1-D vector}``.

    Two layouts are read: the matrix layout (members ``ids``, unicode file ids, and ``emb``, a
    real ``[N, D]`` matrix; returned as an :class:`EmbeddingMatrix`, read in one piece) and one
    member per file id holding its 1-D vector (returned as a dict).

    Raises:
        RMISError: unreadable archive, a non-1-D or non-numeric entry, mixed dimensions,
            repeated ids, NaN/Inf or all-zero vectors; the message names the file id.
    """
    path = Path(path)
    if not path.is_file():
        raise RMISError(f"embeddings file {str(path)!r} does not exist")
    how = _HOW
    if not zipfile.is_zipfile(path):
        raise RMISError(f"embeddings file {str(path)!r} is not a valid .npz archive; {how}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            matrix = npz_matrix(npz)
            emb = {} if matrix is not None else {key: npz[key] for key in npz.files}
    except ValueError as exc:
        if "pickle" in str(exc):  # object arrays: never unpickled
            raise RMISError(
                f"embeddings file {str(path)!r} holds object (pickled) arrays, which rmis does "
                f"not load; store numeric vectors and unicode ids: {how}"
            ) from None
        raise RMISError(
            f"embeddings file {str(path)!r} is not a valid .npz archive; {how}"
        ) from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError):
        raise RMISError(
            f"embeddings file {str(path)!r} is not a valid .npz archive (damaged or truncated); "
            f"{how}"
        ) from None
    if matrix is not None:
        return _checked_matrix(path, *matrix)
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


def _checked_matrix(path: Path, ids: list[str], mat: np.ndarray) -> EmbeddingMatrix:
    """Validate the matrix layout as a whole (vectorised; messages name the first bad id)."""
    if not isinstance(mat, np.ndarray) or mat.ndim != 2 or mat.shape[1] == 0:
        shape = getattr(mat, "shape", None)
        raise RMISError(
            f"{str(path)!r}: member {MATRIX_KEY!r} must be a [N, D] matrix, got shape {shape}"
        )
    if not np.issubdtype(mat.dtype, np.number) or np.iscomplexobj(mat):
        raise RMISError(f"{str(path)!r}: member {MATRIX_KEY!r} must be real, got {mat.dtype}")
    if mat.shape[0] != len(ids):
        raise RMISError(
            f"{str(path)!r}: {len(ids)} ids but {mat.shape[0]} rows in {MATRIX_KEY!r}; write one "
            "row per id"
        )
    if not ids:
        raise RMISError(f"embeddings file {str(path)!r} holds no embeddings")
    out = EmbeddingMatrix(ids, mat)
    if len(out.index) != len(ids):
        seen: set[str] = set()
        dup = next(f for f in ids if f in seen or seen.add(f))
        raise RMISError(f"{str(path)!r}: file id {dup!r} occurs more than once in {IDS_KEY!r}")
    bad = np.flatnonzero(~np.isfinite(mat).all(axis=1))
    if bad.size:
        raise RMISError(f"{str(path)!r}: embedding of {ids[bad[0]]!r} contains NaN or Inf")
    zero = np.flatnonzero(~mat.any(axis=1))
    if zero.size:
        raise RMISError(
            f"{str(path)!r}: embedding of {ids[zero[0]]!r} is all zeros; its cosine similarity "
            "is undefined"
        )
    return out
