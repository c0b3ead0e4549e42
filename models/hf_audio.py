"""Shared loading of ``transformers`` audio encoders from hub-layout checkpoints.

Used by the Wav2Vec 2.0, Whisper, Qwen2-Audio, Qwen2.5-Omni and Audio Flamingo 3 adapters. Three
pieces, each usable alone:

1. :func:`read_hub_weights` -- resolve ``--checkpoint`` (``hf://owner/name[@rev]``, a bare
   ``owner/name``, or a local folder in the hub layout: ``config.json``, optional
   ``preprocessor_config.json``, ``model.safetensors`` or sharded
   ``model-0000x-of-0000y.safetensors`` + ``model.safetensors.index.json``) and return a
   :class:`HubWeights`: the ``config.json`` dict, the preprocessor dict (or None), ONLY the
   tensors under one key prefix (prefix stripped), the SHA-256 and the revision. Reading goes
   through :func:`rmis.weights.read_weights` (``hf-folder`` format): only the shards the index
   lists for the prefix are opened, and in them only the prefix's tensors are read
   (``safe_open(...).get_tensor``), so a 7B language model beside an audio tower is never
   read. The prefix is the first of the candidates (e.g. ``("audio_tower.",
   "model.audio_tower.")``: the hub's legacy naming, then transformers 5's) that holds a key.
   From the hub, the JSON files are fetched first, then only the shards that hold the prefix
   (huggingface_hub, honouring ``HF_HUB_OFFLINE`` and its cache).

2. :func:`build_strict` -- build a ``transformers`` module from its config WITHOUT random
   initialisation or a second allocation: constructed under ``torch.device("meta")``, the
   checkpoint's tensors checked (missing / unexpected / mis-shaped keys -> :class:`RMISError`
   listing them, via :func:`rmis.weights.load_strict`) and assigned
   (``load_state_dict(strict=True, assign=True)``, floating tensors cast to ``dtype``), then the
   NON-persistent buffers (sinusoid tables, rotary ``inv_freq``, ...) materialised on the CPU
   by the model's own ``_init_weights`` (only the modules that own such buffers are visited,
   every loaded tensor is flagged as initialised, and the loaded tensors of those modules are
   verified unchanged). Every parameter and persistent buffer therefore comes from the
   checkpoint -- the ``WhisperEncoder.from_pretrained(full_checkpoint)`` random-weight trap
   cannot happen -- and no tensor is left on the meta device (checked).

3. Features and pooling helpers: :func:`whisper_feature_extractor` /
   :func:`whisper_features` (``WhisperFeatureExtractor`` from the checkpoint's preprocessor
   config, else family defaults; log-mel padded to 30 s with the mask of valid mel frames),
   :func:`masked_mean` (mean over the first ``lengths[b]`` frames) and :func:`meta_params`
   (parameter count of a config on the meta device, for registry metadata).

Typical adapter::

    hw = read_hub_weights(checkpoint or spec.sources[0], spec, prefixes=("audio_tower.",))
    cfg = Qwen2AudioEncoderConfig.from_dict(hw.config["audio_config"])
    model = build_strict(lambda: Qwen2AudioEncoder(cfg), hw.state_dict, f"{spec.name} {src}")
    fe = whisper_feature_extractor(hw.preprocessor, feature_size=128)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rmis.errors import RMISError
from rmis.weights import Pretrained, load_strict, read_weights

SAMPLE_RATE = 16_000
INDEX = "model.safetensors.index.json"


@dataclass(frozen=True)
class HubWeights:
    """What :func:`read_hub_weights` returns.

    Attributes:
        state_dict: the tensors under ``prefix``, prefix stripped (then ``spec.drop`` /
            ``spec.key_map`` applied as :func:`rmis.weights.read_weights` does).
        config: ``config.json`` as a dict (of the FULL model for a multimodal checkpoint).
        preprocessor: ``preprocessor_config.json`` as a dict, or None when absent.
        sha256: SHA-256 of the weights file read (several shards: of their names and hashes;
            only the shards that hold ``prefix`` are hashed).
        revision: hub commit of the snapshot (None for a local folder).
        folder: the local folder read.
        prefix: the key prefix that was used.
    """

    state_dict: dict[str, torch.Tensor]
    config: dict[str, Any]
    preprocessor: dict[str, Any] | None
    sha256: str
    revision: str | None
    folder: Path
    prefix: str


def read_hub_weights(
    source: str, spec: Pretrained, prefixes: Sequence[str] | None = None
) -> HubWeights:
    """Resolve ``source`` and read the tensors under the first of ``prefixes`` present.

    Args:
        source: ``hf://owner/name[@rev]``, a bare ``owner/name``, or a local hub-layout folder
            (a path to a ``.safetensors`` file inside one works too).
        spec: the variant's :class:`rmis.weights.Pretrained` row (its ``drop`` / ``key_map``
            apply; its ``prefix`` is used when ``prefixes`` is None).
        prefixes: candidate key prefixes, first match wins (``""`` matches every key).

    Raises:
        RMISError: no config.json, no key under any candidate prefix (the message lists a few
            of the keys that are there), unreadable files, hub unreachable without a cache.
    """
    cands = tuple(prefixes) if prefixes is not None else (spec.prefix,)
    folder, revision = _local_folder(source, cands)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise RMISError(
            f"{spec.name}: {str(folder)!r} has no config.json; expected the hub folder of "
            + (", ".join(spec.sources) or "the model")
        )
    keys = _weight_keys(folder, spec)
    prefix = next((p for p in cands if any(k.startswith(p) for k in keys)), None)
    if prefix is None:
        raise RMISError(
            f"{spec.name}: no tensor of {str(folder)!r} is under {' or '.join(map(repr, cands))} "
            f"(found keys like {sorted(keys)[:5]}); is it the checkpoint of "
            + (", ".join(spec.sources) or "this model")
            + "?"
        )
    weights = read_weights(str(folder), replace(spec, prefix=prefix, file_format="hf-folder"))
    if not isinstance(weights.config, dict):
        raise RMISError(f"{spec.name}: {str(config_path)!r} is not a JSON object")
    preprocessor = None
    pre_path = folder / "preprocessor_config.json"
    if pre_path.is_file():
        try:
            preprocessor = json.loads(pre_path.read_text())
        except (OSError, ValueError) as exc:
            raise RMISError(f"{spec.name}: cannot read {str(pre_path)!r}: {exc}") from None
    return HubWeights(
        state_dict=weights.state_dict,
        config=weights.config,
        preprocessor=preprocessor,
        sha256=weights.sha256,
        revision=revision,
        folder=folder,
        prefix=prefix,
    )


def sub_config(config: dict[str, Any], path: Sequence[str], spec: Pretrained) -> dict[str, Any]:
    """``config[path[0]][path[1]]...`` (e.g. ``("thinker_config", "audio_config")``), or an
    :class:`RMISError` naming what is missing."""
    obj: Any = config
    for i, key in enumerate(path):
        if not isinstance(obj, dict) or key not in obj:
            raise RMISError(
                f"{spec.name}: config.json has no {'.'.join(path[: i + 1])} (keys: "
                f"{sorted(obj)[:10] if isinstance(obj, dict) else type(obj).__name__}); is it "
                "the checkpoint of " + (", ".join(spec.sources) or "this model") + "?"
            )
        obj = obj[key]
    return dict(obj)


def build_strict(
    factory: Callable[[], nn.Module],
    state: dict[str, torch.Tensor],
    where: str,
    dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """Build ``factory()`` on the meta device and fill it from ``state`` only (see module doc).

    ``state`` is consumed (emptied) so that each checkpoint tensor is released as soon as its
    ``dtype`` copy exists: peak memory ~ the module in ``dtype`` plus one tensor.

    Raises:
        RMISError: missing / unexpected / mis-shaped keys (listed), a non-persistent buffer the
            model cannot initialise, or a loaded tensor changed by initialisation.
    """
    with torch.device("meta"):
        module = factory()
    own = module.state_dict()
    # keys and shapes first (assign: a tensor a constructor made outside the meta context,
    # e.g. Wav2Vec2's masked_spec_embed, is replaced, never copied into)
    load_strict(module, {k: v.to("meta") for k, v in state.items()}, where, assign=True)
    cast: dict[str, torch.Tensor] = {}
    for key in list(state):
        value = state.pop(key)
        want = own[key].dtype
        if value.is_floating_point() and want.is_floating_point:
            value = value.to(dtype)
        cast[key] = value.contiguous()
    module.load_state_dict(cast, strict=True, assign=True)
    del cast
    _materialise_non_persistent(module, where)
    left = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if left:
        raise RMISError(f"{where}: tensors left uninitialised (on the meta device): {left[:5]}")
    return module.eval()


def meta_params(factory: Callable[[], nn.Module]) -> int:
    """Number of parameters of ``factory()`` built on the meta device (no memory)."""
    with torch.device("meta"):
        module = factory()
    return sum(p.numel() for p in module.parameters())


def whisper_feature_extractor(preprocessor: dict[str, Any] | None, **defaults: Any):
    """``WhisperFeatureExtractor`` from the checkpoint's ``preprocessor_config.json`` (its keys
    win), else from ``defaults`` (e.g. ``feature_size=128``); always 16 kHz."""
    from transformers import WhisperFeatureExtractor

    kwargs = {**defaults, **(preprocessor or {})}
    kwargs.pop("feature_extractor_type", None)
    kwargs.pop("processor_class", None)
    fe = WhisperFeatureExtractor(**kwargs)
    if fe.sampling_rate != SAMPLE_RATE:
        raise RMISError(f"Whisper feature extractor at {fe.sampling_rate} Hz; expected 16 kHz")
    return fe


def whisper_features(fe: Any, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-mel of ``windows [B, L]`` (16 kHz) padded to the extractor's 30 s:
    ``(features [B, n_mels, 3000] float32, mask [B, 3000] long)``; the mask marks the valid mel
    frames (``ceil(L / 160)``: 1000 for a 10-s window).

    Raises:
        RMISError: a window longer than the extractor's ``chunk_length`` (it would be cut).
    """
    if windows.shape[-1] > fe.n_samples:
        raise RMISError(
            f"windows of {windows.shape[-1]} samples exceed the {fe.chunk_length}-s input of the "
            "Whisper feature extractor"
        )
    arrays = list(windows.detach().to("cpu", torch.float32).numpy().astype(np.float32))
    out = fe(
        arrays,
        sampling_rate=SAMPLE_RATE,
        return_tensors="pt",
        return_attention_mask=True,
        padding="max_length",
    )
    return out["input_features"].float(), out["attention_mask"].long()


