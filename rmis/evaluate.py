"""``rmis eval``: datasets -> cached embeddings -> protocol scores -> one result file each.

A dataset to evaluate is a :class:`EvalDataset`: its spec (protocol, rate, window, classes) and
its metadata table (``file`` id, ``path`` on disk, and the protocol's columns). Suites:

* ``synth``: the built-in synthetic suite, generated on demand into the cache folder;
* ``rmis``: the RMIS datasets found under the data root, one folder per dataset
  (``<root>/dcase20`` ... ``<root>/dcase25``; fault-diagnosis release loaders come later);
* a user manifest (``--manifest DATA.csv``).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from rmis.audio import DEFAULT_RESAMPLER
from rmis.data.specs import AD_DATASETS, DATASETS, DatasetSpec, closest
from rmis.errors import RMISError
from rmis.extract import (
    FileItem,
    encoder_fingerprint,
    extract,
    import_legacy_cache,
    legacy_cache_key,
    manifest_hash,
)
from rmis.io import atomic_write_json
from rmis.provenance import RESULT_SCHEMA_VERSION, base_provenance
from rmis.scoring import preflight, score_table
from rmis.store import EmbeddingStore, store_key

log = logging.getLogger(__name__)

SUITES = ("synth", "rmis")
COMPAT_MODES = ("none", "rmis-official")
#: Datasets for which the official harness feeds FISHER the un-normalised log spectrogram.
_UNNORMALISED = (*AD_DATASETS, "iica", "umged_sound", "umged_vib", "umged_vol", "umged_cur")


def compat_settings(model: str, dataset: str, compat: str) -> tuple[dict[str, Any], int | None]:
    """Adapter options and input-rate override reproducing the official harness's quirks
    (PROTOCOL.md section 6), for ``--compat rmis-official``; nothing for ``none``.

    (a) FISHER gets the log spectrogram without its normalisation on DCASE 2020-25, IICA and
    the four UMGED sets; (b) FISHER-tiny and -mini get UMGED-sound resampled to 16 kHz (a
    config-key typo in the official harness).
    """
    if compat not in COMPAT_MODES:
        raise RMISError(f"unknown --compat {compat!r}; choose one of {', '.join(COMPAT_MODES)}")
    options: dict[str, Any] = {}
    rate = None
    if compat == "rmis-official" and model.startswith("fisher-"):
        if dataset in _UNNORMALISED:
            options["normalize"] = False
        if model in ("fisher-tiny", "fisher-mini") and dataset == "umged_sound":
            rate = 16_000
    return options, rate


def default_cache_dir() -> Path:
    """``$RMIS_CACHE_DIR``, else ``$XDG_CACHE_HOME/rmis``, else ``~/.cache/rmis``."""
    if os.environ.get("RMIS_CACHE_DIR"):
        return Path(os.environ["RMIS_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rmis"


#: Sealed-split runs of a default ``rmis eval``.
DEFAULT_RUNS = 10
#: The file beside a configuration's result files that says what the configuration is.
RUN_FILE = "run.json"
#: What goes into a configuration id: everything besides the dataset that can change a score.
CONFIG_ID_FIELDS = ("weights_sha256", "revision", "options", "compat", "precision", "runs")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def run_config(
    encoder: Any,
    options: dict[str, Any],
    compat: str = "none",
    precision: str = "fp32",
    runs: int = DEFAULT_RUNS,
    checkpoint: str | None = None,
    resampler: str = DEFAULT_RESAMPLER,
) -> dict[str, Any]:
    """What a run configuration is: the model, its weights (``checkpoint`` as given, SHA-256,
    revision), the user's adapter options (``-o``, sorted; not the per-dataset ``--compat``
    ones), the compat mode, the precision, the number of sealed-split runs and the resampler."""
    info = encoder.info
    return {
        "model": info.name,
        "family": info.family,
        "variant": info.variant,
        "checkpoint": checkpoint,
        "weights_sha256": encoder.weights_sha256,
        "revision": encoder.revision,
        "options": {k: options[k] for k in sorted(options)},
        "compat": compat,
        "precision": precision,
        "runs": runs,
        "resampler": resampler,
    }


def config_id(cfg: dict[str, Any]) -> str:
    """Short, stable id of a run configuration: the first 10 hex digits of the SHA-256 of the
    canonical JSON of its :data:`CONFIG_ID_FIELDS`, plus ``resampler`` when it is not the
    default (results live in ``RESULTS/<model>/<config id>/``)."""
    fields = {k: cfg.get(k) for k in CONFIG_ID_FIELDS}
    if cfg.get("resampler") not in (None, DEFAULT_RESAMPLER):
        fields["resampler"] = cfg["resampler"]
    blob = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def config_differences(cfg: dict[str, Any]) -> list[str]:
    """How a configuration differs from a plain ``rmis eval MODEL`` (``[]`` for the default)."""
    out = []
    if cfg.get("checkpoint"):
        out.append(f"checkpoint={Path(str(cfg['checkpoint'])).name or cfg['checkpoint']}")
    out += [f"{k}={v}" for k, v in (cfg.get("options") or {}).items()]
    if (cfg.get("compat") or "none") != "none":
        out.append(f"compat={cfg['compat']}")
    if (cfg.get("precision") or "fp32") != "fp32":
        out.append(f"precision={cfg['precision']}")
    if cfg.get("runs") not in (None, DEFAULT_RUNS):
        out.append(f"runs={cfg['runs']}")
    if cfg.get("resampler") not in (None, DEFAULT_RESAMPLER):
        out.append(f"resampler={cfg['resampler']}")
    return out


def config_dir(results_dir: Path, cfg: dict[str, Any]) -> Path:
    """``RESULTS/<model>/<config id>``: where a configuration's result files go."""
    return Path(results_dir) / cfg["model"] / config_id(cfg)


