"""The 19 RMIS datasets, declared as data (PROTOCOL.md section 1 and 3; paper Tables 1 and 4).

One :class:`DatasetSpec` per dataset holds everything the protocol needs: task, modality, native
rate, window, split rule, test size and the class list IN THE OFFICIAL ORDER (it decides k-NN vote
ties). File-name rules (label and group of a released file) are added by the loaders, next to
these specs, in later modules.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Literal

from rmis.errors import RMISError

Task = Literal["ad", "fd"]

#: Scoring protocols understood by ``rmis score --protocol``.
PROTOCOLS = (
    "fd",
    "fd-official-split",
    "dcase2020",
    "dcase2021",
    "dcase2022",
    "dcase2023",
    "dcase2024",
    "dcase2025",
)


@dataclass(frozen=True)
class DatasetSpec:
    """Declarative description of one benchmark dataset.

    Attributes:
        name: dataset name as in PROTOCOL.md (``iica``, ``dcase20`` ...).
        task: ``"ad"`` (anomaly detection) or ``"fd"`` (fault diagnosis).
        modality: ``sound``, ``vibration``, ``voltage`` or ``current``.
        sample_rate: native sample rate in Hz.
        window_seconds: analysis window in seconds (PROTOCOL.md section 2).
        protocol: one of :data:`PROTOCOLS`.
        classes: FD class names in the official order (empty for AD).
        test_size: fraction of groups in the test set for sealed splits (None otherwise).
        machines: AD machine types per subset, ``{"dev": (...), "eval": (...)}``.
        title: the source dataset's name in the paper.
    """

    name: str
    task: Task
    modality: str
    sample_rate: int
    window_seconds: float
    protocol: str
    classes: tuple[str, ...] = ()
    test_size: float | None = None
    machines: dict[str, tuple[str, ...]] = field(default_factory=dict)
    title: str = ""

    @property
    def sealed(self) -> bool:
        """True when the dataset is scored with sealed random splits (10 runs)."""
        return self.protocol == "fd"

    @property
    def year(self) -> int | None:
        """DCASE challenge year for AD datasets."""
        return int(self.protocol[5:]) if self.protocol.startswith("dcase") else None


_DCASE_DEV_20 = ("fan", "pump", "slider", "ToyCar", "ToyConveyor", "valve")
_DCASE_DEV_21 = ("fan", "gearbox", "pump", "slider", "ToyCar", "ToyTrain", "valve")
_DCASE_DEV_22 = ("bearing", "fan", "gearbox", "slider", "ToyCar", "ToyTrain", "valve")

_DCASE_MACHINES: dict[int, dict[str, tuple[str, ...]]] = {
    2020: {"dev": _DCASE_DEV_20, "eval": _DCASE_DEV_20},
    2021: {"dev": _DCASE_DEV_21, "eval": _DCASE_DEV_21},
    2022: {"dev": _DCASE_DEV_22, "eval": _DCASE_DEV_22},
    2023: {
        "dev": _DCASE_DEV_22,
        "eval": ("bandsaw", "grinder", "shaker", "ToyDrone", "ToyNscale", "ToyTank", "Vacuum"),
    },
    2024: {
        "dev": _DCASE_DEV_22,
        "eval": (
            "3DPrinter",
            "AirCompressor",
            "BrushlessMotor",
            "HairDryer",
            "HoveringDrone",
            "RoboticArm",
            "Scanner",
            "ToothBrush",
            "ToyCircuit",
        ),
    },
    2025: {
        "dev": _DCASE_DEV_22,
        "eval": (
            "AutoTrash",
            "BandSealer",
            "CoffeeGrinder",
            "HomeCamera",
            "Polisher",
            "ScrewFeeder",
            "ToyPet",
            "ToyRCCar",
        ),
    },
}

_MAFAULDA = (
    "horizontal-misalignment",
    "imbalance",
    "normal",
    "overhang_ball_fault",
    "overhang_cage_fault",
    "overhang_outer_race",
    "underhang_ball_fault",
    "underhang_cage_fault",
    "underhang_outer_race",
    "vertical-misalignment",
)
_UMGED = tuple(f"E{e:02d}" for e in range(0, 21, 2))
_PU = ("healthy", "IR", "OR")


def _dcase(year: int) -> DatasetSpec:
    return DatasetSpec(
        name=f"dcase{year % 100}",
        task="ad",
        modality="sound",
        sample_rate=16_000,
        window_seconds=10.0,
        protocol=f"dcase{year}",
        machines=_DCASE_MACHINES[year],
        title=f"DCASE {year} Task 2",
    )


def fd_spec(
    name: str,
    modality: str,
    sr: int,
    window: float,
    classes: tuple[str, ...],
    title: str,
    test_size: float = 0.5,
) -> DatasetSpec:
    """Spec of a sealed-split fault-diagnosis dataset."""
    return DatasetSpec(
        name=name,
        task="fd",
        modality=modality,
        sample_rate=sr,
        window_seconds=window,
        protocol="fd",
        classes=classes,
        test_size=test_size,
        title=title,
    )


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in [
        *(_dcase(y) for y in range(2020, 2026)),
        fd_spec(
            "iica",
            "sound",
            48_000,
            10.0,
            (
                "tubeleak_noleak",
                "tubeleak_leak",
                "ventleak_noleak",
                "ventleak_leak",
                "ventlow_noleak",
                "ventlow_leak",
            ),
            "IDMT-ISA-COMPRESSED-AIR",
        ),
        DatasetSpec(
            name="iiee",
            task="fd",
            modality="sound",
            sample_rate=44_100,
            window_seconds=3.0,
            protocol="fd-official-split",
            classes=("good", "broken", "heavyload"),
            title="IDMT-ISA-ELECTRIC-ENGINE",
        ),
        fd_spec(
            "wtpg",
            "vibration",
            48_000,
            10.0,
            ("broken", "healthy", "missing_tooth", "root_crack", "wear"),
            "WT-planetary-gearbox-dataset",
        ),
        fd_spec("mafaulda_sound", "sound", 50_000, 5.0, _MAFAULDA, "MaFaulDa"),
        fd_spec("mafaulda_vib", "vibration", 50_000, 5.0, _MAFAULDA, "MaFaulDa"),
        fd_spec(
            "sdust_bearing",
            "vibration",
            25_600,
            10.0,
            ("IF0.2", "IF0.4", "IF0.6", "NC", "OF0.2", "OF0.4", "OF0.6", "RF0.2", "RF0.4", "RF0.6"),
            "SDUST bearing",
        ),
        fd_spec(
            "sdust_gear",
            "vibration",
            25_600,
            10.0,
            (
                "normal",
                "planetrayfracture",
                "planetraypitting",
                "planetraywear",
                "sunfracture",
                "sunpitting",
                "sunwear",
            ),
            "SDUST gear",
        ),
        fd_spec("umged_sound", "sound", 51_200, 10.0, _UMGED, "UM-GearEccDataset", 0.2),
        fd_spec("umged_vib", "vibration", 51_200, 10.0, _UMGED, "UM-GearEccDataset", 0.2),
        fd_spec("umged_vol", "voltage", 51_200, 10.0, _UMGED, "UM-GearEccDataset", 0.2),
        fd_spec("umged_cur", "current", 51_200, 10.0, _UMGED, "UM-GearEccDataset", 0.2),
        fd_spec("pu_vib", "vibration", 64_000, 4.0, _PU, "Paderborn University bearing data"),
        fd_spec("pu_cur", "current", 64_000, 4.0, _PU, "Paderborn University bearing data"),
    ]
}

AD_DATASETS = tuple(n for n, s in DATASETS.items() if s.task == "ad")
FD_DATASETS = tuple(n for n, s in DATASETS.items() if s.task == "fd")


def closest(name: str, choices: list[str] | tuple[str, ...]) -> str:
    """A hint naming the closest of ``choices`` to ``name`` (or listing them)."""
    near = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    if near:
        return "did you mean " + " or ".join(repr(n) for n in near) + "?"
    return "choose one of: " + ", ".join(choices)


def get_dataset(name: str) -> DatasetSpec:
    """The spec of dataset ``name``; an unknown name gets the closest names in the error."""
    try:
        return DATASETS[name]
    except KeyError:
        raise RMISError(f"unknown dataset {name!r}: {closest(name, tuple(DATASETS))}") from None
