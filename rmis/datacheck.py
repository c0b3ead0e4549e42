"""``rmis data check``: how rmis reads a data root, dataset by dataset.

For every RMIS dataset: found or not, number of files, total duration, sample rates seen,
classes and groups per class (FD) or machines and sections (AD), files that match no rule,
unreadable files, sample rates other than the dataset's, and whether every class can be sealed
on both sides at the configured test size. Headers are read (``soundfile.info``), not audio.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from rmis.data.specs import DATASETS, closest
from rmis.errors import RMISError
from rmis.evaluate import dataset_folder, dataset_table


@dataclass
class DatasetCheck:
    """Findings for one dataset (``problems`` empty = fine)."""

    name: str
    found: bool
    folder: str | None
    files: int = 0
    hours: float = 0.0
    sample_rates: list[int] = field(default_factory=list)
    classes: dict[str, dict[str, int]] = field(default_factory=dict)  # label -> files, groups
    machines: dict[str, int] = field(default_factory=dict)  # "subset/machine" -> files
    sealable: bool | None = None
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def check_dataset(
    name: str, folder: Path | None, dcase_gt: Path | None = None, max_listed: int = 10
) -> DatasetCheck:
    """Check one dataset folder (see module docstring)."""
    spec = DATASETS[name]
    if folder is None or not folder.is_dir():
        return DatasetCheck(name, False, str(folder) if folder else None)
    out = DatasetCheck(name, True, str(folder))
    if spec.task == "fd":
        from rmis.data.release import scan_release

        scan = scan_release(name, folder)
        out.problems += [f"matches no rule: {p}" for p in scan.problems[:max_listed]]
        if len(scan.problems) > max_listed:
            out.problems.append(f"... and {len(scan.problems) - max_listed} more unmatched files")
        table = scan.table
    else:
        try:
            table = dataset_table(name, folder, dcase_gt)
        except RMISError as exc:
            out.problems.append(str(exc))
            return out
    out.files = len(table)
    rates: dict[int, int] = {}
    seconds = 0.0
    unreadable = []
    for path in table["path"]:
        try:
            info = sf.info(path)
        except (sf.LibsndfileError, RuntimeError, OSError) as exc:
            unreadable.append(f"{path}: {exc}")
            continue
        rates[int(info.samplerate)] = rates.get(int(info.samplerate), 0) + 1
        seconds += info.frames / info.samplerate
    out.hours = seconds / 3600
    out.sample_rates = sorted(rates)
    out.problems += [f"unreadable: {u}" for u in unreadable[:max_listed]]
    wrong = {r: n for r, n in rates.items() if r != spec.sample_rate}
    if wrong:
        out.problems.append(
            f"{sum(wrong.values())} files at {sorted(wrong)} Hz, not the dataset's "
            f"{spec.sample_rate} Hz"
        )
    if spec.task == "fd":
        _check_classes(out, spec, table)
    else:
        for (subset, machine), n in table.groupby(["subset", "machine"]).size().items():
            out.machines[f"{subset}/{machine}"] = int(n)
    return out


def _check_classes(out: DatasetCheck, spec, table) -> None:
    from rmis.protocol.splits import group_table, unplaceable_classes

    if table.empty:
        out.problems.append("no files")
        return
    for label, part in table.groupby("label"):
        out.classes[str(label)] = {"files": len(part), "groups": int(part["group"].nunique())}
    absent = [c for c in spec.classes if c not in out.classes]
    if absent:
        out.problems.append(f"classes without files: {absent}")
    if spec.sealed:
        index = {c: i for i, c in enumerate(spec.classes)}
        labels = np.array([index[str(v)] for v in table["label"]])
        groups = group_table(list(table["file"]), list(table["group"]), labels, len(index))
        bad = unplaceable_classes(groups, spec.test_size, list(spec.classes))
        out.sealable = not bad
        if bad:
            out.problems.append(
                f"classes {bad} cannot be on both sides of a sealed split at test size "
                f"{spec.test_size}"
            )
    elif "split" in table.columns:
        for side in ("train", "test"):
            have = set(table.loc[table["split"] == side, "label"])
            if missing := [c for c in spec.classes if c not in have]:
                out.problems.append(f"official {side} split lacks classes {missing}")


def check_root(
    data_root: Path | None,
    folders: dict[str, Path] | None = None,
    dcase_gt: Path | None = None,
    names: list[str] | None = None,
) -> list[DatasetCheck]:
    """:func:`check_dataset` for every (or the named) RMIS dataset; with no ``data_root``,
    the datasets of ``folders`` (``--dataset-dir``).

    Raises:
        RMISError: neither a data root nor a dataset folder is given (nothing to check), or an
            unknown dataset name.
    """
    if data_root is None and not folders:
        raise RMISError(
            "give --data-root DIR (the folder holding one folder per dataset, see `rmis list "
            "datasets`) or --dataset-dir NAME=PATH; `rmis data download-help` says where to "
            "get the data"
        )
    if names:
        unknown = [n for n in names if n not in DATASETS]
        if unknown:
            raise RMISError(
                f"unknown dataset {unknown[0]!r}: {closest(unknown[0], list(DATASETS))}"
            )
    elif data_root is None:
        names = list(folders)
    return [
        check_dataset(n, dataset_folder(n, data_root, folders), dcase_gt)
        for n in (names or list(DATASETS))
    ]
