"""Anomaly detection score of the DCASE task 2 datasets (RMIS protocol, PROTOCOL.md section 4).

Pure functions over arrays: no file I/O, no printing. One embedding per clip goes in, the
official figures come out:

* Anomaly score of a test clip: cosine distance (``1 - cos``) to its nearest item (k = 1) of a
  memory bank of normal training embeddings of the same (subset, machine, section).
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

* Full precision everywhere. The official harness rounds the per-section and per-machine rows
  to 2 decimals before averaging them; we never round (round only when displaying).
* Degenerate inputs raise :class:`~rmis.errors.RMISError` naming the section instead of
  producing NaN (or crashing): empty bank, single-class evaluation set, constant score vector.
  A constant score vector is an error in every year (PROTOCOL.md section 4); the official
  harness z-normalises the scores of every year, so such a section is meaningless there too.
* In 2020 and 2021 the official harness also z-normalises each section's scores; that is an
  increasing affine map inside a section and changes no figure, so the clip scores returned for
  those years are the raw cosine distances.

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

__all__ = ["DcaseResult", "nearest_cosine_distance", "score_dcase"]

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
            row, NaN for train rows (2020/2021: cosine distance to the nearest bank item;
            2022-2025: minimum of the two per-section z-scores).
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


def _zscore(s: np.ndarray, bank_name: str, where: str) -> np.ndarray:
    _check_not_constant(s, f"the {bank_name}-bank scores", where)
    z = (s - s.mean()) / s.std()
    if not np.isfinite(z).all():  # pragma: no cover - std underflow on subnormal spreads
        raise RMISError(f"{where}: the {bank_name}-bank scores cannot be z-normalised")
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


def score_dcase(
    embeddings: np.ndarray,
    subset: Sequence[str],
    split: Sequence[str],
    machine: Sequence[str],
    section: Sequence[int],
    domain: Sequence[str],
    label: Sequence[str],
    year: int,
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

    Returns:
        A :class:`DcaseResult` (figures in percent, full precision).

    Raises:
        RMISError: on malformed input (bad year, unknown values, mismatched lengths, NaN/Inf,
            anomalous train clip) or on a section that cannot be scored (train clips without
            test clips, empty bank, single-class evaluation set, constant scores); the message
            names the subset, machine and section.
    """
    if isinstance(year, bool) or not isinstance(year, (int, np.integer)) or year not in YEARS:
        raise RMISError(f"score_dcase: year must be one of {YEARS[0]}..{YEARS[-1]}, got {year!r}")
    year = int(year)

    emb = np.asarray(embeddings)
    if emb.ndim != 2 or emb.shape[0] == 0 or emb.shape[1] == 0:
        raise RMISError(
            f"score_dcase: embeddings must be a non-empty 2-D array [N, D], got shape {emb.shape}"
        )
    if emb.dtype.kind not in "fiu":
        raise RMISError(f"score_dcase: embeddings must be real numbers, got dtype {emb.dtype}")
    emb = emb.astype(np.float64, copy=False)
    n = emb.shape[0]

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

    finite = np.isfinite(emb).all(axis=1)
    if not finite.all():
        i = int(np.flatnonzero(~finite)[0])
        raise RMISError(
            f"score_dcase: NaN or Inf in {int((~finite).sum())} embedding row(s), first row {i} "
            f"({_where(subset_a[i], machine_a[i], int(section_a[i]), year)}, {split_a[i]}); "
            "fix the encoder or its input"
        )

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

    clip_scores = np.full(n, np.nan, dtype=np.float64)
    sections: list[dict] = []
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
        entry: dict = {"subset": sub, "machine": mach, "section": sec, "n_test": int(test.shape[0])}

        if year in (2020, 2021):
            if train.shape[0] == 0:
                raise RMISError(
                    f"{where}: the memory bank is empty (no train clips) but there are "
                    f"{test.shape[0]} test clips; give the section's normal training clips"
                )
            s = nearest_cosine_distance(emb[train], emb[test])
            _check_not_constant(s, "the anomaly scores", where)
            if year == 2020:
                entry["auc"] = _auc(y, s)
                entry["pauc"] = _pauc(y, s)
                entry["score"] = (entry["auc"] + entry["pauc"]) / 2.0
            else:
                figures = []
                for dom in DOMAINS:
                    mask = is_source[test] if dom == "source" else ~is_source[test]
                    _check_two_classes(y[mask], f"{dom}-domain test clips", where)
                    entry[f"auc_{dom}"] = _auc(y[mask], s[mask])
                    entry[f"pauc_{dom}"] = _pauc(y[mask], s[mask])
                    figures += [entry[f"auc_{dom}"], entry[f"pauc_{dom}"]]
                entry["score"] = _hmean(figures)
        else:
            z = {}
            for dom in DOMAINS:
                bank = train[is_source[train]] if dom == "source" else train[~is_source[train]]
                if bank.shape[0] == 0:
                    raise RMISError(
                        f"{where}: the {dom} memory bank is empty (no {dom}-domain train clips) "
                        f"but there are {test.shape[0]} test clips; give the section's {dom} "
                        "training clips"
                    )
                z[dom] = _zscore(nearest_cosine_distance(emb[bank], emb[test]), dom, where)
            s = np.minimum(z["source"], z["target"])
            for dom in DOMAINS:
                normal_in_dom = is_source[test] if dom == "source" else ~is_source[test]
                mask = normal_in_dom | (y == 1)
                _check_two_classes(
                    y[mask], f"{dom}-domain normal test clips plus all anomalies", where
                )
                entry[f"auc_{dom}"] = _auc(y[mask], s[mask])
            entry["pauc"] = _pauc(y, s)
            entry["score"] = _hmean([entry["auc_source"], entry["auc_target"], entry["pauc"]])

        clip_scores[test] = s
        sections.append(entry)

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
    for sub in SUBSETS:
        per_machine = [m["score"] for m in machines if m["subset"] == sub]
        if per_machine:
            subsets[sub] = combine(per_machine)
    score = combine(list(subsets.values()))

    return DcaseResult(
        year=year,
        score=score,
        subsets=subsets,
        sections=sections,
        machines=machines,
        clip_scores=clip_scores,
    )
