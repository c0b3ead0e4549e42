"""The weights layer: one declarative table of pretrained variants per family, strict loading.

CONTRACT (issue 10) -- implemented by the weights-layer owner; family adapters code against it.

Per family, a module in ``models/`` declares a tuple of :class:`Pretrained` (timm style) and
registers them with :func:`register_family`. A checkpoint ``source`` (``--checkpoint``) is a local
file or folder, ``hf://owner/name[@rev]`` (or a bare ``owner/name``) or an https URL, resolved by
:mod:`rmis.checkpoints`. Files are read with ``weights_only=True`` always; a pickle holding
config objects (fairseq/omegaconf style, FISHER's released ``.pt``) is read by a restricted
unpickler that turns those objects into plain data (dicts), never with ``weights_only=False``.
safetensors files are read lazily, only the tensors under the wanted key prefix.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import io
import json
import pickle
import re
import sys
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rmis.errors import RMISError
from rmis.provenance import sha256_file


@dataclass(frozen=True)
class Pretrained:
    """One pretrained variant of a family (one registry name).

    Attributes:
        name: registry name, e.g. ``beats-iter3``.
        family, variant: the paper's Table 3 row (``BEATs``/``iter3``; leaderboard key).
        sources: where the weights come from, first = default: ``hf://owner/name``, an https
            URL, or a bare file name the authors publish (documentation only).
        file_format: ``"torch"`` (a torch pickle), ``"safetensors"`` (one file) or
            ``"hf-folder"`` (a hub-layout folder: ``config.json`` + ``model.safetensors`` or
            sharded ``model-0000x-of-0000y.safetensors`` + index).
        state_path: where the state dict sits inside a torch file (``("model",)``;
            ``()`` = the whole object is the state dict).
        config_path: where the architecture config sits (``("cfg",)``, ``("config",)``;
            ``()`` = none in the file; for hf-folder: ``config.json``).
        prefix: keep only tensors whose key starts with this (and strip it), e.g. ``"model."``
            or ``"audio_encoder."``; ``""`` keeps all.
        key_map: ordered ``(regex, replacement)`` renames applied after the prefix is stripped.
        drop: regexes of keys to discard (e.g. decoder tensors of a pre-training checkpoint).
        sample_rate: input rate in Hz (None = native).
        frontend: short description of the front-end (shown by ``rmis list models``).
        pooling: how a window embedding is formed (shown by ``rmis list models``).
        dim: embedding dimension (or a description for rate-dependent ones).
        params_millions: parameters of the real checkpoint (None if unknown).
        license: licence of the weights.
        paper: reference of the model.
        arch: architecture hyper-parameters of the released variant (used when the file holds
            no config, and by tests to check full-size shapes without running them).
    """

    name: str
    family: str
    variant: str
    sources: tuple[str, ...]
    file_format: str = "torch"
    state_path: tuple[str, ...] = ("model",)
    config_path: tuple[str, ...] = ()
    prefix: str = ""
    key_map: tuple[tuple[str, str], ...] = ()
    drop: tuple[str, ...] = ()
    sample_rate: int | None = 16_000
    frontend: str = ""
    pooling: str = ""
    dim: int | str = 0
    params_millions: float | None = None
    license: str = ""
    paper: str = ""
    arch: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Weights:
    """What :func:`read_weights` returns: the (renamed, filtered) state dict, the config as
    plain data (dict/list/str/number; None if the file has none), the SHA-256 of the weights
    file(s), the local path and the revision (hub) if known."""

    state_dict: dict[str, torch.Tensor]
    config: Any
    sha256: str
    path: Path
    revision: str | None = None


def read_weights(source: str, spec: Pretrained) -> Weights:
    """Resolve ``source`` (file, folder, hub id, URL) and read it as ``spec`` declares.

    * ``torch``: the file is read by :func:`safe_torch_load`; the state dict is the object at
      ``spec.state_path``, the config (plain data) the one at ``spec.config_path``.
    * ``safetensors``: one file, read lazily (only keys under ``spec.prefix`` that no ``drop``
      pattern matches are read); the config is the file's ``cfg``/``config`` metadata entry
      (JSON) or a ``config.json`` beside it, if any.
    * a ``.safetensors`` file given for a ``torch`` release (the same tensors converted) is
      read like ``safetensors``;
    * ``hf-folder``: ``config.json`` + ``model.safetensors`` or the shards listed by
      ``model.safetensors.index.json`` (a path to a weights file inside such a folder works
      too); read lazily like ``safetensors``.

    Then keys outside ``spec.prefix`` are discarded and the prefix stripped, keys matching a
    ``spec.drop`` regex discarded, and ``spec.key_map`` renames applied in order. The SHA-256
    is the weights file's (for several shards: of their names and hashes).

    Raises:
        RMISError: unreadable file, not the declared format, no state dict at ``state_path``;
            the message names the file and what to do.
    """
    from rmis.checkpoints import resolve

    fmt = spec.file_format
    if fmt not in ("torch", "safetensors", "hf-folder"):
        raise RMISError(f"{spec.name}: unknown file_format {fmt!r} in its Pretrained table")
    path, revision = resolve(source, folder=fmt == "hf-folder")
    if fmt == "torch" and path.suffix != ".safetensors":
        obj = safe_torch_load(path)
        state = _check_state(_at(obj, spec.state_path, path, spec, "state dict"), path, spec)
        config = _at(obj, spec.config_path, path, spec, "config") if spec.config_path else None
        state = _select(state, spec)
        return Weights(state, _plain(config), sha256_file(path), path, revision)
    files, config = _safetensors_files(path, spec)
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(_read_safetensors(f, spec))
    if not state:
        raise RMISError(
            f"{spec.name}: no tensor of {str(path)!r} is under the prefix {spec.prefix!r}; "
            f"is it the right file ({_sources_hint(spec)})?"
        )
    if len(files) == 1:
        sha = sha256_file(files[0])
    else:
        listing = "".join(f"{f.name}\t{sha256_file(f)}\n" for f in files)
        sha = hashlib.sha256(listing.encode()).hexdigest()
    return Weights(_rename(state, spec), config, sha, path, revision)


def load_strict(
    module: nn.Module, state: Mapping[str, torch.Tensor], where: str, *, assign: bool = False
) -> None:
    """Load ``state`` into ``module`` exactly: missing, unexpected and mis-shaped keys are an
    :class:`RMISError` listing them (first few of each) and naming ``where``. Every parameter
    and buffer of ``module`` must come from ``state``. ``assign=True`` makes the checkpoint's
    tensors the module's (for a module built on the meta device; see ``models/hf_audio.py``)."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or extra or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {_few(missing)} ({len(missing)})")
        if extra:
            parts.append(f"unexpected keys {_few(extra)} ({len(extra)})")
        if shapes:
            parts.append(f"shape mismatch ({len(shapes)}) " + "; ".join(shapes[:5]))
        raise RMISError(
            f"checkpoint {where} does not match the {type(module).__name__} architecture "
            "it configures: " + "; ".join(parts)
        )
    module.load_state_dict(dict(state), strict=True, assign=assign)