def write_run_file(folder: Path, cfg: dict[str, Any]) -> None:
    """Write ``folder/run.json`` (atomically): the configuration, its id, the rmis version and
    when it was first and last run."""
    import rmis

    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    created = now
    try:
        old = json.loads((folder / RUN_FILE).read_text())
        if isinstance(old, dict) and old.get("config_id") == config_id(cfg):
            created = old.get("created_utc") or now
    except (OSError, ValueError):
        pass
    body = {
        "kind": "run",
        "config_id": config_id(cfg),
        **cfg,
        "rmis_version": rmis.__version__,
        "created_utc": created,
        "updated_utc": now,
    }
    atomic_write_json(folder / RUN_FILE, body)


@dataclass(frozen=True)
class EvalDataset:
    """One dataset ready for evaluation."""

    spec: DatasetSpec
    table: pd.DataFrame  # file, path + protocol columns
    #: where the data comes from when it is not a file tree (e.g. a Hugging Face dataset's id,
    #: revision, fingerprint, columns and sealing); recorded in the result's provenance
    source: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    def items(self) -> list[FileItem]:
        """The files to embed: (id, path on disk)."""
        return [FileItem(f, p) for f, p in zip(self.table["file"], self.table["path"], strict=True)]


def synth_suite(
    names: list[str] | None, cache_dir: Path, report: Callable[[str], None] | None = None
) -> list[EvalDataset]:
    """The synthetic suite (generated into ``cache_dir/synth`` on first use; ``report`` is told
    before each dataset is generated, so a user sees progress from the first second)."""
    from rmis.data import synth
    from rmis.data.dcase import dcase_table
    from rmis.data.manifest import manifest_table

    chosen = _choose(names, list(synth.SYNTH_DATASETS), "synth")
    out = []
    for i, name in enumerate(chosen, 1):
        spec = synth.SYNTH_DATASETS[name]
        if report is not None and not synth._marker_ok(cache_dir / "synth" / name):
            report(
                f"generating {name} ({i}/{len(chosen)}; first use only) into {cache_dir / 'synth'}"
            )
        root = synth.ensure(name, cache_dir / "synth")
        if spec.task == "ad":
            table = dcase_table(root, spec.year, machines=spec.machines)
        else:
            table = manifest_table(root / "manifest.csv")
        out.append(EvalDataset(spec, table))
    return out


