"""Issue 9, section 2 and the leaderboard items of section 6: results are laid out per run
configuration (``RESULTS/<model>/<config id>/<dataset>.json`` + ``run.json``) and never
overwrite results of other data, weights, options or settings; old-layout files are still read;
the leaderboard shows one row per (model, configuration) and every suite it finds; table/html
outputs and figures people read."""

from __future__ import annotations

import csv
import hashlib
import json
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from typer.testing import CliRunner

from rmis.cli import app
from rmis.errors import RMISError
from rmis.evaluate import config_id, manifest_name

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), env={"COLUMNS": "200"})


def one_line_error(r, text: str) -> None:
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and text in r.output, r.output
    assert r.output.strip().startswith("error:") and len(r.output.strip().splitlines()) == 1


def write_result(
    root: Path,
    model: str,
    dataset: str,
    score: float,
    config: str | None,
    *,
    family: str = "Fam",
    variant: str = "v",
    task: str = "fd",
    params: float | None = None,
    run: dict | None = None,
    provenance: dict | None = None,
) -> Path:
    """A result file; ``config=None`` writes the old layout ``<model>/<dataset>.json``."""
    folder = root / model / config if config else root / model
    folder.mkdir(parents=True, exist_ok=True)
    if config:
        base = {"model": model, "options": {}, "compat": "none", "precision": "fp32", "runs": 10}
        (folder / "run.json").write_text(
            json.dumps({"kind": "run", "config_id": config, **base, **(run or {})})
        )
    path = folder / f"{dataset}.json"
    path.write_text(
        json.dumps(
            {
                "kind": "eval",
                "dataset": dataset,
                "task": task,
                "score": score,
                "skipped_files": {},
                "model": {
                    "name": model,
                    "family": family,
                    "variant": variant,
                    "params_millions": params,
                    "weights_sha256": "ab" * 32,
                    "options": {},
                },
                "provenance": {"rmis_version": "0.1.0", "git_revision": None} | (provenance or {}),
            }
        )
    )
    return path


# --- configuration ids and manifest names ---------------------------------------------------


def test_config_id_is_sha256_of_canonical_json() -> None:
    cfg = {
        "model": "logspec",
        "checkpoint": None,
        "weights_sha256": None,
        "revision": None,
        "options": {"n_mels": 64, "fmax": 8000},
        "compat": "none",
        "precision": "fp32",
        "runs": 10,
    }
    canonical = (
        '{"compat":"none","options":{"fmax":8000,"n_mels":64},"precision":"fp32",'
        '"revision":null,"runs":10,"weights_sha256":null}'
    )
    assert config_id(cfg) == hashlib.sha256(canonical.encode()).hexdigest()[:10]
    # option order does not matter; the checkpoint's spelling does not either (its SHA does)
    same = {**cfg, "options": {"fmax": 8000, "n_mels": 64}, "checkpoint": "x.pt"}
    assert config_id(same) == config_id(cfg)
    for change in (
        {"weights_sha256": "00" * 32},
        {"revision": "v2"},
        {"options": {"n_mels": 32, "fmax": 8000}},
        {"compat": "rmis-official"},
        {"precision": "fp16"},
        {"runs": 2},
    ):
        assert config_id({**cfg, **change}) != config_id(cfg), change


def test_manifest_default_name_hashes_the_absolute_path(tmp_path: Path) -> None:
    a, b = tmp_path / "projA" / "data.csv", tmp_path / "projB" / "data.csv"
    for p in (a, b):
        p.parent.mkdir()
        p.write_text("path,label,group\n")
    digest = hashlib.sha256(str(a.resolve()).encode()).hexdigest()[:6]
    assert manifest_name(a) == f"data-{digest}"
    assert manifest_name(b) != manifest_name(a) and manifest_name(b).startswith("data-")
    assert manifest_name(a, "pumps_2024.v1") == "pumps_2024.v1"
    for bad in ("../x", "a b", "", "-x", "iica", "synth_fd16k", "run", "x" * 65):
        with pytest.raises(RMISError, match="--name"):
            manifest_name(a, bad)


# --- end to end on two manifests called data.csv -----------------------------------------


