"""`rmis score` end to end: result files, DCASE export, and bad input (nothing written)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from rmis.cli import app
from rmis.data.specs import get_dataset
from rmis.protocol.dcase import score_dcase
from rmis.protocol.fd import FDEvaluator

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def score_pu_vib(meta: Path, npz: Path, out: Path, *extra: str):
    """`rmis score --dataset pu_vib` on the given inputs."""
    return invoke(
        "score",
        "--dataset",
        "pu_vib",
        "--meta",
        str(meta),
        "--embeddings",
        str(npz),
        "--out",
        str(out),
        *extra,
    )


def write_inputs(tmp: Path, rows: list[dict], emb: dict) -> tuple[Path, Path]:
    """Write META.csv and EMB.npz."""
    meta, npz = tmp / "meta.csv", tmp / "emb.npz"
    pd.DataFrame(rows).to_csv(meta, index=False)
    np.savez(npz, **emb)
    return meta, npz


def fd_files(tmp: Path, classes=("healthy", "IR", "OR"), groups_per_class=6, per_group=4):
    rng = np.random.default_rng(0)
    rows, emb = [], {}
    for c in classes:
        centre = rng.normal(size=8) * 2
        for g in range(groups_per_class):
            off = rng.normal(size=8)
            for i in range(per_group):
                f = f"{c}_K{g:02d}_N15_M07_F10_{i}.wav"
                rows.append({"file": f, "label": c, "group": f"{c}_K{g:02d}"})
                emb[f] = centre + off + rng.normal(size=8)
    return (*write_inputs(tmp, rows, emb), rows, emb)


def test_fd_dataset_result(tmp_path: Path) -> None:
    meta, npz, rows, emb = fd_files(tmp_path)
    out = tmp_path / "res" / "result.json"
    r = score_pu_vib(meta, npz, out)
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert res["schema_version"] == 1 and res["protocol"] == "fd" and res["dataset"] == "pu_vib"
    assert res["classes"] == list(get_dataset("pu_vib").classes)
    # independent recomputation through the protocol API
    ev = FDEvaluator(
        np.stack([emb[r["file"]] for r in rows]),
        [r["file"] for r in rows],
        [r["label"] for r in rows],
        ["healthy", "IR", "OR"],
        [r["group"] for r in rows],
    )
    ref = ev.sealed(0.5, 10)
    assert res["score"] == ref.score and res["std"] == ref.std
    assert [x["macro_acc"] for x in res["runs"]] == [x.macro_acc for x in ref.runs]
    assert [x["run"] for x in res["runs"]] == list(range(10))
    assert all(x["seed"] >= 111 + x["run"] for x in res["runs"])
    assert all(x["test_groups"] == sorted(x["test_groups"]) for x in res["runs"])
    prov = res["provenance"]
    assert prov["rmis_version"] and prov["protocol_version"] == "1"
    assert len(prov["meta"]["sha256"]) == 64 and len(prov["embeddings"]["sha256"]) == 64
    assert f"{res['score']:.2f}" in r.output


def test_fd_protocol_with_classes_and_curve(tmp_path: Path) -> None:
    meta, npz, _, _ = fd_files(tmp_path, groups_per_class=30, per_group=2)
    out = tmp_path / "r.json"
    r = invoke(
        "score",
        "--protocol",
        "fd",
        "--classes",
        "OR,IR,healthy",
        "--test-size",
        "0.4",
        "--meta",
        str(meta),
        "--embeddings",
        str(npz),
        "--out",
        str(out),
        "--runs",
        "3",
        "--split-curve",
    )
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert res["classes"] == ["OR", "IR", "healthy"] and res["test_size"] == 0.4
    assert len(res["runs"]) == 3
    assert [p["test_size"] for p in res["curve"]] == [round(0.05 * i, 2) for i in range(1, 20)]
    assert 100 / 3 < res["auc"] <= 100
    # every curve point lists its runs; at the fixed test size they are the fixed split's runs
    for p in res["curve"]:
        assert len(p["runs"]) == 3 and p["mean"] == pytest.approx(sum(p["runs"]) / 3)
    at_04 = next(p for p in res["curve"] if p["test_size"] == 0.4)
    assert at_04["runs"] == [r["macro_acc"] for r in res["runs"]]


def test_impossible_split_curve_is_an_error(tmp_path: Path) -> None:
    meta, npz, _, _ = fd_files(tmp_path)  # 18 groups: 0.05 leaves 1 test group
    out = tmp_path / "r.json"
    r = invoke(
        "score",
        "--protocol",
        "fd",
        "--meta",
        str(meta),
        "--embeddings",
        str(npz),
        "--out",
        str(out),
        "--split-curve",
    )
    assert r.exit_code == 2
    assert "impossible at test size 0.05" in r.output
    assert not out.exists()


def test_official_split(tmp_path: Path) -> None:
    meta, npz, rows, emb = fd_files(tmp_path, classes=("good", "broken", "heavyload"))
    df = pd.read_csv(meta)
    df["split"] = ["train" if i % 3 else "test" for i in range(len(df))]
    df = df.drop(columns="group")
    df.to_csv(meta, index=False)
    out = tmp_path / "r.json"
    r = invoke(
        "score",
        "--dataset",
        "iiee",
        "--meta",
        str(meta),
        "--embeddings",
        str(npz),
        "--out",
        str(out),
    )
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert res["protocol"] == "fd-official-split" and res["std"] is None
    # the single official run is reported like a sealed run, with per class and predictions
    ev = FDEvaluator(
        np.stack([emb[f] for f in df.file]),
        list(df.file),
        list(df.label),
        ["good", "broken", "heavyload"],
    )
    ref = ev.official(list(df.split == "train"))
    assert len(res["runs"]) == 1
    run = res["runs"][0]
    assert run["run"] == 0 and run["seed"] is None and run["test_groups"] is None
    assert run["macro_acc"] == res["score"] == ref.score
    assert run["per_class"] == ref.runs[0].per_class
    test_files = sorted(df.file[df.split == "test"])
    assert sorted(run["predictions"]) == test_files
    assert run["predictions"] == ref.runs[0].predictions
    # the macro accuracy is the mean of the per-class recalls computed from the predictions
    truth = dict(zip(df.file, df.label, strict=True))
    recalls = []
    for c in ("good", "broken", "heavyload"):
        mine = [f for f in test_files if truth[f] == c]
        recall = 100 * sum(run["predictions"][f] == c for f in mine) / len(mine)
        assert run["per_class"][c] == pytest.approx(recall)
        recalls.append(recall)
    assert res["score"] == pytest.approx(sum(recalls) / 3)
    assert "1 run, no std" in r.output


def ad_files(tmp: Path, year=2022):
    rng = np.random.default_rng(1)
    rows, emb = [], {}
    for subset in ("dev", "eval"):
        for machine in ("fan", "valve"):
            for sec in (0, 1):
                centre = rng.normal(size=6)
                for split, n in (("train", 12), ("test", 10)):
                    for i in range(n):
                        dom = "source" if i % 2 == 0 else "target"
                        lab = "anomaly" if split == "test" and i >= 6 else "normal"
                        name = f"section_{sec:02d}_{dom}_{split}_{lab}_{i:04d}.wav"
                        f = f"{subset}/{machine}/{split}/{name}"
                        rows.append(
                            dict(
                                file=f,
                                subset=subset,
                                split=split,
                                machine=machine,
                                section=sec,
                                domain=dom,
                                label=lab,
                            )
                        )
                        shift = 1.5 if lab == "anomaly" else 0.0
                        emb[f] = centre + shift + 0.5 * rng.normal(size=6)
    return (*write_inputs(tmp, rows, emb), rows, emb)


def test_ad_result_and_export(tmp_path: Path) -> None:
    meta, npz, rows, emb = ad_files(tmp_path)
    out, exp = tmp_path / "r.json", tmp_path / "export"
    r = invoke(
        "score",
        "--protocol",
        "dcase2022",
        "--meta",
        str(meta),
        "--embeddings",
        str(npz),
        "--out",
        str(out),
        "--dcase-export",
        str(exp),
    )
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    df = pd.DataFrame(rows)
    ref = score_dcase(
        np.stack([emb[f] for f in df.file]),
        df.subset,
        df.split,
        df.machine,
        df.section,
        df.domain,
        df.label,
        2022,
    )
    assert res["score"] == ref.score and res["subsets"] == ref.subsets
    assert {s["section"] for s in res["sections"]} == {0, 1}
    assert set(res["sections"][0]) >= {"auc_source", "auc_target", "pauc"}
    test = df[df.split == "test"]
    assert set(res["clip_scores"]) == set(test.file)
    files = sorted(p.relative_to(exp).as_posix() for p in exp.rglob("*.csv"))
    assert files == sorted(
        f"{s}/anomaly_score_{m}_section_{n:02d}_test.csv"
        for s in ("dev", "eval")
        for m in ("fan", "valve")
        for n in (0, 1)
    )
    got = pd.read_csv(exp / "eval/anomaly_score_valve_section_01_test.csv", header=None)
    sel = test[(test.subset == "eval") & (test.machine == "valve") & (test.section == 1)]
    assert list(got[0]) == [f.rsplit("/", 1)[-1] for f in sel.file]
    np.testing.assert_array_equal(got[1], [res["clip_scores"][f] for f in sel.file])


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda df, e: (df.iloc[:-1], e), "not in the metadata"),
        (lambda df, e: (df, {k: v for k, v in list(e.items())[1:]}), "have no embedding"),
        (lambda df, e: (df, {**e, df.file[0]: np.full(8, np.nan)}), "NaN or Inf"),
        (lambda df, e: (df, {**e, df.file[0]: np.zeros(8)}), "all zeros"),
        (lambda df, e: (df, {**e, df.file[0]: np.ones(9)}), "mixed embedding dimensions"),
        (
            lambda df, e: (df.assign(label=df.label.where(df.index > 0, "IRR")), e),
            r"labels \['IRR'\] are not among the classes",
        ),
        (lambda df, e: (df.rename(columns={"group": "grp"}), e), r"missing \['group'\]"),
        (
            lambda df, e: (df.assign(group=df.group.where(df.index > 0, "")), e),
            "column 'group' is empty",
        ),
    ],
)
def test_bad_fd_input_writes_nothing(tmp_path: Path, mutate, message) -> None:
    meta, npz, _, emb = fd_files(tmp_path)
    df, emb2 = mutate(pd.read_csv(meta, dtype=str, keep_default_na=False), emb)
    df.to_csv(meta, index=False)
    np.savez(npz, **emb2)
    out = tmp_path / "r.json"
    r = score_pu_vib(meta, npz, out)
    assert r.exit_code == 2, r.output
    assert "error:" in r.output and pytest.importorskip("re").search(message, r.output), r.output
    assert not out.exists() and not list(tmp_path.glob(".r.json*"))


@pytest.mark.parametrize(
    "column, value, message",
    [
        ("subset", "evaluation", "column 'subset' has values"),
        ("domain", "src", "column 'domain' has values"),
        ("section", "00a", "must hold integers"),
    ],
)
def test_bad_ad_input_writes_nothing(tmp_path: Path, column, value, message) -> None:
    meta, npz, _, _ = ad_files(tmp_path)
    df = pd.read_csv(meta, dtype=str)
    df.loc[3, column] = value
    df.to_csv(meta, index=False)
    out, exp = tmp_path / "r.json", tmp_path / "export"
    r = invoke(
        "score",
        "--protocol",
        "dcase2023",
        "--meta",
        str(meta),
        "--embeddings",
        str(npz),
        "--out",
        str(out),
        "--dcase-export",
        str(exp),
    )
    assert r.exit_code == 2 and message in r.output, r.output
    assert not out.exists() and not exp.exists()


def test_argument_errors(tmp_path: Path) -> None:
    meta, npz, _, _ = fd_files(tmp_path)
    common = ["--meta", str(meta), "--embeddings", str(npz), "--out", str(tmp_path / "r.json")]
    r = invoke("score", *common)
    assert r.exit_code == 2 and "exactly one of --dataset" in r.output
    r = invoke("score", "--dataset", "pu-vib", *common)
    assert r.exit_code == 2 and "did you mean 'pu_vib'" in r.output
    r = invoke("score", "--dataset", "pu_vib", "--test-size", "0.3", *common)
    assert r.exit_code == 2 and "fixes the class order and test size" in r.output
    r = invoke("score", "--protocol", "fdd", *common)  # a choice: click names the valid ones
    assert r.exit_code == 2 and "'fdd' is not one of" in r.output and "'dcase2020'" in r.output


def test_list_datasets() -> None:
    r = invoke("list", "datasets")
    assert r.exit_code == 0
    for name in ("dcase25", "iiee", "umged_cur", "pu_vib"):
        assert name in r.output


def test_one_run_has_no_std(tmp_path: Path) -> None:
    meta, npz, rows, emb = fd_files(tmp_path)
    out = tmp_path / "r.json"
    r = score_pu_vib(meta, npz, out, "--runs", "1")
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert res["std"] is None and len(res["runs"]) == 1  # JSON null, not 0
    assert "± " not in r.output and "1 run, no std" in r.output
    # sealed runs report per-class accuracies; their mean is the run's macro accuracy
    per_class = res["runs"][0]["per_class"]
    assert set(per_class) == {"healthy", "IR", "OR"}
    assert res["runs"][0]["macro_acc"] == pytest.approx(sum(per_class.values()) / 3)
    assert res["official_rounding"] is False


@pytest.mark.parametrize("year", [2020, 2021])
def test_dcase_2020_2021_export_is_z_normalised_per_section(tmp_path: Path, year: int) -> None:
    meta, npz, rows, emb = ad_files(tmp_path, year)
    df = pd.DataFrame(rows)
    if year == 2020:
        df["section"] = df["section"] + 10 * (df["machine"] == "valve")  # ids unique per type
        df.to_csv(meta, index=False)
    out, exp = tmp_path / "r.json", tmp_path / "export"
    r = invoke(
        "score",
        "--protocol",
        f"dcase{year}",
        "--meta",
        str(meta),
        "--embeddings",
        str(npz),
        "--out",
        str(out),
        "--dcase-export",
        str(exp),
    )
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    files = sorted(exp.rglob("*.csv"))
    assert len(files) == 8
    for path in files:
        got = pd.read_csv(path, header=None)[1].to_numpy()
        # z-scores over the section's test clips: mean 0, population std 1 (not raw distances
        # in [0, 2] with a positive mean)
        assert abs(got.mean()) < 1e-12 and got.std() == pytest.approx(1.0, rel=1e-12)
        assert got.min() < 0
    # the z-scores are those of the raw cosine distances (hand-checked on one section)
    test = df[(df.split == "test") & (df.subset == "dev") & (df.machine == "fan")]
    sec = test[test.section == test.section.min()]
    train = df[(df.split == "train") & (df.subset == "dev") & (df.machine == "fan")]
    bank = np.stack([emb[f] for f in train[train.section == sec.section.iloc[0]].file])
    bank = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    d = []
    for f in sec.file:
        v = emb[f] / np.linalg.norm(emb[f])
        d.append(1 - max(bank @ v))
    d = np.array(d)
    z = (d - d.mean()) / np.sqrt(((d - d.mean()) ** 2).mean())
    np.testing.assert_allclose([res["clip_scores"][f] for f in sec.file], z, atol=1e-9)
