"""rmis.data.release (FD release loaders) against the miniatures of rmis.data.miniature.

Expected labels and groups are written by hand from the rules of PROTOCOL.md section 1, not
computed with the code under test. Rule-edge cases use empty placeholder files: the loader reads
names only, never audio.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from rmis.data.miniature import miniature_files, write_miniature
from rmis.data.release import COLUMNS, RELEASE_RULES, RELEASE_SOURCES, fd_table, scan_release
from rmis.data.specs import DATASETS, FD_DATASETS
from rmis.errors import RMISError
from rmis.protocol.splits import group_table, sealed_split, unplaceable_classes

# dataset -> [(file, label, group)], read off PROTOCOL.md's table by hand.
CASES: dict[str, list[tuple[str, str, str]]] = {
    "iica": [
        # label: <leak>_leak when the 2nd token is niO; group: folders + name minus last token
        (
            "ventlow/lab/session1/1_niO_3_mic2_1.wav",
            "ventlow_leak",
            "ventlow/lab/session1/1_niO_3_mic2",
        ),
        (
            "tubeleak/hydr/session2/4_iO_3_mic1_0.wav",
            "tubeleak_noleak",
            "tubeleak/hydr/session2/4_iO_3_mic1",
        ),
    ],
    "iiee": [
        (
            "test_cut/engine3_heavyload/atmo_high_5_1.wav",
            "heavyload",
            "test_cut/engine3_heavyload/atmo_high_5",
        ),
        (
            "train_cut/engine2_broken/talking_2_0.wav",
            "broken",
            "train_cut/engine2_broken/talking_2",
        ),
    ],
    "wtpg": [
        (
            "missing_tooth_2_M2_35_channel2_ch0_1.flac",
            "missing_tooth",
            "missing_tooth_2_M2_35_channel2",
        ),
        ("root_crack_1_R1_20_channel1_ch0_0.flac", "root_crack", "root_crack_1_R1_20_channel1"),
    ],
    "mafaulda_sound": [
        ("normal_24.576_channel8.wav", "normal", "normal_24.576_channel8"),
        (
            "overhang_ball_fault_0g_36.864_channel8.wav",
            "overhang_ball_fault",
            "overhang_ball_fault_0g_36.864_channel8",
        ),
    ],
    "mafaulda_vib": [
        (
            "vertical-misalignment_0.51mm_12.288_channel5.wav",
            "vertical-misalignment",
            "vertical-misalignment_0.51mm_12.288_channel5",
        ),
        (
            "underhang_outer_race_35g_12.288_channel7.wav",
            "underhang_outer_race",
            "underhang_outer_race_35g_12.288_channel7",
        ),
    ],
    "sdust_bearing": [
        ("NC_NC_1500~2500_20_1_channel6_ch0_1.wav", "NC", "NC_NC_1500~2500_20_1_channel6"),
        ("RF0.4_RF0.4_1000_0_channel1_ch0_0.wav", "RF0.4", "RF0.4_RF0.4_1000_0_channel1"),
    ],
    "sdust_gear": [
        ("NC_normal_1800_0.35A_2_channel6_ch0_0.wav", "normal", "NC_normal_1800_0.35A_2_channel6"),
        (
            "sunpitting_sunpitting_flu_flu_2_channel1_ch0_1.wav",
            "sunpitting",
            "sunpitting_sunpitting_flu_flu_2_channel1",
        ),
        (
            "planetraywear_planetraywear_1000_0-0.2A_1_channel6_ch0_0.wav",
            "planetraywear",
            "planetraywear_planetraywear_1000_0-0.2A_1_channel6",
        ),
    ],
    "umged_sound": [
        (
            "G1_E10_T1_N031_G1_E10_T1_S1200_channel06_ch0_1.wav",
            "E10",
            "G1_E10_T1_N031_G1_E10_T1_S1200_channel06",
        ),
    ],
    "umged_vib": [
        (
            "G2_E20_T3_N022_G2_E20_T3_S1800_channel04_ch0_0.wav",
            "E20",
            "G2_E20_T3_N022_G2_E20_T3_S1800_channel04",
        ),
    ],
    "umged_vol": [
        (
            "G1_E02_T4_N006_G1_E02_T4_S1500_channel08_ch0_0.wav",
            "E02",
            "G1_E02_T4_N006_G1_E02_T4_S1500_channel08",
        ),
    ],
    "umged_cur": [
        (
            "G1_E00_T1_N001_G1_E00_T1_S1200_channel02_ch0_1.wav",
            "E00",
            "G1_E00_T1_N001_G1_E00_T1_S1200_channel02",
        ),
    ],
    "pu_vib": [
        # group: the name without its last two _ tokens (repetition, channel)
        (
            "OR_lifetime_KA04_N09_M07_F10_KA04_20_channel7.wav",
            "OR",
            "OR_lifetime_KA04_N09_M07_F10_KA04",
        ),
        (
            "healthy_K002_N09_M07_F10_K002_1_channel7.wav",
            "healthy",
            "healthy_K002_N09_M07_F10_K002",
        ),
    ],
    "pu_cur": [
        # both current phases and all repetitions of one bearing x condition: one group
        (
            "IR_artificial_KI01_N15_M07_F10_KI01_1_channel2.wav",
            "IR",
            "IR_artificial_KI01_N15_M07_F10_KI01",
        ),
        (
            "IR_artificial_KI01_N15_M07_F10_KI01_20_channel3.wav",
            "IR",
            "IR_artificial_KI01_N15_M07_F10_KI01",
        ),
    ],
}

# dataset -> a file whose class (or class token) is not one of the dataset's
UNKNOWN_CLASS = {
    "iica": "airleak/lab/session1/1_niO_3_mic1_0.wav",
    "iiee": "train_cut/engine4_smoking/pure_1_0.wav",
    "wtpg": "cracked_1_C1_20_channel1_ch0_0.flac",
    "mafaulda_sound": "misalignment_0.5mm_12.288_channel8.wav",
    "mafaulda_vib": "normalish_12.288_channel2.wav",
    "sdust_bearing": "IF0.8_IF0.8_1000_0_channel1_ch0_0.wav",
    "sdust_gear": "ringfracture_ringfracture_1000_0A_1_channel1_ch0_0.wav",
    "umged_sound": "G1_E22_T1_N001_G1_E22_T1_S1200_channel06_ch0_0.wav",
    "umged_vib": "G1_T1_N001_G1_T1_S1200_channel03_ch0_0.wav",
    "umged_vol": "G1_E04_T1_N001_G1_E06_T1_S1200_channel07_ch0_0.wav",
    "umged_cur": "G1_X00_T1_N001_G1_X00_T1_S1200_channel01_ch0_0.wav",
    "pu_vib": "IRR_artificial_KI01_N15_M07_F10_KI01_1_channel7.wav",
    "pu_cur": "MR_artificial_KI01_N15_M07_F10_KI01_1_channel2.wav",
}


@pytest.fixture(scope="module")
def mini(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All 13 miniatures, written once (and timed)."""
    root = tmp_path_factory.mktemp("release")
    start = time.perf_counter()
    write_miniature(root)
    assert time.perf_counter() - start < 5.0
    return root


