"""Leaderboard, split-curve and band-curve: hand-computed means, figures read back, and the
synth suite end to end with logspec and a random official-format FISHER-tiny checkpoint."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from rmis.cli import app
from rmis.data.specs import AD_DATASETS, FD_DATASETS
from rmis.leaderboard import format_board, leaderboard, rank_matrix, score_vs_params_series

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), env={"COLUMNS": "200"})


def fake_result(
    root: Path,
    model: str,
    family: str,
    variant: str,
    dataset: str,
    score: float,
    params: float | None = None,
    config: str | None = "c0nf1gdef0",
    run: dict | None = None,
) -> None:
    """A result file in the layout ``<model>/<config>/<dataset>.json`` beside a ``run.json``
    (``run`` overrides its fields), or the old ``<model>/<dataset>.json`` with config None."""
    path = root / model / (config or "") / f"{dataset}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    if config is not None:
        base = {"model": model, "options": {}, "compat": "none", "precision": "fp32", "runs": 10}
        (path.parent / "run.json").write_text(
            json.dumps({"kind": "run", "config_id": config, **base, **(run or {})})
        )
    path.write_text(
        json.dumps(
            {
                "kind": "eval",
                "dataset": dataset,
                "score": score,
                "skipped_files": {},
                "model": {
                    "name": model,
                    "family": family,
                    "variant": variant,
                    "params_millions": params,
                    "weights_sha256": "ab" * 32,
                },
                "provenance": {"rmis_version": "0.1.0", "git_revision": None},
            }
        )
    )


def test_paper_rows_reproduce_their_means() -> None:
    board = leaderboard(Path("/nonexistent"), "rmis")
    assert len(board) == 33 and set(board["source"]) == {"reported in the paper (Table 3)"}
    for r in board.itertuples():
        assert np.mean([getattr(r, n) for n in FD_DATASETS]) == pytest.approx(r.fd_mean, abs=0.02)
    assert board["rmis"].is_monotonic_decreasing
    assert (board.iloc[0]["family"], board.iloc[0]["variant"]) == ("FISHER", "small")


def test_measured_rows_markdown_by_hand(tmp_path: Path) -> None:
    paper = {
        r["variant"]: r
        for r in csv.DictReader(
            open(Path(__file__).resolve().parents[1] / "results/paper/table3_rmis.csv")
        )
        if r["family"] == "FISHER"
    }
    for n in (*AD_DATASETS, *FD_DATASETS):  # every measured score 1 point above the paper
        fake_result(tmp_path, "fisher-tiny", "FISHER", "tiny", n, float(paper["tiny"][n]) + 1, 5.5)
    fake_result(tmp_path, "my-enc", "Mine", "base", "iica", 50.0)  # partial row
    fake_result(tmp_path, "my-enc", "Mine", "base", "dcase20", 60.0)
    board = leaderboard(tmp_path, "rmis")
    md = format_board(board, "rmis", "markdown")
    tiny = next(line for line in md.splitlines() if "| FISHER | tiny |  | measured" in line)
    cells = [c.strip() for c in tiny.strip("|").split("|")]
    ad = np.mean([float(paper["tiny"][n]) + 1 for n in AD_DATASETS])
    fd = np.mean([float(paper["tiny"][n]) + 1 for n in FD_DATASETS])
    assert cells[11] == f"{ad:.2f}" and cells[25] == f"{fd:.2f}"
    assert cells[26] == f"{(ad + fd) / 2:.2f}"
    paper_rmis = (
        np.mean([float(paper["tiny"][n]) for n in AD_DATASETS])
        + np.mean([float(paper["tiny"][n]) for n in FD_DATASETS])
    ) / 2
    assert cells[27] == f"{(ad + fd) / 2 - paper_rmis:+.2f}" == "+1.00"
    mine = next(line for line in md.splitlines() if "| Mine | base |" in line)
    cells = [c.strip() for c in mine.strip("|").split("|")]
    assert cells[5] == "60.00" and cells[6] == "-" and cells[11] == "-" and cells[26] == "-"
    assert md.splitlines()[-1].startswith("| Mine | base")  # no RMIS score: sorted last
    # ranks: 1 = best, missing stays missing
    ranks = rank_matrix(board, ("iica", "dcase21"))
    best = board["iica"].idxmax()
    assert ranks.loc[best, "iica"] == 1 and np.isnan(ranks.iloc[-1]["dcase21"])


def test_score_vs_params_series_and_figures(tmp_path: Path) -> None:
    fake_result(tmp_path, "fisher-tiny", "FISHER", "tiny", "iica", 80.0, 5.5)
    board = leaderboard(tmp_path, "rmis")
    series = score_vs_params_series(board)
    assert series["FISHER"] == ([5.5, 10.0, 22.0], [61.12, 61.43, 62.23])
    assert "FISHER (measured)" not in series  # partial row: no RMIS score, not plotted
    r = invoke(
        "leaderboard",
        "--results-dir",
        str(tmp_path),
        "--format",
        "csv",
        "--out",
        str(tmp_path / "board.csv"),
    )
    assert r.exit_code == 0, r.output
    assert len(pd.read_csv(tmp_path / "board.csv")) == 34
    for name in ("rmis_score_vs_params", "rmis_rank_heatmap"):
        png = mpimg.imread(tmp_path / "figures" / f"{name}.png")
        assert png.shape[0] > 200 and png.shape[1] > 200 and png.std() > 0
        svg = (tmp_path / "figures" / f"{name}.svg").read_text()
        assert svg.startswith("<?xml") and len(svg) > 5000
    svg = (tmp_path / "figures" / "rmis_score_vs_params.svg").read_text()
    assert "FISHER" in svg
    assert "Wav2Vec 2.0 base" not in series  # no parameter count in the paper: named in a note
    assert "not plotted, no parameter count" in svg and "Wav2Vec 2.0 base" in svg


def test_synth_end_to_end_leaderboard_split_and_band_curves(
    tmp_path: Path, synth_cache: Path
) -> None:
    from rmis.models.fisher import random_checkpoint

    # official format, one block deep (the architecture comes from the cfg): same code path,
    # same band layout, a fraction of the compute
    ckpt = random_checkpoint("tiny", tmp_path / "tiny.pt", depth=1)
    common = [
        "--suite",
        "synth",
        "--datasets",
        "synth_fd16k,synth_fd25k6",
        "--results-dir",
        str(tmp_path / "res"),
        "--cache-dir",
        str(synth_cache),
    ]
    for model, extra in (("logspec", []), ("fisher-tiny", ["--checkpoint", str(ckpt)])):
        r = invoke("eval", model, *common, *extra)
        assert r.exit_code == 0, r.output
    r = invoke(
        "leaderboard",
        "--suite",
        "synth",
        "--results-dir",
        str(tmp_path / "res"),
        "--format",
        "markdown",
    )
    assert r.exit_code == 0 and "| logspec |" in r.output and "| FISHER | tiny |" in r.output
    # a plain `rmis leaderboard` (no --suite) finds the synth results too
    r = invoke("leaderboard", "--results-dir", str(tmp_path / "res"), "--format", "markdown")
    assert r.exit_code == 0 and "| logspec |" in r.output and "| FISHER | tiny |" in r.output
    r = invoke("split-curve", "logspec", "fisher-tiny", *common)
    assert r.exit_code == 0, r.output
    out = tmp_path / "res" / "split_curves" / "synth"
    areas = pd.read_csv(out / "areas.csv")
    assert list(areas["model"]) == ["logspec", "fisher-tiny"]
    assert areas["mean"].tolist() == pytest.approx(
        areas[["synth_fd16k", "synth_fd25k6"]].mean(axis=1).tolist()
    )
    curves = json.loads((out / "curves.json").read_text())
    pts = curves["curves"]["synth_fd16k"]["logspec"]
    assert [p["test_size"] for p in pts] == [round(0.05 * i, 2) for i in range(1, 20)]
    fixed_path = next((tmp_path / "res/logspec").glob("*/synth_fd16k.json"))
    fixed = json.loads(fixed_path.read_text())["score"]
    assert next(p["mean"] for p in pts if p["test_size"] == 0.5) == pytest.approx(fixed)
    assert -1 <= curves["pearson_pairs"] <= 1
    assert mpimg.imread(out / "split_curves.png").std() > 0
    r = invoke("band-curve", "fisher-tiny", *common)
    assert r.exit_code == 0, r.output
    bands = pd.read_csv(tmp_path / "res/band_curves/synth/fisher-tiny.csv")
    assert bands.groupby("dataset")["of"].first().to_dict() == {"synth_fd16k": 2, "synth_fd25k6": 3}
    full = bands[bands["bands"] == bands["of"]].set_index("dataset")["score"]
    for name in ("synth_fd16k", "synth_fd25k6"):
        res = json.loads(next((tmp_path / "res/fisher-tiny").glob(f"*/{name}.json")).read_text())
        assert full[name] == pytest.approx(res["score"])  # all bands = the full embedding
    assert bands.loc[bands["dataset"] == "synth_fd16k", "top_hz"].tolist() == [4000.0, 8000.0]
    r = invoke("band-curve", "logspec", *common)
    assert r.exit_code == 2 and "sub-band embedding layout" in r.output
    # a second configuration of logspec: the curve commands ask which one
    r = invoke("eval", "logspec", *common, "--runs", "2")
    assert r.exit_code == 0, r.output
    r = invoke("split-curve", "logspec", *common)
    assert r.exit_code == 2 and "2 configurations" in r.output and "logspec@" in r.output