def safe_torch_load(path: str | Path) -> Any:
    """``torch.load(path, weights_only=True)`` semantics, but pickled config objects of other
    libraries (omegaconf DictConfig, argparse Namespace, dataclasses, fairseq configs, ...) are
    turned into plain dicts instead of being refused; no code of the file is ever executed.

    A file torch's weights-only unpickler accepts is read by it. Otherwise (a zip-format torch
    file only) a restricted unpickler reads it: tensors are rebuilt with the functions torch's
    weights-only unpickler allows (and nothing else is called), and every other global is
    replaced by a stand-in class that only records what the pickle gives it (constructor
    arguments, state, items); after loading, stand-ins become plain data (:func:`_plain`):

    * an object with a ``__dict__``-like state -> that dict (omegaconf nodes -> their content);
    * a list/dict subclass -> its items; an object built from one argument (an enum) -> it;
    * a reference to a class or function -> its dotted name (a string).

    Tensors end up on the CPU.
    """
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass  # a global outside torch's allow-list: read with stand-ins below
    except Exception:
        raise RMISError(_not_a_checkpoint(path)) from None
    try:
        obj = _RestrictedReader(path).load()
    except RMISError:
        raise
    except Exception:
        raise RMISError(_not_a_checkpoint(path)) from None
    return _plain(obj)