def dataset_folder(
    name: str, data_root: Path | None, folders: dict[str, Path] | None = None
) -> Path | None:
    """Folder of an RMIS dataset: an explicit per-dataset override, else ``<data_root>/<name>``."""
    if folders and name in folders:
        return Path(folders[name])
    return data_root / name if data_root is not None else None


def dataset_table(name: str, folder: Path, dcase_gt: Path | None = None) -> pd.DataFrame:
    """Metadata table (``file``, ``path`` + protocol columns) of an RMIS dataset's folder."""
    spec = DATASETS[name]
    if spec.task == "ad":
        from rmis.data.dcase import dcase_table

        return dcase_table(folder, spec.year, gt=dcase_gt)
    from rmis.data.release import fd_table

    return fd_table(name, folder)


def rmis_suite(
    names: list[str] | None,
    data_root: Path | None,
    dcase_gt: Path | None,
    folders: dict[str, Path] | None = None,
) -> tuple[list[EvalDataset], dict[str, str]]:
    """RMIS datasets present under ``data_root`` (or at their ``folders`` override); returns
    (datasets, {missing name: reason})."""
    chosen = _choose(names, list(DATASETS), "rmis")
    found, missing = [], {}
    for name in chosen:
        folder = dataset_folder(name, data_root, folders)
        if folder is None or not folder.is_dir():
            if names:  # asked for by name: an error, not a gap in the table
                raise RMISError(
                    f"dataset {name!r} not found"
                    + (f": no folder {str(folder)!r}" if folder else ": give --data-root DIR")
                    + "; `rmis data check --data-root DIR` shows what is found"
                )
            missing[name] = "not found" + (f" at {folder}" if folder else " (no --data-root)")
            continue
        found.append(EvalDataset(DATASETS[name], dataset_table(name, folder, dcase_gt)))
    return found, missing


def parse_folders(pairs: list[str] | None) -> dict[str, Path]:
    """``NAME=PATH`` overrides of dataset folders (``--dataset-dir``)."""
    out = {}
    for pair in pairs or []:
        name, sep, path = pair.partition("=")
        if not sep or name not in DATASETS:
            raise RMISError(
                f"--dataset-dir {pair!r} must be NAME=PATH with NAME an RMIS dataset"
                + ("" if not sep else f" ({closest(name, list(DATASETS))})")
            )
        out[name] = Path(path)
    return out


def resolve_suite(
    suite: str,
    names: list[str] | None,
    cache_dir: Path,
    data_root: Path | None = None,
    dcase_gt: Path | None = None,
    folders: dict[str, Path] | None = None,
    report: Callable[[str], None] | None = None,
) -> tuple[list[EvalDataset], dict[str, str]]:
    """The datasets of ``synth`` or ``rmis`` (those present), and the missing ones with why
    (``report``: told when the synthetic suite is being generated)."""
    if suite == "synth":
        return synth_suite(names, cache_dir, report), {}
    if suite == "rmis":
        found, missing = rmis_suite(names, data_root, dcase_gt, folders)
        if not found:
            raise RMISError(
                "no RMIS dataset found"
                + (f" under {data_root}" if data_root else " (give --data-root DIR)")
                + "; try --suite synth for the built-in synthetic suite"
            )
        return found, missing
    raise RMISError(f"unknown suite {suite!r}; choose one of {', '.join(SUITES)}")