def masked_mean(hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden [B, T, D]`` over its first ``lengths[b]`` frames -> ``[B, D]``."""
    t = torch.arange(hidden.shape[1], device=hidden.device)
    mask = (t[None, :] < lengths.to(hidden.device)[:, None]).to(hidden.dtype)
    return (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)


# ---------------------------------------------------------------------------------------------
# helpers


def _materialise_non_persistent(module: nn.Module, where: str) -> None:
    owners: list[nn.Module] = []
    for sub in module.modules():
        names = [n for n in sub._non_persistent_buffers_set if sub._buffers.get(n) is not None]
        if not names:
            continue
        owners.append(sub)
        for name in names:
            buf = sub._buffers[name]
            if buf.is_meta:
                sub._buffers[name] = torch.empty_like(buf, device="cpu")
    if not owners:
        return
    init = getattr(module, "initialize_weights", None)
    if init is None:
        raise RMISError(
            f"{where}: {type(module).__name__} has non-persistent buffers but no "
            "initialize_weights() to compute them"
        )
    owner_ids = {id(m) for m in owners}
    loaded = {}
    for name, t in [*module.named_parameters(), *module.named_buffers()]:
        t._is_hf_initialized = True  # transformers' init functions skip flagged tensors
        loaded[name] = t
    persistent = set(module.state_dict())
    for sub in module.modules():
        for name in sub._non_persistent_buffers_set:
            buf = sub._buffers.get(name)
            if buf is not None:
                buf._is_hf_initialized = False
        sub._is_hf_initialized = id(sub) not in owner_ids
    # loaded tensors of the visited modules: verified unchanged after initialisation
    visited = [(n, t) for n, t in loaded.items() if n in persistent and _owner(module, n) in owners]
    before = [t.detach().clone() for _, t in visited]
    with torch.no_grad():
        init()
    for (name, t), b in zip(visited, before):
        if not torch.equal(t, b):
            raise RMISError(f"{where}: initialisation overwrote the checkpoint tensor {name}")
    for sub in module.modules():
        sub.__dict__.pop("_is_hf_initialized", None)


def _owner(module: nn.Module, name: str) -> nn.Module:
    return module.get_submodule(name.rpartition(".")[0]) if "." in name else module


def _weight_keys(folder: Path, spec: Pretrained) -> list[str]:
    index = folder / INDEX
    if index.is_file():
        try:
            return list(json.loads(index.read_text())["weight_map"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RMISError(
                f"{spec.name}: cannot read the shard index {str(index)!r}: {exc}"
            ) from None
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise RMISError(
            f"{spec.name}: {str(folder)!r} holds no model.safetensors nor {INDEX}; expected the "
            "hub folder of " + (", ".join(spec.sources) or "the model")
        )
    from safetensors import safe_open

    keys: list[str] = []
    for f in files:
        with safe_open(str(f), framework="pt", device="cpu") as fh:
            keys.extend(fh.keys())
    return keys


def _local_folder(source: str, prefixes: Sequence[str]) -> tuple[Path, str | None]:
    """A local hub-layout folder for ``source`` and its revision; from the hub, only the JSON
    files and the shards that hold one of ``prefixes`` are fetched."""
    path = Path(source).expanduser()
    if path.exists():
        return (path if path.is_dir() else path.parent), None
    repo = source[5:] if source.startswith("hf://") else source
    is_hub = repo.count("/") == 1 and not repo.startswith((".", "/"))
    if not (source.startswith("hf://") or is_hub):
        raise RMISError(
            f"checkpoint {source!r} does not exist (give a hub-layout folder or hf://owner/name)"
        )
    repo_id, _, revision = repo.partition("@")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise RMISError(
            f"checkpoint {repo_id!r} is a Hugging Face hub id, which needs the package "
            "huggingface_hub (pip install 'rmis[hub]'); or download the hub folder yourself and "
            "pass --checkpoint DIR"
        ) from None

    def fetch(patterns: list[str]) -> Path:
        try:
            return Path(
                snapshot_download(repo_id, revision=revision or None, allow_patterns=patterns)
            )
        except Exception as exc:  # offline, unknown repo, no cached copy
            from rmis.checkpoints import _first_sentence

            raise RMISError(
                f"cannot get {repo_id!r} from the Hugging Face hub ({type(exc).__name__}: "
                f"{_first_sentence(exc)}). Without network, download config.json, "
                f"preprocessor_config.json, {INDEX} and the shards holding the audio encoder "
                f"from https://huggingface.co/{repo_id} on a connected machine and pass the "
                "folder with --checkpoint DIR, or copy the hub cache (~/.cache/huggingface) "
                "here and set HF_HUB_OFFLINE=1"
            ) from None

    snapshot = fetch(["*.json"])
    index = snapshot / INDEX
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map", {})
        shards = sorted(
            {f for k, f in weight_map.items() if any(k.startswith(p) for p in prefixes)}
        )
        snapshot = fetch(["*.json", *shards])
    else:
        snapshot = fetch(["*.json", "*.safetensors"])
    return snapshot, snapshot.name
