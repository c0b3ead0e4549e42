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

import fnmatch
import hashlib
import importlib
import inspect
import logging
import sys
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
BUILTIN_MODULES = (
    "rmis.models.logspec",
    "rmis.models.fisher",
    "rmis.models.passt",
    "rmis.models.beats",
    "rmis.models.audiomae",
    "rmis.models.eat",
    "rmis.models.muq",
    "rmis.models.ced",
    "rmis.models.dasheng",
    "rmis.models.echo",
    "rmis.models.wav2vec2",
    "rmis.models.whisper",
    "rmis.models.qwen_audio",
)


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
        frontend: the input features (``kaldi fbank 128``; "" if not stated).
        pooling: how a window embedding is formed (``mean of last-layer tokens``).
        dim: embedding dimension, or a description for rate-dependent ones (None: not stated).
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
    frontend: str = ""
    pooling: str = ""
    dim: int | str | None = None


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


def list_encoders(pattern: str | None = None) -> list[EncoderInfo]:
    """Registered encoder variants, sorted by family and name.

    Args:
        pattern: a shell-style pattern (:mod:`fnmatch`, case-insensitive) on the registry name,
            e.g. ``"ced-*"``; None lists all.
    """
    _load_plugins()
    infos = sorted(_REGISTRY.values(), key=lambda i: (i.family.lower(), i.name))
    if pattern is None:
        return infos
    return [i for i in infos if fnmatch.fnmatch(i.name.lower(), pattern.lower())]


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
        RMISError: unknown name, an option the adapter does not take, a checkpoint for an
            adapter without weights, or a device that is unknown or not available here.
    """
    info = get_encoder_info(name)
    device = check_device(device)
    params = inspect.signature(info.factory).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    accepted = [p for p in params if p not in ("checkpoint", "self")]
    unknown = [o for o in options if o not in params]
    if unknown and not takes_any:
        raise RMISError(
            f"model {name!r} does not take option(s) {unknown}; it takes: "
            + (", ".join(accepted) or "no options")
        )
    if checkpoint is not None and "checkpoint" not in params and not takes_any:
        raise RMISError(
            f"{name} takes no checkpoint (it has no weights to load); drop --checkpoint"
        )
    kwargs = dict(options)
    if checkpoint is not None or "checkpoint" in params:
        kwargs["checkpoint"] = checkpoint
    encoder = info.factory(**kwargs)
    encoder.info = info
    encoder = encoder.to(device).eval()
    encoder.__dict__["_placed_on"] = device  # parameter-free encoders too
    return encoder


def available_devices() -> list[str]:
    """Torch devices usable here: ``cpu``, then ``cuda:N`` per GPU and ``mps`` where present."""
    out = ["cpu"]
    if torch.cuda.is_available():
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    return out


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a :class:`torch.device`, checked before any work: a name torch knows and
    a device present on this machine.

    Raises:
        RMISError: unknown name (``gpu``) or a device this machine or PyTorch build lacks; the
            message names the devices that are available.
    """
    have = ", ".join(available_devices())
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise RMISError(
            f"unknown device {str(device)!r}; use cpu, cuda, cuda:N or mps (available here: {have})"
        ) from None
    if dev.type in ("cpu", "meta"):  # meta: shapes only, always there (tests, planning)
        return dev
    if dev.type == "cuda":
        if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
            why = f"this PyTorch ({torch.__version__}) is a CPU-only build"
        elif not torch.cuda.is_available():
            why = "no CUDA GPU is visible"
        elif dev.index is not None and dev.index >= torch.cuda.device_count():
            why = f"there are {torch.cuda.device_count()} CUDA GPU(s)"
        else:
            return dev
    else:
        backend = getattr(torch.backends, dev.type, None) or getattr(torch, dev.type, None)
        is_available = getattr(backend, "is_available", None)
        if is_available is not None and is_available():
            return dev
        why = f"{dev.type} is not available on this machine"
    raise RMISError(f"device {str(device)!r} cannot be used: {why}; available here: {have}")


#: Modules whose code an adapter shares with other adapters (front ends, shared layers): a
#: module-level import of one of them by an adapter module is part of the adapter's source hash.
_SHARED_CODE_PREFIXES = ("rmis.models.", "rmis.frontends")
_warned_no_source: set[str] = set()


def adapter_source_sha256(encoder_or_class: Encoder | type) -> str:
    """SHA-256 of the code that computes an encoder's embeddings (part of the cache key).

    Hashed, by file content: the module defining the encoder's class and the modules of its
    base classes up to (excluding) :class:`Encoder`, plus every module under ``rmis.models.``
    or ``rmis.frontends`` that those modules reference at module level (an imported module,
    function or class; followed transitively). A class defined in ``__main__`` or in a module
    without a source file contributes its own source (:func:`inspect.getsource`); where that
    is unavailable too, only its qualified name (with a warning: edits to it are not seen).
    """
    cls = encoder_or_class if isinstance(encoder_or_class, type) else type(encoder_or_class)
    classes = [c for c in cls.__mro__ if c is not Encoder and issubclass(c, Encoder)] or [cls]
    pieces: dict[str, str] = {}
    todo = []
    for c in classes:
        module = sys.modules.get(c.__module__)
        if c.__module__ == "__main__" or _module_bytes(module) is None:
            pieces[f"class {c.__module__}.{c.__qualname__}"] = _class_source_sha256(c)
        else:
            todo.append(module)
    seen: set[str] = set()
    while todo:
        module = todo.pop()
        if module.__name__ in seen:
            continue
        seen.add(module.__name__)
        text = _module_bytes(module)
        if text is None:
            pieces[f"module {module.__name__}"] = "no source"
            _warn_no_source(module.__name__)
            continue
        pieces[f"module {module.__name__}"] = hashlib.sha256(text).hexdigest()
        for value in list(vars(module).values()):
            try:
                name = value.__name__ if inspect.ismodule(value) else value.__module__
            except Exception:  # noqa: BLE001 - objects without (or with odd) module names
                continue
            if (
                isinstance(name, str)
                and name.startswith(_SHARED_CODE_PREFIXES)
                and name not in seen
                and name in sys.modules
            ):
                todo.append(sys.modules[name])
    blob = "\n".join(f"{k}\t{v}" for k, v in sorted(pieces.items()))
    return hashlib.sha256(blob.encode()).hexdigest()


def _module_bytes(module: Any) -> bytes | None:
    """Content of a module's source file (None: no module, no file or unreadable)."""
    if module is None:
        return None
    try:
        path = inspect.getsourcefile(module) or getattr(module, "__file__", None)
    except TypeError:  # built-in module
        return None
    if not path:
        return None
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return None


def _class_source_sha256(cls: type) -> str:
    try:
        return hashlib.sha256(inspect.getsource(cls).encode()).hexdigest()
    except (OSError, TypeError):
        _warn_no_source(f"{cls.__module__}.{cls.__qualname__}")
        return f"no source: {cls.__module__}.{cls.__qualname__}"


def _warn_no_source(what: str) -> None:
    if what not in _warned_no_source:
        _warned_no_source.add(what)
        log.warning(
            "no source code found for encoder code %s: cached embeddings cannot follow edits "
            "of it (use --recompute after changing it, or define it in a module file)",
            what,
        )


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
