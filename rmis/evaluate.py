"""``rmis eval``: datasets -> cached embeddings -> protocol scores -> one result file each.

A dataset to evaluate is a :class:`EvalDataset`: its spec (protocol, rate, window, classes) and
its metadata table (``file`` id, ``path`` on disk, and the protocol's columns). Suites:

* ``synth``: the built-in synthetic suite, generated on demand into the cache folder;
* ``rmis``: the RMIS datasets found under the data root, one folder per dataset
  (``<root>/dcase20`` ... ``<root>/dcase25``; fault-diagnosis release loaders come later);
* a user manifest (``--manifest DATA.csv``).
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from rmis.data.specs import AD_DATASETS, DATASETS, DatasetSpec, closest
from rmis.errors import RMISError
from rmis.extract import EmbeddingCache, FileItem, cache_key, encoder_fingerprint, extract
from rmis.io import atomic_write_json
from rmis.provenance import RESULT_SCHEMA_VERSION, base_provenance
from rmis.scoring import score_table

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


@dataclass(frozen=True)
class EvalDataset:
    """One dataset ready for evaluation."""

    spec: DatasetSpec
    table: pd.DataFrame  # file, path + protocol columns

    @property
    def name(self) -> str:
        return self.spec.name

    def items(self) -> list[FileItem]:
        """The files to embed: (id, path on disk)."""
        return [FileItem(f, p) for f, p in zip(self.table["file"], self.table["path"], strict=True)]


def synth_suite(names: list[str] | None, cache_dir: Path) -> list[EvalDataset]:
    """The synthetic suite (generated into ``cache_dir/synth`` on first use)."""
    from rmis.data import synth
    from rmis.data.dcase import dcase_table
    from rmis.data.manifest import manifest_table

    chosen = _choose(names, list(synth.SYNTH_DATASETS), "synth")
    out = []
    for name in chosen:
        spec = synth.SYNTH_DATASETS[name]
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
) -> tuple[list[EvalDataset], dict[str, str]]:
    """The datasets of ``synth`` or ``rmis`` (those present), and the missing ones with why."""
    if suite == "synth":
        return synth_suite(names, cache_dir), {}
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


def manifest_dataset(manifest: Path, test_size: float) -> EvalDataset:
    """A user dataset from a manifest (sealed splits, or its own ``split`` column)."""
    from rmis.data.manifest import manifest_table

    table = manifest_table(manifest)
    rates = {_rate(p) for p in table["path"][:50]}
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(manifest).stem) or "manifest"
    spec = DatasetSpec(
        name=name,
        task="fd",
        modality="user",
        sample_rate=rates.pop() if len(rates) == 1 else 0,
        window_seconds=10.0,
        protocol="fd-official-split" if "split" in table.columns else "fd",
        classes=tuple(sorted(set(table["label"]))),
        test_size=None if "split" in table.columns else test_size,
        title=f"manifest {manifest}",
    )
    return EvalDataset(spec, table)


def _rate(path: str) -> int:
    import soundfile as sf

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
) -> dict[str, Any]:
    """Embed (or reuse) one dataset, score it and write ``results_dir/<model>/<dataset>.json``.

    ``input_rate`` overrides the encoder's input rate and ``compat`` is recorded (see
    :func:`compat_settings`)."""
    started = time.perf_counter()
    items = ds.items()
    enc_fp = encoder_fingerprint(encoder, options)
    key, parts = cache_key(enc_fp, items, ds.spec.window_seconds, precision, input_rate)
    model = enc_fp["model"]
    cache = EmbeddingCache(cache_dir / "embeddings" / model / f"{ds.name}-{key}", parts)
    expected = ds.spec.sample_rate or None
    ext = extract(
        items,
        encoder,
        window_seconds=ds.spec.window_seconds,
        expected_rate=expected,
        cache=cache,
        batch_size=batch_size,
        num_workers=num_workers,
        precision=precision,
        skip_bad_files=skip_bad_files,
        progress=progress,
        input_rate=input_rate,
    )
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
            "options": enc_fp["options"],
            "band_dim": getattr(encoder, "band_dim", None),
            "band_bins": getattr(encoder, "band_bins", None),
        },
        **body,
        "skipped_files": ext.skipped,
        "provenance": base_provenance()
        | {
            "command": "rmis eval",
            "dataset_manifest_sha256": parts["manifest_sha256"],
            "embedding_cache_key": key,
            "window_seconds": ds.spec.window_seconds,
            "precision": precision,
            "compat": compat,
            "input_rate": input_rate,
            "files_embedded": ext.computed,
            "files_reused_from_cache": ext.reused,
            "windows_embedded": ext.windows,
            "seconds_extract": round(ext.seconds, 3),
            "seconds_score": round(time.perf_counter() - scored_at, 3),
            "seconds_total": round(time.perf_counter() - started, 3),
        },
    }
    atomic_write_json(results_dir / model / f"{ds.name}.json", result)
    return result


def suite_overall(suite: str, scores: dict[str, float]) -> tuple[Any, bool]:
    """Overall figures for a suite's scores; (Overall, complete?)."""
    from rmis.leaderboard import suite_datasets
    from rmis.protocol.overall import overall_score

    o = overall_score(scores, *suite_datasets(suite))
    return o, not o.missing


__all__ = [
    "EvalDataset",
    "SUITES",
    "default_cache_dir",
    "evaluate_dataset",
    "manifest_dataset",
    "resolve_suite",
    "rmis_suite",
    "suite_overall",
    "synth_suite",
]
