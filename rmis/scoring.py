"""Score a metadata table plus per-file embeddings ("bring your own embeddings").

This is the layer between files and :mod:`rmis.protocol`: it validates the metadata table
(``META.csv``) and the ``{file: vector}`` embeddings against each other, runs the protocol and
returns the result body that ``rmis score`` and ``rmis eval`` write as JSON. :func:`preflight`
runs every check that needs no embedding, so ``rmis eval`` rejects an impossible request
before decoding a file.

Metadata tables (one row per file; ``file`` is the id used as key in the embeddings):

* ``fd``: ``file,label,group`` (sealed random splits);
* ``fd-official-split``: ``file,label,split`` (+ optional ``group``), split = train|test;
* ``dcase2020`` ... ``dcase2025``: ``file,subset,split,machine,section,domain,label`` with
  subset dev|eval, split train|test, section an integer (the machine id for 2020),
  domain source|target, label normal|anomaly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rmis.data.specs import PROTOCOLS
from rmis.errors import RMISError
from rmis.io import atomic_write_text
from rmis.protocol.fd import (
    CURVE_TEST_SIZES,
    DEFAULT_K,
    DEFAULT_RUNS,
    FDEvaluator,
    FDRun,
    check_curve,
    check_official_split,
)
from rmis.protocol.splits import group_table, sealed_split

FD_COLUMNS = ("file", "label", "group")
OFFICIAL_COLUMNS = ("file", "label", "split")
AD_COLUMNS = ("file", "subset", "split", "machine", "section", "domain", "label")

_ALLOWED_VALUES = {
    "subset": ("dev", "eval"),
    "split": ("train", "test"),
    "domain": ("source", "target"),
    "label": ("normal", "anomaly"),
}


def columns_for(protocol: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(required, optional) metadata columns of a protocol."""
    if protocol == "fd":
        return FD_COLUMNS, ()
    if protocol == "fd-official-split":
        return OFFICIAL_COLUMNS, ("group",)
    if protocol.startswith("dcase"):
        return AD_COLUMNS, ()
    raise RMISError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")


def read_meta(path: str | os.PathLike) -> pd.DataFrame:
    """Read a metadata CSV with every cell as a string (no NA guessing)."""
    path = Path(path)
    if not path.is_file():
        raise RMISError(f"metadata file {str(path)!r} does not exist")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise RMISError(f"cannot parse metadata {str(path)!r} as CSV: {exc}") from None


def check_meta(meta: pd.DataFrame, protocol: str, where: str = "META") -> pd.DataFrame:
    """Validate columns and values of a metadata table for ``protocol``; returns it cleaned.

    Raises:
        RMISError: missing or unknown columns, empty cells, duplicate file ids, or values outside
            the allowed sets; the message names the column and the first offending rows.
    """
    required, optional = columns_for(protocol)
    cols = [str(c).strip() for c in meta.columns]
    meta = meta.copy()
    meta.columns = cols
    missing = [c for c in required if c not in cols]
    unknown = [c for c in cols if c not in required and c not in optional]
    if missing or unknown:
        raise RMISError(
            f"{where}: protocol {protocol} needs columns {','.join(required)}"
            + (f" (optional: {','.join(optional)})" if optional else "")
            + f"; found {','.join(cols) or 'none'}"
            + (f"; missing {missing}" if missing else "")
            + (f"; unknown {unknown}" if unknown else "")
        )
    if meta.empty:
        raise RMISError(f"{where}: the table has no rows")
    for c in cols:
        meta[c] = meta[c].astype(str).str.strip()
        empty = np.flatnonzero((meta[c] == "").to_numpy())
        if empty.size:
            raise RMISError(
                f"{where}: column {c!r} is empty in {empty.size} rows (first: data row "
                f"{empty[0] + 1})"
            )
    dup = meta["file"][meta["file"].duplicated()]
    if len(dup):
        raise RMISError(f"{where}: file id {dup.iloc[0]!r} occurs more than once")
    for c, allowed in _ALLOWED_VALUES.items():
        if c not in meta.columns or (c == "label" and not protocol.startswith("dcase")):
            continue
        bad = sorted(set(meta[c]) - set(allowed))
        if bad:
            raise RMISError(f"{where}: column {c!r} has values {bad[:5]}; allowed: {allowed}")
    if protocol.startswith("dcase"):
        try:
            meta["section"] = meta["section"].astype(int)
        except ValueError:
            bad = [s for s in meta["section"] if not s.lstrip("-").isdigit()][:3]
            raise RMISError(f"{where}: column 'section' must hold integers, got {bad}") from None
    return meta