def _touch(root: Path, *files: str) -> Path:
    for f in files:
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f).write_bytes(b"")
    return root


def test_rules_and_sources_cover_every_fd_dataset() -> None:
    assert set(RELEASE_RULES) == set(FD_DATASETS)
    assert all(r.doc for r in RELEASE_RULES.values())
    assert set(RELEASE_SOURCES) == set(FD_DATASETS) | {"dcase20-dcase25"}
    assert all("<data-root>/" in text for text in RELEASE_SOURCES.values())


def test_miniature_is_small_and_complete(mini: Path) -> None:
    files = [p for p in mini.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 20e6
    assert sorted(p.name for p in mini.iterdir()) == sorted(FD_DATASETS)


@pytest.mark.parametrize("name", FD_DATASETS)
def test_table_layout_labels_and_groups(mini: Path, name: str) -> None:
    spec = DATASETS[name]
    table = fd_table(name, mini / name)
    extra = ["split"] if name == "iiee" else []
    assert list(table.columns) == list(COLUMNS) + extra
    assert list(table["file"]) == sorted(table["file"])
    assert table["file"].is_unique
    for file, path in zip(table["file"], table["path"]):
        assert Path(path).is_absolute() and Path(path) == (mini / name / file).resolve()
        assert "\\" not in file
    assert set(table["label"]) == set(spec.classes)  # every class, spelled as the spec
    rows = table.set_index("file")
    for file, label, group in CASES[name]:
        assert (rows.loc[file, "label"], rows.loc[file, "group"]) == (label, group), file
    # real audio: mono 16-bit PCM at the native rate (FLAC for WTPG)
    info = sf.info(table["path"].iloc[0])
    assert (info.samplerate, info.channels, info.subtype) == (spec.sample_rate, 1, "PCM_16")
    assert info.format == ("FLAC" if name == "wtpg" else "WAV")


@pytest.mark.parametrize("name", [n for n in FD_DATASETS if DATASETS[n].sealed])
def test_sealed_split_possible_at_spec_test_size(mini: Path, name: str) -> None:
    spec = DATASETS[name]
    table = fd_table(name, mini / name)
    index = {c: i for i, c in enumerate(spec.classes)}
    groups = group_table(
        list(table["file"]), list(table["group"]), [index[x] for x in table["label"]], len(index)
    )
    assert unplaceable_classes(groups, spec.test_size, spec.classes) == []
    split = sealed_split(groups, spec.test_size, 0, spec.classes, where=name)
    assert len(split.train_groups) + len(split.test_groups) == groups.n_groups


def test_iiee_split_from_folders_and_uncut_ignored(mini: Path) -> None:
    assert any(p.is_file() for p in (mini / "iiee" / "train").rglob("*.wav"))
    scan = scan_release("iiee", mini / "iiee")
    table = scan.table
    assert not any(f.startswith(("train/", "test/")) for f in table["file"])
    assert scan.ignored == ["train/: folder not part of the release layout (ignored by rule)"]
    expected = np.where(table["file"].str.startswith("train_cut/"), "train", "test")
    assert list(table["split"]) == list(expected)
    assert set(table["split"]) == {"train", "test"}
    for side in ("train", "test"):
        assert set(table.loc[table["split"] == side, "label"]) == {"good", "broken", "heavyload"}
    row = table.set_index("file").loc["test_cut/engine3_heavyload/atmo_high_5_1.wav"]
    assert row["split"] == "test"


@pytest.mark.parametrize("name", FD_DATASETS)
def test_unknown_class_is_an_error_naming_the_file(tmp_path: Path, name: str) -> None:
    good = CASES[name][0][0]
    root = _touch(tmp_path / name, good, UNKNOWN_CLASS[name])
    with pytest.raises(RMISError) as err:
        fd_table(name, root)
    assert UNKNOWN_CLASS[name] in str(err.value) and name in str(err.value)
    scan = scan_release(name, root)  # the scan collects instead of raising
    assert [p.split(": ")[0] for p in scan.problems] == [UNKNOWN_CLASS[name]]
    assert list(scan.table["file"]) == [good]


def test_pu_group_is_bearing_times_condition(tmp_path: Path) -> None:
    root = _touch(
        tmp_path,
        "IR_artificial_KI01_N15_M07_F10_KI01_3_channel2.wav",
        "IR_artificial_KI01_N15_M07_F10_KI01_17_channel3.wav",
        "healthy_K001_N15_M01_F10_K001_3_channel2.wav",
    )
    table = fd_table("pu_cur", root)
    assert list(table["group"]) == [
        "IR_artificial_KI01_N15_M07_F10_KI01",
        "IR_artificial_KI01_N15_M07_F10_KI01",
        "healthy_K001_N15_M01_F10_K001",
    ]
    assert list(table["label"]) == ["IR", "IR", "healthy"]


def test_sdust_gear_class_anywhere_longest_first(tmp_path: Path) -> None:
    root = _touch(
        tmp_path,
        "sunpitting_sunpitting_1000_0A_1_channel3_ch0_4.wav",
        "planetraypitting_planetraypitting_1000_0A_1_channel3_ch0_4.wav",
        "NC_normal_flu_flu_1_channel2_ch0_0.wav",
        "sunwear_planetraywear_1000_0A_1_channel1_ch0_0.wav",  # two classes: ambiguous
    )
    scan = scan_release("sdust_gear", root)
    assert dict(zip(scan.table["file"], scan.table["label"])) == {
        "NC_normal_flu_flu_1_channel2_ch0_0.wav": "normal",
        "planetraypitting_planetraypitting_1000_0A_1_channel3_ch0_4.wav": "planetraypitting",
        "sunpitting_sunpitting_1000_0A_1_channel3_ch0_4.wav": "sunpitting",
    }
    assert len(scan.problems) == 1 and "several class names" in scan.problems[0]


def test_mafaulda_dotted_names(tmp_path: Path) -> None:
    root = _touch(
        tmp_path, "imbalance_6g_13.5168_channel8.wav", "underhang_cage_fault_20g_61.44_channel8.wav"
    )
    table = fd_table("mafaulda_sound", root)
    assert list(table["label"]) == ["imbalance", "underhang_cage_fault"]
    assert list(table["group"]) == [
        "imbalance_6g_13.5168_channel8",
        "underhang_cage_fault_20g_61.44_channel8",
    ]


@pytest.mark.parametrize(
    "name, file, owner",
    [
        ("umged_sound", "G1_E00_T1_N001_G1_E00_T1_S1200_channel03_ch0_0.wav", "umged_vib"),
        ("umged_cur", "G1_E00_T1_N001_G1_E00_T1_S1200_channel07_ch0_0.wav", "umged_vol"),
        ("pu_vib", "healthy_K001_N15_M07_F10_K001_1_channel2.wav", "pu_cur"),
        ("mafaulda_sound", "normal_12.288_channel2.wav", "mafaulda_vib"),
        ("wtpg", "broken_1_B1_20_channel3_ch0_0.flac", "no RMIS dataset"),
    ],
)
def test_foreign_channel_is_an_error(tmp_path: Path, name: str, file: str, owner: str) -> None:
    with pytest.raises(RMISError, match=owner) as err:
        fd_table(name, _touch(tmp_path, file))
    assert file in str(err.value)


def test_ignored_and_misplaced_files(tmp_path: Path) -> None:
    good = "broken_1_B1_20_channel1_ch0_0.flac"
    root = _touch(
        tmp_path,
        good,
        "broken_1_B1_20_keyphase_ch0_0.flac",
        "broken_1_B1_20_channel1_ch0_0.wav",
        "README.txt",
        "._broken_1_B1_20_channel1_ch0_1.flac",
        ".cache/x.flac",
    )
    scan = scan_release("wtpg", root)
    assert list(scan.table["file"]) == [good] and scan.problems == []
    assert len(scan.ignored) == 5
    nested = _touch(tmp_path / "pu", "pu_vib/healthy_K001_N15_M07_F10_K001_1_channel7.wav")
    with pytest.raises(RMISError, match="subfolder"):
        fd_table("pu_vib", nested)
    iiee = _touch(tmp_path / "iiee", "extra/engine1_good/pure_1_0.wav", "test/engine1_good/x.wav")
    assert [p.split(": ")[0] for p in scan_release("iiee", iiee).problems] == [
        "extra/engine1_good/pure_1_0.wav"
    ]


def test_bad_dataset_or_folder(tmp_path: Path) -> None:
    with pytest.raises(RMISError, match="anomaly-detection"):
        fd_table("dcase20", tmp_path)
    with pytest.raises(RMISError, match="pu_vib"):
        fd_table("pu_vibe", tmp_path)
    with pytest.raises(RMISError, match="does not exist"):
        fd_table("iica", tmp_path / "absent")
    with pytest.raises(RMISError, match="no released .flac files"):
        fd_table("wtpg", tmp_path)
    with pytest.raises(RMISError, match="no miniature"):
        write_miniature(tmp_path, ["dcase20"])
    with pytest.raises(RMISError, match="positive"):
        write_miniature(tmp_path, ["iica"], seconds=0)


def test_miniature_classes_are_separable(mini: Path) -> None:
    """A 1-NN on normalised magnitude spectra, never matching its own group, beats chance."""
    for name in FD_DATASETS:
        table = fd_table(name, mini / name)
        spectra = []
        for path in table["path"]:
            x, _ = sf.read(path)
            s = np.abs(np.fft.rfft(x, n=4096))
            spectra.append(s / np.linalg.norm(s))
        x = np.array(spectra)
        sim = x @ x.T
        groups = table["group"].to_numpy()
        sim[groups[:, None] == groups[None, :]] = -np.inf
        labels = table["label"].to_numpy()
        acc = np.mean(labels[np.argmax(sim, axis=1)] == labels)
        assert acc > 2.0 / len(DATASETS[name].classes), name


def test_miniature_files_match_the_loader(mini: Path) -> None:
    """The writer's intended class of every file is what the loader derives from its name."""
    for name in FD_DATASETS:
        table = fd_table(name, mini / name).set_index("file")["label"]
        intended = {f: c for f, c, _ in miniature_files(name) if f in table.index}
        assert len(intended) == len(table) and all(table[f] == c for f, c in intended.items())
