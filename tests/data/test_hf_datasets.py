"""Hugging Face datasets (hub Parquet layout) and audiofolders as data sources: they must
split and score exactly like a manifest of the same recordings."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from rmis.cli import app
from rmis.errors import RMISError

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
datasets = pytest.importorskip("datasets")

runner = CliRunner()
AUDIO = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


@pytest.fixture(autouse=True)
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep `datasets`' Arrow cache inside the test folder."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")


def invoke(*args: str):
    return runner.invoke(app, list(args), env={"COLUMNS": "200"})


def recordings(folder: Path, rate: int) -> list[dict]:
    """32 one-second recordings on disk: 2 classes (a tone at 440 or 1 200 Hz plus noise) x 8
    groups x 2 files, alternately WAV and FLAC; returns rows file,label,group,bytes."""
    rng = np.random.default_rng(rate)
    t = np.arange(rate) / rate
    rows = []
    for label, freq in (("inner", 440.0), ("outer", 1200.0)):
        for g in range(8):
            for k in range(2):
                tone = np.sin(2 * np.pi * freq * (1 + 0.01 * g) * t)
                x = 0.3 * tone + 0.05 * rng.standard_normal(len(t))
                fmt = "WAV" if (g + k) % 2 == 0 else "FLAC"
                name = f"{label}_{g}_{k}.{fmt.lower()}"
                sf.write(folder / name, x.astype(np.float32), rate, format=fmt, subtype="PCM_16")
                rows.append(
                    {
                        "file": name,
                        "label": label,
                        "group": f"{label}-m{g}",
                        "bytes": (folder / name).read_bytes(),
                    }
                )
    return rows


def write_parquet(path: Path, rows: list[dict], *, with_path: bool = True, **extra) -> None:
    """One Parquet shard in the hub's layout: audio struct<bytes, path> and the `huggingface`
    features metadata (written with pyarrow: encoding through `datasets` needs torchcodec)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    audio = pa.array(
        [{"bytes": r["bytes"], "path": r["file"] if with_path else None} for r in rows],
        type=AUDIO,
    )
    cols = {"audio": audio, "label": [r["label"] for r in rows]}
    cols["group"] = [r["group"] for r in rows]
    cols.update(extra)
    feats = {"audio": {"_type": "Audio"}}
    for c in cols:
        if c != "audio":
            feats[c] = {"dtype": "string", "_type": "Value"}
    table = pa.table(cols).replace_schema_metadata(
        {b"huggingface": json.dumps({"info": {"features": feats}}).encode()}
    )
    pq.write_table(table, path, row_group_size=5)  # several record batches per shard


