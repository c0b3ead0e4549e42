"""Checkpoint sources: local files, Hugging Face hub ids and https URLs.

:func:`resolve` turns a ``--checkpoint`` source into a local path (reading the file is
:func:`rmis.weights.read_weights`'s job):

* a local file or folder;
* ``hf://owner/name[@revision]`` (or a bare ``owner/name`` that is not a local path): fetched
  with ``huggingface_hub`` (which honours ``HF_HUB_OFFLINE`` and its cache);
* ``https://...``: downloaded once into ``<cache>/checkpoints/`` (atomically) and reused.

Without network and without a cached copy, the error says exactly how to provide the file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

from rmis.errors import RMISError
from rmis.io import default_file_mode

WEIGHT_SUFFIXES = (".pt", ".pth", ".ckpt", ".safetensors")


def checkpoint_cache_dir() -> Path:
    from rmis.evaluate import default_cache_dir

    return default_cache_dir() / "checkpoints"


def resolve(source: str, folder: bool = False) -> tuple[Path, str | None]:
    """Local path of a checkpoint source (downloading if needed) and its revision.

    With ``folder=True`` (hub-layout releases: ``config.json`` + safetensors shards), a local
    folder or a hub snapshot is returned as the folder itself instead of its one weights file.
    """
    if source.startswith(("https://", "http://")):
        return _download_url(source), None
    path = Path(source).expanduser()
    if path.exists():
        if path.is_dir():
            return (path if folder else _pick_file(path, source)), None
        return path, None
    repo = source[5:] if source.startswith("hf://") else source
    if source.startswith("hf://") or (repo.count("/") == 1 and not repo.startswith((".", "/"))):
        return _from_hub(repo, folder=folder)
    raise RMISError(
        f"checkpoint {source!r} does not exist (give a file, hf://owner/name or an https URL)"
    )


def _pick_file(folder: Path, source: str) -> Path:
    files = sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES)
    if len(files) != 1:
        raise RMISError(
            f"{source}: expected one weights file ({', '.join(WEIGHT_SUFFIXES)}) in "
            f"{str(folder)!r}, found {[p.name for p in files]}"
        )
    return files[0]


def _from_hub(repo: str, folder: bool = False) -> tuple[Path, str | None]:
    repo_id, _, revision = repo.partition("@")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise RMISError(
            f"checkpoint {repo_id!r} is a Hugging Face hub id, which needs the package "
            "huggingface_hub (pip install 'rmis[hub]'); or download its weights file yourself "
            "and pass --checkpoint PATH"
        ) from None
    try:
        snapshot = Path(
            snapshot_download(
                repo_id,
                revision=revision or None,
                allow_patterns=[f"*{s}" for s in WEIGHT_SUFFIXES] + ["*.json"],
            )
        )
    except Exception as exc:  # offline, unknown repo, no cached copy
        raise RMISError(
            f"cannot get {repo_id!r} from the Hugging Face hub ({type(exc).__name__}: "
            f"{_first_sentence(exc)}). Without network, download the weights file "
            f"of https://huggingface.co/{repo_id} (or the authors' direct link) on a connected "
            "machine and pass it with --checkpoint PATH, or copy the hub cache "
            "(~/.cache/huggingface) to this machine and set HF_HUB_OFFLINE=1"
        ) from None
    return (snapshot if folder else _pick_file(snapshot, repo_id)), snapshot.name


def _first_sentence(exc: BaseException, limit: int = 300) -> str:
    """The first sentence of an exception's message, whole (never cut mid-sentence); a first
    sentence longer than ``limit`` characters is left out ("no details")."""
    text = " ".join(str(exc).split())
    for end in (". ", "! ", "? "):
        if end in text:
            text = text[: text.index(end) + 1]
    text = text.rstrip(".")
    return text if text and len(text) <= limit else "no details"


def _download_url(url: str) -> Path:
    name = url.rstrip("/").rsplit("/", 1)[-1].split("?")[0] or "checkpoint.pt"
    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    target = checkpoint_cache_dir() / f"{key}-{name}"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            shutil.copyfileobj(resp, out)
            if hasattr(os, "fchmod"):  # the umask's mode, not mkstemp's private 0o600
                os.fchmod(out.fileno(), default_file_mode())
        os.replace(tmp, target)
    except Exception as exc:
        Path(tmp).unlink(missing_ok=True)
        raise RMISError(
            f"cannot download {url} ({type(exc).__name__}: {exc}). Download it on a connected "
            f"machine and pass it with --checkpoint PATH, or place it at {str(target)!r}"
        ) from None
    return target
