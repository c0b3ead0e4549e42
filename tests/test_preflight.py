"""Impossible requests fail before anything is decoded or embedded (issue 9, section 3), and
the official protocol's details in `rmis eval` (section 5: single run without std, official
split run, `--compat rmis-official` rounding recorded)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from rmis.cli import app
from rmis.encoders import Encoder, EncoderInfo, register_encoder
from rmis.errors import RMISError, SplitError
from rmis.extract import check_precision
from rmis.scoring import preflight

runner = CliRunner()


class Boom(Encoder):
    """An encoder that must never be called: embedding anything is an error."""

    sample_rate = 16_000

    def embed(self, windows: torch.Tensor, sample_rate: int) -> torch.Tensor:
        raise RMISError("boom: the encoder was called")


class Cheap(Encoder):
    """Deterministic toy features: [mean square, max |x|, mean] of each window."""

    sample_rate = 16_000

    def embed(self, windows: torch.Tensor, sample_rate: int) -> torch.Tensor:
        x = windows.double()
        return torch.stack([x.pow(2).mean(1), x.abs().amax(1), x.mean(1) + 1.0], 1)


register_encoder(EncoderInfo(name="test-boom", family="test", variant="boom", factory=Boom))
register_encoder(EncoderInfo(name="test-cheap", family="test", variant="cheap", factory=Cheap))


def invoke(*args: str):
    return runner.invoke(app, list(args), env={"COLUMNS": "200"})


def write_manifest(tmp: Path, groups: dict[str, str], per_group: int = 2, split=None) -> Path:
    """Tiny 16 kHz wav files, ``per_group`` per group; ``groups``: {group: label}."""
    rng = np.random.default_rng(0)
    rows = []
    for g, label in groups.items():
        for i in range(per_group):
            path = tmp / "wav" / f"{g}_{i}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            amp = {"A": 0.1, "B": 0.5, "C": 0.9}[label] * (1 + 0.05 * i)
            sf.write(path, amp * rng.uniform(-1, 1, 1600), 16_000, subtype="FLOAT")
            row = {"path": str(path), "label": label, "group": g}
            if split is not None:
                row["split"] = split(g, i)
            rows.append(row)
    manifest = tmp / "data.csv"
    with open(manifest, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return manifest


def eval_args(tmp: Path, model: str, *extra: str) -> list[str]:
    return [
        "eval",
        model,
        *extra,
        "--results-dir",
        str(tmp / "res"),
        "--cache-dir",
        str(tmp / "cache"),
        "--workers",
        "0",
    ]


def cached_files(tmp: Path) -> list[Path]:
    return [p for p in (tmp / "cache" / "embeddings").rglob("*") if p.is_file()]


# --------------------------------------------------------------------------------------------
# rmis eval: nothing is embedded for an impossible request
# --------------------------------------------------------------------------------------------


def test_unsealable_manifest_fails_before_embedding(tmp_path: Path) -> None:
    # class B has a single group: it can never be on both sides of a sealed split
    manifest = write_manifest(tmp_path, {"a1": "A", "a2": "A", "b1": "B"})
    r = invoke(*eval_args(tmp_path, "test-boom", "--manifest", str(manifest)))
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and "boom" not in r.output
    assert "error:" in r.output and "classes ['B'] cannot be on both sides" in r.output
    assert "add recordings" in r.output  # says what to do
    assert cached_files(tmp_path) == []
    assert not list((tmp_path / "res").rglob("*.json"))


def test_sealable_manifest_does_reach_the_encoder(tmp_path: Path) -> None:
    # control: the same set-up with a sealable manifest calls the encoder (and fails there),
    # so the test above would notice an embedding
    groups = {"a1": "A", "a2": "A", "b1": "B", "b2": "B"}
    manifest = write_manifest(tmp_path, groups, per_group=3)
    r = invoke(*eval_args(tmp_path, "test-boom", "--manifest", str(manifest)))
    assert r.exit_code == 2 and "boom: the encoder was called" in r.output, r.output


@pytest.mark.parametrize(
    ("split", "message"),
    [
        (lambda g, i: "train" if g != "b1" else "test", r"classes \['A'\] have no test files"),
        (lambda g, i: "train", "the official split has no test files"),
    ],
)
def test_bad_official_split_fails_before_embedding(tmp_path: Path, split, message) -> None:
    groups = {"a1": "A", "a2": "A", "b1": "B", "b2": "B"}
    manifest = write_manifest(tmp_path, groups, split=split)
    r = invoke(*eval_args(tmp_path, "test-boom", "--manifest", str(manifest)))
    assert r.exit_code == 2 and "boom" not in r.output, r.output
    assert pytest.importorskip("re").search(message, r.output), r.output
    assert cached_files(tmp_path) == []


def test_half_precision_on_cpu_fails_before_anything(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, {"a1": "A", "a2": "A", "b1": "B", "b2": "B"})
    args = eval_args(tmp_path, "test-boom", "--manifest", str(manifest), "--precision", "fp16")
    r = invoke(*args)
    assert r.exit_code == 2 and "boom" not in r.output, r.output
    assert "--precision fp16 needs a GPU device; use fp32 on cpu" in r.output
    assert "Traceback" not in r.output
    assert not (tmp_path / "cache" / "embeddings").exists()


def test_every_dataset_is_checked_before_the_first_is_embedded(tmp_path: Path) -> None:
    from rmis.data.miniature import write_dcase_miniature

    root = tmp_path / "data"
    write_dcase_miniature(root, years=(2020, 2023))
    # dcase23 (evaluated second) loses the anomalous test clips of one dev machine
    machine = sorted((root / "dcase23" / "dev_data").iterdir())[0]
    for clip in (machine / "test").glob("*anomaly*"):
        clip.unlink()
    r = invoke(
        *eval_args(
            tmp_path,
            "test-boom",
            "--suite",
            "rmis",
            "--data-root",
            str(root),
            "--datasets",
            "dcase20,dcase23",
        )
    )
    assert r.exit_code == 2 and "boom" not in r.output, r.output
    assert f"machine '{machine.name}'" in r.output and "all normal" in r.output
    assert cached_files(tmp_path) == []


# --------------------------------------------------------------------------------------------
# preflight and check_precision as functions
# --------------------------------------------------------------------------------------------


def fd_meta(groups: dict[str, str], per_group: int = 2) -> pd.DataFrame:
    rows = [
        {"file": f"{g}_{i}", "label": lab, "group": g}
        for g, lab in groups.items()
        for i in range(per_group)
    ]
    return pd.DataFrame(rows)


def test_preflight_fd_errors() -> None:
    good = {"a1": "A", "a2": "A", "b1": "B", "b2": "B"}
    meta = fd_meta(good)
    assert preflight(meta, "fd", k=4, where="toy").equals(meta)  # a sealable table passes
    with pytest.raises(RMISError, match="toy: run 0 at test size 0.5 has 4 train files, fewer"):
        preflight(meta, "fd", k=5, where="toy")
    with pytest.raises(SplitError, match=r"toy: .*classes \['B'\] cannot be on both sides"):
        preflight(fd_meta({"a1": "A", "a2": "A", "b1": "B"}), "fd", where="toy")
    with pytest.raises(RMISError, match="toy: the number of runs must be at least 1"):
        preflight(meta, "fd", runs=0, k=1, where="toy")
    with pytest.raises(RMISError, match="toy: the test size must lie strictly between 0 and 1"):
        preflight(meta, "fd", test_size=1.0, k=1, where="toy")
    # 4 groups at test size 0.9: ceil(3.6) = 4 test groups, no train group
    with pytest.raises(SplitError, match="toy: test size 0.9 of 4 groups leaves 0 train"):
        preflight(meta, "fd", test_size=0.9, k=1, where="toy")
    with pytest.raises(RMISError, match=r"toy: labels \['B'\] are not among the classes"):
        preflight(meta, "fd", classes=["A", "C"], k=1, where="toy")
    with pytest.raises(RMISError, match="toy: the class list .* has duplicates"):
        preflight(meta, "fd", classes=["A", "B", "A"], k=1, where="toy")
    mixed = meta.assign(group=["a1", "a1", "a2", "a2", "a1", "b1", "b2", "b2"])  # B file in a1
    with pytest.raises(RMISError, match="toy: group 'a1' holds files of several classes"):
        preflight(mixed, "fd", where="toy")
    # the multi-split curve: 4 groups cannot give 2 classes both sides at test size 0.05
    with pytest.raises(SplitError, match="toy: the split curve is impossible at test size 0.05"):
        preflight(meta, "fd", k=1, where="toy", split_curve=True)


def test_preflight_dcase_section_without_anomalies() -> None:
    rows = []
    for dom in ("source", "target"):
        rows.append(("dev", "train", "fan", 0, dom, "normal"))
        rows.append(("dev", "test", "fan", 0, dom, "normal"))
        rows.append(("dev", "test", "fan", 0, dom, "anomaly"))
    cols = ["subset", "split", "machine", "section", "domain", "label"]
    meta = pd.DataFrame(rows, columns=cols).astype(str)
    meta.insert(0, "file", [f"f{i}" for i in range(len(meta))])
    assert len(preflight(meta, "dcase2022", where="toy")) == 6
    only_normal = meta[meta["label"] == "normal"]
    with pytest.raises(RMISError, match="section 0: the test clips are all normal"):
        preflight(only_normal, "dcase2022", where="toy")
    no_target_bank = meta.drop(index=3)
    with pytest.raises(RMISError, match="the target memory bank is empty"):
        preflight(no_target_bank, "dcase2023", where="toy")


def test_check_precision() -> None:
    check_precision("fp32", "cpu")
    with pytest.raises(RMISError, match="--precision bf16 needs a GPU device; use fp32 on cpu"):
        check_precision("bf16", "cpu")
    with pytest.raises(RMISError, match="unknown --precision 'fp64'; choose one of fp32"):
        check_precision("fp64", "cpu")


# --------------------------------------------------------------------------------------------
# rmis eval: one run has no std; an official split reports its run; official rounding
# --------------------------------------------------------------------------------------------


def test_too_few_train_files_for_the_knn_fails_before_embedding(tmp_path: Path) -> None:
    # 2 files per group: a sealed run at test size 0.5 keeps 2 groups, 4 train files < k = 5
    manifest = write_manifest(tmp_path, {"a1": "A", "a2": "A", "b1": "B", "b2": "B"})
    r = invoke(*eval_args(tmp_path, "test-boom", "--manifest", str(manifest)))
    assert r.exit_code == 2 and "boom" not in r.output, r.output
    assert "run 0 at test size 0.5 has 4 train files, fewer than the k = 5" in r.output
    assert cached_files(tmp_path) == []


def test_eval_one_run_reports_no_std(tmp_path: Path) -> None:
    groups = {"a1": "A", "a2": "A", "b1": "B", "b2": "B"}
    manifest = write_manifest(tmp_path, groups, per_group=3)
    args = ["--manifest", str(manifest), "--runs", "1", "--name", "toy_data"]
    r = invoke(*eval_args(tmp_path, "test-cheap", *args))
    assert r.exit_code == 0, r.output
    res = json.loads(next((tmp_path / "res").rglob("toy_data.json")).read_text())
    assert res["std"] is None and len(res["runs"]) == 1
    assert res["runs"][0]["macro_acc"] == res["score"]
    row = [line.split() for line in r.output.splitlines() if line.startswith(res["dataset"])][-1]
    assert row[:5] == [res["dataset"], "FD", "fd", f"{res['score']:.2f}", "-"]  # std: "-"
    r = invoke(
        "leaderboard",
        "--results-dir",
        str(tmp_path / "res"),
        "--figures-dir",
        str(tmp_path / "fig"),
    )
    assert r.exit_code == 0 and "100.00" in r.output, r.output  # a null std is fine


def test_eval_official_split_run_and_official_rounding(tmp_path: Path) -> None:
    groups = {"a1": "A", "a2": "A", "b1": "B", "b2": "B", "c1": "C", "c2": "C"}
    manifest = write_manifest(
        tmp_path, groups, per_group=3, split=lambda g, i: "test" if g.endswith("2") else "train"
    )
    r = invoke(*eval_args(tmp_path, "test-cheap", "--manifest", str(manifest), "--runs", "2"))
    assert r.exit_code == 0, r.output
    plain = json.loads(next((tmp_path / "res").rglob("data*.json")).read_text())
    assert plain["protocol"] == "fd-official-split" and plain["official_rounding"] is False
    assert plain["std"] is None and len(plain["runs"]) == 1
    run = plain["runs"][0]
    test_files = {f for f in run["predictions"]}
    assert len(test_files) == 9 and set(run["predictions"].values()) <= {"A", "B", "C"}
    assert set(run["per_class"]) == {"A", "B", "C"}
    assert run["macro_acc"] == pytest.approx(np.mean(list(run["per_class"].values())))

    res2 = tmp_path / "res2"
    r = invoke(
        *eval_args(tmp_path, "test-cheap", "--manifest", str(manifest), "--compat", "rmis-official")
        + ["--results-dir", str(res2)]
    )
    assert r.exit_code == 0, r.output
    official = json.loads(next(res2.rglob("data*.json")).read_text())
    assert official["official_rounding"] is True
    assert official["provenance"]["compat"] == "rmis-official"
    assert official["score"] == round(plain["score"], 2)
    assert official["runs"][0]["per_class"] == {c: round(v, 2) for c, v in run["per_class"].items()}
