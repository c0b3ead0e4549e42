"""Issue 9 sections 4 and 6: one clean line for every error (never a traceback), and the
command line's output and help (file modes, dimensions per file, 80-column tables, choices,
flags, help texts, -v anywhere, option names, manifest columns, deduplicated --datasets)."""

from __future__ import annotations

import json
import logging
import os
import typing
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import typer
from typer.testing import CliRunner

from rmis import cli
from rmis.cli import app
from rmis.errors import RMISError

runner = CliRunner()


def invoke(*args: str, columns: int = 200):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": str(columns)})


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


def assert_one_error(r, *expected: str) -> str:
    """Exit status 2, exactly one `error:` line holding every ``expected`` text, no traceback."""
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output, r.output
    lines = error_lines(r.output)
    assert len(lines) == 1, r.output
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def write_wav(path: Path, seconds: float = 1.0, rate: int = 16_000, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    sf.write(path, rng.normal(size=int(seconds * rate)) * 0.1, rate)
    return path


def write_manifest(folder: Path, n: int = 12, rates: dict[int, int] | None = None) -> Path:
    """``n`` one-second files (two labels, one group each); ``rates`` overrides the 16 kHz
    rate of some file indices."""
    rows = ["path,label,group"]
    for i in range(n):
        rate = (rates or {}).get(i, 16_000)
        write_wav(folder / f"c{i:02d}.wav", rate=rate, seed=i)
        rows.append(f"c{i:02d}.wav,{'ab'[i % 2]},g{i}")
    manifest = folder / "data.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


# --- section 4: one clean line for every error ---------------------------------------------


def test_bad_wav_with_dataloader_workers_is_one_clean_line(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, n=12)
    (tmp_path / "c03.wav").write_bytes(b"RIFF" + b"garbage" * 20)
    r = invoke(
        "eval", "logspec", "--manifest", manifest, "--results-dir", tmp_path / "res",
        "--cache-dir", tmp_path / "cache", "--workers", "1", "--runs", "2",
    )  # fmt: skip
    line = assert_one_error(r, "cannot read audio file", "c03.wav")
    assert "DataLoader worker" not in r.output and "Caught" not in line


def test_one_line_unwraps_a_torch_worker_message() -> None:
    wrapped = RMISError(
        "Caught RMISError in DataLoader worker process 0.\nOriginal Traceback (most recent "
        'call last):\n  File "x.py", line 1, in f\n    raise RMISError(...)\n'
        "rmis.errors.RMISError: cannot read audio file 'a.wav': Format not recognised."
    )
    assert cli._one_line(wrapped) == "cannot read audio file 'a.wav': Format not recognised."


def test_checkpoint_given_to_logspec(tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "a.wav")
    r = invoke("embed", "logspec", wav, "--out", tmp_path / "e.npz", "--checkpoint", wav)
    assert_one_error(r, "logspec takes no checkpoint")
    assert not (tmp_path / "e.npz").exists()


@pytest.mark.parametrize("device", ["gpu", "cuda", "cuda:7", "mps"])
def test_unusable_device_is_refused_up_front(tmp_path: Path, device: str) -> None:
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has mps")
    if device == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    wav = write_wav(tmp_path / "a.wav")
    r = invoke("embed", "logspec", wav, "--out", tmp_path / "e.npz", "--device", device)
    line = assert_one_error(r, repr(device), "available here: cpu")
    assert "Expected one of" not in line and "not compiled" not in line


def test_score_refuses_an_unknown_device(tmp_path: Path) -> None:
    meta, emb = write_fd_meta(tmp_path)
    r = invoke(
        "score", "--protocol", "fd", "--meta", meta, "--embeddings", emb,
        "--out", tmp_path / "r.json", "--device", "gpu", "--runs", "2",
    )  # fmt: skip
    assert_one_error(r, "unknown device 'gpu'")


def write_fd_meta(folder: Path) -> tuple[Path, Path]:
    meta = folder / "meta.csv"
    rows = ["file,label,group"] + [f"f{i},{'ab'[i % 2]},g{i}" for i in range(12)]
    meta.write_text("\n".join(rows) + "\n")
    rng = np.random.default_rng(0)
    emb = folder / "emb.npz"
    np.savez(emb, **{f"f{i}": rng.normal(size=4) + 3 * (i % 2) for i in range(12)})
    return meta, emb


def eval_result(dataset: str, score: object = 61.5) -> dict:
    return {
        "schema_version": 1,
        "kind": "eval",
        "dataset": dataset,
        "task": "ad" if dataset == "synth_ad" else "fd",
        "model": {"name": "logspec", "family": "logspec", "variant": "250Hz", "options": {}},
        "score": score,
        "provenance": {"compat": "none"},
    }


BAD_RESULTS = {
    "a_list.json": "[1, 2]",
    "score_text.json": json.dumps(eval_result("synth_fd16k", "abc")),
    "score_null.json": json.dumps(eval_result("synth_fd25k6", None)),
    "empty.json": "{}",
    "no_model.json": json.dumps({"kind": "eval", "dataset": "synth_fd48k", "score": 50.0}),
    "truncated.json": '{"kind": "ev',
}


def test_leaderboard_skips_bad_result_files_with_one_warning_each(tmp_path: Path) -> None:
    res = tmp_path / "res"
    (res / "logspec").mkdir(parents=True)
    (res / "logspec" / "synth_ad.json").write_text(json.dumps(eval_result("synth_ad")))
    for name, text in BAD_RESULTS.items():
        (res / "logspec" / name).write_text(text)
    r = invoke("leaderboard", "--results-dir", res, "--suite", "synth", "--format", "csv")
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output and "error:" not in r.output
    warnings = [line for line in r.output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == len(BAD_RESULTS), r.output  # one line per bad file, once
    for name in BAD_RESULTS:
        assert sum(name in w for w in warnings) == 1, (name, warnings)
    assert ",61.5," in r.output  # the good result is on the board


def test_read_results_validates_every_result(tmp_path: Path, caplog) -> None:
    from rmis.leaderboard import read_results

    (tmp_path / "logspec").mkdir()
    (tmp_path / "logspec" / "synth_ad.json").write_text(json.dumps(eval_result("synth_ad")))
    for name, text in BAD_RESULTS.items():
        (tmp_path / "logspec" / name).write_text(text)
    score = {"kind": "score", "dataset": "x", "score": 1.0}  # an `rmis score` file: no warning
    (tmp_path / "logspec" / "score.json").write_text(json.dumps(score))
    (tmp_path / "split_curves" / "synth").mkdir(parents=True)  # rmis's own output folder
    (tmp_path / "split_curves" / "synth" / "curves.json").write_text('{"curves": {}}')
    with caplog.at_level(logging.WARNING, logger="rmis"):
        found = read_results(tmp_path)
    assert [r["dataset"] for r in found] == ["synth_ad"]
    warned = [rec.getMessage() for rec in caplog.records]
    assert len(warned) == len(BAD_RESULTS)
    assert any('score is "abc", not a finite number' in w for w in warned)
    assert any("score is null" in w for w in warned)
    assert any("a JSON list" in w for w in warned)


@pytest.mark.parametrize(
    "content",
    [b"not a zip at all", b"PK\x03\x04" + b"\x00" * 40],
    ids=["garbage", "broken-zip"],
)
def test_score_with_garbage_npz(tmp_path: Path, content: bytes) -> None:
    meta, _ = write_fd_meta(tmp_path)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(content)
    out = tmp_path / "r.json"
    r = invoke(
        "score", "--protocol", "fd", "--meta", meta, "--embeddings", bad, "--out", out,
        "--runs", "2",
    )  # fmt: skip
    line = assert_one_error(r, "is not a valid .npz archive", "bad.npz")
    assert "allow_pickle" not in line and not out.exists()


def test_npz_with_object_arrays_is_not_unpickled(tmp_path: Path) -> None:
    from rmis.io import read_embeddings

    path = tmp_path / "obj.npz"
    np.savez(path, a=np.array([{"x": 1}], dtype=object))
    with pytest.raises(RMISError, match="object") as info:
        read_embeddings(path)
    assert "allow_pickle" not in str(info.value)


class _NotATensor:  # pickled into a checkpoint: torch's safe loader refuses it
    pass


@pytest.mark.parametrize("kind", ["junk", "pickled-object"])
def test_random_pt_checkpoint(tmp_path: Path, kind: str) -> None:
    pt = tmp_path / "random.pt"
    if kind == "junk":
        pt.write_bytes(b"\x80\x02}q\x00 random bytes, not a checkpoint")
    else:
        torch.save({"model": _NotATensor()}, pt)
    r = invoke("check-model", "fisher-tiny", "--checkpoint", pt)
    assert_one_error(r, "is not a valid checkpoint in the expected format", "random.pt")
    assert "weights_only" not in r.output


def test_data_table_without_data_root(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("RMIS_DATA_ROOT", raising=False)
    r = invoke("data", "table", "pu_vib", "--out", tmp_path / "t.csv")
    line = assert_one_error(r, "give --data-root DIR")
    assert "None" not in line


def test_data_check_without_data_root(monkeypatch) -> None:
    monkeypatch.delenv("RMIS_DATA_ROOT", raising=False)
    r = invoke("data", "check")
    assert_one_error(r, "give --data-root DIR")


def test_data_check_unknown_dataset(tmp_path: Path) -> None:
    r = invoke("data", "check", "--data-root", tmp_path, "--datasets", "pu_vibe")
    assert_one_error(r, "unknown dataset 'pu_vibe'", "pu_vib")


def test_manifest_with_files_at_several_rates(tmp_path: Path) -> None:
    """logspec reads each file at its own rate and its size depends on it (2 x sr / 500):
    a manifest mixing 16 and 8 kHz is refused before anything is embedded, with advice that
    fits a manifest."""
    manifest = write_manifest(tmp_path, n=12, rates={7: 8_000})
    cache = tmp_path / "cache"
    r = invoke(
        "eval", "logspec", "--manifest", manifest, "--results-dir", tmp_path / "res",
        "--cache-dir", cache, "--workers", "0", "--runs", "2",
    )  # fmt: skip
    line = assert_one_error(r, "8000 Hz", "c07.wav", "16000 Hz", "32 at 8000 Hz", "resample")
    assert "a manifest for your own data" not in line
    assert not list(cache.rglob("*.npz"))  # refused before any file was embedded


def test_rate_mismatch_message_fits_the_context(tmp_path: Path) -> None:
    from rmis.audio import load_windows

    wav = write_wav(tmp_path / "a.wav", rate=8_000)
    with pytest.raises(RMISError) as info:
        load_windows(wav, 1.0, None, expected_rate=16_000)
    assert "manifest" not in str(info.value) and "8000 Hz" in str(info.value)


def test_check_rate_dims_allows_mixed_rates_when_sizes_agree(tmp_path: Path) -> None:
    import pandas as pd

    from rmis.data.specs import DatasetSpec
    from rmis.encoders import Encoder
    from rmis.evaluate import EvalDataset, check_rate_dims

    class Fixed(Encoder):  # native rate, size independent of the rate
        def embed(self, windows: torch.Tensor, sample_rate: int) -> torch.Tensor:
            return windows[:, :3]

    paths = [write_wav(tmp_path / f"{r}.wav", rate=r) for r in (8_000, 16_000)]
    table = pd.DataFrame({"file": [p.name for p in paths], "path": [str(p) for p in paths]})
    spec = DatasetSpec(
        name="m", task="fd", modality="user", sample_rate=0, window_seconds=1.0, protocol="fd"
    )
    check_rate_dims(EvalDataset(spec, table), Fixed())  # no error


def test_hub_failure_message_is_whole(monkeypatch) -> None:
    import huggingface_hub

    first = (
        "Cannot find an appropriate cached snapshot folder for the specified revision on the "
        "local disk and outgoing traffic has been disabled"
    )
    text = first + ". To enable repo look-ups and downloads online, set 'HF_HUB_OFFLINE=0'."
    assert len(text) > 160  # the old message cut it at 160 characters, mid-sentence

    def offline(*args, **kwargs):
        raise huggingface_hub.errors.LocalEntryNotFoundError(text)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    r = invoke("check-model", "fisher-tiny", "--checkpoint", "hf://someone/some-model")
    line = assert_one_error(r, first + ")", "--checkpoint PATH")
    assert "HF_HUB_OFFLINE=0" not in line


def test_embed_missing_file(tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "a.wav")
    r = invoke("embed", "logspec", wav, tmp_path / "nope.wav", "--out", tmp_path / "e.npz")
    line = assert_one_error(r, "not found", "nope.wav")
    assert "System error" not in line


def test_split_curve_hint_repeats_suite_and_options(tmp_path: Path) -> None:
    from rmis.curves import cached_embeddings

    result = {
        "model": {"name": "logspec"},
        "dataset": "synth_fd16k",
        "provenance": {"embedding_cache_key": "0123"},
        "_config": {"options": {"band_hz": 500}, "compat": "none", "precision": "fp32"},
    }
    with pytest.raises(RMISError) as info:  # a result of older rmis: per-dataset folder
        cached_embeddings(result, tmp_path, None)
    hint = "`rmis eval logspec --suite synth --datasets synth_fd16k -o band_hz=500`"
    assert hint in str(info.value)

    class NoFiles:
        def items(self) -> list:
            return []

    result["provenance"] = {"embedding_store": "embeddings/logspec/abc", "file_identity": "stat"}
    with pytest.raises(RMISError) as info:  # the per-file store holds none of them
        cached_embeddings(result, tmp_path, NoFiles())
    assert hint in str(info.value) and "embeddings/logspec/abc" in str(info.value)


# --- section 6: output and help people read --------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_atomic_writes_honour_the_umask(tmp_path: Path, umask: int) -> None:
    from rmis.io import atomic_write_json

    old = os.umask(umask)
    try:
        atomic_write_json(tmp_path / "r.json", {"a": 1})
        with open(tmp_path / "plain.txt", "w") as fh:  # what a plain write gives
            fh.write("x")
    finally:
        os.umask(old)
    mode = (tmp_path / "r.json").stat().st_mode & 0o777
    assert mode == 0o666 & ~umask == (tmp_path / "plain.txt").stat().st_mode & 0o777


def test_embed_says_the_dimension_per_file_when_they_differ(tmp_path: Path) -> None:
    a = write_wav(tmp_path / "a16k.wav", rate=16_000)
    b = write_wav(tmp_path / "b8k.wav", rate=8_000)
    r = invoke("embed", "logspec", a, b, "--out", tmp_path / "e.npz", "--window-seconds", "1")
    assert r.exit_code == 0, r.output
    # logspec: 2 x sr / 500 values
    assert f"dimension 64: {a}" in r.output and f"dimension 32: {b}" in r.output


def check_80(output: str) -> None:
    assert "…" not in output, output  # nothing cut to an ellipsis
    assert max(len(line) for line in output.splitlines()) <= 80, output


def test_list_tables_at_80_columns() -> None:
    from rmis.data.specs import DATASETS
    from rmis.encoders import list_encoders

    r = invoke("list", "models", columns=80)
    assert r.exit_code == 0, r.output
    check_80(r.output)
    for info in list_encoders():
        assert info.name in r.output
    r = invoke("list", "datasets", "--data-root", "/nonexistent", columns=80)
    assert r.exit_code == 0, r.output
    check_80(r.output)
    for name in DATASETS:
        assert name in r.output


def test_eval_table_at_80_columns(tmp_path: Path) -> None:
    folder = tmp_path / "a_rather_long_folder_name"
    folder.mkdir()
    manifest = write_manifest(folder, n=12)
    r = invoke(
        "eval", "logspec", "--manifest", manifest, "--name", "my_pumps_with_a_long_name_2024",
        "--results-dir", tmp_path / "res", "--cache-dir", tmp_path / "cache",
        "--workers", "0", "--runs", "2", columns=80,
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    table = r.output[r.output.index("logspec on manifest") :].split("results written")[0]
    check_80(table)
    for col in ("dataset", "task", "protocol", "score", "files", "embedded"):
        assert col in table  # no column dropped
    lines = table.splitlines()
    header = next(line for line in lines if line.startswith("dataset"))
    width = header.index("task")
    body = lines[lines.index(header) + 2 :]
    assert "".join(line[:width].strip() for line in body) == "my_pumps_with_a_long_name_2024"


def test_choices_are_shown_and_match_the_library() -> None:
    from rmis.data.specs import PROTOCOLS
    from rmis.evaluate import COMPAT_MODES, SUITES
    from rmis.extract import PRECISIONS
    from rmis.leaderboard import FORMATS, SUITE_CHOICES

    assert typing.get_args(cli.BoardSuite) == tuple(SUITE_CHOICES)
    assert typing.get_args(cli.BoardFormat) == tuple(FORMATS)
    assert typing.get_args(cli.Suite) == tuple(SUITES)
    assert typing.get_args(cli.Precision) == tuple(PRECISIONS)
    assert typing.get_args(cli.Compat) == tuple(COMPAT_MODES)
    assert typing.get_args(cli.Protocol) == tuple(PROTOCOLS)
    r = invoke("eval", "--help")
    for shown in ("<synth|rmis>", "<fp32|fp16|bf16>", "<none|rmis-official>"):
        assert shown in r.output, r.output
    assert "fd|fd-official-split|dcase2020" in invoke("score", "--help").output
    assert "<synth|rmis>" in invoke("split-curve", "--help").output
    r = invoke("leaderboard", "--help")
    assert "<auto|rmis|synth|manifest>" in r.output and "<table|markdown|csv|html>" in r.output
    r = invoke("eval", "logspec", "--suite", "synthetic")
    assert r.exit_code == 2 and "synthetic" in r.output


def _commands(group, prefix=()):
    import click

    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group) or hasattr(cmd, "commands"):
            yield from _commands(cmd, (*prefix, name))
        else:
            yield (*prefix, name), cmd


def test_every_option_has_help_and_flags_show_as_flags() -> None:
    root = typer.main.get_command(app)
    seen = 0
    for path, cmd in _commands(root):
        for param in cmd.params:
            if getattr(param, "hidden", False) or param.param_type_name != "option":
                continue
            seen += 1
            assert param.help, f"rmis {' '.join(path)} {param.opts[0]} has no help"
        r = invoke(*path, "--help")
        assert r.exit_code == 0, r.output
        assert "<bool>" not in r.output, (path, r.output)
    assert seen > 50
    assert "sub-bands" in invoke("band-curve", "--help").output
    assert "per test size" in invoke("split-curve", "--help").output


def test_verbose_after_the_subcommand() -> None:
    r = invoke("list", "models", "-v")
    assert r.exit_code == 0, r.output
    assert logging.getLogger("rmis").level == logging.INFO
    r = invoke("list", "models")
    assert r.exit_code == 0 and logging.getLogger("rmis").level == logging.WARNING
    r = invoke("eval", "--verbose", "--help")
    assert r.exit_code == 0, r.output


def test_check_model_window_seconds_and_hidden_old_name() -> None:
    for option in ("--window-seconds", "--seconds"):
        r = invoke("check-model", "logspec", option, "0.3")
        assert r.exit_code == 0, r.output
    help_text = invoke("check-model", "--help").output
    assert "--window-seconds" in help_text and "--seconds " not in help_text
    assert "--window-seconds" in invoke("embed", "--help").output


def test_manifest_accepts_file_as_the_path_column(tmp_path: Path) -> None:
    from rmis.data.manifest import manifest_table

    write_wav(tmp_path / "a.wav")
    write_wav(tmp_path / "b.wav")
    (tmp_path / "p.csv").write_text("path,label,group\na.wav,x,1\nb.wav,y,2\n")
    (tmp_path / "f.csv").write_text("file,label,group\na.wav,x,1\nb.wav,y,2\n")
    by_path, by_file = manifest_table(tmp_path / "p.csv"), manifest_table(tmp_path / "f.csv")
    assert by_file.equals(by_path)
    assert list(by_file["file"]) == ["a.wav", "b.wav"]


def test_datasets_are_deduplicated_in_order(tmp_path: Path) -> None:
    assert cli._names("pu_vib, iiee,pu_vib,,iiee") == ["pu_vib", "iiee"]
    assert cli._names(" , ") is None and cli._names(None) is None
    r = invoke(
        "data", "check", "--data-root", tmp_path, "--datasets", "pu_vib,iiee,pu_vib", "--json"
    )
    assert r.exit_code == 0, r.output
    assert [c["name"] for c in json.loads(r.output)] == ["pu_vib", "iiee"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["eval", "logspec", "--suite", "synthetic"], "'synthetic' is not one of 'synth', 'rmis'"),
        (["eval"], "Missing argument 'model'"),
        (["eval", "logspec", "--bogus"], "No such option: --bogus"),
        (["leaderboard", "--format", "pdf"], "'pdf' is not one of"),
        (["score", "--protocol", "fd2"], "'fd2' is not one of"),
    ],
)
def test_usage_errors_are_one_line_too(args: list[str], expected: str) -> None:
    r = invoke(*args, columns=80)
    line = assert_one_error(r, expected, "--help` lists the options")
    assert len(r.output.strip().splitlines()) == 1 and "╭" not in r.output, r.output
    assert line.startswith("error:")


def test_no_arguments_still_shows_the_help() -> None:
    r = invoke()
    assert "Usage" in r.output and "eval" in r.output and "error:" not in r.output


def test_leaderboard_without_results_folder_is_an_error(tmp_path: Path) -> None:
    r = invoke("leaderboard", "--results-dir", tmp_path / "nowhere")
    assert_one_error(r, "no results folder", "nowhere", "rmis eval")
    assert not (tmp_path / "nowhere").exists()  # nothing (figures) written there


def test_leaderboard_table_keeps_model_names_whole_at_80_columns(tmp_path: Path) -> None:
    from rmis.leaderboard import paper_table

    (tmp_path / "res").mkdir()
    r = invoke("leaderboard", "--results-dir", tmp_path / "res", columns=80)
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    # the table fits; the figures line is soft-wrapped so its paths are never cut
    assert max(len(line) for line in lines if not line.startswith("figures:")) <= 80
    for row in paper_table().itertuples():
        label = f"{row.family} {row.variant}"
        assert any(line.startswith(label + " ") for line in lines), label


def test_synth_generation_is_announced_before_it_runs(tmp_path: Path, monkeypatch) -> None:
    from rmis.data import synth
    from rmis.evaluate import synth_suite

    events: list[str] = []
    real_ensure = synth.ensure

    def ensure(name: str, root: Path) -> Path:
        events.append(f"ensure {name}")
        return real_ensure(name, root)

    monkeypatch.setattr(synth, "ensure", ensure)
    synth_suite(["synth_fd16k"], tmp_path, report=lambda text: events.append(text))
    assert events[0].startswith("generating synth_fd16k (1/1") and events[1] == "ensure synth_fd16k"
    events.clear()
    synth_suite(["synth_fd16k"], tmp_path, report=lambda text: events.append(text))
    assert events == ["ensure synth_fd16k"]  # already there: nothing announced