def align_embeddings(
    meta: pd.DataFrame, embeddings: Mapping[str, np.ndarray], where: str = "EMB"
) -> np.ndarray:
    """Stack the embeddings in metadata row order, by file id (never by position).

    A matrix-layout file's rows keep their stored dtype (no float64 copy of a large matrix:
    every protocol normalises rows in float64 itself, and float32 -> float64 is exact); the
    one-member-per-file layout is stacked as float64.

    Raises:
        RMISError: ids in the metadata without an embedding, or embeddings not in the metadata.
    """
    files = list(meta["file"])
    missing = [f for f in files if f not in embeddings]
    extra = sorted(set(embeddings) - set(files))
    if missing or extra:
        msg = [f"{where}: the embeddings do not match the metadata"]
        if missing:
            msg.append(f"{len(missing)} files have no embedding (e.g. {missing[:3]})")
        if extra:
            msg.append(f"{len(extra)} embeddings are not in the metadata (e.g. {extra[:3]})")
        raise RMISError("; ".join(msg) + "; every file id must appear in both exactly once")
    rows = getattr(embeddings, "rows", None)  # rmis.io.EmbeddingMatrix: one fancy index
    if rows is not None:
        return rows(files)
    return np.stack([np.asarray(embeddings[f], dtype=np.float64) for f in files])


def class_list_for(
    labels: Sequence[str], classes: Sequence[str] | None, where: str = "dataset"
) -> list[str]:
    """The FD class order: ``classes`` (checked) or the sorted label names.

    Raises:
        RMISError: duplicate classes, or labels that are not among the classes.
    """
    class_list = list(classes) if classes else sorted(set(labels))
    if len(set(class_list)) != len(class_list):
        raise RMISError(f"{where}: the class list {class_list} has duplicates")
    unknown = sorted(set(labels) - set(class_list))
    if unknown:
        raise RMISError(f"{where}: labels {unknown} are not among the classes {class_list}")
    return class_list


def preflight(
    meta: pd.DataFrame,
    protocol: str,
    classes: Sequence[str] | None = None,
    test_size: float = 0.5,
    runs: int = DEFAULT_RUNS,
    where: str = "dataset",
    *,
    k: int = DEFAULT_K,
    split_curve: bool = False,
) -> pd.DataFrame:
    """Every check of :func:`score_table` that needs no embedding; returns the cleaned table.

    Run it before embedding anything, so that an impossible request fails in a second:
    metadata columns and values; FD: the class list, one class per group, and for sealed
    splits the exact split of every run (with the official retries, bounded) and, with
    ``split_curve``, of every run at every test size of the curve, each leaving at least
    ``k`` train files; an official split: at least ``k`` train files, test files, and every
    class on both sides; DCASE: per section normal train clips,
    test clips with both labels, non-empty memory banks and both labels in every evaluation
    set the year needs.

    Raises:
        RMISError: (or :class:`~rmis.errors.SplitError`) naming ``where`` and the problem.
    """
    meta = check_meta(meta, protocol, where=where)
    if protocol.startswith("dcase"):
        if split_curve:
            raise RMISError("--split-curve applies to fault-diagnosis protocols only")
        from rmis.protocol.dcase import check_dcase_layout  # scipy/sklearn: AD only

        check_dcase_layout(
            list(meta["subset"]),
            list(meta["split"]),
            list(meta["machine"]),
            list(meta["section"]),
            list(meta["domain"]),
            list(meta["label"]),
            year=int(protocol[5:]),
        )
        return meta
    labels = list(meta["label"])
    class_list = class_list_for(labels, classes, where)
    if protocol == "fd-official-split":
        if split_curve:
            raise RMISError("--split-curve needs sealed random splits (protocol fd)")
        is_train = (meta["split"] == "train").to_numpy()
        check_official_split(labels, is_train, where=where)
        _check_enough_train(int(is_train.sum()), k, where, "the official split")
        return meta
    if runs < 1:
        raise RMISError(f"{where}: the number of runs must be at least 1, got {runs}")
    if not 0.0 < test_size < 1.0:
        raise RMISError(
            f"{where}: the test size must lie strictly between 0 and 1, got {test_size}"
        )
    index = {c: i for i, c in enumerate(class_list)}
    table = group_table(
        list(meta["file"]),
        list(meta["group"]),
        np.array([index[lab] for lab in labels], dtype=np.int64),
        len(class_list),
        where=where,
    )
    files_per_group = np.bincount(table.of_row, minlength=table.n_groups)

    def check_runs(t: float) -> None:
        for r in range(runs):
            split = sealed_split(table, t, r, class_list, where=where)
            n_train = int(files_per_group[split.train_groups].sum())
            _check_enough_train(n_train, k, where, f"run {r} at test size {t}")

    check_runs(test_size)
    if split_curve:
        check_curve(table, class_list, where=where)
        for t in CURVE_TEST_SIZES:
            check_runs(t)
    return meta


def _check_enough_train(n_train: int, k: int, where: str, what: str) -> None:
    if n_train < k:
        raise RMISError(
            f"{where}: {what} has {n_train} train files, fewer than the k = {k} neighbours of "
            "the k-NN; add recordings (or use a smaller test size)"
        )


def _run_body(r: FDRun) -> dict[str, Any]:
    out: dict[str, Any] = {
        "run": r.run,
        "seed": r.seed,
        "macro_acc": r.macro_acc,
        "test_groups": r.test_groups,
        "per_class": r.per_class,
    }
    if r.predictions is not None:
        out["predictions"] = r.predictions
    return out


