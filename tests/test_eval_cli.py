"""`rmis eval` / `rmis embed` / `rmis check-model` end to end."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from rmis.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), env={"COLUMNS": "200"})


def cwru_manifest(shared: Path, out: Path) -> Path:
    """Manifest of the real CWRU recordings: label = fault type, group = recording (both
    channels of a recording are sealed together)."""
    rows = list(csv.DictReader(open(shared / "data" / "cwru12k" / "manifest.csv")))
    manifest = out / "cwru.csv"
    with open(manifest, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "group"])
        for r in rows:
            w.writerow(
                [str(shared / "data" / "cwru12k" / r["file"]), r["fault"], r["recording_id"]]
            )
    return manifest


def test_cwru_manifest_eval_far_above_chance(shared: Path, tmp_path: Path) -> None:
    manifest = cwru_manifest(shared, tmp_path)
    args = [
        "eval",
        "logspec",
        "--manifest",
        str(manifest),
        "--results-dir",
        str(tmp_path / "res"),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--workers",
        "0",
    ]
    r = invoke(*args)
    assert r.exit_code == 0, r.output
    res = json.loads(next((tmp_path / "res" / "logspec").glob("*/cwru-*.json")).read_text())
    assert res["protocol"] == "fd" and res["classes"] == ["B", "IR", "OR6"]
    assert res["n_files"] == 72 and len(res["runs"]) == 10
    # sealed by recording: a recording's two channels are never on both sides
    for run in res["runs"]:
        assert len(run["test_groups"]) == 18
    assert res["score"] > 55  # chance is 33.3 % (logspec gives ~66 %)
    prov = res["provenance"]
    assert prov["files_embedded"] == 72 and len(prov["dataset_manifest_sha256"]) == 64
    assert res["model"]["name"] == "logspec"
    # a second run reuses every embedding and gives the same score
    r2 = invoke(*args)
    assert r2.exit_code == 0, r2.output
    res2 = json.loads(next((tmp_path / "res" / "logspec").glob("*/cwru-*.json")).read_text())
    assert res2["provenance"]["files_reused_from_cache"] == 72
    assert res2["score"] == res["score"]


def test_embed_command(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        p = tmp_path / f"clip{i}.wav"
        sf.write(p, rng.normal(size=16_000 * (i + 1)) * 0.1, 16_000)
        paths.append(str(p))
    out = tmp_path / "emb.npz"
    r = invoke("embed", "logspec", *paths, "--out", str(out), "--window-seconds", "1")
    assert r.exit_code == 0, r.output
    with np.load(out) as npz:
        assert sorted(npz.files) == sorted(paths) and npz[paths[0]].shape == (64,)
    r = invoke("embed", "nosuchmodel", paths[0], "--out", str(out))
    assert r.exit_code == 2 and "unknown model" in r.output


def test_check_model_and_list_models() -> None:
    r = invoke("check-model", "logspec")
    assert r.exit_code == 0, r.output
    assert "batch independent" in r.output and "FAIL" not in r.output
    r = invoke("list", "models")
    assert r.exit_code == 0 and "logspec" in r.output


def test_eval_without_data_explains(tmp_path: Path) -> None:
    r = invoke("eval", "logspec", "--suite", "rmis", "--data-root", str(tmp_path))
    assert r.exit_code == 2 and "--suite synth" in r.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--suite", "nope"], "'nope' is not one of 'synth', 'rmis'"),  # a choice
        (["-o", "band_hz"], "key=value"),
    ],
)
def test_eval_argument_errors(tmp_path: Path, args: list[str], message: str) -> None:
    r = invoke("eval", "logspec", *args, "--cache-dir", str(tmp_path))
    assert r.exit_code == 2 and message in r.output, r.output


def test_rmis_suite_dcase23_miniature_with_real_ground_truth(shared: Path, tmp_path: Path) -> None:
    """dcase23 in its official layout (dev + eval), eval labels from the real 2023 list."""
    from rmis.data.dcase import parse_eval_gt

    gt = parse_eval_gt(shared / "data" / "dcase_eval_gt" / "eval_data_list_2023.csv", 2023)
    root = tmp_path / "data" / "dcase23"
    rng = np.random.default_rng(0)
    sr = 16_000

    def clip(path: Path, anomaly: bool) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        t = np.arange(sr) / sr
        x = 0.1 * rng.normal(size=sr) + (0.3 * np.sin(2 * np.pi * 3000 * t) if anomaly else 0)
        sf.write(path, x, sr, subtype="PCM_16")

    for subset, machines in (("dev", ["fan", "valve"]), ("eval", ["bandsaw", "shaker"])):
        for m in machines:
            base = root / f"{subset}_data" / m
            for dom in ("source", "target"):
                for i in range(4):
                    clip(base / "train" / f"section_00_{dom}_train_normal_{i:04d}_a.wav", False)
            if subset == "dev":
                for dom in ("source", "target"):
                    for lab in ("normal", "anomaly"):
                        for i in range(2):
                            name = f"section_00_{dom}_test_{lab}_{i:04d}_a.wav"
                            clip(base / "test" / name, lab == "anomaly")
            else:  # anonymised names, two of each (domain, label) from the real list
                want = {(d, lab): 2 for d in ("source", "target") for lab in ("normal", "anomaly")}
                for anon, labelled in gt[m].items():
                    parts = labelled.split("_")
                    key = (parts[2], parts[4])
                    if want.get(key):
                        want[key] -= 1
                        clip(base / "test" / anon, key[1] == "anomaly")
    (tmp_path / "data" / "dcase_eval_gt").mkdir()
    (tmp_path / "data" / "dcase_eval_gt" / "eval_data_list_2023.csv").write_bytes(
        (shared / "data" / "dcase_eval_gt" / "eval_data_list_2023.csv").read_bytes()
    )
    r = invoke(
        "eval",
        "logspec",
        "--suite",
        "rmis",
        "--data-root",
        str(tmp_path / "data"),
        "--datasets",
        "dcase23",
        "--results-dir",
        str(tmp_path / "res"),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--workers",
        "0",
    )
    assert r.exit_code == 0, r.output
    res = json.loads(next((tmp_path / "res" / "logspec").glob("*/dcase23.json")).read_text())
    assert res["protocol"] == "dcase2023" and set(res["subsets"]) == {"dev", "eval"}
    assert [s["machine"] for s in res["sections"]] == ["fan", "valve", "bandsaw", "shaker"]
    assert all(s["n_test"] == 8 for s in res["sections"])
    # the 3 kHz tone makes every anomaly stand out: perfect detection
    assert res["score"] == 100.0
    # a dataset asked for by name but absent is an error naming it
    r = invoke(
        "eval",
        "logspec",
        "--suite",
        "rmis",
        "--data-root",
        str(tmp_path / "data"),
        "--datasets",
        "dcase21",
        "--cache-dir",
        str(tmp_path / "cache"),
    )
    assert r.exit_code == 2 and "dataset 'dcase21' not found" in r.output


def test_synth_suite_end_to_end(tmp_path: Path, synth_cache: Path) -> None:
    """The README's main command: a full table on a fresh embedding cache (the suite itself is
    generated once per test session), reused on the second run."""
    from rmis.data.synth import SYNTH_DATASETS

    args = [
        "eval",
        "logspec",
        "--suite",
        "synth",
        "--results-dir",
        str(tmp_path / "res"),
        "--cache-dir",
        str(synth_cache),
    ]
    r = invoke(*args)
    assert r.exit_code == 0, r.output
    for name in SYNTH_DATASETS:
        assert name in r.output
        res = json.loads(next((tmp_path / "res" / "logspec").glob(f"*/{name}.json")).read_text())
        assert res["dataset"] == name and res["provenance"]["files_embedded"] == res["n_files"]
        chance = 50.0 if res["task"] == "ad" else 100 / len(res["classes"])
        assert chance + 10 < res["score"] < 100
    assert "synth: AD" in r.output and "partial" not in r.output
    r = invoke(*args, "--datasets", "synth_fd48k")
    assert r.exit_code == 0 and "0 new" in r.output