def register_family(
    table: tuple[Pretrained, ...], factory: Callable[..., Any], *, options: Callable | None = None
) -> None:
    """Register every variant of ``table`` as an :class:`rmis.encoders.EncoderInfo` whose
    factory calls ``factory(spec, checkpoint=None, **options)``.

    The registered factory is ``functools.partial(factory, spec)``, so the options
    :func:`rmis.encoders.load_encoder` accepts are ``factory``'s keyword parameters after
    ``spec``. ``options``, if given, is a function whose signature declares them instead (its
    parameters, e.g. ``def options(checkpoint=None, layer=-1): ...``; it is never called).
    """
    from rmis.encoders import EncoderInfo, register_encoder

    names = [s.name for s in table]
    if len(set(names)) != len(names):
        raise RMISError(f"duplicate names in a Pretrained table: {names}")
    for spec in table:
        make = functools.partial(factory, spec)
        if options is not None:
            make.__signature__ = inspect.signature(options)  # type: ignore[attr-defined]
        dim = spec.dim
        register_encoder(
            EncoderInfo(
                name=spec.name,
                family=spec.family,
                variant=spec.variant,
                factory=make,
                params_millions=spec.params_millions,
                sample_rate=spec.sample_rate,
                embedding=f"{spec.pooling} -> {dim}" if spec.pooling else str(dim or ""),
                checkpoints=spec.sources,
                license=spec.license,
                paper=spec.paper,
                frontend=spec.frontend,
                pooling=spec.pooling,
                dim=dim if dim != 0 else None,
            )
        )


# ---------------------------------------------------------------------------------------------
# helpers


def _few(keys: list[str], n: int = 5) -> str:
    return str(keys[:n]) + (" ..." if len(keys) > n else "")


def _sources_hint(spec: Pretrained) -> str:
    return "published as " + ", ".join(spec.sources) if spec.sources else "see its docs"


def _not_a_checkpoint(path: Path) -> str:
    # torch's own message advises weights_only=False, which would run code from the file:
    # never repeat it
    return (
        f"{str(path)!r} is not a valid checkpoint in the expected format: not a readable "
        "torch file (it may be truncated or another kind of file); download it again"
    )


def _at(obj: Any, keys: tuple[str, ...], path: Path, spec: Pretrained, what: str) -> Any:
    for i, key in enumerate(keys):
        if not isinstance(obj, Mapping) or key not in obj:
            where = "".join(f"[{k!r}]" for k in keys[: i + 1])
            have = sorted(map(str, obj))[:8] if isinstance(obj, Mapping) else type(obj).__name__
            raise RMISError(
                f"{spec.name}: {str(path)!r} has no {key} entry (the {what}, at {where}; "
                f"found {have}); is it the authors' file ({_sources_hint(spec)})?"
            )
        obj = obj[key]
    return obj


def _check_state(state: Any, path: Path, spec: Pretrained) -> dict[str, torch.Tensor]:
    if (
        not isinstance(state, Mapping)
        or not state
        or not all(isinstance(v, torch.Tensor) for v in state.values())
    ):
        where = "".join(f"[{k!r}]" for k in spec.state_path) or "the top level"
        raise RMISError(
            f"{str(path)!r} is not a valid checkpoint in the expected format: {where} is not "
            f"a state dict of tensors; is it the authors' file ({_sources_hint(spec)})?"
        )
    return dict(state)


def _keep(key: str, spec: Pretrained) -> bool:
    """A raw key is kept: under the prefix and (prefix stripped) matching no drop pattern."""
    if not key.startswith(spec.prefix):
        return False
    rest = key[len(spec.prefix) :]
    return not any(re.search(p, rest) for p in spec.drop)