def score_table(
    meta: pd.DataFrame,
    embeddings: Mapping[str, np.ndarray],
    *,
    protocol: str,
    classes: Sequence[str] | None = None,
    test_size: float = 0.5,
    runs: int = DEFAULT_RUNS,
    k: int = DEFAULT_K,
    split_curve: bool = False,
    where: str = "dataset",
    device: str = "cpu",
    official_rounding: bool = False,
) -> dict[str, Any]:
    """Score one dataset; returns the result body (no provenance).

    Args:
        meta: metadata table (validated here by :func:`preflight`).
        embeddings: ``{file id: [D] vector}``.
        protocol: one of :data:`rmis.data.specs.PROTOCOLS`.
        classes: FD class order (default: sorted label names).
        test_size: fraction of groups in the test set (sealed FD).
        runs: sealed runs.
        k: neighbours of the FD k-NN.
        split_curve: also compute the multi-split curve (sealed FD only).
        where: dataset name for messages.
        device: torch device for the similarity product.
        official_rounding: round as the official harness does (``--compat rmis-official``):
            FD runs to 2 decimals before their mean; DCASE machine / subset figures to 2
            decimals before averaging (:func:`rmis.protocol.dcase.aggregate`).
    """
    meta = preflight(
        meta,
        protocol,
        classes=classes,
        test_size=test_size,
        runs=runs,
        where=where,
        k=k,
        split_curve=split_curve,
    )
    x = align_embeddings(meta, embeddings, where=where)
    body: dict[str, Any] = {
        "protocol": protocol,
        "n_files": len(meta),
        "dim": int(x.shape[1]),
        "official_rounding": official_rounding,
    }
    if protocol.startswith("dcase"):
        return body | _score_ad(meta, x, int(protocol[5:]), official_rounding)
    labels = list(meta["label"])
    class_list = class_list_for(labels, classes, where)
    groups = list(meta["group"]) if "group" in meta.columns else None
    ev = FDEvaluator(
        x, list(meta["file"]), labels, class_list, groups, k=k, where=where, device=device
    )
    body |= {"classes": class_list, "k": k}
    if protocol == "fd-official-split":
        res = ev.official(list(meta["split"] == "train"), official_rounding=official_rounding)
    else:
        res = ev.sealed(test_size=test_size, runs=runs, official_rounding=official_rounding)
        body["test_size"] = test_size
    body |= {
        "score": res.score,
        "mean": res.mean,
        "std": res.std,
        "runs": [_run_body(r) for r in res.runs],
    }
    if split_curve:
        points, area = ev.curve(runs=runs)
        body["curve"] = [
            {"test_size": p.test_size, "mean": p.mean, "runs": list(p.runs)} for p in points
        ]
        body["auc"] = area
    return body


def _score_ad(
    meta: pd.DataFrame, x: np.ndarray, year: int, official_rounding: bool = False
) -> dict[str, Any]:
    from rmis.protocol.dcase import score_dcase

    res = score_dcase(
        x,
        subset=list(meta["subset"]),
        split=list(meta["split"]),
        machine=list(meta["machine"]),
        section=list(meta["section"]),
        domain=list(meta["domain"]),
        label=list(meta["label"]),
        year=year,
        official_rounding=official_rounding,
    )
    test = (meta["split"] == "test").to_numpy()
    clip = {f: float(s) for f, s in zip(meta["file"][test], res.clip_scores[test], strict=True)}
    return {
        "year": year,
        "score": res.score,
        "subsets": dict(res.subsets),
        "machines": [dict(m) for m in res.machines],
        "sections": [dict(s) for s in res.sections],
        "clip_scores": clip,
    }


def dcase_export_files(meta: pd.DataFrame, clip_scores: Mapping[str, float]) -> dict[str, str]:
    """The official submission layout: ``{relative path: CSV text}``.

    One file ``<subset>/anomaly_score_<machine>_section_<NN>_test.csv`` per (subset, machine,
    section), no header, rows ``<clip base name>,<score>`` in metadata order.
    """
    out: dict[str, list[str]] = {}
    test = meta[meta["split"] == "test"]
    for f, subset, machine, section in zip(
        test["file"], test["subset"], test["machine"], test["section"], strict=True
    ):
        name = f"{subset}/anomaly_score_{machine}_section_{int(section):02d}_test.csv"
        base = f.replace("\\", "/").rsplit("/", 1)[-1]
        out.setdefault(name, []).append(f"{base},{clip_scores[f]!r}")
    return {name: "\n".join(rows) + "\n" for name, rows in out.items()}


def write_dcase_export(files: Mapping[str, str], out_dir: str | os.PathLike) -> list[Path]:
    """Write :func:`dcase_export_files` output under ``out_dir`` (each file atomically)."""
    written = []
    for rel, text in files.items():
        path = Path(out_dir) / rel
        atomic_write_text(path, text)
        written.append(path)
    return written
