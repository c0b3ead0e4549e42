"""Encoder adapters, one module per family. Installed as ``rmis.models``.

Every family module with weights has ``random_checkpoint(name, path, seed=0, **arch) -> Path``,
writing a random-weight checkpoint of a registry variant in its authors' release format (file
or hub folder); :func:`random_checkpoint` here finds the right one by registry name.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any


def random_checkpoint(name: str, path: str | Path, seed: int = 0, **arch: Any) -> Path:
    """Write a random-weight checkpoint of registered encoder ``name`` at ``path`` in its
    authors' release format (the family module's ``random_checkpoint``); returns what to pass
    as ``--checkpoint``. ``arch`` overrides architecture numbers (tests use tiny ones; their
    keys are the family's own, see each module's ``random_checkpoint``).

    Raises:
        RMISError: unknown name, or a family without weights / without a writer.
    """
    from rmis.encoders import get_encoder_info
    from rmis.errors import RMISError

    info = get_encoder_info(name)
    factory = getattr(info.factory, "func", info.factory)  # functools.partial or a class
    module = importlib.import_module(factory.__module__)
    writer = getattr(module, "random_checkpoint", None)
    if writer is None:
        raise RMISError(
            f"{name}: its module {module.__name__} writes no random checkpoints (it has no "
            "weights, or its family does not provide random_checkpoint)"
        )
    return Path(writer(name, path, seed=seed, **arch))


__all__ = ["random_checkpoint"]
