"""`rmis data table|check|download-help` and `rmis eval --suite rmis` on miniature releases."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import soundfile as sf
from typer.testing import CliRunner

from rmis.cli import app
from rmis.data.miniature import write_dcase_miniature, write_miniature
from rmis.data.specs import DATASETS, FD_DATASETS

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), env={"COLUMNS": "250"})


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rmis-data")
    write_miniature(root)
    write_dcase_miniature(root)
    return root


def test_data_table_matches_the_loader(root: Path, tmp_path: Path) -> None:
    out = tmp_path / "pu.csv"
    r = invoke("data", "table", "pu_vib", "--data-root", str(root), "--out", str(out))
    assert r.exit_code == 0, r.output
    table = pd.read_csv(out)
    assert list(table.columns) == ["file", "label", "group"]
    assert table["file"].is_monotonic_increasing
    assert set(table["label"]) == set(DATASETS["pu_vib"].classes)
    r = invoke("data", "table", "iiee", "--data-root", str(root), "--out", str(out))
    assert r.exit_code == 0, r.output
    iiee = pd.read_csv(out)
    assert "split" in iiee.columns and set(iiee["split"]) == {"train", "test"}


def test_data_check_reports_and_fails_on_problems(root: Path, tmp_path: Path) -> None:
    r = invoke("data", "check", "--data-root", str(root), "--json")
    assert r.exit_code == 0, r.output
    checks = {c["name"]: c for c in json.loads(r.output)}
    assert len(checks) == 19
    for name in FD_DATASETS:
        c = checks[name]
        assert c["found"] and c["files"] > 0 and not c["problems"], (name, c["problems"])
        assert c["sample_rates"] == [DATASETS[name].sample_rate]
        assert set(c["classes"]) == set(DATASETS[name].classes)
    assert checks["pu_vib"]["sealable"] is True and checks["iiee"]["sealable"] is None
    for year in range(20, 26):
        c = checks[f"dcase{year}"]
        assert c["found"] and c["files"] > 0 and not c["problems"] and c["machines"]
    # a stray file and a file at the wrong rate are reported; the exit status is 1
    bad = tmp_path / "data"
    write_miniature(bad, ["sdust_gear"])
    folder = bad / "sdust_gear"
    sf.write(folder / "mystery_recording_channel1_ch0_0.wav", [0.0] * 100, 25_600)
    some = sorted(folder.glob("*.wav"))[0]
    sf.write(some, [0.0] * 100, 16_000)
    r = invoke("data", "check", "--data-root", str(bad), "--datasets", "sdust_gear")
    assert r.exit_code == 1
    assert "mystery_recording" in r.output and "16000" in r.output


def test_download_help_names_every_dataset() -> None:
    r = invoke("data", "download-help")
    assert r.exit_code == 0
    for name in (*FD_DATASETS, "dcase"):
        assert name in r.output


def test_whole_rmis_suite_on_miniatures(root: Path, tmp_path: Path) -> None:
    r = invoke(
        "eval",
        "logspec",
        "--suite",
        "rmis",
        "--data-root",
        str(root),
        "--results-dir",
        str(tmp_path / "res"),
        "--cache-dir",
        str(tmp_path / "cache"),
    )
    assert r.exit_code == 0, r.output
    scores = {}
    for name, spec in DATASETS.items():
        res = json.loads(next((tmp_path / "res" / "logspec").glob(f"*/{name}.json")).read_text())
        assert res["dataset"] == name and 0 <= res["score"] <= 100
        assert res["provenance"]["window_seconds"] == spec.window_seconds
        scores[name] = res["score"]
    assert "partial" not in r.output
    ad = sum(scores[f"dcase{y}"] for y in range(20, 26)) / 6
    fd = sum(scores[n] for n in FD_DATASETS) / 13
    assert f"AD {ad:.2f}, FD {fd:.2f}, RMIS {(ad + fd) / 2:.2f}" in r.output
    # the leaderboard then shows the measured row complete, beside the paper's rows
    r = invoke("leaderboard", "--results-dir", str(tmp_path / "res"), "--format", "markdown")
    row = next(line for line in r.output.splitlines() if "| logspec |" in line)
    assert f"| {(ad + fd) / 2:.2f} |" in row
    # a dataset's folder can be overridden
    r = invoke(
        "eval",
        "logspec",
        "--suite",
        "rmis",
        "--datasets",
        "pu_cur",
        "--dataset-dir",
        f"pu_cur={root / 'pu_cur'}",
        "--results-dir",
        str(tmp_path / "res2"),
        "--cache-dir",
        str(tmp_path / "cache"),
    )
    assert r.exit_code == 0, r.output
