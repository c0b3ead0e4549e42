"""Leaderboard: the paper's rows and measured rows side by side, and the paper's figures.

Measured rows come from ``rmis eval`` result files (``<results>/<model>/<dataset>.json``); one row
per (family, variant). Missing datasets stay missing (NaN, shown as ``-``), never zero, and a
row gets AD / FD / RMIS only when all of that task's datasets are present. A measured row of a
model the paper also reports gets ``delta_rmis`` (measured - paper).
"""

from __future__ import annotations

import json
import logging
from importlib.resources import files
from pathlib import Path

import numpy as np
import pandas as pd

from rmis.data.specs import AD_DATASETS, FD_DATASETS
from rmis.errors import RMISError
from rmis.protocol.overall import overall_score

log = logging.getLogger(__name__)

PAPER_SOURCE = "reported in the paper (Table 3)"
#: Provenance shown for measured rows (paper rows leave them empty).
PROVENANCE_COLUMNS = ("model", "weights_sha256", "rmis_version", "git_revision")
MEASURED_SOURCE = "measured"


def paper_table(name: str = "table3_rmis.csv") -> pd.DataFrame:
    """A table shipped in ``rmis.paper`` (numbers as floats, empty cells NaN)."""
    with files("rmis.paper").joinpath(name).open() as fh:
        df = pd.read_csv(fh)
    return df


