"""Provenance recorded in every result file."""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import platform
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

import rmis

#: Version of the result-file layout written by ``rmis score`` and ``rmis eval``.
RESULT_SCHEMA_VERSION = 1


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


@lru_cache(maxsize=1)
def git_revision() -> str | None:
    """Commit of the rmis source checkout (with ``+dirty`` if modified), or None if not in git."""
    here = Path(rmis.__file__).resolve().parent.parent
    if not (here / ".git").exists():
        return None
    try:
        rev = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("+dirty" if dirty else "") if rev else None


def base_provenance() -> dict[str, Any]:
    """What produced a result: rmis version, git revision, protocol version, library versions."""
    from importlib.metadata import version  # scipy/sklearn are not imported just for this

    import numpy
    import torch

    return {
        "rmis_version": rmis.__version__,
        "git_revision": git_revision(),
        "protocol_version": rmis.PROTOCOL_VERSION,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "scipy": version("scipy"),
        "scikit_learn": version("scikit-learn"),
        "torch": torch.__version__,
    }