def eval_result(tmp_path: Path, *source: str) -> dict:
    res = tmp_path / "res"
    r = invoke(
        "eval", "logspec", *source, "--name", "ds", "--runs", "2", "--workers", "0",
        "--results-dir", str(res), "--cache-dir", str(tmp_path / "cache"),
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    return json.loads(next(res.glob("logspec/*/ds.json")).read_text())


def same_scores(a: dict, b: dict) -> None:
    for key in ("protocol", "classes", "n_files", "dim", "score", "mean", "std"):
        assert a[key] == b[key], key
    assert a["runs"] == b["runs"]  # seeds, test groups, per-class accuracies, run by run


@pytest.mark.parametrize("rate", [8000, 16000])
def test_parquet_dataset_scores_like_manifest(tmp_path: Path, rate: int) -> None:
    audio = tmp_path / "audio"
    audio.mkdir()
    rows = recordings(audio, rate)
    manifest = audio / "m.csv"
    manifest.write_text(
        "path,label,group\n" + "".join(f"{r['file']},{r['label']},{r['group']}\n" for r in rows)
    )
    hub = tmp_path / "hub"  # two shards of one split, rows in another order than the manifest
    write_parquet(hub / "data" / "train-00000-of-00002.parquet", rows[20:])
    write_parquet(hub / "data" / "train-00001-of-00002.parquet", rows[:20])
    by_manifest = eval_result(tmp_path / "m", "--manifest", str(manifest))
    by_hf = eval_result(tmp_path / "h", "--hf-dataset", str(hub))
    same_scores(by_hf, by_manifest)
    assert by_hf["score"] > 90  # two tones: far above chance (50 %)
    # every run's test groups are whole groups of the dataset (sealed)
    groups = {r["group"] for r in rows}
    assert all(set(run["test_groups"]) < groups for run in by_hf["runs"])
    # same ids and byte sizes: the same dataset hash as the manifest's
    prov_h, prov_m = by_hf["provenance"], by_manifest["provenance"]
    assert prov_h["dataset_manifest_sha256"] == prov_m["dataset_manifest_sha256"]
    src = prov_h["data_source"]
    assert src["kind"] == "huggingface" and src["file_ids"] == "audio path"
    assert src["sealing"] is True and src["rows"] == 32 and src["fingerprints"]["train"]
    # the cache keys rows by the dataset's fingerprint: a rerun embeds nothing
    again = eval_result(tmp_path / "h", "--hf-dataset", str(hub))
    assert again["provenance"]["files_embedded"] == 0
    assert again["provenance"]["files_reused_from_cache"] == 32


def test_audiofolder_metadata_is_a_manifest(tmp_path: Path) -> None:
    audio = tmp_path / "audio"
    audio.mkdir()
    rows = recordings(audio, 8000)
    (audio / "metadata.csv").write_text(
        "file_name,label,group,operator\n"
        + "".join(f"{r['file']},{r['label']},{r['group']},x\n" for r in rows)
    )
    manifest = audio / "m.csv"
    manifest.write_text(
        "path,label,group\n" + "".join(f"{r['file']},{r['label']},{r['group']}\n" for r in rows)
    )
    a = eval_result(tmp_path / "a", "--manifest", str(audio / "metadata.csv"))
    m = eval_result(tmp_path / "m", "--manifest", str(manifest))
    same_scores(a, m)
    assert a["provenance"]["dataset_manifest_sha256"] == m["provenance"]["dataset_manifest_sha256"]


def test_splits_without_paths_class_labels_and_row_reads(tmp_path: Path) -> None:
    from rmis.audio import read_audio
    from rmis.data.hf import hf_table

    audio = tmp_path / "audio"
    audio.mkdir()
    rows = recordings(audio, 8000)
    hub = tmp_path / "hub"
    # hub layout with train/test splits, no audio paths, ClassLabel-like int labels
    for split, part in (("train", rows[::2]), ("test", rows[1::2])):
        write_parquet(hub / "data" / f"{split}-00000-of-00001.parquet", part, with_path=False)
    src = hf_table(str(hub))
    t = src.table
    assert list(t["file"][:2]) == ["train/0", "train/1"] and list(t["file"][16:18]) == [
        "test/0",
        "test/1",
    ]
    assert list(t["label"]) == [r["label"] for r in rows[::2] + rows[1::2]]
    assert src.info["file_ids"] == "<split>/<row index>"
    # a row read lazily decodes to exactly the samples of the file it came from
    ref = t["path"].iloc[17]  # test/1 = rows[3]
    x, sr = read_audio(ref)
    y, sr_file = read_audio(audio / rows[3]["file"])
    assert sr == sr_file == 8000 and np.array_equal(x, y)
    assert ref.size == len(rows[3]["bytes"])
    only_test = hf_table(str(hub), split="test")
    assert list(only_test.table["file"]) == [f"test/{i}" for i in range(16)]


def test_class_label_ints_map_to_names(tmp_path: Path) -> None:
    from rmis.data.hf import hf_table

    audio = tmp_path / "audio"
    audio.mkdir()
    rows = recordings(audio, 8000)
    table = pa.table(
        {
            "audio": pa.array([{"bytes": r["bytes"], "path": r["file"]} for r in rows], AUDIO),
            "label": pa.array([0 if r["label"] == "inner" else 1 for r in rows], pa.int64()),
            "machine": [r["group"] for r in rows],
        }
    )
    feats = {
        "audio": {"_type": "Audio"},
        "label": {"names": ["inner", "outer"], "_type": "ClassLabel"},
        "machine": {"dtype": "string", "_type": "Value"},
    }
    table = table.replace_schema_metadata(
        {b"huggingface": json.dumps({"info": {"features": feats}}).encode()}
    )
    (tmp_path / "hub").mkdir()
    pq.write_table(table, tmp_path / "hub" / "train.parquet")
    t = hf_table(str(tmp_path / "hub"), group_column="machine").table
    assert list(t["label"]) == [r["label"] for r in rows]
    assert list(t["group"]) == [r["group"] for r in rows]
    assert list(t["file"]) == [r["file"] for r in rows]


def one_line_error(tmp_path: Path, *args: str) -> str:
    r = invoke(
        "eval", "logspec", *args, "--runs", "2", "--workers", "0",
        "--results-dir", str(tmp_path / "res"), "--cache-dir", str(tmp_path / "cache"),
    )  # fmt: skip
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in r.output, r.output
    assert not (tmp_path / "res").exists()
    return lines[0]


def test_bad_inputs_are_one_line_errors(tmp_path: Path) -> None:
    audio = tmp_path / "audio"
    audio.mkdir()
    rows = recordings(audio, 8000)
    hub = tmp_path / "hub"
    write_parquet(hub / "train.parquet", rows)
    msg = one_line_error(tmp_path, "--hf-dataset", str(hub), "--label-column", "fault")
    assert "no label column 'fault'" in msg and "audio, label, group" in msg
    # undecodable bytes: named by row and path before anything is embedded
    bad = [dict(r) for r in rows]
    bad[5]["bytes"] = b"not audio" * 20
    write_parquet(tmp_path / "bad" / "train.parquet", bad)
    msg = one_line_error(tmp_path, "--hf-dataset", str(tmp_path / "bad"))
    assert "row 5" in msg and rows[5]["file"] in msg and "cannot decode" in msg
    # one group per class: no sealed split can place a class on both sides
    one = [dict(r, group=r["label"]) for r in rows]
    write_parquet(tmp_path / "one" / "train.parquet", one)
    msg = one_line_error(tmp_path, "--hf-dataset", str(tmp_path / "one"))
    assert "inner" in msg or "outer" in msg
    # no group column: refused with why sealing matters, unless --no-sealing
    nogroup = tmp_path / "nogroup"
    write_parquet(nogroup / "train.parquet", rows)
    t = pq.read_table(nogroup / "train.parquet")
    t = t.drop_columns(["group"]).replace_schema_metadata(t.schema.metadata)
    pq.write_table(t, nogroup / "train.parquet")
    msg = one_line_error(tmp_path, "--hf-dataset", str(nogroup))
    assert "sealing" in msg and "--no-sealing" in msg
    res = eval_result(tmp_path / "ns", "--hf-dataset", str(nogroup), "--no-sealing")
    assert res["provenance"]["data_source"]["sealing"] is False
    assert res["n_files"] == 32
    # options of a HF dataset without one; a missing folder / bad id
    msg = one_line_error(tmp_path, "--no-sealing", "--suite", "synth")
    assert "--hf-dataset" in msg
    msg = one_line_error(tmp_path, "--hf-dataset", "not a/valid id")
    assert "neither a folder nor a hub id" in msg


def test_datasets_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from rmis.data.hf import hf_table

    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(RMISError, match=r'pip install "rmis\[hf\]"'):
        hf_table("user/name")


def test_data_check_hf(tmp_path: Path) -> None:
    audio = tmp_path / "audio"
    audio.mkdir()
    rows = recordings(audio, 16000)
    write_parquet(tmp_path / "hub" / "train.parquet", rows)
    r = invoke("data", "check", "--hf-dataset", str(tmp_path / "hub"), "--json")
    assert r.exit_code == 0, r.output
    (check,) = json.loads(r.stdout)  # stderr: datasets' progress bars
    assert check["files"] == 32 and check["sample_rates"] == [16000]
    per_class = {"files": 16, "groups": 8}
    assert check["classes"] == {"inner": per_class, "outer": per_class}
    assert check["sealable"] is True and check["problems"] == []
    assert abs(check["hours"] - 32 / 3600) < 1e-9


def test_stream_reads_no_audio_into_the_table(tmp_path: Path) -> None:
    """The metadata table holds references, not audio: its rows are small whatever the
    recordings' size."""
    from rmis.data.hf import ArrowRow, hf_table

    audio = tmp_path / "audio"
    audio.mkdir()
    rows = recordings(audio, 16000)
    write_parquet(tmp_path / "hub" / "train.parquet", rows)
    t = hf_table(str(tmp_path / "hub")).table
    assert all(isinstance(p, ArrowRow) for p in t["path"])
    assert all(not hasattr(p, "bytes") for p in t["path"])
    assert io.BytesIO(t["path"].iloc[0].read_bytes()).getvalue() == rows[0]["bytes"]