def manifest_name(manifest: Path, name: str | None = None) -> str:
    """A manifest dataset's name: ``name`` (``--name``, checked), else the CSV's stem plus 6 hex
    digits of the SHA-256 of its absolute path (``data-3f9a1c``), so that two ``data.csv`` in
    different folders never share a result file."""
    if name is not None:
        from rmis.data.synth import SYNTH_DATASETS

        if not _NAME_RE.match(name):
            raise RMISError(
                f"--name {name!r}: use 1-64 letters, digits, '_', '-' or '.', starting with a "
                "letter or digit"
            )
        if name in DATASETS or name in SYNTH_DATASETS or name == Path(RUN_FILE).stem:
            raise RMISError(
                f"--name {name!r} is reserved (an RMIS or synth dataset, or the run file); "
                "choose another name for your manifest"
            )
        return name
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(manifest).stem).strip("._-")[:48] or "manifest"
    digest = hashlib.sha256(str(Path(manifest).resolve()).encode()).hexdigest()[:6]
    return f"{stem}-{digest}"


def manifest_dataset(manifest: Path, test_size: float, name: str | None = None) -> EvalDataset:
    """A user dataset from a manifest (sealed splits, or its own ``split`` column), named by
    :func:`manifest_name`."""
    from rmis.data.manifest import manifest_table

    name = manifest_name(manifest, name)
    table = manifest_table(manifest)
    rates = {_rate(p) for p in table["path"]}  # headers only; files may differ in rate
    return EvalDataset(_user_spec(name, table, rates, test_size, f"manifest {manifest}"), table)


def _user_spec(
    name: str, table: pd.DataFrame, rates: set[int], test_size: float, title: str
) -> DatasetSpec:
    """The spec of a user dataset (manifest or Hugging Face dataset): fault diagnosis on 10-s
    windows, sealed random splits at ``test_size`` or the table's own ``split`` column, classes
    in sorted order, the native rate when all files share one (else 0: any rate)."""
    given = "split" in table.columns
    return DatasetSpec(
        name=name,
        task="fd",
        modality="user",
        sample_rate=next(iter(rates)) if len(rates) == 1 else 0,
        window_seconds=10.0,
        protocol="fd-official-split" if given else "fd",
        classes=tuple(sorted(set(table["label"]))),
        test_size=None if given else test_size,
        title=title,
    )


def hf_dataset(
    source: str,
    test_size: float,
    name: str | None = None,
    *,
    config: str | None = None,
    split: str | None = None,
    audio_column: str = "audio",
    label_column: str = "label",
    group_column: str | None = None,
    split_column: str | None = None,
    no_sealing: bool = False,
) -> EvalDataset:
    """A user dataset from a Hugging Face dataset (hub id or local Parquet folder; see
    :mod:`rmis.data.hf`), with the semantics of a manifest; named by ``name`` or, as a
    manifest, by the id's last part plus 6 hex digits of the SHA-256 of id, config and split."""
    from rmis.data.hf import hf_table

    loaded = hf_table(
        source,
        config=config,
        split=split,
        audio_column=audio_column,
        label_column=label_column,
        group_column=group_column,
        split_column=split_column,
        no_sealing=no_sealing,
    )
    table, info = loaded.table, loaded.info
    if name is None:
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(info["dataset"]).name).strip("._-")[:48]
        key = f"{info['dataset']}|{info['revision']}|{config}|{split}"
        name = f"{stem or 'hf'}-{hashlib.sha256(key.encode()).hexdigest()[:6]}"
    else:
        name = manifest_name(Path(source), name)  # checks --name
    rates = {p.sample_rate for p in table["path"]}
    spec = _user_spec(name, table, rates, test_size, f"Hugging Face dataset {source}")
    return EvalDataset(spec, table, info)