def _rename(state: dict[str, torch.Tensor], spec: Pretrained) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = key[len(spec.prefix) :]
        for pattern, repl in spec.key_map:
            new = re.sub(pattern, repl, new)
        if new in out:
            raise RMISError(f"{spec.name}: key map sends two tensors to {new!r}")
        out[new] = value
    return out


def _select(state: dict[str, torch.Tensor], spec: Pretrained) -> dict[str, torch.Tensor]:
    return _rename({k: v for k, v in state.items() if _keep(k, spec)}, spec)


def _safetensors_files(path: Path, spec: Pretrained) -> tuple[list[Path], Any]:
    """The weights files of a safetensors source and its config (plain data or None)."""
    folder = path if path.is_dir() else path.parent
    config = None
    if (folder / "config.json").is_file():
        try:
            config = json.loads((folder / "config.json").read_text())
        except (OSError, ValueError) as exc:
            raise RMISError(
                f"{spec.name}: cannot read {str(folder / 'config.json')!r}: {exc}"
            ) from None
    if path.is_file():
        if path.suffix != ".safetensors":
            raise RMISError(
                f"{spec.name}: {str(path)!r} is not a .safetensors file ({_sources_hint(spec)})"
            )
        meta = _safetensors_metadata(path, spec)
        for key in ("cfg", "config"):
            if key in meta:
                try:
                    config = json.loads(meta[key])
                except ValueError:
                    config = meta[key]
                break
        return [path], config
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RMISError(
                f"{spec.name}: cannot read the shard index {str(index)!r}: {exc}"
            ) from None
        names = sorted({weight_map[k] for k in weight_map if _keep(k, spec)})
        files = [folder / n for n in names]
        absent = [n for n in names if not (folder / n).is_file()]
        if absent:
            raise RMISError(
                f"{spec.name}: shard(s) {absent} listed by {str(index)!r} are not in the folder; "
                "download the whole hub folder"
            )
        return files, config
    if (folder / "model.safetensors").is_file():
        return [folder / "model.safetensors"], config
    found = sorted(p.name for p in folder.glob("*.safetensors"))
    if len(found) == 1:
        return [folder / found[0]], config
    raise RMISError(
        f"{spec.name}: {str(folder)!r} holds no model.safetensors (nor a shard index); found "
        f"{found}; expected the authors' hub folder ({_sources_hint(spec)})"
    )


def _safe_open(path: Path, spec: Pretrained):
    try:
        from safetensors import safe_open
    except ImportError:
        raise RMISError(
            "reading .safetensors needs the package safetensors (pip install 'rmis[hub]')"
        ) from None
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except Exception as exc:
        raise RMISError(
            f"{spec.name}: cannot read {str(path)!r} as safetensors ({exc}); it may be "
            "truncated: download it again"
        ) from None


def _safetensors_metadata(path: Path, spec: Pretrained) -> dict[str, str]:
    with _safe_open(path, spec) as fh:
        return dict(fh.metadata() or {})


def _read_safetensors(path: Path, spec: Pretrained) -> dict[str, torch.Tensor]:
    """Only the tensors of ``path`` that ``spec`` keeps (the others are never read)."""
    with _safe_open(path, spec) as fh:
        try:
            return {k: fh.get_tensor(k) for k in fh.keys() if _keep(k, spec)}  # noqa: SIM118
        except Exception as exc:
            raise RMISError(
                f"{spec.name}: cannot read the tensors of {str(path)!r} ({exc}); it may be "
                "truncated: download it again"
            ) from None


# ---------------------------------------------------------------------------------------------
# the restricted unpickler


class _StandIn:
    """An object of a class that is never imported: records what the pickle gives it."""

    _rmis_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> _StandIn:
        self = object.__new__(cls)
        object.__setattr__(self, "_rmis_args", args)
        object.__setattr__(self, "_rmis_kwargs", kwargs)
        object.__setattr__(self, "_rmis_state", None)
        object.__setattr__(self, "_rmis_items", {})
        object.__setattr__(self, "_rmis_list", [])
        return self

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        object.__setattr__(self, "_rmis_state", state)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._rmis_items[key] = value

    def append(self, value: Any) -> None:
        self._rmis_list.append(value)

    def extend(self, values: Any) -> None:
        self._rmis_list.extend(values)


