"""Curves from cached embeddings (no re-extraction): multi-split-ratio curves (paper Table 5)
and FISHER's score vs the number of low-frequency sub-bands kept (paper Figure 6).

Both start from ``rmis eval`` result files: a result names its embedding-cache key, and the
dataset's metadata table is rebuilt by the same loader ``rmis eval`` used. A model given as
``MODEL`` resolves to its single configuration under the results folder; ``MODEL@CONFIGID``
picks one when it has several.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import pearsonr

from rmis.errors import RMISError
from rmis.evaluate import EvalDataset
from rmis.extract import read_legacy_cache
from rmis.protocol.fd import FDEvaluator
from rmis.scoring import score_table
from rmis.store import EmbeddingStore


def model_results(results_dir: Path, model: str) -> dict[str, dict[str, Any]]:
    """``{dataset: result}`` of one configuration of a model: ``MODEL`` (its only
    configuration) or ``MODEL@CONFIGID``."""
    from rmis.leaderboard import config_label, model_configs, read_results

    name, _, wanted = model.partition("@")
    results = read_results(results_dir)
    configs = model_configs(results, name)
    if not configs:
        raise RMISError(
            f"no results of model {name!r} under {results_dir}; run `rmis eval {name}` (with "
            "this --results-dir) first"
        )
    listing = "; ".join(f"{name}@{c} ({config_label(cfg)})" for c, cfg in sorted(configs.items()))
    if wanted and wanted not in configs:
        raise RMISError(
            f"model {name!r} has no configuration {wanted!r} under {results_dir}; it has: {listing}"
        )
    if not wanted:
        if len(configs) > 1:
            raise RMISError(
                f"model {name!r} has {len(configs)} configurations under {results_dir}: "
                f"{listing}; name one as MODEL@CONFIGID"
            )
        wanted = next(iter(configs))
    return {
        r["dataset"]: r
        for r in results
        if r["model"].get("name") == name and r["_config_id"] == wanted
    }


def load_result(
    results_dir: Path, model: str, dataset: str, found: dict[str, dict] | None = None
) -> dict[str, Any]:
    """The result of ``model`` (``MODEL`` or ``MODEL@CONFIGID``) on ``dataset`` (from
    ``found``, the model's :func:`model_results`, when given)."""
    if found is None:
        found = model_results(results_dir, model)
    found = found.get(dataset)
    if found is None:
        raise RMISError(
            f"no result for model {model!r} on {dataset!r} under {results_dir}; run "
            f"`{eval_command(model.partition('@')[0], dataset)}` first"
        )
    return found


def eval_command(model: str, dataset: str, config: dict[str, Any] | None = None) -> str:
    """The ``rmis eval`` command line that (re)computes ``model`` on ``dataset``: its suite
    and, from a run ``config``, the options that made its results (weights, ``-o``, compat,
    precision)."""
    from rmis.leaderboard import suite_of

    suite = suite_of(dataset)
    parts = ["rmis eval", model]
    if suite == "synth":
        parts.append(f"--suite synth --datasets {dataset}")
    elif suite == "rmis":
        parts.append(f"--suite rmis --datasets {dataset} --data-root DIR")
    else:
        parts.append(f"--manifest DATA.csv --name {dataset}")
    cfg = config or {}
    if cfg.get("checkpoint"):
        parts.append(f"--checkpoint {cfg['checkpoint']}")
    parts += [f"-o {k}={v}" for k, v in (cfg.get("options") or {}).items()]
    if (cfg.get("compat") or "none") != "none":
        parts.append(f"--compat {cfg['compat']}")
    if (cfg.get("precision") or "fp32") != "fp32":
        parts.append(f"--precision {cfg['precision']}")
    return " ".join(parts)


def cached_embeddings(
    result: dict[str, Any], cache_dir: Path, ds: EvalDataset
) -> dict[str, np.ndarray]:
    """The embeddings a result was scored with, by file id of ``ds``, from the store (never
    re-extracted); a file changed since (another size or modification time) has none."""
    model, dataset = result["model"]["name"], result["dataset"]
    prov = result["provenance"]
    if prov.get("embedding_store"):
        folder = Path(cache_dir) / prov["embedding_store"]
        store = EmbeddingStore(folder, identity=prov.get("file_identity") or "stat")
        emb = store.vectors(ds.items())
    else:  # a result of older rmis: its per-dataset cache folder
        folder = Path(cache_dir) / "embeddings" / model / f"{dataset}-{prov['embedding_cache_key']}"
        emb = read_legacy_cache(folder) if folder.is_dir() else {}
    if not emb:
        raise RMISError(
            f"no cached embeddings of {model!r} on {dataset!r} in {folder}; rerun "
            f"`{eval_command(model, dataset, result.get('_config'))}` with the same --cache-dir"
        )
    return emb


def _aligned(
    ds: EvalDataset, emb: dict[str, np.ndarray], result: dict[str, Any]
) -> tuple[pd.DataFrame, Any]:
    model, config = result["model"]["name"], result.get("_config")
    meta = ds.table.drop(columns="path")
    meta = meta[~meta["file"].isin(result["skipped_files"])]
    missing = [f for f in meta["file"] if f not in emb]
    if missing:
        raise RMISError(
            f"{ds.name}: {len(missing)} files have no cached embedding (e.g. "
            f"{missing[:3]}); the dataset changed since `rmis eval`: rerun "
            f"`{eval_command(model, ds.name, config)}`"
        )
    return meta, np.stack([emb[f] for f in meta["file"]])


def split_curves(
    models: list[str],
    datasets: list[EvalDataset],
    results_dir: Path,
    cache_dir: Path,
    runs: int = 10,
) -> dict[str, Any]:
    """Curves, areas and the fixed-split scores of every (model, sealed FD dataset)."""
    out: dict[str, Any] = {"curves": {}, "areas": {}, "fixed": {}}
    resolved = {model: model_results(results_dir, model) for model in models}
    for ds in datasets:
        if not ds.spec.sealed:
            continue
        for model in models:
            res = load_result(results_dir, model, ds.name, resolved[model])
            meta, x = _aligned(ds, cached_embeddings(res, cache_dir, ds), res)
            ev = FDEvaluator(
                x,
                list(meta["file"]),
                list(meta["label"]),
                list(ds.spec.classes),
                list(meta["group"]),
                where=ds.name,
            )
            points, area = ev.curve(runs=runs)
            out["curves"].setdefault(ds.name, {})[model] = [
                {"test_size": p.test_size, "train_ratio": round(1 - p.test_size, 2), "mean": p.mean}
                for p in points
            ]
            out["areas"].setdefault(model, {})[ds.name] = area
            out["fixed"].setdefault(model, {})[ds.name] = res["score"]
    pairs = [
        (out["fixed"][m][d], out["areas"][m][d]) for m in out["areas"] for d in out["areas"][m]
    ]
    out["pearson_pairs"] = float(pearsonr(*zip(*pairs, strict=True))[0]) if len(pairs) > 2 else None
    means = [
        (np.mean(list(out["fixed"][m].values())), np.mean(list(out["areas"][m].values())))
        for m in out["areas"]
    ]
    out["pearson_model_means"] = (
        float(pearsonr(*zip(*means, strict=True))[0]) if len(means) > 2 else None
    )
    return out


def areas_table(curves: dict[str, Any]) -> pd.DataFrame:
    """Table 5 layout: one row per model, one column per dataset, and their mean."""
    df = pd.DataFrame(curves["areas"]).T
    df["mean"] = df.mean(axis=1)
    df.index.name = "model"
    return df.reset_index()


def plot_split_curves(curves: dict[str, Any], out_base: Path) -> list[Path]:
    """Accuracy vs train ratio, one panel per dataset, one line per model (PNG and SVG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rmis.leaderboard import _save

    names = list(curves["curves"])
    cols = min(3, max(1, len(names)))
    rows = int(np.ceil(len(names) / cols)) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        for model, pts in curves["curves"][name].items():
            ax.plot(
                [p["train_ratio"] for p in pts],
                [p["mean"] for p in pts],
                "-o",
                markersize=3,
                label=f"{model} ({curves['areas'][model][name]:.1f})",
            )
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("train ratio")
        ax.set_ylabel("macro accuracy (%)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    return _save(fig, out_base)


def band_curve(
    model: str,
    datasets: list[EvalDataset],
    results_dir: Path,
    cache_dir: Path,
    runs: int = 10,
) -> pd.DataFrame:
    """Score vs the number of low-frequency sub-bands kept (one extraction: the embedding of
    the first ``b`` bands is the first ``b * band_dim`` values of the full one)."""
    rows = []
    resolved = model_results(results_dir, model)
    for ds in datasets:
        res = load_result(results_dir, model, ds.name, resolved)
        band_dim = res["model"].get("band_dim")
        if not band_dim:
            raise RMISError(
                f"{model!r} has no sub-band embedding layout (band_dim); the band "
                "curve applies to FISHER-style encoders"
            )
        meta, x = _aligned(ds, cached_embeddings(res, cache_dir, ds), res)
        n_bands = x.shape[1] // band_dim
        for b in range(1, n_bands + 1):
            part = x[:, : b * band_dim]
            body = score_table(
                meta,
                dict(zip(meta["file"], part, strict=True)),
                protocol=ds.spec.protocol,
                classes=list(ds.spec.classes) or None,
                test_size=ds.spec.test_size or 0.5,
                runs=runs,
                where=ds.name,
            )
            bins = res["model"].get("band_bins")
            n_fft = 25 * ds.spec.sample_rate // 1000
            # a partial last band (ECHO pads it) ends at Nyquist, not beyond
            top = (
                min(b * bins * ds.spec.sample_rate / n_fft, ds.spec.sample_rate / 2)
                if bins
                else None
            )
            rows.append(
                {
                    "dataset": ds.name,
                    "bands": b,
                    "of": n_bands,
                    "top_hz": top,
                    "score": body["score"],
                }
            )
    return pd.DataFrame(rows)


def plot_band_curve(table: pd.DataFrame, model: str, out_base: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rmis.leaderboard import _save

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, part in table.groupby("dataset", sort=False):
        ax.plot(part["bands"], part["score"], "-o", markersize=3, label=name)
    ax.set_xlabel("low-frequency sub-bands kept")
    ax.set_ylabel("score (%)")
    ax.set_title(f"{model}: performance vs sub-bands (paper Fig. 6)", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, out_base)