def check_rate_dims(ds: EvalDataset, encoder: Any, input_rate: int | None = None) -> None:
    """Before embedding a user dataset whose files differ in sample rate with a native-rate
    encoder: probe the encoder's embedding size at each rate (one window of noise) and stop if
    it differs, since vectors of different sizes cannot be compared. Files at several rates
    are fine for an encoder with a fixed input rate (all are resampled to it) or one whose
    size does not depend on the rate."""
    if ds.spec.sample_rate or (input_rate or encoder.sample_rate) is not None:
        return
    import torch

    first: dict[int, str] = {}
    for f, p in zip(ds.table["file"], ds.table["path"], strict=True):
        first.setdefault(_rate(p), f)
    first.pop(0, None)  # unreadable: reported with its name when it is decoded
    if len(first) < 2:
        return
    gen = torch.Generator().manual_seed(0)
    dims = {}
    for rate in sorted(first):
        width = int(round(ds.spec.window_seconds * rate))
        x = torch.randn(1, width, generator=gen).to(encoder.device)
        with torch.inference_mode():
            dims[rate] = int(encoder.embed(x, rate).shape[-1])
    if len(set(dims.values())) > 1:
        name = encoder.info.name
        raise RMISError(
            f"{ds.spec.title}: files at several sample rates ("
            + ", ".join(f"{r} Hz e.g. {first[r]!r}" for r in sorted(first))
            + f") and {name} reads each file at its own rate with an embedding size that "
            "depends on it ("
            + ", ".join(f"{d} at {r} Hz" for r, d in dims.items())
            + "): resample the files to one rate"
        )


def _rate(path: Any) -> int:
    import soundfile as sf

    if getattr(path, "sample_rate", None):  # an audio source that knows its rate
        return int(path.sample_rate)

    try:
        return int(sf.info(path).samplerate)
    except (sf.LibsndfileError, RuntimeError):
        return 0


def _choose(names: list[str] | None, available: list[str], suite: str) -> list[str]:
    if not names:
        return available
    for n in names:
        if n not in available:
            raise RMISError(f"dataset {n!r} is not in the {suite} suite: {closest(n, available)}")
    return list(names)


def preflight_dataset(ds: EvalDataset, runs: int = 10) -> None:
    """Every scoring check that needs no embedding (:func:`rmis.scoring.preflight`): call it
    for every dataset before the first file is decoded, so an impossible request costs
    nothing."""
    preflight(
        ds.table.drop(columns="path"),
        ds.spec.protocol,
        classes=list(ds.spec.classes) or None,
        test_size=ds.spec.test_size or 0.5,
        runs=runs,
        where=ds.name,
    )


