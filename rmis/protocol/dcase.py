"""Anomaly detection score of the DCASE task 2 datasets (RMIS protocol, PROTOCOL.md section 4).

Pure functions over arrays: no file I/O, no printing. One embedding per clip goes in, the
official figures come out:

* Anomaly score of a test clip: cosine distance (``1 - cos``) to its nearest item (k = 1) of a
  memory bank of normal training embeddings of the same (subset, machine, section), then
  z-normalised over the section's test clips (mean, population std, numpy's default
  ``np.std``) in EVERY year, as the official harness does: the z-score is the clip score that
  :attr:`DcaseResult.clip_scores` holds and the DCASE export writes. Inside a section this is
  an increasing affine map, so it changes no AUC.
* 2020 (section = machine id): one bank per section; AUC and pAUC over all the section's test
  clips; section score ``(AUC + pAUC) / 2``; arithmetic means over sections, over machines and
  over the subsets present.
* 2021: one bank per section with all its training clips (source and target together); AUC and
  pAUC separately on the source-domain and on the target-domain test clips; section score =
  harmonic mean of the four; harmonic means over sections, machines and subsets.
* 2022-2025: a source bank and a target bank per section; each scores every test clip of the
  section, each of the two score vectors is z-normalised over the section's test clips (mean,
  population std) and the clip score is the element-wise minimum of the two z-scores
  (transductive by design of the official protocol). AUC_source on the source-domain normals
  plus ALL anomalies of the section, AUC_target likewise, pAUC on all test clips; section score
  = harmonic mean of the three; harmonic means over sections, machines and subsets.

pAUC is scikit-learn's ``roc_auc_score(y, s, max_fpr=0.1)`` (McClish-standardised partial AUC).
All figures are percentages. Differences from the official harness, all on purpose:

* Full precision by default. The official harness (``cal_aucs``) rounds its per-machine
  (2020-2022) or per-subset (2023-2025) figure to 2 decimals before averaging it further;
  ``official_rounding=True`` (``--compat rmis-official``) reproduces exactly that (see
  :func:`aggregate`), the default never rounds (round only when displaying).
* Degenerate inputs raise :class:`~rmis.errors.RMISError` naming the section instead of
  producing NaN (or crashing): empty bank, single-class evaluation set, constant score vector.
  A constant score vector is an error in every year (PROTOCOL.md section 4); the official
  harness z-normalises the scores of every year, so such a section is meaningless there too.
  :func:`check_dcase_layout` runs every check that needs no embedding (values, train and test
  clips, both labels, banks), so a caller can reject a table before embedding anything.

Cosine distance: rows are L2-normalised in float64 (an all-zero or non-finite row is an error,
never a silent NaN) and the distance is clipped to [0, 2].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import hmean
from sklearn.metrics import roc_auc_score

from rmis.errors import RMISError
from rmis.protocol.knn import unit_rows

__all__ = [
    "DcaseResult",
    "aggregate",
    "check_dcase_layout",
    "nearest_cosine_distance",
    "score_dcase",
]

YEARS = (2020, 2021, 2022, 2023, 2024, 2025)
SUBSETS = ("dev", "eval")
SPLITS = ("train", "test")
DOMAINS = ("source", "target")
LABELS = ("normal", "anomaly")
MAX_FPR = 0.1

# Budget of one block of the [queries, bank] similarity matrix, in bytes of float64.
_BLOCK_BYTES = 64 * 1024 * 1024


# --------------------------------------------------------------------------------------------
# nearest-neighbour cosine distance
# --------------------------------------------------------------------------------------------


def nearest_cosine_distance(bank: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Anomaly score with k = 1: cosine distance of each query to its nearest bank item.

    Args:
        bank: ``[B, D]`` embeddings of the memory bank (B >= 1), any real dtype.
        queries: ``[Q, D]`` embeddings to score (Q may be 0), any real dtype.

    Returns:
        ``[Q]`` float64, ``1 - max_b cos(query, bank[b])`` clipped to [0, 2] (unitless).
        Both inputs are L2-normalised in float64; the similarities are computed in blocks of
        queries so that one block holds at most about 64 MB, whatever B and Q are.

    Raises:
        RMISError: if the arrays are not 2-D, the bank is empty, the widths differ, or a value
            is NaN or infinite.
    """
    bank = np.asarray(bank)
    queries = np.asarray(queries)
    if bank.ndim != 2 or queries.ndim != 2:
        raise RMISError(
            f"nearest_cosine_distance: bank and queries must be 2-D [rows, dim], got shapes "
            f"{bank.shape} and {queries.shape}"
        )
    if bank.shape[0] == 0:
        raise RMISError("nearest_cosine_distance: the memory bank is empty; give it >= 1 row")
    if bank.shape[1] != queries.shape[1]:
        raise RMISError(
            f"nearest_cosine_distance: bank has dim {bank.shape[1]} but queries have dim "
            f"{queries.shape[1]}; embed both with the same model"
        )
    bank_n = unit_rows(bank)
    queries_n = unit_rows(queries) if queries.shape[0] else queries.astype(np.float64)

    n_queries, n_bank = queries_n.shape[0], bank_n.shape[0]
    best = np.empty(n_queries, dtype=np.float64)
    step = max(1, _BLOCK_BYTES // (8 * n_bank))
    bank_t = bank_n.T
    for start in range(0, n_queries, step):
        stop = min(start + step, n_queries)
        best[start:stop] = (queries_n[start:stop] @ bank_t).max(axis=1)
    return np.clip(1.0 - best, 0.0, 2.0)


# --------------------------------------------------------------------------------------------
# result
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DcaseResult:
    """Figures of one DCASE dataset (one year). Every figure is a percentage, full precision.

    Attributes:
        year: 2020..2025.
        score: dataset score (2020: arithmetic mean of the subset scores present; 2021+:
            harmonic mean of them; a single subset gives its own score).
        subsets: ``{"dev": x, "eval": y}``, only the subsets present in the input.
        sections: one dict per (subset, machine, section), ordered by subset (dev, eval),
            machine (order of first appearance in the input rows) and section (ascending).
            Keys: ``subset``, ``machine``, ``section`` (int), ``n_test`` (int), then per year
            2020: ``auc``, ``pauc``; 2021: ``auc_source``, ``pauc_source``, ``auc_target``,
            ``pauc_target``; 2022-2025: ``auc_source``, ``auc_target``, ``pauc``; and ``score``
            (2020: ``(auc + pauc) / 2``; 2021+: harmonic mean of the year's figures).
        machines: one dict per (subset, machine), same order: ``subset``, ``machine``,
            ``score`` (2020: arithmetic mean of its section scores; 2021+: harmonic mean).
        clip_scores: ``[N]`` float64 aligned with the input rows: the anomaly score of each test
            row, NaN for train rows (2020/2021: z-score over the section's test clips of the
            cosine distance to the nearest bank item; 2022-2025: minimum of the two
            per-section z-scores).
    """

    year: int
    score: float
    subsets: dict[str, float]
    sections: list[dict]
    machines: list[dict]
    clip_scores: np.ndarray = field(repr=False)


# --------------------------------------------------------------------------------------------
# input checking
# --------------------------------------------------------------------------------------------


def _as_1d(name: str, values: Sequence, n: int, dtype: object = None) -> np.ndarray:
    arr = np.asarray(values, dtype=dtype)
    if arr.ndim != 1:
        raise RMISError(f"score_dcase: `{name}` must be a 1-D sequence, got shape {arr.shape}")
    if arr.shape[0] != n:
        raise RMISError(
            f"score_dcase: `{name}` has {arr.shape[0]} entries but embeddings has {n} rows; "
            "give one entry per embedding row"
        )
    return arr


def _as_str_array(name: str, values: Sequence[str], n: int) -> np.ndarray:
    return _as_1d(name, values, n, dtype=object).astype(str)


def _check_values(name: str, arr: np.ndarray, allowed: tuple[str, ...]) -> None:
    bad = sorted(set(np.unique(arr).tolist()) - set(allowed))
    if bad:
        shown = ", ".join(repr(b) for b in bad[:5]) + (", ..." if len(bad) > 5 else "")
        raise RMISError(
            f"score_dcase: unknown value(s) in `{name}`: {shown}; allowed: "
            + ", ".join(repr(a) for a in allowed)
        )


def _as_int_array(name: str, values: Sequence[int], n: int) -> np.ndarray:
    arr = _as_1d(name, values, n)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    try:
        as_float = arr.astype(np.float64)
    except (TypeError, ValueError):
        as_float = None
    if (
        arr.dtype.kind == "b"
        or as_float is None
        or not np.isfinite(as_float).all()
        or (as_float != np.round(as_float)).any()
    ):
        raise RMISError(
            f"score_dcase: `{name}` must hold integers (the section number; 2020: the machine "
            "id), e.g. 0 for 'section_00'"
        )
    return as_float.astype(np.int64)


def _where(subset: str, machine: str, section: int, year: int) -> str:
    return f"dcase{year % 100} subset {str(subset)!r}, machine {str(machine)!r}, section {section}"


def _check_two_classes(y: np.ndarray, what: str, where: str) -> None:
    n_anomaly = int(y.sum())
    if n_anomaly == 0 or n_anomaly == y.shape[0]:
        kind = "anomalous" if n_anomaly else "normal"
        raise RMISError(
            f"{where}: the {what} are all {kind} ({y.shape[0]} clips), so AUC is undefined; "
            "every evaluation set needs both normal and anomalous test clips"
        )


def _zscore(s: np.ndarray, what: str, where: str) -> np.ndarray:
    """``(s - mean) / std`` over the section's test clips (population std, numpy default)."""
    _check_not_constant(s, what, where)
    z = (s - np.mean(s)) / np.std(s)
    if not np.isfinite(z).all():  # pragma: no cover - std underflow on subnormal spreads
        raise RMISError(f"{where}: {what} cannot be z-normalised")
    return z


def _check_not_constant(s: np.ndarray, what: str, where: str) -> None:
    if s.shape[0] and np.ptp(s) == 0:
        raise RMISError(
            f"{where}: {what} are constant over the {s.shape[0]} test clips (std 0), so the "
            "section cannot be ranked; check the embeddings (a collapsed encoder gives this)"
        )


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    return float(roc_auc_score(y, s)) * 100.0


def _pauc(y: np.ndarray, s: np.ndarray) -> float:
    return float(roc_auc_score(y, s, max_fpr=MAX_FPR)) * 100.0


def _hmean(values: Sequence[float]) -> float:
    arr = np.asarray(values, dtype=np.float64)
    if (arr == 0).any():  # the harmonic mean of figures including a 0 is 0
        return 0.0
    return float(hmean(arr))


# --------------------------------------------------------------------------------------------
# scoring
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Section:
    """Rows of one (subset, machine, section), in input order."""

    subset: str
    machine: str
    section: int
    where: str
    train: np.ndarray
    test: np.ndarray


@dataclass(frozen=True)
class _Layout:
    """Validated labels of a DCASE table and its sections (no embeddings needed)."""

    subset: np.ndarray
    split: np.ndarray
    machine: np.ndarray
    section: np.ndarray
    is_anomaly: np.ndarray
    is_source: np.ndarray
    sections: list[_Section]


def _check_year(year: object) -> int:
    if isinstance(year, bool) or not isinstance(year, (int, np.integer)) or year not in YEARS:
        raise RMISError(f"score_dcase: year must be one of {YEARS[0]}..{YEARS[-1]}, got {year!r}")
    return int(year)


def _layout(
    subset: Sequence[str],
    split: Sequence[str],
    machine: Sequence[str],
    section: Sequence[int],
    domain: Sequence[str],
    label: Sequence[str],
    year: int,
    n: int,
) -> _Layout:
    subset_a = _as_str_array("subset", subset, n)
    split_a = _as_str_array("split", split, n)
    machine_a = _as_str_array("machine", machine, n)
    section_a = _as_int_array("section", section, n)
    domain_a = _as_str_array("domain", domain, n)
    label_a = _as_str_array("label", label, n)
    _check_values("subset", subset_a, SUBSETS)
    _check_values("split", split_a, SPLITS)
    _check_values("label", label_a, LABELS)
    if year != 2020:
        _check_values("domain", domain_a, DOMAINS)

    is_train = split_a == "train"
    is_anomaly = label_a == "anomaly"
    is_source = domain_a == "source"

    # Group rows by (subset, machine, section): subset dev < eval, machine in order of first
    # appearance, section ascending; lexsort is stable so rows keep input order inside a group.
    subset_code = (subset_a == "eval").astype(np.int64)
    uniq, first_row, inverse = np.unique(machine_a, return_index=True, return_inverse=True)
    by_appearance = np.argsort(first_row, kind="stable")
    machine_names: list[str] = uniq[by_appearance].tolist()
    rank = np.empty(uniq.shape[0], dtype=np.int64)
    rank[by_appearance] = np.arange(uniq.shape[0])
    machine_code = rank[inverse.reshape(-1)]
    order = np.lexsort((section_a, machine_code, subset_code))
    keys = np.stack([subset_code[order], machine_code[order], section_a[order]], axis=1)
    change = np.flatnonzero((np.diff(keys, axis=0) != 0).any(axis=1)) + 1
    bounds = np.concatenate([[0], change, [n]])

    sections: list[_Section] = []
    for g in range(bounds.shape[0] - 1):
        rows = order[bounds[g] : bounds[g + 1]]
        sub = SUBSETS[int(subset_code[rows[0]])]
        mach = machine_names[int(machine_code[rows[0]])]
        sec = int(section_a[rows[0]])
        where = _where(sub, mach, sec, year)
        train = rows[is_train[rows]]
        test = rows[~is_train[rows]]
        if is_anomaly[train].any():
            raise RMISError(
                f"{where}: {int(is_anomaly[train].sum())} train clip(s) are labelled 'anomaly'; "
                "training clips must all be normal"
            )
        if test.shape[0] == 0:
            raise RMISError(
                f"{where}: has {train.shape[0]} train clips but no test clips; give its test "
                "clips or drop the section"
            )
        y = is_anomaly[test].astype(np.int64)
        _check_two_classes(y, "test clips", where)
        if year in (2020, 2021):
            if train.shape[0] == 0:
                raise RMISError(
                    f"{where}: the memory bank is empty (no train clips) but there are "
                    f"{test.shape[0]} test clips; give the section's normal training clips"
                )
            if year == 2021:
                for dom in DOMAINS:
                    mask = is_source[test] if dom == "source" else ~is_source[test]
                    _check_two_classes(y[mask], f"{dom}-domain test clips", where)
        else:
            for dom in DOMAINS:
                in_dom = is_source[train] if dom == "source" else ~is_source[train]
                if not in_dom.any():
                    raise RMISError(
                        f"{where}: the {dom} memory bank is empty (no {dom}-domain train clips) "
                        f"but there are {test.shape[0]} test clips; give the section's {dom} "
                        "training clips"
                    )
            for dom in DOMAINS:
                normal_in_dom = is_source[test] if dom == "source" else ~is_source[test]
                mask = normal_in_dom | (y == 1)
                _check_two_classes(
                    y[mask], f"{dom}-domain normal test clips plus all anomalies", where
                )
        sections.append(_Section(sub, mach, sec, where, train, test))
    return _Layout(
        subset=subset_a,
        split=split_a,
        machine=machine_a,
        section=section_a,
        is_anomaly=is_anomaly,
        is_source=is_source,
        sections=sections,
    )


def check_dcase_layout(
    subset: Sequence[str],
    split: Sequence[str],
    machine: Sequence[str],
    section: Sequence[int],
    domain: Sequence[str],
    label: Sequence[str],
    year: int,
) -> None:
    """Every check of :func:`score_dcase` that needs no embedding, without scoring.

    Values of every column, and per (subset, machine, section): normal train clips only, test
    clips present with both labels, a non-empty memory bank (2022-2025: a source and a target
    bank) and, where the year's figures need them, both labels in each domain's evaluation set.

    Raises:
        RMISError: the first problem found, naming the subset, machine and section.
    """
    year = _check_year(year)
    _layout(subset, split, machine, section, domain, label, year, len(subset))


def score_dcase(
    embeddings: np.ndarray,
    subset: Sequence[str],
    split: Sequence[str],
    machine: Sequence[str],
    section: Sequence[int],
    domain: Sequence[str],
    label: Sequence[str],
    year: int,
    *,
    official_rounding: bool = False,
) -> DcaseResult:
    """Score one DCASE task 2 dataset (one year) from one embedding per clip.

    Args:
        embeddings: ``[N, D]`` real embeddings, one row per clip (train and test, dev and eval).
        subset: ``[N]`` ``"dev"`` or ``"eval"``.
        split: ``[N]`` ``"train"`` or ``"test"``.
        machine: ``[N]`` machine type, e.g. ``"fan"``.
        section: ``[N]`` integer section number (2020: the machine id).
        domain: ``[N]`` ``"source"`` or ``"target"`` (2020: ignored, any value).
        label: ``[N]`` ``"normal"`` or ``"anomaly"``; train rows must be normal.
        year: 2020..2025.
        official_rounding: round as the official ``cal_aucs`` does (see :func:`aggregate`).

    Returns:
        A :class:`DcaseResult` (figures in percent, full precision unless
        ``official_rounding``).

    Raises:
        RMISError: on malformed input (bad year, unknown values, mismatched lengths, NaN/Inf,
            anomalous train clip) or on a section that cannot be scored (train clips without
            test clips, empty bank, single-class evaluation set, constant scores); the message
            names the subset, machine and section.
    """
    year = _check_year(year)

    emb = np.asarray(embeddings)
    if emb.ndim != 2 or emb.shape[0] == 0 or emb.shape[1] == 0:
        raise RMISError(
            f"score_dcase: embeddings must be a non-empty 2-D array [N, D], got shape {emb.shape}"
        )
    if emb.dtype.kind not in "fiu":
        raise RMISError(f"score_dcase: embeddings must be real numbers, got dtype {emb.dtype}")
    emb = emb.astype(np.float64, copy=False)
    n = emb.shape[0]

    lay = _layout(subset, split, machine, section, domain, label, year, n)

    finite = np.isfinite(emb).all(axis=1)
    if not finite.all():
        i = int(np.flatnonzero(~finite)[0])
        raise RMISError(
            f"score_dcase: NaN or Inf in {int((~finite).sum())} embedding row(s), first row {i} "
            f"({_where(lay.subset[i], lay.machine[i], int(lay.section[i]), year)}, "
            f"{lay.split[i]}); fix the encoder or its input"
        )

    is_anomaly, is_source = lay.is_anomaly, lay.is_source
    clip_scores = np.full(n, np.nan, dtype=np.float64)
    sections: list[dict] = []
    for sec in lay.sections:
        train, test, where = sec.train, sec.test, sec.where
        y = is_anomaly[test].astype(np.int64)
        entry: dict = {
            "subset": sec.subset,
            "machine": sec.machine,
            "section": sec.section,
            "n_test": int(test.shape[0]),
        }

        if year in (2020, 2021):
            s = _zscore(nearest_cosine_distance(emb[train], emb[test]), "the anomaly scores", where)
            if year == 2020:
                entry["auc"] = _auc(y, s)
                entry["pauc"] = _pauc(y, s)
                entry["score"] = (entry["auc"] + entry["pauc"]) / 2.0
            else:
                figures = []
                for dom in DOMAINS:
                    mask = is_source[test] if dom == "source" else ~is_source[test]
                    entry[f"auc_{dom}"] = _auc(y[mask], s[mask])
                    entry[f"pauc_{dom}"] = _pauc(y[mask], s[mask])
                    figures += [entry[f"auc_{dom}"], entry[f"pauc_{dom}"]]
                entry["score"] = _hmean(figures)
        else:
            z = {}
            for dom in DOMAINS:
                bank = train[is_source[train]] if dom == "source" else train[~is_source[train]]
                z[dom] = _zscore(
                    nearest_cosine_distance(emb[bank], emb[test]), f"the {dom}-bank scores", where
                )
            s = np.minimum(z["source"], z["target"])
            for dom in DOMAINS:
                normal_in_dom = is_source[test] if dom == "source" else ~is_source[test]
                mask = normal_in_dom | (y == 1)
                entry[f"auc_{dom}"] = _auc(y[mask], s[mask])
            entry["pauc"] = _pauc(y, s)
            entry["score"] = _hmean([entry["auc_source"], entry["auc_target"], entry["pauc"]])

        clip_scores[test] = s
        sections.append(entry)

    sections, machines, subsets, score = aggregate(sections, year, official_rounding)
    return DcaseResult(
        year=year,
        score=score,
        subsets=subsets,
        sections=sections,
        machines=machines,
        clip_scores=clip_scores,
    )


def _round2(x: float) -> float:
    """The official harness's rounding: ``np.ndarray.round(2)``."""
    return float(np.round(x, 2))


def aggregate(
    sections: Sequence[dict], year: int, official_rounding: bool = False
) -> tuple[list[dict], list[dict], dict[str, float], float]:
    """Machine, subset and dataset figures from the section figures.

    Args:
        sections: one dict per (subset, machine, section) with ``subset``, ``machine`` and
            ``score`` (and the year's figures), ordered as :attr:`DcaseResult.sections`.
        year: 2020..2025 (2020 averages arithmetically, later years harmonically).
        official_rounding: reproduce the official ``cal_aucs`` rounding. 2020-2022: a
            machine's figure is computed from its unrounded sections and rounded to 2 decimals
            (``np.round``), the subset averages those rounded machine figures. 2023-2025: the
            subset figure is the harmonic mean of all its unrounded section scores, rounded to
            2 decimals; the dataset score combines the rounded subset figures. The reported
            section and machine figures are rounded to 2 decimals too, as the official tables
            print them. The dataset score itself is not rounded.

    Returns:
        ``(sections, machines, subsets, score)``: the section dicts (copies; rounded with
        ``official_rounding``), one ``{subset, machine, score}`` per machine, ``{subset:
        score}`` for the subsets present, and the dataset score.
    """
    combine = (lambda v: float(np.mean(v))) if year == 2020 else _hmean

    machines: list[dict] = []
    for entry in sections:
        if not machines or (machines[-1]["subset"], machines[-1]["machine"]) != (
            entry["subset"],
            entry["machine"],
        ):
            machines.append({"subset": entry["subset"], "machine": entry["machine"], "_s": []})
        machines[-1]["_s"].append(entry["score"])
    for m in machines:
        m["score"] = combine(m.pop("_s"))

    subsets: dict[str, float] = {}
    if not official_rounding:
        for sub in SUBSETS:
            per_machine = [m["score"] for m in machines if m["subset"] == sub]
            if per_machine:
                subsets[sub] = combine(per_machine)
        return [dict(s) for s in sections], machines, subsets, combine(list(subsets.values()))

    for m in machines:
        m["score"] = _round2(m["score"])
    for sub in SUBSETS:
        if year <= 2022:
            per_machine = [m["score"] for m in machines if m["subset"] == sub]
            if per_machine:
                subsets[sub] = combine(per_machine)
        else:
            per_section = [s["score"] for s in sections if s["subset"] == sub]
            if per_section:
                subsets[sub] = _round2(_hmean(per_section))
    rounded = [
        {k: _round2(v) if isinstance(v, float) else v for k, v in s.items()} for s in sections
    ]
    return rounded, machines, subsets, combine(list(subsets.values()))
