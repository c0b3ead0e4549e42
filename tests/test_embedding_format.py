"""Embeddings stored as one float32 matrix plus an id array (issue 13, section 3): the writer,
`rmis score` reading both layouts with identical results, and the cache reading old files."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rmis.cli import app
from rmis.errors import RMISError
from rmis.extract import read_legacy_cache
from rmis.io import EmbeddingMatrix, read_embeddings, read_npz_member, write_embedding_matrix
from rmis.protocol.splits import group_table, sealed_split
from rmis.store import EmbeddingStore

runner = CliRunner()
CLASSES = ["a", "b", "c"]


def dataset(tmp: Path, n_groups: int = 18, per_group: int = 3, dim: int = 16):
    """A noisy FD dataset (some predictions wrong) with ids that need escaping in zip names."""
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(3, dim))
    files, labels, groups, rows = [], [], [], []
    for g in range(n_groups):
        c = g % 3
        for i in range(per_group):
            files.append(f"m{g:02d}/r%{i}.wav")
            labels.append(CLASSES[c])
            groups.append(f"g{g:02d}")
            rows.append(centres[c] + 2.5 * rng.normal(size=dim))
    x = np.asarray(rows, dtype=np.float32)
    meta = tmp / "meta.csv"
    meta.write_text(
        "file,label,group\n"
        + "".join(f"{f},{lab},{g}\n" for f, lab, g in zip(files, labels, groups, strict=True))
    )
    return meta, files, labels, groups, x


def score(meta: Path, npz: Path, out: Path):
    args = ["score", "--protocol", "fd", "--meta", str(meta), "--embeddings", str(npz)]
    return runner.invoke(app, [*args, "--runs", "2", "--out", str(out)])


def brute_force_accuracy(x, files, labels, groups, run: int) -> float:
    """Independent k-NN: float64 cosine to every train file, top 5 by (similarity desc, file id
    asc), similarity-weighted vote (ties to the first class), macro accuracy in percent."""
    order = sorted(range(len(files)), key=lambda i: files[i])
    fs = [files[i] for i in order]
    y = np.array([CLASSES.index(labels[i]) for i in order])
    u = x[order].astype(np.float64)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    table = group_table(fs, [groups[i] for i in order], y, 3)
    train = np.isin(table.of_row, sealed_split(table, 0.5, run, CLASSES).train_groups)
    recalls = {c: [] for c in range(3)}
    for i in np.flatnonzero(~train):
        cands = sorted(np.flatnonzero(train), key=lambda j: (-float(u[i] @ u[j]), fs[j]))[:5]
        votes = np.zeros(3)
        for j in cands:
            votes[y[j]] += float(u[i] @ u[j])
        recalls[y[i]].append(int(np.argmax(votes)) == y[i])
    return float(np.mean([np.mean(v) * 100 for v in recalls.values() if v]))


def test_matrix_layout_round_trip_and_both_layouts_score_identically(tmp_path: Path) -> None:
    meta, files, labels, groups, x = dataset(tmp_path)
    new, old = tmp_path / "new.npz", tmp_path / "old.npz"
    write_embedding_matrix(new, files, x)
    np.savez(old, **{f: x[i] for i, f in enumerate(files)})
    with np.load(new, allow_pickle=False) as npz:  # the documented layout, no pickles
        assert sorted(npz.files) == ["emb", "ids"]
        assert npz["emb"].dtype == np.float32 and npz["emb"].shape == (len(files), 16)
        assert npz["ids"].tolist() == files
    emb = read_embeddings(new)
    assert isinstance(emb, EmbeddingMatrix) and len(emb) == len(files)
    np.testing.assert_array_equal(emb["m03/r%1.wav"], x[files.index("m03/r%1.wav")])

    r_new, r_old = score(meta, new, tmp_path / "n.json"), score(meta, old, tmp_path / "o.json")
    assert r_new.exit_code == 0 and r_old.exit_code == 0, r_new.output + r_old.output
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("n.json", "o.json"))
    assert a["runs"] == b["runs"] and a["score"] == b["score"] and a["std"] == b["std"]
    truth = [brute_force_accuracy(x, files, labels, groups, r) for r in range(2)]
    assert [r["macro_acc"] for r in a["runs"]] == pytest.approx(truth, abs=1e-9)
    assert 40 < a["score"] < 100  # a real test: neither chance nor trivial


def test_old_cache_is_read_and_the_store_writes_matrices(tmp_path: Path) -> None:
    _, files, _, _, x = dataset(tmp_path)
    old = tmp_path / "old"
    old.mkdir()
    # as older rmis wrote it: one member per id, "/" and "%" escaped in member names ...
    np.savez(
        old / "embeddings.npz",
        **{f.replace("%", "%25").replace("/", "%2F"): x[i] for i, f in enumerate(files[:20])},
    )
    np.savez(old / "part-00000-1.npz", **{"m07%2Fr%250.wav": x[21]})
    # ... or one matrix plus ids
    write_embedding_matrix(old / "part-00001-1.npz", files[22:], x[22:])
    got = read_legacy_cache(old)
    assert sorted(got) == sorted(files[:20] + [files[21]] + files[22:])
    for i, f in enumerate(files):
        if i != 20:
            np.testing.assert_array_equal(got[f], x[i])

    store = EmbeddingStore(tmp_path / "store", {"k": 1})
    store.add(got)
    (part,) = store.dir.glob("part.*.npz")
    with np.load(part, allow_pickle=False) as npz:
        assert sorted(npz.files) == ["emb", "ids"]
    store.consolidate(got)  # the consolidated store is one matrix, read back bit for bit
    assert [p.name[:4] for p in store.dir.glob("*.npz")] == ["seg."]
    (seg,) = store.dir.glob("seg.*.npz")
    emb = read_embeddings(seg)  # `rmis score` reads it as is
    assert isinstance(emb, EmbeddingMatrix)
    assert all(np.array_equal(emb[f], got[f]) for f in got)


def test_store_with_mixed_dimensions_writes_one_matrix_each(tmp_path: Path) -> None:
    store = EmbeddingStore(tmp_path / "c", {})
    vecs = {"a.wav": np.ones(4, np.float32), "b.wav": np.arange(1, 7, dtype=np.float32)}
    store.add(vecs)
    assert len(list(store.dir.glob("part.*.npz"))) == 2
    got = EmbeddingStore(store.dir).lookup(vecs)
    assert all(np.array_equal(got[k], v) for k, v in vecs.items())


def test_store_drops_non_finite_rows_of_a_matrix(tmp_path: Path, caplog) -> None:
    store = EmbeddingStore(tmp_path / "c", {})
    x = np.ones((3, 2), np.float32)
    x[1, 0] = np.nan
    write_embedding_matrix(store.dir / "seg.1.a.npz", ["a", "b", "c"], x)
    assert sorted(store.lookup(["a", "b", "c"])) == ["a", "c"] and "1 non-finite" in caplog.text


@pytest.mark.parametrize(
    ("ids", "emb", "needle"),
    [
        (["a", "b"], np.array([[1, 2], [np.inf, 1]], np.float32), "'b' contains NaN or Inf"),
        (["a", "b"], np.array([[1, 2], [0, 0]], np.float32), "'b' is all zeros"),
        (["a", "a"], np.ones((2, 2), np.float32), "'a' occurs more than once"),
        (["a", "b", "c"], np.ones((2, 2), np.float32), "3 ids but 2 rows"),
        (["a", "b"], np.ones(2, np.float32), "must be a [N, D] matrix"),
    ],
)
def test_bad_matrix_is_one_line_error(tmp_path: Path, ids, emb, needle) -> None:
    npz = tmp_path / "e.npz"
    np.savez(npz, ids=np.array(ids), emb=emb)
    with pytest.raises(RMISError, match=None) as err:
        read_embeddings(npz)
    assert needle in str(err.value) and "e.npz" in str(err.value)
    meta = tmp_path / "m.csv"
    meta.write_text("file,label,group\na,x,1\nb,y,2\n")
    r = score(meta, npz, tmp_path / "out.json")
    assert r.exit_code == 2 and r.output.startswith("error:") and "Traceback" not in r.output
    assert not (tmp_path / "out.json").exists()


def test_score_imports_only_what_it_needs(tmp_path: Path) -> None:
    meta, files, _, _, x = dataset(tmp_path)
    write_embedding_matrix(tmp_path / "e.npz", files, x)
    code = (
        "import sys\nfrom rmis.cli import main\n"
        f"sys.argv = ['rmis', 'score', '--protocol', 'fd', '--meta', {str(meta)!r}, "
        f"'--embeddings', {str(tmp_path / 'e.npz')!r}, '--runs', '2', '--out', "
        f"{str(tmp_path / 'o.json')!r}]\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "print(sorted(m for m in ('sklearn', 'scipy.stats', 'scipy.integrate', 'rmis.extract',"
        " 'rmis.encoders', 'rmis.evaluate', 'transformers') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # the FD k-NN needs torch, numpy and pandas; device checks need rmis.encoders (light)
    assert out.stdout.strip().splitlines()[-1] == "['rmis.encoders']"


def test_npz_member_read_in_place_equals_np_load(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 7)).astype(np.float32)
    f = np.asfortranarray(rng.normal(size=(5, 3)))
    np.savez(tmp_path / "a.npz", emb=x, ids=np.array([f"k{i}" for i in range(300)]), f=f)
    np.savez_compressed(tmp_path / "c.npz", emb=x)  # deflated: read through np.load
    for path, name, ref in [
        (tmp_path / "a.npz", "emb", x),
        (tmp_path / "a.npz", "f", f),
        (tmp_path / "c.npz", "emb", x),
    ]:
        got = read_npz_member(path, name)
        assert got.dtype == ref.dtype and np.array_equal(got, ref)
    with pytest.raises(KeyError):
        read_npz_member(tmp_path / "a.npz", "nope")
    data = (tmp_path / "a.npz").read_bytes()  # a truncated file is an error, never short data
    (tmp_path / "t.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises((ValueError, OSError, zipfile.BadZipFile)):
        read_npz_member(tmp_path / "t.npz", "emb")