def suite_datasets(suite: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(AD dataset names, FD dataset names) of a suite."""
    if suite == "rmis":
        return AD_DATASETS, FD_DATASETS
    if suite == "synth":
        from rmis.data.synth import SYNTH_DATASETS

        return (
            tuple(n for n, s in SYNTH_DATASETS.items() if s.task == "ad"),
            tuple(n for n, s in SYNTH_DATASETS.items() if s.task == "fd"),
        )
    raise RMISError(f"unknown suite {suite!r}; choose rmis or synth")


def score_columns(ad: tuple[str, ...], fd: tuple[str, ...]) -> list[str]:
    """Identity, dataset and task-mean columns of a board, in Table 3 order."""
    return [
        "family",
        "variant",
        "source",
        "params_millions",
        *ad,
        "ad_mean",
        *fd,
        "fd_mean",
        "rmis",
    ]


def read_results(results_dir: Path) -> list[dict]:
    """All ``rmis eval`` result files under ``results_dir``."""
    out = []
    for path in sorted(Path(results_dir).glob("*/*.json")):
        try:
            res = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            log.warning("skipping unreadable result %s: %s", path, exc)
            continue
        if res.get("kind") == "eval" and "model" in res:
            res["_path"] = str(path)
            out.append(res)
    return out


def measured_table(results_dir: Path, suite: str) -> pd.DataFrame:
    """One row per measured (family, variant): dataset scores, task means, provenance."""
    ad, fd = suite_datasets(suite)
    rows: dict[tuple[str, str], dict] = {}
    for res in read_results(results_dir):
        if res["dataset"] not in (*ad, *fd):
            continue
        m = res["model"]
        key = (m["family"], m["variant"])
        row = rows.setdefault(
            key,
            {
                "family": m["family"],
                "variant": m["variant"],
                "source": MEASURED_SOURCE,
                "params_millions": m.get("params_millions"),
                "model": m["name"],
                "weights_sha256": (m.get("weights_sha256") or "")[:12],
                "rmis_version": res["provenance"].get("rmis_version"),
                "git_revision": (res["provenance"].get("git_revision") or "")[:12],
            },
        )
        row[res["dataset"]] = res["score"]
    table = []
    for row in rows.values():
        scores = {n: row[n] for n in (*ad, *fd) if n in row}
        o = overall_score(scores, ad, fd)
        row.update({"ad_mean": o.ad, "fd_mean": o.fd, "rmis": o.rmis})
        table.append(row)
    cols = [*score_columns(ad, fd), *PROVENANCE_COLUMNS]
    return pd.DataFrame(table, columns=cols).astype({c: float for c in (*ad, *fd)})


def leaderboard(results_dir: Path, suite: str = "rmis") -> pd.DataFrame:
    """Paper rows (rmis suite only) and measured rows, sorted by RMIS (rows without one last)."""
    measured = measured_table(results_dir, suite)
    if suite != "rmis":
        return measured.sort_values(
            "rmis", ascending=False, na_position="last", kind="stable"
        ).reset_index(drop=True)
    paper = paper_table()
    paper["source"] = PAPER_SOURCE
    ref = {(r.family, str(r.variant)): r.rmis for r in paper.itertuples()}
    measured["delta_rmis"] = [
        (r.rmis - ref[(r.family, str(r.variant))])
        if (r.family, str(r.variant)) in ref and pd.notna(r.rmis)
        else np.nan
        for r in measured.itertuples()
    ]
    board = pd.concat([paper, measured], ignore_index=True)
    return board.sort_values(
        "rmis", ascending=False, na_position="last", kind="stable"
    ).reset_index(drop=True)


def format_board(board: pd.DataFrame, suite: str, fmt: str) -> str:
    """The board as markdown, csv or html text (2 decimals; missing shown as ``-``)."""
    ad, fd = suite_datasets(suite)
    cols = [*score_columns(ad, fd), "delta_rmis", *PROVENANCE_COLUMNS]
    view = board[[c for c in cols if c in board]]
    if fmt == "csv":
        return view.to_csv(index=False)
    shown = view.copy()
    for c in shown.columns:
        if c in PROVENANCE_COLUMNS:
            shown[c] = ["" if pd.isna(v) or v is None else str(v) for v in shown[c]]
        elif c not in ("family", "variant", "source"):
            shown[c] = [
                (
                    "-"
                    if pd.isna(v)
                    else (
                        f"{v:+.2f}"
                        if c == "delta_rmis"
                        else f"{v:.2f}"
                        if c != "params_millions"
                        else f"{v:g}"
                    )
                )
                for v in shown[c]
            ]
    if fmt == "markdown":
        head = "| " + " | ".join(shown.columns) + " |"
        sep = "|" + "---|" * len(shown.columns)
        body = ["| " + " | ".join(str(v) for v in row) + " |" for row in shown.values]
        return "\n".join([head, sep, *body]) + "\n"
    if fmt == "html":
        return shown.to_html(index=False, escape=True)
    raise RMISError(f"unknown format {fmt!r}; choose table, markdown, csv or html")


def score_vs_params_series(board: pd.DataFrame) -> dict[str, tuple[list, list]]:
    """The lines of Figure 1: ``{family [(measured)]: (params, RMIS)}`` sorted by params;
    rows without a positive parameter count or without an RMIS score are left out."""
    data = board.dropna(subset=["rmis", "params_millions"])
    data = data[data["params_millions"] > 0]  # a log axis; training-free baselines have none
    out = {}
    for (family, source), part in data.groupby(["family", "source"], sort=True):
        part = part.sort_values("params_millions")
        label = family + (" (measured)" if source == MEASURED_SOURCE else "")
        out[label] = (part["params_millions"].tolist(), part["rmis"].tolist())
    return out


def plot_score_vs_params(board: pd.DataFrame, out_base: Path) -> list[Path]:
    """Paper Figure 1: RMIS score vs parameter count, one line per family (PNG and SVG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = score_vs_params_series(board)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, "--s" if label.endswith("(measured)") else "-o", label=label)
    data = series
    if data:
        ax.set_xscale("log")
    else:
        ax.text(
            0.5,
            0.5,
            "no rows with a parameter count and an RMIS score",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
    ax.set_xlabel("parameters (millions)")
    ax.set_ylabel("RMIS score (%)")
    ax.grid(True, alpha=0.3)
    if data:
        ax.legend(fontsize=7)
    return _save(fig, out_base)


def rank_matrix(board: pd.DataFrame, datasets: tuple[str, ...]) -> pd.DataFrame:
    """Per-dataset ranks (1 = best; ties share the best rank; missing stays NaN)."""
    scores = board[list(datasets)]
    return scores.rank(axis=0, ascending=False, method="min")


def plot_rank_heatmap(board: pd.DataFrame, datasets: tuple[str, ...], out_base: Path):
    """Paper Figure 5: per-dataset rank heatmap (PNG and SVG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ranks = rank_matrix(board, datasets)
    labels = [
        f"{r.family} {r.variant}" + (" *" if r.source == MEASURED_SOURCE else "")
        for r in board.itertuples()
    ]
    fig, ax = plt.subplots(figsize=(1 + 0.45 * len(datasets), 1 + 0.25 * len(labels)))
    im = ax.imshow(ranks.to_numpy(dtype=float), cmap="viridis_r", aspect="auto")
    ax.set_xticks(range(len(datasets)), datasets, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    fig.colorbar(im, ax=ax, label="rank (1 = best)")
    return _save(fig, out_base)


def _save(fig, out_base: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    out_base.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    paths = []
    for ext in ("png", "svg"):
        path = out_base.with_suffix(f".{ext}")
        tmp = path.with_name(f".{path.name}.tmp")
        fig.savefig(tmp, format=ext, dpi=150)
        tmp.replace(path)
        paths.append(path)
    plt.close(fig)
    return paths
