"""Dataset specs against the paper (Table 1) and PROTOCOL.md (class orders)."""

from __future__ import annotations

import re

import pytest

from rmis.data.specs import AD_DATASETS, DATASETS, FD_DATASETS, get_dataset
from rmis.errors import RMISError

# Paper Table 1: (modality, number of classes, sampling rate in Hz, official split?)
TABLE1_FD = {
    "iica": ("sound", 6, 48_000, False),
    "iiee": ("sound", 3, 44_100, True),
    "wtpg": ("vibration", 5, 48_000, False),
    "mafaulda_sound": ("sound", 10, 50_000, False),
    "mafaulda_vib": ("vibration", 10, 50_000, False),
    "sdust_bearing": ("vibration", 10, 25_600, False),
    "sdust_gear": ("vibration", 7, 25_600, False),
    "umged_sound": ("sound", 11, 51_200, False),
    "umged_vib": ("vibration", 11, 51_200, False),
    "umged_vol": ("voltage", 11, 51_200, False),
    "umged_cur": ("current", 11, 51_200, False),
    "pu_vib": ("vibration", 3, 64_000, False),
    "pu_cur": ("current", 3, 64_000, False),
}


def test_nineteen_datasets() -> None:
    assert len(DATASETS) == 19
    assert AD_DATASETS == tuple(f"dcase{y}" for y in range(20, 26))
    assert set(FD_DATASETS) == set(TABLE1_FD)


@pytest.mark.parametrize("name", list(TABLE1_FD))
def test_fd_specs_match_paper_table1(name: str) -> None:
    spec = get_dataset(name)
    modality, n_classes, sr, official = TABLE1_FD[name]
    assert (spec.modality, len(spec.classes), spec.sample_rate) == (modality, n_classes, sr)
    assert spec.sealed is not official
    assert spec.test_size == (None if official else 0.2 if name.startswith("umged") else 0.5)


def test_windows_match_protocol() -> None:
    windows = {
        "iiee": 3.0,
        "mafaulda_sound": 5.0,
        "mafaulda_vib": 5.0,
        "pu_vib": 4.0,
        "pu_cur": 4.0,
    }
    for name, spec in DATASETS.items():
        assert spec.window_seconds == windows.get(name, 10.0), name


def test_ad_specs() -> None:
    for y in range(2020, 2026):
        spec = get_dataset(f"dcase{y % 100}")
        assert spec.task == "ad" and spec.year == y and spec.sample_rate == 16_000
    # machine counts of PROTOCOL.md section 1 (eval side)
    counts = {20: 6, 21: 7, 22: 7, 23: 7, 24: 9, 25: 8}
    for y, n in counts.items():
        assert len(get_dataset(f"dcase{y}").machines["eval"]) == n


def test_class_orders_match_protocol_md(shared) -> None:
    text = (shared / "docs" / "PROTOCOL.md").read_text()
    section = text[text.index("The class order is the") : text.index("4. Macro accuracy")]
    lines = re.findall(r"^\s+- (\S+): (.+?)(?=^\s+- |\Z)", section, flags=re.M | re.S)
    doc = {k.rstrip(":"): " ".join(v.split()) for k, v in lines}
    for key, value in doc.items():
        if key.startswith("user"):
            continue
        names = [n for n in DATASETS if n == key or (key.endswith("_*") and n.startswith(key[:-1]))]
        assert names, key
        expected = [c.strip() for c in value.split("(")[0].split(",")]
        for n in names:
            got = list(get_dataset(n).classes)
            if "..." in expected:  # "E00, E02, E04, ..., E20"
                assert got[:3] == expected[:3] and got[-1] == expected[-1]
                assert len(got) == 11
            else:
                assert got == expected, n


def test_unknown_dataset_suggests_names() -> None:
    with pytest.raises(RMISError, match="did you mean 'pu_vib'"):
        get_dataset("pu-vib")
