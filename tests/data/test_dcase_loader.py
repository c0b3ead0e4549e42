"""rmis.data.dcase against miniature copies of each DCASE year's real layout and the real lists.

Clip files are empty placeholders: the loader reads names only, never audio. Eval test names are
real anonymised names taken from the official ground-truth lists in ``shared/data/dcase_eval_gt``;
the expected section/domain/label of each was read off the list by hand (line numbers quoted).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from rmis.data.dcase import (
    COLUMNS,
    GT_FILENAME,
    dcase_table,
    find_eval_gt,
    parse_eval_gt,
    parse_labelled_name,
)
from rmis.errors import RMISError

S, T = "source", "target"
N, A = "normal", "anomaly"

# year -> [(file relative to the dataset folder, split, section, domain, label)], deliberately
# unsorted. Eval test rows: "<list line>: labelled name" in the comment.
CASES: dict[int, list[tuple[str, str, int, str, str]]] = {
    2020: [
        ("eval_data/pump/test/id_05_00000000.wav", "test", 5, S, A),  # 3,pump: anomaly_id_05_...
        ("dev_data/fan/train/normal_id_00_00000000.wav", "train", 0, S, N),
        ("dev_data/fan/test/anomaly_id_02_00000005.wav", "test", 2, S, A),
        ("dev_data/fan/test/normal_id_04_00000001.wav", "test", 4, S, N),
        ("dev_data/ToyCar/train/normal_id_01_00000123.wav", "train", 1, S, N),
        ("eval_data/fan/train/normal_id_01_00000000.wav", "train", 1, S, N),
        ("eval_data/fan/test/id_01_00000000.wav", "test", 1, S, N),  # 2: normal_id_01_00000098
        ("eval_data/fan/test/id_01_00000001.wav", "test", 1, S, A),  # 3: anomaly_id_01_00000064
        ("eval_data/ToyCar/test/id_05_00000001.wav", "test", 5, S, N),  # 3900: normal_id_05_...
    ],
    2021: [
        ("eval_data/gearbox/source_test/section_05_source_test_0004.wav", "test", 5, S, N),
        (
            "dev_data/fan/train/section_00_source_train_normal_0000_strength_1_ambient.wav",
            "train",
            0,
            S,
            N,
        ),
        (
            "dev_data/fan/train/section_01_target_train_normal_0002_strength_3_ambient.wav",
            "train",
            1,
            T,
            N,
        ),
        ("dev_data/fan/source_test/section_00_source_test_anomaly_0000.wav", "test", 0, S, A),
        ("dev_data/fan/target_test/section_02_target_test_normal_0003.wav", "test", 2, T, N),
        (
            "eval_data/fan/train/section_03_source_train_normal_0000_strength_2_ambient.wav",
            "train",
            3,
            S,
            N,
        ),
        ("eval_data/fan/source_test/section_03_source_test_0000.wav", "test", 3, S, A),  # line 2
        ("eval_data/fan/target_test/section_03_target_test_0000.wav", "test", 3, T, A),
        ("eval_data/fan/target_test/section_04_target_test_0199.wav", "test", 4, T, N),
    ],
    2022: [
        ("eval_data/valve/test/section_05_0000.wav", "test", 5, T, A),  # ..._target_test_anomaly
        (
            "dev_data/bearing/train/section_00_source_train_normal_0000_vel_6_loc_A.wav",
            "train",
            0,
            S,
            N,
        ),
        (
            "dev_data/bearing/test/section_01_target_test_anomaly_0001_vel_6_loc_A.wav",
            "test",
            1,
            T,
            A,
        ),
        (
            "eval_data/bearing/train/section_04_target_train_normal_0000_vel_21.wav",
            "train",
            4,
            T,
            N,
        ),
        ("eval_data/bearing/test/section_03_0000.wav", "test", 3, S, N),  # line 2: source normal
        ("eval_data/bearing/test/section_03_0001.wav", "test", 3, T, A),  # line 3: target anomaly
        ("eval_data/gearbox/test/section_03_0000.wav", "test", 3, S, A),  # 1204: volt_3.0.wav
    ],
    2023: [
        ("eval_data/bandsaw/test/section_00_0024.wav", "test", 0, T, N),  # 151: target normal
        ("eval_data/bandsaw/test/section_00_0005.wav", "test", 0, S, A),  # 2: source anomaly
        (
            "eval_data/bandsaw/train/section_00_source_train_normal_0001_vel_15.wav",
            "train",
            0,
            S,
            N,
        ),
        ("dev_data/fan/test/section_00_target_test_normal_0010_m-n_X.wav", "test", 0, T, N),
        ("eval_data/ToyNscale/test/section_00_0001.wav", "test", 0, T, N),  # 807
    ],
    2024: [
        ("eval_data/AirCompressor/test/section_00_0001.wav", "test", 0, S, N),  # 203
        (
            "eval_data/AirCompressor/train/section_00_target_train_normal_0003_noAttribute.wav",
            "train",
            0,
            T,
            N,
        ),
        ("eval_data/3DPrinter/test/section_00_0001.wav", "test", 0, T, A),  # 2
        (
            "dev_data/valve/train/section_00_source_train_normal_0000_v1pat_00_v2pat_01.wav",
            "train",
            0,
            S,
            N,
        ),
    ],
    2025: [  # the 2025 list's labelled names have no ".wav"
        ("eval_data/AutoTrash/test/section_00_0000.wav", "test", 0, T, A),  # 2
        ("eval_data/BandSealer/test/section_00_0001.wav", "test", 0, S, A),  # 203
        (
            "eval_data/BandSealer/train/section_00_source_train_normal_0001_spd_6_n_D.wav",
            "train",
            0,
            S,
            N,
        ),
        ("dev_data/slider/test/section_00_source_test_anomaly_0004_vel_300.wav", "test", 0, S, A),
    ],
}

#: Never-scored 2025 supplemental clips (names that no rule would accept).
SUPPLEMENTAL = [
    "dev_data/slider/supplemental/section_00_0000.wav",
    "eval_data/BandSealer/supplemental/whatever_0001.wav",
]


def make(root: Path, files: list[str]) -> Path:
    """Empty placeholder clips (and the folders above them) under ``root``."""
    for rel in files:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    return root


def write_list(path: Path, text: str, newline: str = "\n") -> Path:
    path.write_bytes(text.replace("\n", newline).encode())
    return path


@pytest.fixture
def gt_dir(shared: Path) -> Path:
    return shared / "data" / "dcase_eval_gt"


# ---------------------------------------------------------------- each year, real lists


@pytest.mark.parametrize("year", sorted(CASES))
def test_table_of_each_year(tmp_path: Path, gt_dir: Path, year: int) -> None:
    root = make(tmp_path / f"dcase{year}", [c[0] for c in CASES[year]])
    make(root, SUPPLEMENTAL if year == 2025 else [])
    (root / "dev_data" / "readme.txt").write_text("not a machine")  # stray files are ignored
    make(root, [f"{CASES[year][1][0].rsplit('/', 1)[0]}/notes.txt"])  # non-.wav: ignored

    table = dcase_table(root, year, gt=gt_dir)

    assert tuple(table.columns) == COLUMNS
    assert list(table["file"]) == sorted(c[0] for c in CASES[year])
    assert table.index.tolist() == list(range(len(table)))
    assert str(table["section"].dtype) == "int64"
    expected = sorted(
        (f, f.split("/")[0][: -len("_data")], split, f.split("/")[1], sec, dom, lab, str(root / f))
        for f, split, sec, dom, lab in CASES[year]
    )
    assert [tuple(r) for r in table.itertuples(index=False)] == expected


def test_2021_test_folders_feed_one_test_split(tmp_path: Path, gt_dir: Path) -> None:
    table = dcase_table(make(tmp_path, [c[0] for c in CASES[2021]]), 2021, gt=gt_dir)
    test = table[table["split"] == "test"]
    assert {f.split("/")[2] for f in test["file"]} == {"source_test", "target_test"}
    assert (test["file"].str.contains("/target_test/") == (test["domain"] == T)).all()


def test_2025_supplemental_is_ignored(tmp_path: Path) -> None:
    root = make(tmp_path, SUPPLEMENTAL)
    with pytest.raises(RMISError, match="no DCASE 2025 clips"):
        dcase_table(root, 2025)
    # the same folder is an error in a year without supplemental data
    with pytest.raises(RMISError, match="unexpected folder .*supplemental"):
        dcase_table(root, 2024)


def test_only_dev_data_needs_no_list(tmp_path: Path) -> None:
    root = make(tmp_path / "ds", [c[0] for c in CASES[2022] if c[0].startswith("dev_data")])
    make(root, ["eval_data/bearing/train/section_03_source_train_normal_0000_vel_21.wav"])
    table = dcase_table(root, 2022)  # eval train only: no list anywhere, none needed
    assert set(table["subset"]) == {"dev", "eval"} and len(table) == 3


# ---------------------------------------------------------------- the real lists


ROWS = {2020: 7103, 2021: 8635, 2022: 4200, 2023: 1400, 2024: 1800, 2025: 1600}
SOME_MACHINES = {
    2020: {"fan": 1342, "ToyConveyor": 1665},
    2021: {"gearbox": 1428, "slider": 1207},
    2022: {"ToyCar": 600},
    2023: {"bandsaw": 200},
    2024: {"ToothBrush": 200},
    2025: {"ToyRCCar": 200},
}


@pytest.mark.parametrize("year", sorted(ROWS))
def test_real_lists_parse_fully(gt_dir: Path, year: int) -> None:
    path = gt_dir / GT_FILENAME.format(year=year)
    assert (b"\r\n" in path.read_bytes()) is (year <= 2023)  # as the README says
    gt = parse_eval_gt(path, year)
    assert sum(len(block) for block in gt.values()) == ROWS[year]
    for machine, rows in SOME_MACHINES[year].items():
        assert len(gt[machine]) == rows
    names = [n for block in gt.values() for pair in block.items() for n in pair]
    assert not any("\r" in n or "," in n for n in names)
    assert all(
        parse_labelled_name(lab, year) is not None for b in gt.values() for lab in b.values()
    )
    assert all(lab.endswith(".wav") is (year != 2025) for b in gt.values() for lab in b.values())


def test_real_list_label_counts(gt_dir: Path) -> None:
    gt = parse_eval_gt(gt_dir / "eval_data_list_2023.csv", 2023)
    infos = [parse_labelled_name(n, 2023) for n in gt["bandsaw"].values()]
    assert sum(i.label == A for i in infos) == 73 and sum(i.domain == T for i in infos) == 93
    gt = parse_eval_gt(gt_dir / "eval_data_list_2020.csv", 2020)
    sections = [parse_labelled_name(n, 2020).section for n in gt["pump"].values()]
    assert (sections.count(1), sections.count(3), sections.count(5)) == (216, 213, 348)


# ---------------------------------------------------------------- lists, synthetic

LIST_2022 = (
    "bearing\n"
    "section_03_0000.wav,section_03_source_test_normal_0000_vel_21.wav\n"
    "section_03_0001.wav,section_03_target_test_anomaly_0001_vel_25.wav\n"
)


def test_crlf_list_and_2025_names_without_wav(tmp_path: Path) -> None:
    crlf = write_list(tmp_path / "a.csv", LIST_2022, newline="\r\n")
    assert parse_eval_gt(crlf, 2022) == {
        "bearing": {
            "section_03_0000.wav": "section_03_source_test_normal_0000_vel_21.wav",
            "section_03_0001.wav": "section_03_target_test_anomaly_0001_vel_25.wav",
        }
    }
    info = parse_labelled_name("section_00_target_test_anomaly_0012_id_C1_spd_2_mic_2", 2025)
    assert (info.section, info.domain, info.label) == (0, T, A)


def test_2020_label_comes_from_the_labelled_name_not_the_third_field(tmp_path: Path) -> None:
    gt = write_list(
        tmp_path / "eval_data_list_2020.csv",
        "fan\nid_01_00000000.wav,anomaly_id_01_00000098.wav,0\n",
        newline="\r\n",
    )
    root = make(tmp_path / "ds", ["eval_data/fan/test/id_01_00000000.wav"])
    table = dcase_table(root, 2020, gt=gt)
    assert table.loc[0, ["section", "domain", "label"]].tolist() == [1, S, A]


@pytest.mark.parametrize(
    ("year", "text", "line"),
    [
        (2022, LIST_2022 + "section_03_0002.wav,x.wav,1\n", 4),  # 3 fields in 2022
        (2020, "fan\nid_01_00000000.wav,normal_id_01_00000098.wav\n", 2),  # 2 fields in 2020
        (2022, "section_03_0000.wav,section_03_source_test_normal_0000.wav\n", 1),  # no header
        (2022, LIST_2022 + "toaster\n", 4),  # not a machine type of the year
        (2022, LIST_2022 + "section_03_0000.wav,section_03_source_test_normal_0000.wav\n", 4),
        (
            2022,
            LIST_2022.replace("section_03_source_test_normal", "section_04_source_test_normal"),
            2,
        ),
        (2022, LIST_2022.replace("source_test_normal", "source_test_nrml"), 2),
        (2021, "fan\nsection_03_source_test_0000.wav,section_03_target_test_anomaly_0000.wav\n", 2),
    ],
    ids=[
        "fields-2022",
        "fields-2020",
        "no-header",
        "unknown-header",
        "duplicate",
        "section-disagrees",
        "bad-labelled",
        "domain-disagrees",
    ],
)
def test_malformed_list_names_file_and_line(
    tmp_path: Path, year: int, text: str, line: int
) -> None:
    path = write_list(tmp_path / "gt.csv", text, newline="\r\n")
    with pytest.raises(RMISError, match=re.escape(f"{path}:{line}:")):
        parse_eval_gt(path, year)


def test_find_eval_gt_places(tmp_path: Path) -> None:
    root = make(tmp_path / "dcase22", ["eval_data/bearing/test/section_03_0000.wav"])
    name = "eval_data_list_2022.csv"
    with pytest.raises(RMISError) as err:
        dcase_table(root, 2022)
    msg = str(err.value)
    assert str(root / name) in msg and str(tmp_path / "dcase_eval_gt" / name) in msg
    assert "uni_detect/data/dcase_eval_gt/" in msg and "--dcase-gt DIR" in msg

    (tmp_path / "dcase_eval_gt").mkdir()
    beside = write_list(tmp_path / "dcase_eval_gt" / name, LIST_2022)
    assert find_eval_gt(root, 2022) == beside
    inside = write_list(root / name, LIST_2022)
    assert find_eval_gt(root, 2022) == inside  # the dataset folder comes first
    assert find_eval_gt(root, 2022, gt=beside) == beside  # a file
    assert find_eval_gt(root, 2022, gt=beside.parent) == beside  # a folder
    assert len(dcase_table(root, 2022)) == 1
    nowhere = tmp_path / "nowhere"
    with pytest.raises(RMISError, match=re.escape(str(nowhere))):
        find_eval_gt(root, 2022, gt=nowhere)  # neither a file nor a folder
    nowhere.mkdir()
    with pytest.raises(RMISError, match=re.escape(str(nowhere / name))):
        find_eval_gt(root, 2022, gt=nowhere)  # a folder without the list


# ---------------------------------------------------------------- layout errors


def test_unknown_name_is_an_error_naming_the_file(tmp_path: Path) -> None:
    good = "dev_data/fan/train/section_00_source_train_normal_0000_m-n_W.wav"
    bad = "dev_data/fan/train/section_00_source_train_abnormal_0001_m-n_W.wav"
    with pytest.raises(RMISError, match=re.escape(bad)):
        dcase_table(make(tmp_path / "a", [good, bad]), 2022)
    anonymous_dev = "dev_data/fan/test/id_01_00000000.wav"  # anonymised names only in eval test
    with pytest.raises(RMISError, match=re.escape(anonymous_dev)):
        dcase_table(make(tmp_path / "b", [anonymous_dev]), 2020)


def test_eval_clip_missing_from_the_list_is_an_error(tmp_path: Path) -> None:
    gt = write_list(tmp_path / "gt.csv", LIST_2022)
    listed = "eval_data/bearing/test/section_03_0000.wav"
    unlisted = "eval_data/bearing/test/section_03_0099.wav"
    with pytest.raises(RMISError, match=re.escape(unlisted)):
        dcase_table(make(tmp_path / "a", [listed, unlisted]), 2022, gt=gt)
    no_block = "eval_data/fan/test/section_03_0000.wav"  # the list has no fan block
    with pytest.raises(RMISError, match=re.escape(no_block)):
        dcase_table(make(tmp_path / "b", [listed, no_block]), 2022, gt=gt)
    # list entries without a clip (a partial copy) are fine
    assert len(dcase_table(make(tmp_path / "c", [listed]), 2022, gt=gt)) == 1


def test_unknown_machine_folder(tmp_path: Path) -> None:
    root = make(tmp_path, ["dev_data/toaster/train/section_00_source_train_normal_0000_a.wav"])
    with pytest.raises(RMISError, match=r"toaster.*bearing, fan, gearbox"):
        dcase_table(root, 2022)
    # eval machines of 2023 are not dev machines
    root2 = make(tmp_path / "b", ["dev_data/bandsaw/train/section_00_source_train_normal_0_a.wav"])
    with pytest.raises(RMISError, match="bandsaw"):
        dcase_table(root2, 2023)
    table = dcase_table(root, 2022, machines={"dev": ["toaster"]})  # synthetic: own list
    assert table["machine"].tolist() == ["toaster"]
    with pytest.raises(RMISError, match="toaster"):
        dcase_table(root, 2022, machines={"dev": ["fan"]})


def test_folder_and_name_must_agree(tmp_path: Path) -> None:
    wrong_split = "dev_data/fan/train/section_00_source_test_normal_0000_m-n_W.wav"
    with pytest.raises(RMISError, match=re.escape(wrong_split)):
        dcase_table(make(tmp_path / "a", [wrong_split]), 2022)
    wrong_domain = "dev_data/fan/target_test/section_00_source_test_normal_0000.wav"
    with pytest.raises(RMISError, match=re.escape(wrong_domain)):
        dcase_table(make(tmp_path / "b", [wrong_domain]), 2021)


def test_wrong_year_layout_and_empty_dataset(tmp_path: Path) -> None:
    root = make(tmp_path / "a", ["dev_data/fan/source_test/section_00_source_test_normal_0.wav"])
    with pytest.raises(RMISError, match=r"unexpected folder .*source_test.*test, train"):
        dcase_table(root, 2022)
    (tmp_path / "empty" / "dev_data" / "fan" / "train").mkdir(parents=True)
    with pytest.raises(RMISError, match="no DCASE 2022 clips"):
        dcase_table(tmp_path / "empty", 2022)
    with pytest.raises(RMISError, match="does not exist"):
        dcase_table(tmp_path / "missing", 2022)
    with pytest.raises(RMISError, match="2019"):
        dcase_table(root, 2019)


def test_default_search_finds_the_real_list_beside_the_dataset(
    tmp_path: Path, gt_dir: Path
) -> None:
    (tmp_path / "dcase_eval_gt").mkdir()
    shutil.copy(gt_dir / "eval_data_list_2023.csv", tmp_path / "dcase_eval_gt")
    root = make(tmp_path / "dcase23", [c[0] for c in CASES[2023]])
    table = dcase_table(root, 2023)
    assert table["path"].map(lambda p: Path(p).is_relative_to(root)).all()