class _RestrictedReader:
    """Reads a zip-format torch file: tensors rebuilt with torch's allow-listed functions,
    every other global replaced by a :class:`_StandIn` subclass named after it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.reader = torch._C.PyTorchFileReader(str(path))
        self.storages: dict[str, Any] = {}
        self.stand_ins: dict[str, type] = {}
        swap = None
        if self.reader.has_record("byteorder"):
            swap = self.reader.get_record("byteorder").decode() != sys.byteorder
        self.swap = bool(swap)

    def load(self) -> Any:
        from torch._weights_only_unpickler import _get_allowed_globals

        allowed = _get_allowed_globals()
        outer = self

        class Unpickler(pickle.Unpickler):
            def find_class(self, module: str, name: str) -> Any:
                full = f"{module}.{name}"
                if full in allowed:
                    return allowed[full]
                if full not in outer.stand_ins:
                    outer.stand_ins[full] = type(name, (_StandIn,), {"_rmis_name": full})
                return outer.stand_ins[full]

            def persistent_load(self, pid: Any) -> Any:
                return outer.storage(pid)

        data = self.reader.get_record("data.pkl")
        return Unpickler(io.BytesIO(data)).load()

    def storage(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or len(pid) != 5:
            raise RMISError(f"{str(self.path)!r}: unexpected persistent id in the pickle")
        typename, storage_type, key, _location, numel = pid
        if (typename.decode() if isinstance(typename, bytes) else typename) != "storage":
            raise RMISError(f"{str(self.path)!r}: unexpected persistent id {typename!r}")
        if storage_type is torch.UntypedStorage:
            dtype = torch.uint8
        else:  # torch's allow-list maps torch.FloatStorage & co. to objects with a dtype
            is_stand_in = isinstance(storage_type, type) and issubclass(storage_type, _StandIn)
            dtype = None if is_stand_in else getattr(storage_type, "dtype", None)
        if not isinstance(dtype, torch.dtype):
            raise RMISError(f"{str(self.path)!r}: unknown storage type in the pickle")
        key = key.decode() if isinstance(key, bytes) else str(key)
        if key not in self.storages:
            nbytes = numel * torch._utils._element_size(dtype)
            untyped = self.reader.get_storage_from_record(
                f"data/{key}", nbytes, torch.UntypedStorage
            )
            untyped = untyped._typed_storage()._untyped_storage
            if self.swap:
                untyped.byteswap(dtype)
            self.storages[key] = torch.storage.TypedStorage(
                wrap_storage=untyped, dtype=dtype, _internal=True
            )
        return self.storages[key]


_NUMPY_SCALAR = ("numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar")
_NUMPY_DTYPE = ("numpy.dtype",)


def _plain(obj: Any, _active: set[int] | None = None) -> Any:
    """``obj`` with every stand-in turned into plain data (see :func:`safe_torch_load`)."""
    active = set() if _active is None else _active
    if isinstance(obj, type) and issubclass(obj, _StandIn):
        return obj._rmis_name
    if isinstance(obj, (torch.Tensor, str, bytes, int, float, bool, type(None), complex)):
        return obj
    if id(obj) in active:  # a cycle (e.g. a parent reference): cut it
        return None
    active.add(id(obj))
    try:
        if isinstance(obj, _StandIn):
            return _plain_stand_in(obj, active)
        if isinstance(obj, OrderedDict):
            return OrderedDict((k, _plain(v, active)) for k, v in obj.items())
        if isinstance(obj, Mapping):
            return {k: _plain(v, active) for k, v in obj.items()}
        if isinstance(obj, list):
            return [_plain(v, active) for v in obj]
        if isinstance(obj, tuple):
            return tuple(_plain(v, active) for v in obj)
        if isinstance(obj, (set, frozenset)):
            return type(obj)(_plain(v, active) for v in obj)
        return obj
    finally:
        active.discard(id(obj))


def _plain_stand_in(obj: _StandIn, active: set[int]) -> Any:
    name = type(obj)._rmis_name
    args = obj._rmis_args
    if name in _NUMPY_SCALAR and len(args) == 2 and isinstance(args[1], bytes):
        import numpy as np

        dtype = args[0]
        code = dtype._rmis_args[0] if isinstance(dtype, _StandIn) and dtype._rmis_args else None
        if isinstance(code, str):
            try:
                return np.frombuffer(args[1], dtype=np.dtype(code))[0].item()
            except (TypeError, ValueError):
                pass
    if name in _NUMPY_DTYPE and args and isinstance(args[0], str):
        return args[0]
    state = obj._rmis_state
    if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
        merged: dict[Any, Any] = {}
        for part in state:
            if isinstance(part, Mapping):
                merged.update(part)
        state = merged
    if isinstance(state, Mapping):
        if "_content" in state and "_metadata" in state:  # omegaconf container
            return _plain(state["_content"], active)
        if "_val" in state and "_metadata" in state:  # omegaconf value node
            return _plain(state["_val"], active)
        out = {str(k): _plain(v, active) for k, v in state.items()}
        out.update({str(k): _plain(v, active) for k, v in obj._rmis_items.items()})
        return out
    if obj._rmis_items:
        return {k: _plain(v, active) for k, v in obj._rmis_items.items()}
    if obj._rmis_list:
        return [_plain(v, active) for v in obj._rmis_list]
    if state is not None:
        return _plain(state, active)
    if obj._rmis_kwargs:
        return {str(k): _plain(v, active) for k, v in obj._rmis_kwargs.items()}
    if len(args) == 1:  # an enum member, a wrapped value
        return _plain(args[0], active)
    if args:
        return [_plain(a, active) for a in args]
    return {}


def write_hub_folder(
    folder: str | Path,
    config: Any,
    state: Mapping[str, torch.Tensor] | list[Mapping[str, torch.Tensor]],
    *,
    shards: int = 1,
    preprocessor: Any = None,
) -> Path:
    """Write a hub-layout folder, the layout :func:`read_weights` reads (``hf-folder``); for
    tests and tools that need a release-shaped checkpoint without a download.

    Args:
        folder: created if needed.
        config: ``config.json`` content: a dict, an object with ``to_dict()`` (a transformers
            config) or None (no config file, as some releases ship).
        state: one dict of tensors, split round-robin over its sorted keys into ``shards``
            files; or a list of dicts, one shard each, in order (to control which tensors share
            a file).
        shards: number of files when ``state`` is one dict; 1 writes ``model.safetensors``,
            more write ``model-0000i-of-0000n.safetensors`` + ``model.safetensors.index.json``.
        preprocessor: ``preprocessor_config.json`` content (dict or object with ``to_dict()``).
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in (("config.json", config), ("preprocessor_config.json", preprocessor)):
        if content is not None:
            # transformers objects serialise themselves (numpy arrays as lists, as on the hub)
            data = content if isinstance(content, Mapping) else json.loads(content.to_json_string())
            (folder / name).write_text(json.dumps(data, indent=2, default=str))
    if isinstance(state, Mapping):
        keys = sorted(state)
        parts = [{k: state[k] for k in keys[i :: max(1, shards)]} for i in range(max(1, shards))]
    else:
        parts = [dict(p) for p in state]
    if len(parts) == 1:
        tensors = {k: v.contiguous() for k, v in parts[0].items()}
        save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
        return folder
    weight_map: dict[str, str] = {}
    total = 0
    for i, part in enumerate(parts, 1):
        name = f"model-{i:05d}-of-{len(parts):05d}.safetensors"
        tensors = {k: v.contiguous() for k, v in part.items()}
        save_file(tensors, str(folder / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, name))
        total += sum(v.numel() * v.element_size() for v in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return folder
