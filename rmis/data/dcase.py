"""Metadata of the DCASE task-2 datasets (dcase20 ... dcase25) in their official layout.

A dataset folder holds ``{dev_data,eval_data}/<machine>/<split folder>/*.wav`` (PROTOCOL.md
section 1). Section, domain and label of a clip come from its file name; eval test clips are
anonymised and get them from the labelled name in the year's official ground-truth list
``eval_data_list_<year>.csv`` (format: ``shared/data/dcase_eval_gt/README.md``).

The file-name rules of each year are declared once, in :data:`RULES`, so they can be audited:

* 2020: ``{normal,anomaly}_id_<ID>_<n>.wav``; anonymised eval test names ``id_<ID>_<n>.wav``
  (list lines have 3 fields, the 3rd is unused).
* 2021: ``section_<S>_<dom>_<split>_<lab>_<n>[_<attributes>].wav``; anonymised
  ``section_<S>_<dom>_test_<n>.wav``; test clips sit in ``source_test/`` and ``target_test/``.
* 2022-2025: labelled names as 2021; anonymised ``section_<S>_<n>.wav``; 2025's list gives the
  labelled names without ``.wav`` and its ``supplemental/`` folders are never scored.

Tokens are positional: ``<dom>`` (source|target), ``<split>`` (train|test) and ``<lab>``
(normal|anomaly) are the 1st, 2nd and 3rd tokens after ``section_<S>_``; 2020 has a single
domain (reported as ``source``) and its section is the machine id. A name that matches no rule is
an error naming the file; nothing is inherited from a neighbouring file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from rmis.data.specs import get_dataset
from rmis.errors import RMISError

GT_FILENAME = "eval_data_list_{year}.csv"

#: Columns of :func:`dcase_table`, in order.
COLUMNS = ("file", "subset", "split", "machine", "section", "domain", "label", "path")

SUBSETS = ("dev", "eval")

_GT_HINT = (
    "The official lists ship with the RMIS release (uni_detect/data/dcase_eval_gt/) and can be "
    "passed with --dcase-gt DIR."
)
_SHOWN = 5  # offending names quoted in one error message


@dataclass(frozen=True)
class NameRules:
    """Layout and file-name rules of one family of DCASE years.

    Attributes:
        years: the challenge years these rules apply to.
        split_dirs: folder inside ``<machine>/`` -> (split, domain the folder implies or None).
        ignored_dirs: folders inside ``<machine>/`` that are never scored (skipped).
        labelled: full-match pattern of a name stem (no ``.wav``) that carries its labels; groups
            ``section``, ``label`` and, where the name has them, ``domain`` and ``split``.
        anonymised: full-match pattern of an anonymised eval test name stem; groups ``section``
            and, where the name has it, ``domain``.
        gt_fields: number of comma-separated fields of a ground-truth data line.
    """

    years: tuple[int, ...]
    split_dirs: Mapping[str, tuple[str, str | None]]
    labelled: re.Pattern[str]
    anonymised: re.Pattern[str]
    gt_fields: int
    ignored_dirs: frozenset[str] = field(default_factory=frozenset)


_TRAIN_TEST = {"train": ("train", None), "test": ("test", None)}
_SECTION_LABELLED = re.compile(
    r"section_(?P<section>\d+)_(?P<domain>source|target)_(?P<split>train|test)"
    r"_(?P<label>normal|anomaly)_\d+(?:_.+)?"
)

DCASE2020 = NameRules(
    years=(2020,),
    split_dirs=_TRAIN_TEST,
    labelled=re.compile(r"(?P<label>normal|anomaly)_id_(?P<section>\d+)_\d+"),
    anonymised=re.compile(r"id_(?P<section>\d+)_\d+"),
    gt_fields=3,  # anon,labelled,0|1 -- the 3rd field is not used (the labelled name decides)
)
DCASE2021 = NameRules(
    years=(2021,),
    split_dirs={
        "train": ("train", None),
        "source_test": ("test", "source"),
        "target_test": ("test", "target"),
    },
    labelled=_SECTION_LABELLED,
    anonymised=re.compile(r"section_(?P<section>\d+)_(?P<domain>source|target)_test_\d+"),
    gt_fields=2,
)
DCASE2022 = NameRules(
    years=(2022, 2023, 2024),
    split_dirs=_TRAIN_TEST,
    labelled=_SECTION_LABELLED,
    anonymised=re.compile(r"section_(?P<section>\d+)_\d+"),
    gt_fields=2,
)
# 2025: as 2022-2024, plus the never-scored supplemental/ folder; its list's labelled names
# lack ".wav", which every year tolerates.
DCASE2025 = replace(DCASE2022, years=(2025,), ignored_dirs=frozenset({"supplemental"}))

#: Year -> its rules.
RULES: dict[int, NameRules] = {
    y: r for r in (DCASE2020, DCASE2021, DCASE2022, DCASE2025) for y in r.years
}


@dataclass(frozen=True)
class ClipInfo:
    """What a clip name says: section, domain (source|target), label (normal|anomaly), split."""

    section: int
    domain: str
    label: str
    split: str | None  # train|test where the name says it (2021+), else None


def _rules(year: int) -> NameRules:
    if year not in RULES:
        raise RMISError(
            f"no DCASE task-2 dataset for year {year!r}: choose one of {', '.join(map(str, RULES))}"
        )
    return RULES[year]


def _stem(name: str) -> str:
    """``name`` without a trailing ``.wav`` (2025 list names have none)."""
    return name[:-4] if name.endswith(".wav") else name


def parse_labelled_name(name: str, year: int) -> ClipInfo | None:
    """Section, domain, label and split of a labelled clip name, or None if it matches no rule."""
    m = _rules(year).labelled.fullmatch(_stem(name))
    if m is None:
        return None
    groups = m.groupdict()
    return ClipInfo(
        section=int(groups["section"]),
        domain=groups.get("domain") or "source",
        label=groups["label"],
        split=groups.get("split"),
    )


def _eval_machines(year: int) -> tuple[str, ...]:
    return tuple(get_dataset(f"dcase{year % 100}").machines.get("eval", ()))


def parse_eval_gt(
    path: Path, year: int, machines: Iterable[str] | None = None
) -> dict[str, dict[str, str]]:
    """Read an official eval ground-truth list: ``{machine: {anonymised name: labelled name}}``.

    Lines are right-stripped (CRLF-safe) and split on ``,``; blank lines are skipped. A 1-field
    line naming a machine (one of ``machines``, default: the year's eval machines) starts a
    block; every other line must have 3 fields (2020) or 2 (2021+) and map an anonymised
    ``.wav`` name to its labelled name. Both names are checked against the year's rules, and the
    section (2021: also the domain) in the anonymised name must agree with the labelled name.

    Raises:
        RMISError: the file cannot be read, or a line is malformed (message: ``file:line``).
    """
    path = Path(path)
    rules = _rules(year)
    known = tuple(machines) if machines is not None else _eval_machines(year)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise RMISError(f"cannot read the DCASE {year} ground-truth list {path}: {err}") from err

    gt: dict[str, dict[str, str]] = {}
    block: dict[str, str] | None = None
    machine = ""
    for lineno, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip()
        if not line:
            continue
        where = f"{path}:{lineno}"
        fields = line.split(",")
        if len(fields) == 1:
            if fields[0] not in known:
                raise RMISError(
                    f"{where}: {fields[0]!r} is neither a {year} eval machine type "
                    f"({', '.join(known)}) nor a data line of {rules.gt_fields} fields; "
                    f"is this the official eval_data_list_{year}.csv?"
                )
            if fields[0] in gt:
                raise RMISError(f"{where}: machine type {fields[0]!r} starts a second block")
            machine = fields[0]
            block = gt[machine] = {}
            continue
        if len(fields) != rules.gt_fields:
            raise RMISError(
                f"{where}: expected {rules.gt_fields} comma-separated fields for {year} "
                f"(anonymised name,labelled name{',label' if rules.gt_fields == 3 else ''}), "
                f"got {len(fields)}: {line!r}; is this the official eval_data_list_{year}.csv?"
            )
        if block is None:
            raise RMISError(f"{where}: data line before the first machine-type line: {line!r}")
        anon, labelled = fields[0], fields[1]
        _check_gt_pair(anon, labelled, year, where)
        if anon in block:
            raise RMISError(f"{where}: {anon} is listed twice for machine type {machine!r}")
        block[anon] = labelled
    return gt


def _check_gt_pair(anon: str, labelled: str, year: int, where: str) -> None:
    """Both names of a list line follow the year's rules and agree on what both carry."""
    rules = _rules(year)
    m = rules.anonymised.fullmatch(anon[:-4]) if anon.endswith(".wav") else None
    if m is None:
        raise RMISError(
            f"{where}: {anon!r} is not an anonymised {year} eval test name "
            f"(pattern {rules.anonymised.pattern}.wav)"
        )
    info = parse_labelled_name(labelled, year)
    if info is None:
        raise RMISError(
            f"{where}: {labelled!r} is not a labelled {year} clip name "
            f"(pattern {rules.labelled.pattern}[.wav])"
        )
    if int(m["section"]) != info.section or m.groupdict().get("domain", info.domain) != info.domain:
        raise RMISError(f"{where}: {anon} and {labelled} disagree on section or domain")


def find_eval_gt(root: Path, year: int, gt: Path | None = None) -> Path:
    """Locate ``eval_data_list_<year>.csv``.

    ``gt`` may be the file itself or a folder holding it. Without ``gt``, look for it in the
    dataset folder ``root``, then in ``root/../dcase_eval_gt/``.

    Raises:
        RMISError: not found; the message lists every place searched.
    """
    _rules(year)
    name = GT_FILENAME.format(year=year)
    root = Path(root)
    if gt is not None:
        gt = Path(gt)
        places = [gt / name] if gt.is_dir() else [gt]
    else:
        places = [root / name, root.parent / "dcase_eval_gt" / name]
    for place in places:
        if place.is_file():
            return place
    raise RMISError(
        f"the DCASE {year} eval test clips in {root / 'eval_data'} need the ground-truth list "
        f"{name}; looked for: {', '.join(str(p) for p in places)}. {_GT_HINT}"
    )


def _expected_machines(
    year: int, machines: Mapping[str, Sequence[str]] | None
) -> dict[str, tuple[str, ...]]:
    spec = dict(get_dataset(f"dcase{year % 100}").machines)
    if machines is not None:
        unknown = sorted(set(machines) - set(SUBSETS))
        if unknown:
            raise RMISError(
                f"machines: unknown subset(s) {', '.join(unknown)}; use {' and/or '.join(SUBSETS)}"
            )
        for subset, names in machines.items():
            if isinstance(names, str):
                raise RMISError(f"machines[{subset!r}] must be a list of names, not a string")
            spec[subset] = tuple(names)
    return {s: tuple(spec.get(s, ())) for s in SUBSETS}


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _quote(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f" (and {len(names) - _SHOWN} more)" if len(names) > _SHOWN else "")


def dcase_table(
    root: Path,
    year: int,
    gt: Path | None = None,
    machines: dict[str, Sequence[str]] | None = None,
) -> pd.DataFrame:
    """Metadata table of one DCASE task-2 dataset in its official layout.

    Args:
        root: the dataset folder, holding ``dev_data/`` and/or ``eval_data/``.
        year: challenge year, 2020 ... 2025.
        gt: the year's eval ground-truth list, or a folder holding ``eval_data_list_<year>.csv``
            (default: see :func:`find_eval_gt`). Only needed when ``eval_data/`` has test clips.
        machines: expected machine folders per subset (``{"dev": [...], "eval": [...]}``),
            replacing the spec's lists for the subsets given (for synthetic datasets).

    Returns:
        One row per ``.wav`` clip, columns :data:`COLUMNS`, sorted by ``file``: ``file`` is the
        path relative to ``root`` with ``/`` separators (the embedding key), ``subset``
        dev|eval, ``split`` train|test, ``machine`` the folder name, ``section`` int, ``domain``
        source|target, ``label`` normal|anomaly, ``path`` the absolute path.

    Raises:
        RMISError: no clips, an unexpected machine or split folder, a name that matches no rule,
            a name that contradicts its folder, an eval test clip missing from the ground-truth
            list, or a missing/malformed list.
    """
    rules = _rules(year)
    root = Path(os.path.abspath(root))
    if not root.is_dir():
        raise RMISError(f"DCASE {year} dataset folder {root} does not exist or is not a folder")
    expected = _expected_machines(year, machines)

    # (subset, split, machine, name, path, split-folder domain) of every .wav clip.
    clips: list[tuple[str, str, str, str, Path, str | None]] = []
    for subset in SUBSETS:
        subset_dir = root / f"{subset}_data"
        if not subset_dir.is_dir():
            continue
        found = _visible_dirs(subset_dir)
        stray = [p.name for p in found if p.name not in expected[subset]]
        if stray:
            raise RMISError(
                f"unexpected machine folder(s) in {subset_dir}: {', '.join(stray)}; DCASE {year} "
                f"{subset} has {', '.join(expected[subset]) or 'no machines'}. Check the year, "
                "or move the folder(s) out"
            )
        for machine_dir in found:
            for split_dir in _visible_dirs(machine_dir):
                if split_dir.name in rules.ignored_dirs:
                    continue
                if split_dir.name not in rules.split_dirs:
                    allowed = sorted({*rules.split_dirs, *rules.ignored_dirs})
                    raise RMISError(
                        f"unexpected folder {split_dir}: a DCASE {year} machine folder holds "
                        f"{', '.join(allowed)}. Check the year, or move the folder out"
                    )
                split, folder_domain = rules.split_dirs[split_dir.name]
                for wav in sorted(split_dir.glob("*.wav")):
                    if wav.is_file():
                        clips.append(
                            (subset, split, machine_dir.name, wav.name, wav, folder_domain)
                        )
    if not clips:
        raise RMISError(
            f"no DCASE {year} clips in {root}: expected {{dev_data,eval_data}}/<machine>/"
            f"{{{','.join(rules.split_dirs)}}}/*.wav"
        )

    gt_map: dict[str, dict[str, str]] = {}
    gt_path: Path | None = None
    if any(c[0] == "eval" and c[1] == "test" for c in clips):
        gt_path = find_eval_gt(root, year, gt)
        gt_map = parse_eval_gt(gt_path, year, machines=expected["eval"])

    rows: list[tuple[object, ...]] = []
    unnamed: list[str] = []
    missing: list[str] = []
    for subset, split, machine, name, wav, folder_domain in clips:
        file = wav.relative_to(root).as_posix()
        if subset == "eval" and split == "test":
            labelled = gt_map.get(machine, {}).get(name)
            if labelled is None:
                missing.append(file)
                continue
            info = parse_labelled_name(labelled, year)  # never None: parse_eval_gt checked it
        else:
            info = parse_labelled_name(name, year)
        if info is None:
            unnamed.append(file)
            continue
        if info.split not in (None, split):
            raise RMISError(
                f"{file}: the name says {info.split!r} but the clip is in a {split} folder"
            )
        if folder_domain not in (None, info.domain):
            raise RMISError(
                f"{file}: the clip is {info.domain}-domain"
                f"{' per ' + str(gt_path) if subset == 'eval' and split == 'test' else ''} "
                f"but sits in {folder_domain}_test/"
            )
        rows.append((file, subset, split, machine, info.section, info.domain, info.label, str(wav)))

    if unnamed:
        raise RMISError(
            f"{len(unnamed)} clip name(s) in {root} match no DCASE {year} rule: {_quote(unnamed)}; "
            f"expected names like {_example(year)}"
        )
    if missing:
        raise RMISError(
            f"{len(missing)} eval test clip(s) in {root} are not in the ground-truth list "
            f"{gt_path}: {_quote(missing)}. Every eval test clip must be listed for its machine "
            f"type: is {gt_path} the official eval_data_list_{year}.csv? {_GT_HINT}"
        )

    table = pd.DataFrame(rows, columns=list(COLUMNS))
    table["section"] = table["section"].astype("int64")
    return table.sort_values("file", kind="stable", ignore_index=True)


def _example(year: int) -> str:
    if year == 2020:
        return "normal_id_01_00000000.wav or anomaly_id_01_00000000.wav"
    return "section_00_source_train_normal_0000_<attributes>.wav"