def _manifest(folder: Path, per_class: int, seed: int, hz=(1000, 3000), noise=0.05) -> Path:
    """Two tone classes, ``per_class`` groups each, one 0.5-s file per group."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    t = np.arange(8000) / 16_000
    rows = []
    for label, f in zip(("low", "high"), hz, strict=True):
        for g in range(per_class):
            path = folder / f"{label}{g}.wav"
            x = 0.3 * np.sin(2 * np.pi * f * t) + noise * rng.normal(size=t.size)
            sf.write(path, x, 16_000)
            rows.append([path.name, label, f"{label}{g}"])
    with open(folder / "data.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "group"])
        w.writerows(rows)
    return folder / "data.csv"


def test_manifests_and_configurations_never_overwrite_each_other(tmp_path: Path) -> None:
    res_dir = tmp_path / "res"
    a = _manifest(tmp_path / "projA", 6, 0)
    b = _manifest(tmp_path / "projB", 8, 1, hz=(1000, 1010), noise=0.5)  # hard: not 100
    common = ["--results-dir", str(res_dir), "--cache-dir", str(tmp_path / "cache")]
    common += ["--workers", "0"]
    for m in (a, b):
        r = invoke("eval", "logspec", "--manifest", str(m), "--runs", "2", *common)
        assert r.exit_code == 0, r.output
    # the default id of `--runs 2` with logspec (no weights, no options), computed by hand
    canonical = (
        '{"compat":"none","options":{},"precision":"fp32","revision":null,"runs":2,'
        '"weights_sha256":null}'
    )
    cid2 = hashlib.sha256(canonical.encode()).hexdigest()[:10]
    name_a, name_b = manifest_name(a), manifest_name(b)
    folder = res_dir / "logspec" / cid2
    res_a = json.loads((folder / f"{name_a}.json").read_text())
    res_b = json.loads((folder / f"{name_b}.json").read_text())
    assert (res_a["n_files"], res_b["n_files"]) == (12, 16)  # both kept, neither replaced
    assert res_a["provenance"]["config_id"] == cid2 and len(res_a["runs"]) == 2
    run = json.loads((folder / "run.json").read_text())
    assert run["config_id"] == cid2 and run["model"] == "logspec" and run["family"] == "logspec"
    assert (run["runs"], run["precision"], run["compat"], run["options"]) == (2, "fp32", "none", {})
    assert run["checkpoint"] is None and "weights_sha256" in run and run["rmis_version"]
    # another configuration (--runs 3, and a name) goes to its own folder
    r = invoke("eval", "logspec", "--manifest", str(a), "--runs", "3", "--name", "pumps", *common)
    assert r.exit_code == 0, r.output
    cid3 = hashlib.sha256(canonical.replace('"runs":2', '"runs":3').encode()).hexdigest()[:10]
    assert json.loads((res_dir / "logspec" / cid3 / "pumps.json").read_text())["n_files"] == 12
    assert sorted(p.name for p in (res_dir / "logspec").iterdir()) == sorted([cid2, cid3])
    assert json.loads((folder / f"{name_a}.json").read_text()) == res_a  # untouched
    # re-running a configuration replaces only its own file
    before_b = (folder / f"{name_b}.json").read_bytes()
    r = invoke("eval", "logspec", "--manifest", str(a), "--runs", "2", *common)
    assert r.exit_code == 0 and f"{cid2}" in r.output, r.output
    assert (folder / f"{name_b}.json").read_bytes() == before_b
    again = json.loads((folder / f"{name_a}.json").read_text())
    assert again["score"] == res_a["score"] and again["provenance"]["files_reused_from_cache"] == 12

    # a plain `rmis leaderboard` finds the manifest results: one row per configuration
    csv_out = tmp_path / "board.csv"
    r = invoke(
        "leaderboard", "--results-dir", str(res_dir), "--format", "csv", "--out", str(csv_out)
    )
    assert r.exit_code == 0, r.output
    board = pd.read_csv(csv_out)
    assert len(board) == 2 and set(board["config_id"]) == {cid2, cid3}
    assert res_a["score"] != res_b["score"]
    row2 = board.set_index("config_id").loc[cid2]
    assert row2["config"] == f"{cid2} (runs=2)"
    assert (row2[name_a], row2[name_b]) == (res_a["score"], res_b["score"])
    row3 = board.set_index("config_id").loc[cid3]
    assert pd.isna(row3[name_a]) and row3["pumps"] == pytest.approx(
        json.loads((res_dir / "logspec" / cid3 / "pumps.json").read_text())["score"]
    )
    # rows without all the board's FD datasets (pumps / the two data-*): no mean
    assert pd.isna(row3["overall"]) and pd.isna(row2["overall"])
    r = invoke(
        "leaderboard",
        "--results-dir",
        str(res_dir),
        "--datasets",
        f"{name_a},{name_b}",
        "--format",
        "csv",
        "--out",
        str(csv_out),
    )
    assert r.exit_code == 0, r.output
    board = pd.read_csv(csv_out)
    assert board["config_id"].tolist() == [cid2]  # cid3 has neither dataset: no row
    assert board["overall"][0] == pytest.approx((res_a["score"] + res_b["score"]) / 2)
    # a board over exactly one dataset: overall = its score
    r = invoke(
        "leaderboard",
        "--results-dir",
        str(res_dir),
        "--datasets",
        f"{name_b},{name_b}",
        "--format",
        "markdown",
    )
    assert r.exit_code == 0, r.output
    assert "not RMIS benchmark scores" in r.output
    line = next(x for x in r.output.splitlines() if x.startswith("| logspec"))
    assert f"| {res_b['score']:.2f} | {res_b['score']:.2f} | {res_b['score']:.2f} |" in line
    r = invoke("leaderboard", "--results-dir", str(res_dir), "--datasets", "nosuch")
    one_line_error(r, "no result for dataset 'nosuch'")
    # --name is checked, and only for manifests
    r = invoke("eval", "logspec", "--manifest", str(a), "--name", "a/b", *common)
    one_line_error(r, "--name 'a/b'")
    r = invoke("eval", "logspec", "--suite", "synth", "--name", "x", *common)
    one_line_error(r, "--name")


# --- leaderboard over fake result files ------------------------------------------------


def test_plain_leaderboard_shows_every_suite_found(tmp_path: Path) -> None:
    """After `rmis eval logspec --suite synth`, `rmis leaderboard` (no --suite) shows it."""
    from rmis.leaderboard import suite_datasets

    ad, fd = suite_datasets("synth")
    for i, n in enumerate((*ad, *fd)):
        write_result(
            tmp_path,
            "logspec",
            n,
            60.0 + i,
            "cfg0000001",
            family="logspec",
            variant="250Hz",
            task="ad" if n in ad else "fd",
            params=0.0,
        )
    r = invoke("leaderboard", "--results-dir", str(tmp_path), "--format", "markdown")
    assert r.exit_code == 0, r.output
    line = next(x for x in r.output.splitlines() if x.startswith("| logspec | 250Hz"))
    ad_mean = np.mean([60.0 + i for i in range(len(ad))])
    fd_mean = np.mean([60.0 + len(ad) + i for i in range(len(fd))])
    assert f"| {(ad_mean + fd_mean) / 2:.2f} |" in line
    assert "Table 3" not in r.output  # no rmis board: nothing of the suite was measured
    assert (tmp_path / "figures" / "synth_rank_heatmap.png").is_file()
    # with an RMIS result too: both boards, one after the other
    write_result(
        tmp_path,
        "logspec",
        "iica",
        70.0,
        "cfg0000001",
        family="logspec",
        variant="250Hz",
        params=0.0,
    )
    r = invoke("leaderboard", "--results-dir", str(tmp_path), "--format", "markdown")
    assert "## rmis leaderboard" in r.output and "## synth leaderboard" in r.output
    r = invoke("leaderboard", "--results-dir", str(tmp_path), "--suite", "manifest")
    one_line_error(r, "no results for the manifest board")
    r = invoke("leaderboard", "--results-dir", str(tmp_path), "--suite", "nope")
    one_line_error(r, "'nope' is not one of 'auto', 'rmis', 'synth', 'manifest'")


def test_one_row_per_configuration_and_legacy_files(tmp_path: Path) -> None:
    from rmis.curves import model_results
    from rmis.leaderboard import leaderboard

    write_result(tmp_path, "enc", "iica", 50.0, "aaaaaaaaaa")
    write_result(tmp_path, "enc", "iica", 40.0, "bbbbbbbbbb", run={"precision": "fp16"})
    write_result(tmp_path, "enc", "iiee", 30.0, None)  # old layout, still read
    board = leaderboard(tmp_path, "rmis")
    mine = board[board["source"] == "measured"].set_index("config_id")
    assert len(mine) == 3  # never merged into one row
    assert mine.loc["aaaaaaaaaa", "iica"] == 50.0 and np.isnan(mine.loc["aaaaaaaaaa", "iiee"])
    assert mine.loc["bbbbbbbbbb", "iica"] == 40.0
    assert mine.loc["bbbbbbbbbb", "config"] == "bbbbbbbbbb (precision=fp16)"
    assert mine.loc["aaaaaaaaaa", "config"] == "aaaaaaaaaa (default)"
    legacy = next(c for c in mine.index if c.startswith("legacy-"))
    assert mine.loc[legacy, "iiee"] == 30.0 and np.isnan(mine.loc[legacy, "iica"])
    # curve commands: a model with several configurations needs MODEL@CONFIGID
    with pytest.raises(RMISError, match=r"3 configurations.*enc@aaaaaaaaaa \(default\)"):
        model_results(tmp_path, "enc")
    assert model_results(tmp_path, "enc@bbbbbbbbbb")["iica"]["score"] == 40.0
    assert model_results(tmp_path, f"enc@{legacy}")["iiee"]["score"] == 30.0
    with pytest.raises(RMISError, match="no configuration 'zzz'"):
        model_results(tmp_path, "enc@zzz")
    with pytest.raises(RMISError, match="no results of model 'other'"):
        model_results(tmp_path, "other")
    # a single (legacy) configuration resolves by the model name alone, label stays plain
    only = tmp_path / "only"
    write_result(only, "old", "iiee", 33.0, None, provenance={"compat": "none"})
    assert model_results(only, "old")["iiee"]["score"] == 33.0
    assert leaderboard(only, "rmis").query("source == 'measured'")["config"].tolist() == [""]


def test_table_out_is_plain_text_and_html_is_a_page(tmp_path: Path) -> None:
    write_result(tmp_path, "enc", "iica", 50.25, "aaaaaaaaaa", params=3.0)
    out = tmp_path / "board.txt"
    r = invoke("leaderboard", "--results-dir", str(tmp_path), "--suite", "rmis", "--out", str(out))
    assert r.exit_code == 0, r.output
    text = out.read_text()
    lines = text.splitlines()
    assert lines[0] == "rmis leaderboard"
    header = next(x for x in lines if x.startswith("model"))
    assert header.split()[:6] == ["model", "source", "params", "AD", "FD", "RMIS"]
    assert "," not in header and "family,variant" not in text
    row = next(x for x in lines if x.startswith("Fam v"))
    assert row.split()[2:4] == ["measured", "3"] and row.endswith("1/19")
    fisher = next(x for x in lines if x.startswith("FISHER small"))
    assert "62.23" in fisher.split()  # the paper row, as in Table 3
    page = tmp_path / "board.html"
    r = invoke(
        "leaderboard",
        "--results-dir",
        str(tmp_path),
        "--suite",
        "rmis",
        "--format",
        "html",
        "--out",
        str(page),
    )
    assert r.exit_code == 0, r.output
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")

    class Tags(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.tags: list[str] = []
            self.title = ""

        def handle_starttag(self, tag, attrs):
            self.tags.append(tag + "".join(f" {k}={v}" for k, v in attrs))

        def handle_data(self, data):
            if self.tags and self.tags[-1] == "title":
                self.title += data

    p = Tags()
    p.feed(html)
    names = [t.split()[0] for t in p.tags]
    assert "meta charset=utf-8" in p.tags and "style" in names and "table" in names
    assert p.title.strip() == "rmis leaderboard" and names.index("head") < names.index("body")
    assert names.index("body") < names.index("table")
    assert "50.25" in html


def _no_overlap(boxes) -> bool:
    return all(not a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])


@pytest.mark.parametrize("n_models", [1, 2])
def test_rank_heatmap_legible_with_few_models(tmp_path: Path, n_models: int) -> None:
    from rmis.leaderboard import Board, leaderboard, rank_heatmap_figure, suite_datasets

    ad, fd = suite_datasets("synth")
    for m in range(n_models):
        for i, n in enumerate((*ad, *fd)):
            write_result(
                tmp_path,
                f"enc{m}",
                n,
                50.0 + i + m,
                "c",
                family=f"Enc{m}",
                variant="a-rather-long-variant-name",
                task="ad" if n in ad else "fd",
            )
    board = leaderboard(tmp_path, Board("synth", ad, fd))
    fig = rank_heatmap_figure(board, (*ad, *fd))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    figbox = fig.bbox
    for labels in (ax.get_xticklabels(), ax.get_yticklabels()):
        boxes = [t.get_window_extent(renderer) for t in labels if t.get_text()]
        assert boxes and _no_overlap(boxes)
        for b in boxes:  # inside the figure: nothing clipped
            assert b.x0 >= figbox.x0 - 1 and b.x1 <= figbox.x1 + 1
            assert b.y0 >= figbox.y0 - 1 and b.y1 <= figbox.y1 + 1
    bar = fig.axes[1]
    ticks = [t for t in bar.get_yticklabels() if t.get_text()]
    assert all(float(t.get_text().replace("−", "-")).is_integer() for t in ticks)
    assert _no_overlap([t.get_window_extent(renderer) for t in ticks])
    import matplotlib.pyplot as plt

    plt.close(fig)
    r = invoke("leaderboard", "--results-dir", str(tmp_path), "--suite", "synth")
    assert r.exit_code == 0, r.output
    svg = (tmp_path / "figures" / "synth_rank_heatmap.svg").read_text()
    assert "* = measured by rmis" in svg
    assert f"Enc{n_models - 1} a-rather-long-variant-name *" in svg
    assert mpimg.imread(tmp_path / "figures" / "synth_rank_heatmap.png").std() > 0


def test_score_vs_params_shows_parameter_free_models(tmp_path: Path) -> None:
    from rmis.leaderboard import suite_datasets

    ad, fd = suite_datasets("synth")
    for i, n in enumerate((*ad, *fd)):
        write_result(
            tmp_path,
            "logspec",
            n,
            60.0 + i,
            "c",
            family="logspec",
            variant="250Hz",
            task="ad" if n in ad else "fd",
            params=0.0,
        )
    r = invoke("leaderboard", "--results-dir", str(tmp_path))
    assert r.exit_code == 0, r.output
    svg = (tmp_path / "figures" / "synth_score_vs_params.svg").read_text()
    assert "no rows with a parameter count" not in svg  # the old, empty figure
    assert "0 params" in svg and "logspec 250Hz *" in svg
    png = mpimg.imread(tmp_path / "figures" / "synth_score_vs_params.png")
    assert png.std() > 0
    # the diamond marker of the parameter-free row is drawn (a dark, non-grey blob)
    assert (png[..., :3].sum(axis=2) < 0.3).sum() > 20


def test_paper_figure_names_rows_without_parameter_count(tmp_path: Path) -> None:
    from rmis.leaderboard import leaderboard, paper_table, rows_without_params

    lacking = rows_without_params(leaderboard(tmp_path, "rmis"))
    paper = paper_table()
    expected = paper[paper["params_millions"].isna()]
    assert sorted(lacking) == sorted(f"{r.family} {r.variant}" for r in expected.itertuples())
    r = invoke("leaderboard", "--results-dir", str(tmp_path))
    assert r.exit_code == 0, r.output
    svg = (tmp_path / "figures" / "rmis_score_vs_params.svg").read_text()
    assert f"no parameter count ({len(expected)})" in svg and "Wav2Vec 2.0 base" in svg
