"""Scale-out and per-file reuse: ``torchrun -m rmis eval`` (gloo on CPU) against one process,
a killed rank resumed, part files that never collide or vanish under a live writer, and files
embedded once wherever they appear."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from rmis.cli import app
from rmis.distributed import shares
from rmis.encoders import Encoder, EncoderInfo, register_encoder
from rmis.store import STALE_SECONDS, EmbeddingStore, _host

DATASETS = "synth_fd25k6"
FILES = 160  # 4 classes x 10 recordings x 2 channels x 2 files
runner = CliRunner()


# ------------------------------------------------------------------------------------------------
# shares balanced by duration, by hand
# ------------------------------------------------------------------------------------------------


def test_shares_balance_duration_not_count() -> None:
    durations = [10.0] + [1.0] * 10
    a, b = shares(durations, 2)
    assert a == [0] and b == list(range(1, 11))  # 10 s each; by count it would be 6 / 5
    # deterministic, every item once, each share in input order
    d = list(np.random.default_rng(0).uniform(1, 60, 101))
    s = shares(d, 4)
    assert s == shares(d, 4) and sorted(i for x in s for i in x) == list(range(101))
    assert all(x == sorted(x) for x in s)
    loads = [sum(d[i] for i in x) for x in s]
    assert max(loads) - min(loads) <= max(d)  # the longest-first greedy bound
    assert shares([], 3) == [[], [], []]


# ------------------------------------------------------------------------------------------------
# the store: unique part names; consolidation never deletes what may still be written
# ------------------------------------------------------------------------------------------------


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_parts_never_collide_and_consolidation_spares_live_writers(tmp_path: Path) -> None:
    store = EmbeddingStore(tmp_path / "s", {"k": 1})
    rows = {f"k{i}": np.full(3, i, np.float32) for i in range(6)}
    for i in range(3):  # the same process, the same instant: distinct names
        store.add({f"k{i}": rows[f"k{i}"]})
    names = [p.name for p in store.dir.glob("part.*.npz")]
    assert len(names) == 3 and all(f".{_host()}.{os.getpid()}." in n for n in names)

    def part(host: str, pid: int, key: str, age: float = 0.0) -> Path:
        other = EmbeddingStore(store.dir)
        other._write(f"part.{host}.{pid}", {key: rows[key]})
        (f,) = [p for p in store.dir.glob(f"part.{host}.{pid}.*.npz")]
        if age:
            os.utime(f, (time.time() - age, time.time() - age))
        return f

    live = part(_host(), os.getppid(), "k3")  # a live process on this host
    dead = part(_host(), _dead_pid(), "k4")  # its writer has exited
    remote = part("otherhost", 1, "k5")  # another host, recent: may still be running
    old_remote = part("farhost", 1, "k5", age=STALE_SECONDS + 60)
    store.consolidate(rows)
    (seg,) = store.dir.glob("seg.*.npz")
    left = sorted(p.name for p in store.dir.glob("part.*.npz"))
    assert left == sorted([live.name, remote.name])  # own, dead and stale parts merged away
    assert not old_remote.exists() and not dead.exists()
    got = EmbeddingStore(store.dir).lookup(rows)
    assert all(np.array_equal(got[k], v) for k, v in rows.items())
    with np.load(seg) as z:  # everything found in parts went into the segment first
        assert sorted(z["ids"].tolist()) == sorted(rows)
    # consolidating again finds nothing new in parts it may delete: no second segment
    store.consolidate(["k0", "k1"])
    assert len(list(store.dir.glob("seg.*.npz"))) == 1


def test_discard_rewrites_without_the_rows(tmp_path: Path) -> None:
    store = EmbeddingStore(tmp_path / "s", {})
    store.add({"a": np.ones(2, np.float32), "b": np.zeros(2, np.float32) + 2})
    store.consolidate(["a", "b"])
    assert store.discard(["a"]) == 1
    assert sorted(EmbeddingStore(store.dir).lookup(["a", "b"])) == ["b"]


# ------------------------------------------------------------------------------------------------
# files embedded once wherever they appear
# ------------------------------------------------------------------------------------------------

N, RATE = 12, 1000


def _data(folder: Path, n: int = N) -> Path:
    rng = np.random.default_rng(3)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        label = "ab"[i % 2]
        x = rng.normal(size=RATE) if label == "a" else rng.uniform(-1.6, 1.6, size=RATE)
        sf.write(folder / f"{label}{i}.wav", x, RATE, subtype="FLOAT")
        rows.append([f"{label}{i}.wav", label, f"g{i}"])
    return _manifest(folder / "data.csv", rows)


def _manifest(path: Path, rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows([["path", "label", "group"], *rows])
    return path


def _eval(manifest: Path, tmp: Path, name: str, *extra: str) -> tuple[int, dict, str]:
    out = tmp / f"r-{name}"
    r = runner.invoke(
        app,
        [
            "eval",
            "test-dist-peak",
            "--manifest",
            str(manifest),
            "--name",
            name,
            "--workers",
            "0",
            "--runs",
            "2",
            "--results-dir",
            str(out),
            "--cache-dir",
            str(tmp / "cache"),
            *extra,
        ],
    )
    found = [p for p in out.rglob(f"{name}.json")]
    return r.exit_code, (json.loads(found[0].read_text()) if found else {}), r.output


class Peak(Encoder):
    """[max |x|, mean x^2] per window."""

    sample_rate = None

    def embed(self, windows: torch.Tensor, sample_rate: int) -> torch.Tensor:
        return torch.stack([windows.abs().amax(1), windows.pow(2).mean(1)], dim=1)


register_encoder(EncoderInfo(name="test-dist-peak", family="test", variant="peak", factory=Peak))


def test_a_file_is_embedded_once_wherever_it_appears(tmp_path: Path) -> None:
    data = _data(tmp_path / "data")
    code, first, out = _eval(data, tmp_path, "first")
    assert code == 0, out
    assert first["provenance"]["files_embedded"] == N
    # the same files in another manifest, under another name, in another order, plus one
    rows = [[f"{'ab'[i % 2]}{i}.wav", "ab"[i % 2], f"g{i}"] for i in reversed(range(N))]
    x = np.random.default_rng(9).normal(size=RATE)
    sf.write(tmp_path / "data" / "a99.wav", x, RATE, subtype="FLOAT")
    copy = _manifest(tmp_path / "data" / "copy.csv", [*rows, ["a99.wav", "a", "g99"]])
    code, second, out = _eval(copy, tmp_path, "second")
    assert code == 0, out
    prov = second["provenance"]
    assert (prov["files_embedded"], prov["files_reused_from_cache"]) == (1, N)
    assert second["provenance"]["embedding_store"] == first["provenance"]["embedding_store"]


def test_rerun_after_replacing_a_bad_file_embeds_only_it(tmp_path: Path) -> None:
    data = _data(tmp_path / "data")
    good = (tmp_path / "data" / "b5.wav").read_bytes()
    (tmp_path / "data" / "b5.wav").write_bytes(b"RIFFxxxxWAVEjunk")
    code, _, out = _eval(data, tmp_path, "d")
    assert code == 2 and "b5.wav" in out
    store = next((tmp_path / "cache" / "embeddings").glob("*/*"))
    kept = len(EmbeddingStore(store).lookup_all())
    assert kept > 0  # what was computed before the failure is kept ...
    (tmp_path / "data" / "b5.wav").write_bytes(good)
    code, res, out = _eval(data, tmp_path, "d")
    assert code == 0, out
    assert res["provenance"]["files_embedded"] == N - kept  # ... and only the rest is embedded


def test_content_identity_follows_copied_files(tmp_path: Path) -> None:
    data = _data(tmp_path / "data")
    # the same recording twice, under two names: one embedding for both
    shutil.copy(tmp_path / "data" / "a0.wav", tmp_path / "data" / "dup.wav")
    rows = list(csv.reader(open(data)))[1:] + [["dup.wav", "a", "g-dup"]]
    _manifest(data, rows)
    code, first, out = _eval(data, tmp_path, "orig", "--hash-files")
    assert code == 0, out
    assert first["provenance"]["file_identity"] == "content" and first["n_files"] == N + 1
    assert first["provenance"]["files_embedded"] == N
    shutil.copytree(tmp_path / "data", tmp_path / "moved")
    moved = tmp_path / "moved" / "data.csv"
    code, by_stat, _ = _eval(moved, tmp_path, "stat")
    assert by_stat["provenance"]["files_embedded"] == N + 1  # another path: another file
    code, by_content, _ = _eval(moved, tmp_path, "content", "--hash-files")
    assert code == 0
    assert by_content["provenance"]["files_embedded"] == 0
    assert by_content["score"] == first["score"] == by_stat["score"]


# ------------------------------------------------------------------------------------------------
# torchrun: two gloo processes on CPU against one process, and a killed rank
# ------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    from rmis.models import random_checkpoint

    return random_checkpoint(
        "fisher-tiny", tmp_path_factory.mktemp("ck") / "tiny.pt", depth=1, seed=0
    )


def _cmd(ckpt: Path, cache: Path, results: Path, nproc: int | None) -> list[str]:
    args = [
        "eval",
        "fisher-tiny",
        "--suite",
        "synth",
        "--datasets",
        DATASETS,
        "--checkpoint",
        str(ckpt),
        "--runs",
        "3",
        "--workers",
        "0",
        "--batch-size",
        "8",
        "--cache-dir",
        str(cache),
        "--results-dir",
        str(results),
    ]
    if nproc is None:
        return [sys.executable, "-m", "rmis", *args]
    launch = ["-m", "torch.distributed.run", "--nproc-per-node", str(nproc)]
    rdzv = ["--master-addr", "127.0.0.1", "--master-port", str(_free_port())]
    return [sys.executable, *launch, *rdzv, "-m", "rmis", *args]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "120", **extra}


def _results(folder: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in folder.rglob("synth_*.json")}


def _stored(cache: Path) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for key in cache.glob("embeddings/*/*/key.json"):
        out.update(EmbeddingStore(key.parent).lookup_all())
    return out


@pytest.fixture(scope="module")
def single(tmp_path_factory, synth_root: Path, tiny_ckpt: Path) -> Path:
    """One plain process: the reference."""
    tmp = tmp_path_factory.mktemp("single")
    (tmp / "cache").mkdir()
    (tmp / "cache" / "synth").symlink_to(synth_root, target_is_directory=True)
    r = subprocess.run(
        _cmd(tiny_ckpt, tmp / "cache", tmp / "res", None),
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return tmp


def _same_results(a: dict[str, dict], b: dict[str, dict]) -> None:
    assert sorted(a) == sorted(b) == sorted(DATASETS.split(","))
    for name in a:
        for key in ("score", "std", "runs", "machines", "subsets"):
            assert a[name].get(key) == b[name].get(key), (name, key)


def _torchrun_two(ckpt: Path, cache: Path, results: Path) -> subprocess.CompletedProcess:
    """The eval job under ``torchrun --nproc-per-node 2``; it must succeed."""
    r = subprocess.run(
        _cmd(ckpt, cache, results, 2), capture_output=True, text=True, env=_env(), timeout=600
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def test_torchrun_two_processes_equal_one_to_the_bit(
    tmp_path: Path, synth_cache: Path, single: Path, tiny_ckpt: Path
) -> None:
    r = _torchrun_two(tiny_ckpt, synth_cache, tmp_path / "res")
    _same_results(_results(tmp_path / "res"), _results(single / "res"))
    one, two = _stored(single / "cache"), _stored(synth_cache)
    assert len(one) == len(two) == FILES and one.keys() == two.keys()
    assert all(np.array_equal(one[k], two[k]) for k in one)  # bit for bit
    res = _results(tmp_path / "res")["synth_fd25k6"]["provenance"]
    assert (res["files_embedded"], res["files_reused_from_cache"]) == (FILES, 0)
    # rank 0 alone prints the table; rank 1 prints nothing
    assert r.stdout.count("synth_fd25k6") == 1, r.stdout
    # the job merged every rank's parts into segments
    assert not list(synth_cache.glob("embeddings/*/*/part.*"))


def test_killed_rank_then_rerun_computes_only_the_missing_files(
    tmp_path: Path, synth_cache: Path, single: Path, tiny_ckpt: Path
) -> None:
    store_glob = "embeddings/*/*/part.*.npz"
    proc = subprocess.Popen(
        _cmd(tiny_ckpt, synth_cache, tmp_path / "res", 2),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_env(RMIS_SAVE_SECONDS="0"),
        start_new_session=True,
    )
    try:
        victim = None
        deadline = time.time() + 300
        while victim is None and time.time() < deadline and proc.poll() is None:
            for part in synth_cache.glob(store_glob):  # part.<host>.<pid>.<ns>.<rand>.npz
                victim = int(part.name.split(".")[2])
                break
            time.sleep(0.02)
        assert victim is not None, "no rank wrote a part"
        os.kill(victim, signal.SIGKILL)
        assert proc.wait(timeout=120) != 0  # torchrun stops the job
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    done = len(_stored(synth_cache))
    assert 0 < done < FILES
    assert not _results(tmp_path / "res")  # the job did not finish
    _torchrun_two(tiny_ckpt, synth_cache, tmp_path / "res")
    res = _results(tmp_path / "res")
    embedded = sum(x["provenance"]["files_embedded"] for x in res.values())
    reused = sum(x["provenance"]["files_reused_from_cache"] for x in res.values())
    assert embedded == FILES - done and reused == done
    _same_results(res, _results(single / "res"))
    one, two = _stored(single / "cache"), _stored(synth_cache)
    assert one.keys() == two.keys() and all(np.array_equal(one[k], two[k]) for k in one)


def test_job_counter_and_poller_report_every_rank(tmp_path: Path) -> None:
    import torch.distributed as td

    from rmis.distributed import Dist, Poller

    td.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1
    )
    try:
        job = Dist(0, 1, 0)
        a, b = job.counter(), job.counter()
        assert a.key != b.key and a.store is not None
        seen: list[int] = []
        poller = Poller(a, seen.append, interval=0.01)
        a.add(3)
        a.add(0)
        a.add(2)
        time.sleep(0.1)
        poller.stop()
        assert seen[-1] == 5 and b.value() == 0  # a fresh counter per extraction
        assert job.broadcast({"x": 1}) == {"x": 1} and job.gather(7) == [7]
        job.agree(None)
        from rmis.distributed import JobError

        with pytest.raises(JobError, match="boom"):
            job.agree("boom")
    finally:
        td.destroy_process_group()
