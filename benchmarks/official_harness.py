"""Run the official RMIS harness's own FD scoring code on benchmark data (benchmark-only).

The official harness (https://github.com/jianganbai/RMIS) scores a fault-diagnosis dataset with
``runner/cls/cls_reg_nrun.py`` (the 10 fixed sealed runs, one process per run) and
``runner/cls/multi_split_reg_nrun.py`` (the split curve: 19 test sizes x 10 runs on a pool of
workers). Both read pre-extracted embeddings when ``<exp_dir>/emb`` is not empty, then for
every run: split the ``ori`` groups with scikit-learn, write ``train.csv``/``test.csv``, search
with faiss ``IndexFlatL2``, vote, and write ``pred.csv``/``acc.csv``; a final step averages.

:func:`run_official` lays out the benchmark's data as that code expects (``all.csv`` with
``file,scene,ori`` in the given row order, ``all.npz`` with one member per file, a dataset
config) and runs the official module as ``__main__`` from a clone of the repository, timing the
whole command as a user would. Nothing of the official code is copied here; two import-time
details of *this* environment are bridged, and only those:

* ``runner/emb/utt.py`` (extraction) imports torchaudio at import time; extraction is skipped
  because the embeddings are given, so the module is replaced by a stub that fails if called;
* the Hugging Face ``datasets`` package, installed beside rmis, would shadow the repository's
  ``datasets/`` folder (a namespace package), so that name is bound to the folder.

Requirements of the official code beyond rmis's: faiss-cpu, torchmetrics, omegaconf, pandas,
matplotlib, scipy, scikit-learn (``pip install "rmis[bench]"`` has them).

The dataset is registered under the official name ``mafaulda_vib`` (10 classes), whose class map
the official evaluator insists on for a registered dataset; callers pass 10 classes and they
are renamed to MaFaulDa's class names in sorted order (so class order, and hence vote
tie-breaking, is the same as in rmis's sorted class order).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rmis.data.specs import get_dataset
from rmis.protocol.fd import CURVE_TEST_SIZES

#: The official dataset name the data are registered under; its classes are rmis's spec of it.
OFFICIAL_DS = "mafaulda_vib"
OFFICIAL_CLASSES = get_dataset(OFFICIAL_DS).classes

_DRIVER = r"""
import os, runpy, sys, types
root, module = sys.argv[1], sys.argv[2]
sys.path.insert(0, root)
def _no_extraction(*args, **kwargs):
    raise SystemExit("benchmark: the official extraction was reached; embeddings should be given")
stub = types.ModuleType("runner.emb.utt")
stub.extract_main = _no_extraction
sys.modules["runner.emb.utt"] = stub
folder = types.ModuleType("datasets")
folder.__path__ = [os.path.join(root, "datasets")]
sys.modules["datasets"] = folder
sys.argv = [module] + sys.argv[3:]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""

_MACRO = re.compile(r"macro-acc: ([\d.]+)")
_AUC = re.compile(r"AUC: ([\d.]+)")


@dataclass
class OfficialResult:
    wall: float  #: seconds, the whole official command
    runs: dict[float, list[float]]  #: test size -> per-run macro accuracy (2 decimals, as written)
    auc: float | None  #: split-curve area (2 decimals), curve mode only
    log: str


def check_repo(repo: Path) -> None:
    for rel in ("runner/cls/cls_reg_nrun.py", "uni_detect/task/emb_detect.py"):
        if not (repo / rel).is_file():
            sys.exit(f"--official {repo}: no {rel}; pass a clone of github.com/jianganbai/RMIS")


def write_layout(
    folder: Path,
    x: np.ndarray,
    files: list[str],
    groups: list[str],
    labels: list[str],
    classes: list[str],
) -> None:
    """``meta/<ds>/all.csv`` and ``exp/emb/<ds>/all.npz`` in the given row order; the i-th of
    ``classes`` (10, in rmis's order) is renamed to the i-th official class name."""
    if len(classes) != len(OFFICIAL_CLASSES):
        sys.exit(f"--official needs {len(OFFICIAL_CLASSES)} classes, got {len(classes)}")
    name = dict(zip(classes, OFFICIAL_CLASSES, strict=True))
    meta = folder / "meta" / OFFICIAL_DS
    meta.mkdir(parents=True)
    rows = ["file,scene,ori"] + [
        f"{f},{name[c]},{g}" for f, c, g in zip(files, labels, groups, strict=True)
    ]
    (meta / "all.csv").write_text("\n".join(rows) + "\n")
    emb = folder / "exp" / "emb" / OFFICIAL_DS
    emb.mkdir(parents=True)
    np.savez(emb / "all.npz", **{f: row for f, row in zip(files, x, strict=True)})


def _conf(folder: Path, repo: Path, test_size: float, curve: bool) -> Path:
    lines = [
        f"meta_data_dir: {folder / 'meta'}",
        f"detect_conf_dir: {repo / 'uni_detect' / 'conf'}",
        f"downstream: {OFFICIAL_DS}",
        "lab: scene",
        f"test_size: {test_size}",
        "split_level: ori",
        "save_format: npz",
        "detect:",
        "  k: 5",
    ]
    if curve:
        lines += ["multi_split_conf:", "  min_test_size: 0.05", "  max_test_size: 0.95"]
        lines += ["  delta: 0.05"]
    path = folder / ("curve.yaml" if curve else "fixed.yaml")
    path.write_text("\n".join(lines) + "\n")
    return path


def run_official(
    repo: Path, folder: Path, test_size: float, runs: int, curve: bool = False
) -> OfficialResult:
    """Run the official fixed-split (or split-curve) scoring on the layout in ``folder``."""
    if runs < 10:
        sys.exit("the official harness always runs at least 10 runs (max(ntimes, 10))")
    module = "runner.cls.multi_split_reg_nrun" if curve else "runner.cls.cls_reg_nrun"
    exp = folder / "exp"
    basic = folder / "basic.yaml"
    basic.write_text(f"dcase_eval_gt_dir: {repo / 'uni_detect/data/dcase_eval_gt'}\n")
    for old in exp.iterdir():  # keep only the embeddings between calls
        if old.name != "emb":
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    cmd = [sys.executable, "-c", _DRIVER, str(repo), module]
    cmd += ["--conf", str(_conf(folder, repo, test_size, curve)), "--basic_conf", str(basic)]
    cmd += ["--exp_dir", str(exp), "--ntimes", str(runs)]
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=repo, capture_output=True, text=True)
    wall = time.perf_counter() - started
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        sys.exit(f"the official harness failed ({module}):\n{log[-4000:]}")
    sizes = CURVE_TEST_SIZES if curve else (test_size,)
    out: dict[float, list[float]] = {}
    for t in sizes:
        base = exp / str(t) if curve else exp
        out[t] = []
        for r in range(runs):
            text = (base / f"r{r}" / "knn" / "acc.csv").read_text()
            out[t].append(float(_MACRO.search(text).group(1)))
    auc = None
    if curve:
        auc = float(_AUC.search((exp / "multi_split_auc.csv").read_text()).group(1))
    return OfficialResult(wall, out, auc, log)
