"""User datasets from a manifest CSV: ``path,label,group[,split]``.

``path`` (or ``file``, the column name of ``rmis score`` metadata and ``rmis data table``) is a
file path, relative paths resolving against the manifest's folder; it is also the file's id in
embeddings and results. ``group`` is the sealing unit (e.g. one channel of one
recording: all its files go to the same side of a split). ``split`` (train|test), when present,
is an official split and replaces the sealed random splits.

A Hugging Face ``audiofolder`` (audio files beside a ``metadata.csv`` whose ``file_name``
column names them) is read the same way: ``file_name`` stands for ``path`` and the
metadata's other columns besides ``label``, ``group`` and ``split`` are ignored.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from rmis.errors import RMISError
from rmis.scoring import read_meta

REQUIRED = ("path", "label", "group")


def manifest_table(manifest: str | os.PathLike) -> pd.DataFrame:
    """The metadata table of a manifest: columns ``file,label,group[,split],path``.

    ``file`` is the path as written (``/`` separators), ``path`` the absolute path. Rows keep
    the manifest's order.

    Raises:
        RMISError: missing columns, empty cells, duplicate paths, files that do not exist or
            split values other than train/test; the message names the manifest and the rows.
    """
    manifest = Path(manifest)
    df = read_meta(manifest)
    df.columns = [str(c).strip() for c in df.columns]
    audiofolder = "file_name" in df.columns and not {"path", "file"} & set(df.columns)
    if audiofolder:  # a Hugging Face audiofolder's metadata.csv: other columns are allowed
        df = df.rename(columns={"file_name": "path"})
        df = df[[c for c in df.columns if c in (*REQUIRED, "split")]]
    if "file" in df.columns and "path" not in df.columns:
        df = df.rename(columns={"file": "path"})
    missing = [c for c in REQUIRED if c not in df.columns]
    extra = [c for c in df.columns if c not in (*REQUIRED, "split")]
    if missing or extra:
        raise RMISError(
            f"manifest {str(manifest)!r} needs columns path (or file, or an audiofolder's "
            f"file_name),label,group (optional: split); found {','.join(df.columns)}"
        )
    for c in df.columns:
        df[c] = df[c].str.strip()
        empty = df.index[df[c] == ""]
        if len(empty):
            raise RMISError(
                f"manifest {str(manifest)!r}: column {c!r} is empty in {len(empty)} rows "
                f"(first: data row {empty[0] + 1})"
            )
    files = df["path"].str.replace("\\", "/", regex=False)
    dup = files[files.duplicated()]
    if len(dup):
        raise RMISError(f"manifest {str(manifest)!r}: {dup.iloc[0]!r} is listed more than once")
    base = manifest.resolve().parent
    paths = [(base / f).resolve() if not Path(f).is_absolute() else Path(f) for f in files]
    absent = [f for f, p in zip(files, paths) if not p.is_file()]
    if absent:
        raise RMISError(
            f"manifest {str(manifest)!r}: {len(absent)} listed files do not exist (e.g. "
            f"{absent[:3]}); paths are relative to the manifest's folder {str(base)!r}"
        )
    out = pd.DataFrame({"file": files, "label": df["label"], "group": df["group"]})
    if "split" in df.columns:
        bad = sorted(set(df["split"]) - {"train", "test"})
        if bad:
            raise RMISError(f"manifest {str(manifest)!r}: split values {bad}; use train|test")
        out["split"] = df["split"]
    out["path"] = [str(p) for p in paths]
    return out
