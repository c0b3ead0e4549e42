"""Hugging Face datasets as a data source (``rmis eval MODEL --hf-dataset ID_OR_DIR``).

A hub id (``user/name[@revision]``; ``HF_HUB_OFFLINE`` and the hub cache are honoured by
``datasets``) or a local folder of Parquet files is loaded with ``datasets.load_dataset``
(memory-mapped Arrow files on disk, never the rows in memory) and its audio column, a
``struct<bytes, path>`` (the ``Audio`` feature), is cast to ``Audio(decode=False)``: the
stored bytes are decoded by rmis's own audio layer (soundfile), so neither torchcodec nor
torchaudio is needed.

* Metadata is scanned record batch by record batch from the Arrow files (a 100 k-row dataset
  never sits in memory); each row's header (rate, frames) is read from its bytes, so an
  undecodable row is reported before anything is embedded.
* A row's file id is its audio ``path`` when every row has one and they are unique (then a
  dataset made from recordings splits and scores exactly like a manifest of them), else
  ``<split>/<row index>``.
* Each row becomes an :class:`ArrowRow`, an audio source (:func:`rmis.audio.is_source`) read
  lazily in the decoding worker; its ``stamp`` (dataset id, revision, fingerprint) keys the
  embedding cache.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from rmis.errors import RMISError

INSTALL_HINT = 'pip install "rmis[hf]"'
_TABLES: dict[str, Any] = {}  # per process: Arrow file -> memory-mapped table


def _datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise RMISError(
            f"reading a Hugging Face dataset needs the `datasets` package: {INSTALL_HINT}"
        ) from None
    return datasets


def _arrow_table(file: str) -> Any:
    """The memory-mapped table of one Arrow stream file (``datasets``' cache format)."""
    table = _TABLES.get(file)
    if table is None:
        import pyarrow as pa

        if len(_TABLES) >= 4:
            _TABLES.clear()
        table = pa.ipc.open_stream(pa.memory_map(file)).read_all()
        _TABLES[file] = table
    return table


@dataclass(frozen=True)
class ArrowRow:
    """The audio of one dataset row: ``column``'s bytes at ``row`` of the Arrow ``file`` (or,
    when a row stores no bytes, the file at ``fallback``)."""

    file: str
    row: int
    column: str
    name: str  # what messages call it
    size: int  # bytes of the encoded audio
    stamp: str  # dataset id, revision, fingerprint
    sample_rate: int
    frames: int
    fallback: str | None = None

    def read_bytes(self) -> bytes:
        value = _arrow_table(self.file).column(self.column)[self.row].as_py() or {}
        if value.get("bytes") is not None:
            return value["bytes"]
        if self.fallback is None:
            raise ValueError("the row stores no audio bytes")
        return Path(self.fallback).read_bytes()

    def __str__(self) -> str:
        return self.name


@dataclass
class HFSource:
    """A loaded dataset: the metadata table (``file,label,group[,split],path`` with ``path``
    the rows' :class:`ArrowRow`) and what identifies it (recorded in results)."""

    table: pd.DataFrame
    info: dict[str, Any]


def parse_source(source: str) -> tuple[str, str | None, bool]:
    """(id or folder, revision, is a local folder) of ``--hf-dataset``."""
    if os.path.isdir(source):
        return str(Path(source).resolve()), None, True
    repo, sep, revision = source.partition("@")
    if not re.match(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$", repo) or (sep and not revision):
        raise RMISError(
            f"--hf-dataset {source!r} is neither a folder nor a hub id user/name[@revision]"
        )
    return repo, revision or None, False


def load_splits(source: str, config: str | None, split: str | None) -> tuple[list, dict]:
    """[(split name, datasets.Dataset)] of ``source`` and its identification."""
    datasets = _datasets()
    path, revision, local = parse_source(source)
    try:
        loaded = datasets.load_dataset(path, name=config, split=split, revision=revision)
    except ImportError as exc:  # a builder needing an optional package
        raise RMISError(f"cannot load Hugging Face dataset {source!r}: {exc}") from None
    except Exception as exc:  # datasets raises many types (not found, offline, bad split, ...)
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise RMISError(
            f"cannot load Hugging Face dataset {source!r}"
            + (f" (config {config!r})" if config else "")
            + (f" (split {split!r})" if split else "")
            + f": {text[:300]}"
            + ("" if local else "; offline (HF_HUB_OFFLINE=1) it must be in the hub cache")
        ) from None
    splits = [(split, loaded)] if split is not None else list(loaded.items())
    info = {
        "kind": "huggingface",
        "dataset": path if not local else str(path),
        "local": local,
        "config": config,
        "revision": revision,
        "splits": [s for s, _ in splits],
        "fingerprints": {s: d._fingerprint for s, d in splits},
        "datasets_version": datasets.__version__,
    }
    return splits, info


def _label_names(feature: Any) -> list[str] | None:
    names = getattr(feature, "names", None)  # a ClassLabel: integers -> names
    return list(names) if names else None


def hf_table(
    source: str,
    *,
    config: str | None = None,
    split: str | None = None,
    audio_column: str = "audio",
    label_column: str = "label",
    group_column: str | None = None,
    split_column: str | None = None,
    no_sealing: bool = False,
) -> HFSource:
    """The metadata table of a Hugging Face dataset (see the module docstring).

    ``group_column`` defaults to ``group`` when the dataset has one; without a group column
    (and without a given split) ``no_sealing`` must be set: every row is then its own group.

    Raises:
        RMISError: ``datasets`` missing, the dataset not loadable, a missing or non-audio
            column, an empty or undecodable row, split values other than train/test.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import soundfile as sf

    datasets = _datasets()
    splits, info = load_splits(source, config, split)
    where = f"Hugging Face dataset {source!r}"
    rows: list[dict[str, Any]] = []
    group_used = None
    for split_name, ds in splits:
        cols = list(ds.column_names)
        here = f"{where} split {split_name!r}"
        for role, col in (
            ("audio", audio_column),
            ("label", label_column),
            ("split", split_column),
        ):
            if col is not None and col not in cols:
                raise RMISError(
                    f"{here} has no {role} column {col!r} (columns: {', '.join(cols)}); name it "
                    f"with --{role}-column COL"
                )
        group = group_column if group_column is not None else "group"
        if group not in cols:
            if group_column is not None:
                raise RMISError(
                    f"{here} has no group column {group_column!r} (columns: {', '.join(cols)}); "
                    "name it with --group-column COL"
                )
            if not no_sealing and split_column is None:
                raise RMISError(
                    f"{here} has no group column (columns: {', '.join(cols)}): the group is the "
                    "sealing unit that keeps the files of one recording or machine on one side "
                    "of a split, else near-identical segments on both sides inflate the score; "
                    "name it with --group-column COL, or give --no-sealing to make every row "
                    "its own group (recorded in the result)"
                )
            group = None
        group_used = group
        try:
            ds = ds.cast_column(audio_column, datasets.Audio(decode=False))
        except Exception as exc:
            raise RMISError(
                f"{here}: column {audio_column!r} is not audio (struct of bytes and path): "
                f"{' '.join(str(exc).split())[:200]}; name the audio column with --audio-column"
            ) from None
        if getattr(ds, "_indices", None) is not None or not ds.cache_files:
            raise RMISError(f"{here} is not backed by Arrow files on disk; cannot stream it")
        label_names = _label_names(ds.features[label_column])
        stamp = f"{info['dataset']}@{info['revision'] or ''}#{ds._fingerprint}"
        index = 0
        for cache in ds.cache_files:
            file = cache["filename"]
            reader = pa.ipc.open_stream(pa.memory_map(file))
            offset = 0
            for batch in reader:  # one record batch at a time
                audio = batch.column(batch.schema.get_field_index(audio_column))
                if not pa.types.is_struct(audio.type):
                    raise RMISError(
                        f"{here}: column {audio_column!r} is {audio.type}, not an audio struct "
                        "of bytes and path; name the audio column with --audio-column"
                    )
                names = [audio.type.field(i).name for i in range(audio.type.num_fields)]
                blobs = pc.struct_field(audio, "bytes") if "bytes" in names else None
                paths = (
                    pc.struct_field(audio, "path").to_pylist()
                    if "path" in names
                    else [None] * len(batch)
                )
                meta = {
                    role: batch.column(batch.schema.get_field_index(col)).to_pylist()
                    for role, col in (
                        ("label", label_column),
                        ("group", group),
                        ("split", split_column),
                    )
                    if col is not None
                }
                for j in range(len(batch)):
                    blob = blobs[j].as_py() if blobs is not None else None
                    name = f"{here} row {index}" + (f" ({paths[j]})" if paths[j] else "")
                    fallback = None
                    if blob is None:
                        fallback = _fallback(paths[j], info)
                        if fallback is None:
                            raise RMISError(
                                f"{name}: no audio bytes and no readable file at its path; "
                                "fix the dataset or drop the row"
                            )
                        blob = Path(fallback).read_bytes()
                    try:
                        head = sf.info(io.BytesIO(blob))
                    except (sf.LibsndfileError, RuntimeError) as exc:
                        raise RMISError(f"{name}: cannot decode its audio bytes ({exc})") from None
                    if head.frames == 0:
                        raise RMISError(f"{name}: empty audio (0 samples)")
                    label = meta["label"][j]
                    if label_names is not None and isinstance(label, int) and label >= 0:
                        label = label_names[label]
                    row = {
                        "split_name": split_name,
                        "index": index,
                        "audio_path": paths[j],
                        "label": label,
                        "group": meta["group"][j] if group is not None else None,
                        "ref": ArrowRow(
                            file,
                            offset + j,
                            audio_column,
                            name,
                            len(blob),
                            stamp,
                            int(head.samplerate),
                            int(head.frames),
                            fallback,
                        ),
                    }
                    if split_column is not None:
                        row["split"] = meta["split"][j]
                    rows.append(row)
                    index += 1
                offset += len(batch)
    if not rows:
        raise RMISError(f"{where} has no rows")
    paths = [r["audio_path"] for r in rows]
    by_path = all(paths) and len(set(paths)) == len(paths)
    ids = [
        str(p).replace("\\", "/") if by_path else f"{r['split_name']}/{r['index']}"
        for p, r in zip(paths, rows)
    ]
    for role in ("label", "group", "split"):
        empty = [i for i, r in zip(ids, rows) if role in r and _blank(r[role], r, role, group_used)]
        if empty:
            raise RMISError(
                f"{where}: column {role!r} is empty in {len(empty)} rows (first: {empty[0]!r})"
            )
    table = pd.DataFrame(
        {
            "file": ids,
            "label": [str(r["label"]).strip() for r in rows],
            "group": [
                str(r["group"]).strip() if group_used is not None else i for i, r in zip(ids, rows)
            ],
        }
    )
    if split_column is not None:
        table["split"] = [str(r["split"]).strip() for r in rows]
        bad = sorted(set(table["split"]) - {"train", "test"})
        if bad:
            raise RMISError(
                f"{where}: split values {bad} in column {split_column!r}; use train|test"
            )
    table["path"] = [r["ref"] for r in rows]
    info.update(
        file_ids="audio path" if by_path else "<split>/<row index>",
        audio_column=audio_column,
        label_column=label_column,
        group_column=group_used,
        split_column=split_column,
        sealing=group_used is not None,
        rows=len(rows),
    )
    return HFSource(table, info)


def _blank(value: Any, row: dict, role: str, group_used: str | None) -> bool:
    if role == "group" and group_used is None:
        return False
    return value is None or str(value).strip() == ""


def _fallback(path: str | None, info: dict[str, Any]) -> str | None:
    """A row without bytes: its ``path`` as a file (absolute, or relative to a local
    dataset's folder)."""
    if not path:
        return None
    p = Path(path)
    if not p.is_absolute() and info.get("local"):
        p = Path(info["dataset"]) / p
    return str(p) if p.is_file() else None


def check_hf(source: str, test_size: float = 0.5, **columns: Any) -> Any:
    """``rmis data check --hf-dataset``: a :class:`rmis.datacheck.DatasetCheck` of the dataset
    (rows, hours, sample rates, classes and groups, sealable at ``test_size``) as ``rmis eval``
    would read it; ``columns`` as for :func:`rmis.evaluate.hf_dataset`."""
    from rmis.datacheck import DatasetCheck, _check_classes
    from rmis.evaluate import hf_dataset

    ds = hf_dataset(source, test_size, **columns)
    refs = list(ds.table["path"])
    out = DatasetCheck(ds.name, True, source, files=len(refs))
    out.hours = sum(r.frames / r.sample_rate for r in refs) / 3600
    out.sample_rates = sorted({r.sample_rate for r in refs})
    _check_classes(out, ds.spec, ds.table)
    return out