def evaluate_dataset(
    ds: EvalDataset,
    encoder: Any,
    *,
    options: dict[str, Any],
    results_dir: Path,
    cache_dir: Path,
    runs: int = 10,
    batch_size: int = 32,
    num_workers: int | None = None,
    precision: str = "fp32",
    skip_bad_files: bool = False,
    progress: Any = None,
    device: str = "cpu",
    input_rate: int | None = None,
    compat: str = "none",
    config: dict[str, Any] | None = None,
    recompute: bool = False,
    resampler: str = DEFAULT_RESAMPLER,
    file_identity: str = "stat",
    dist: Any = None,
) -> dict[str, Any] | None:
    """Embed (or reuse) one dataset, score it and write
    ``results_dir/<model>/<config id>/<dataset>.json`` and the configuration's ``run.json``.

    ``input_rate`` overrides the encoder's input rate and ``compat`` is recorded (see
    :func:`compat_settings`). ``config`` is the run configuration (:func:`run_config` of the
    user's options; by default that of ``options``). ``recompute`` ignores and replaces the
    cached embeddings. ``resampler`` (``sinc``/``soxr``) is part of the store key.
    ``file_identity`` (``stat``/``content``) says how stored embeddings are matched to files
    (:func:`rmis.store.file_key`). Under ``torchrun`` (``dist``: :mod:`rmis.distributed`) every
    rank calls this; rank 0 alone scores, writes and returns the result (the others: None)."""
    if config is None:
        config = run_config(encoder, options, compat, precision, runs, resampler=resampler)
    started = time.perf_counter()
    check_rate_dims(ds, encoder, input_rate)
    items = ds.items()
    enc_fp = encoder_fingerprint(encoder, options)
    key, parts = store_key(enc_fp, ds.spec.window_seconds, precision, input_rate, resampler)
    model = enc_fp["model"]
    store_rel = Path("embeddings") / model / key
    store = EmbeddingStore(cache_dir / store_rel, parts, identity=file_identity)
    main = dist is None or dist.is_main
    if main and any((cache_dir / "embeddings" / model).glob(f"{ds.name}-*")):
        legacy = legacy_cache_key(
            enc_fp, items, ds.spec.window_seconds, precision, input_rate, resampler=resampler
        )
        old = cache_dir / "embeddings" / model / f"{ds.name}-{legacy}"
        if old.is_dir():  # a per-dataset cache of older rmis: its vectors join the store
            import_legacy_cache(old, items, store)
    expected = ds.spec.sample_rate or None
    ext = extract(
        items,
        encoder,
        window_seconds=ds.spec.window_seconds,
        expected_rate=expected,
        store=store,
        batch_size=batch_size,
        num_workers=num_workers,
        precision=precision,
        skip_bad_files=skip_bad_files,
        progress=progress,
        input_rate=input_rate,
        recompute=recompute,
        resampler=resampler,
        dist=dist,
    )
    if not main:
        return None
    meta = ds.table.drop(columns="path")
    if ext.skipped:
        meta = meta[~meta["file"].isin(ext.skipped)]
    scored_at = time.perf_counter()
    body = score_table(
        meta,
        ext.embeddings,
        protocol=ds.spec.protocol,
        classes=list(ds.spec.classes) or None,
        test_size=ds.spec.test_size or 0.5,
        runs=runs,
        where=ds.name,
        device=device,
        official_rounding=compat == "rmis-official",
    )
    info = encoder.info
    result = {
        "schema_version": RESULT_SCHEMA_VERSION,
        "kind": "eval",
        "dataset": ds.name,
        "task": ds.spec.task,
        "model": {
            "name": info.name,
            "family": info.family,
            "variant": info.variant,
            "params_millions": info.params_millions,
            "revision": encoder.revision,
            "weights_sha256": encoder.weights_sha256,
            "adapter_sha256": enc_fp["adapter_sha256"],
            "options": enc_fp["options"],
            "band_dim": getattr(encoder, "band_dim", None),
            "band_bins": getattr(encoder, "band_bins", None),
        },
        **body,
        "skipped_files": ext.skipped,
        "provenance": base_provenance()
        | {
            "command": "rmis eval",
            "dataset_manifest_sha256": manifest_hash(items),
            **({"data_source": ds.source} if ds.source else {}),
            "embedding_cache_key": key,
            "embedding_store": store_rel.as_posix(),
            "file_identity": file_identity,
            "window_seconds": ds.spec.window_seconds,
            "precision": precision,
            "compat": compat,
            "runs": runs,
            "config_id": config_id(config),
            "input_rate": input_rate,
            "resampler": resampler,
            "preprocessing_version": parts["preprocessing_version"],
            "files_embedded": ext.computed,
            "files_reused_from_cache": ext.reused,
            "windows_embedded": ext.windows,
            "seconds_extract": round(ext.seconds, 3),
            "seconds_score": round(time.perf_counter() - scored_at, 3),
            "seconds_total": round(time.perf_counter() - started, 3),
        },
    }
    folder = config_dir(results_dir, config)
    atomic_write_json(folder / f"{ds.name}.json", result)
    write_run_file(folder, config)
    return result


def suite_overall(suite: str, scores: dict[str, float]) -> tuple[Any, bool]:
    """Overall figures for a suite's scores; (Overall, complete?)."""
    from rmis.leaderboard import suite_datasets
    from rmis.protocol.overall import overall_score

    o = overall_score(scores, *suite_datasets(suite))
    return o, not o.missing


__all__ = [
    "EvalDataset",
    "RUN_FILE",
    "SUITES",
    "config_id",
    "default_cache_dir",
    "evaluate_dataset",
    "hf_dataset",
    "manifest_dataset",
    "manifest_name",
    "preflight_dataset",
    "resolve_suite",
    "rmis_suite",
    "run_config",
    "suite_overall",
    "synth_suite",
]
