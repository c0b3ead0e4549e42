"""The encoder protocol and registry.

An encoder is three things (as in the HEAR API): the sample rate it needs (or ``None`` for the
file's native rate), and a function from a batch of equal-length mono windows ``[B, L]`` at that
rate to vectors ``[B, D]`` (``D`` may depend on the rate). Nothing about datasets, windowing,
resampling or caching lives in an encoder: the harness does that.

Every variant is registered with its metadata (:class:`EncoderInfo`). Built-in families live in
``rmis.models`` (the repository's ``models/`` folder), one module per family; third-party
packages register theirs through the entry-point group ``rmis.encoders`` (the entry point
names a module, imported on first use, or a callable, called once).

    >>> enc = rmis.load_encoder("logspec")
    >>> enc.embed(torch.zeros(2, 160_000), 16_000).shape
    torch.Size([2, 64])
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import torch

from rmis.data.specs import closest
from rmis.errors import RMISError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "rmis.encoders"
#: Built-in adapter modules, imported on first use of the registry.
BUILTIN_MODULES = ("rmis.models.logspec", "rmis.models.fisher")


class Encoder(torch.nn.Module):
    """Base class of encoder adapters.

    Subclasses set :attr:`sample_rate` (Hz, or ``None`` for the native rate) and implement
    :meth:`embed`. :func:`load_encoder` fills :attr:`info`, :attr:`weights_sha256` (hash of the
    checkpoint file, if any) and :attr:`revision` (model revision, if known) for provenance.
    """

    sample_rate: int | None = None
    info: EncoderInfo
    weights_sha256: str | None = None
    revision: str | None = None

    @property
    def device(self) -> torch.device:
        """Where inputs go: the device given to :func:`load_encoder` (or of the parameters)."""
        placed = self.__dict__.get("_placed_on")
        if placed is not None:
            return placed
        return next((p.device for p in self.parameters()), torch.device("cpu"))

    def embed(self, windows: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """Map windows ``[B, L]`` (float32, mono, at ``sample_rate`` Hz) to vectors ``[B, D]``."""
        raise NotImplementedError

    def forward(self, windows: torch.Tensor, sample_rate: int) -> torch.Tensor:
        return self.embed(windows, sample_rate)


@dataclass(frozen=True)
class EncoderInfo:
    """Metadata of one registered encoder variant.

    Attributes:
        name: registry name (``fisher-tiny``).
        family: model family (``FISHER``).
        variant: variant within the family (``tiny``).
        factory: ``factory(checkpoint=None, **options) -> Encoder``.
        params_millions: trainable parameters in millions (None if not applicable).
        sample_rate: input rate in Hz, or None for the native rate of each dataset.
        embedding: how the embedding is formed and its size.
        checkpoints: where the weights come from (hub ids, URLs), first = default.
        license: licence of the weights.
        paper: reference.
    """

    name: str
    family: str
    variant: str
    factory: Callable[..., Encoder] = field(repr=False)
    params_millions: float | None = None
    sample_rate: int | None = None
    embedding: str = ""
    checkpoints: tuple[str, ...] = ()
    license: str = ""
    paper: str = ""


_REGISTRY: dict[str, EncoderInfo] = {}
_loaded = False


def register_encoder(info: EncoderInfo) -> EncoderInfo:
    """Register an encoder variant (a name registered twice is an error)."""
    if info.name in _REGISTRY and _REGISTRY[info.name] != info:
        raise RMISError(f"encoder {info.name!r} is registered twice")
    _REGISTRY[info.name] = info
    return info


def _load_plugins() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            if callable(obj) and not inspect.ismodule(obj):
                obj()
        except Exception as exc:  # a broken plugin must not break rmis
            log.warning("could not load encoder plugin %r (%s): %s", ep.name, ep.value, exc)


def list_encoders() -> list[EncoderInfo]:
    """All registered encoder variants, sorted by family and name."""
    _load_plugins()
    return sorted(_REGISTRY.values(), key=lambda i: (i.family.lower(), i.name))


def get_encoder_info(name: str) -> EncoderInfo:
    """Metadata of ``name``; an unknown name gets the closest names in the error."""
    _load_plugins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise RMISError(f"unknown model {name!r}: {closest(name, sorted(_REGISTRY))}") from None


def load_encoder(
    name: str,
    checkpoint: str | None = None,
    device: str | torch.device = "cpu",
    **options: Any,
) -> Encoder:
    """Build encoder ``name`` in eval mode on ``device``.

    Args:
        name: registered name (see ``rmis list models``).
        checkpoint: local file, hub id or URL overriding the default weights.
        device: torch device.
        **options: adapter options (``-o key=value`` on the command line).

    Raises:
        RMISError: unknown name or an option the adapter does not take.
    """
    info = get_encoder_info(name)
    params = inspect.signature(info.factory).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    accepted = [p for p in params if p not in ("checkpoint", "self")]
    unknown = [o for o in options if o not in params]
    if unknown and not takes_any:
        raise RMISError(
            f"model {name!r} does not take option(s) {unknown}; it takes: "
            + (", ".join(accepted) or "no options")
        )
    kwargs = dict(options)
    if checkpoint is not None or "checkpoint" in params:
        kwargs["checkpoint"] = checkpoint
    encoder = info.factory(**kwargs)
    encoder.info = info
    encoder = encoder.to(device).eval()
    encoder.__dict__["_placed_on"] = torch.device(device)  # parameter-free encoders too
    return encoder


def parse_options(pairs: list[str] | None) -> dict[str, Any]:
    """Parse repeated ``key=value`` options; values become bool/int/float where they look so."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise RMISError(f"option {pair!r} must look like key=value")
        key, value = pair.split("=", 1)
        out[key.strip()] = _coerce(value.strip())
    return out


def _coerce(value: str) -> Any:
    low = value.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value
