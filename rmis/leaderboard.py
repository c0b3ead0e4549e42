"""Leaderboard: the paper's rows and measured rows side by side, and the paper's figures.

Measured rows come from ``rmis eval`` result files, ``<results>/<model>/<config id>/<dataset>.json``
(and the older ``<results>/<model>/<dataset>.json``, shown as a ``legacy-...`` configuration).
One row per (model, configuration): results of different weights, options, ``--compat``,
precision or run counts never share a row. Missing datasets stay missing (NaN, shown as ``-``),
never zero, and a row gets AD / FD / RMIS only when all of that task's datasets are present. A
measured row of a model the paper also reports gets ``delta_rmis`` (measured - paper).

Boards: ``rmis`` and ``synth`` (the suites' own dataset lists), ``manifest`` (every other
dataset found) and ``custom`` (``--datasets a,b``); for the last two, AD / FD / overall are the
means of whatever AD / FD datasets the board holds.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rmis.data.specs import AD_DATASETS, DATASETS, FD_DATASETS
from rmis.errors import RMISError
from rmis.protocol.overall import overall_score

log = logging.getLogger(__name__)

PAPER_SOURCE = "reported in the paper (Table 3)"
#: Provenance shown for measured rows (paper rows leave them empty).
PROVENANCE_COLUMNS = ("model", "config_id", "weights_sha256", "rmis_version", "git_revision")
MEASURED_SOURCE = "measured"
#: ``rmis leaderboard --suite`` values; ``auto`` = every suite the results folder holds.
SUITE_CHOICES = ("auto", "rmis", "synth", "manifest")
FORMATS = ("table", "markdown", "csv", "html")
RUN_FILE = "run.json"


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


@dataclass(frozen=True)
class Board:
    """One leaderboard: its name and its AD and FD dataset columns."""

    name: str
    ad: tuple[str, ...]
    fd: tuple[str, ...]

    @property
    def benchmark(self) -> bool:
        """A suite's own board (rmis, synth), scored as the benchmark defines."""
        return self.name in ("rmis", "synth")

    @property
    def datasets(self) -> tuple[str, ...]:
        return (*self.ad, *self.fd)

    @property
    def overall_label(self) -> str:
        return "RMIS" if self.benchmark else "overall"

    @property
    def note(self) -> str:
        """How AD / FD / overall are formed on a board that is not a suite's own."""
        if self.benchmark:
            return ""
        return (
            "AD, FD and overall are the means of this board's own AD and FD datasets "
            "(overall = mean of the task means); they are not RMIS benchmark scores"
        )


def suite_of(dataset: str) -> str:
    """``rmis``, ``synth`` or ``manifest`` (any other dataset: a user manifest)."""
    from rmis.data.synth import SYNTH_DATASETS

    if dataset in DATASETS:
        return "rmis"
    if dataset in SYNTH_DATASETS:
        return "synth"
    return "manifest"


def _as_board(suite: str | Board, results: list[dict]) -> Board:
    if isinstance(suite, Board):
        return suite
    if suite in ("rmis", "synth"):
        return Board(suite, *suite_datasets(suite))
    if suite == "manifest":
        tasks = {r["dataset"]: r.get("task") for r in results if suite_of(r["dataset"]) == suite}
        return Board(
            "manifest",
            tuple(sorted(n for n, t in tasks.items() if t == "ad")),
            tuple(sorted(n for n, t in tasks.items() if t != "ad")),
        )
    raise RMISError(f"unknown suite {suite!r}; choose one of {', '.join(SUITE_CHOICES)}")


def find_boards(
    results_dir: Path, suite: str = "auto", datasets: list[str] | None = None
) -> list[Board]:
    """The boards to show: ``--datasets`` (one ``custom`` board over exactly those), a named
    suite, or (``auto``) every suite the results folder holds (the paper's ``rmis`` board when
    it holds none)."""
    results = read_results(results_dir)
    if datasets:
        if suite != "auto":
            raise RMISError("give --suite or --datasets, not both")
        from rmis.data.synth import SYNTH_DATASETS

        tasks = {r["dataset"]: r.get("task") for r in results}
        names = list(dict.fromkeys(datasets))
        ad, fd = [], []
        for n in names:
            spec = DATASETS.get(n) or SYNTH_DATASETS.get(n)
            task = spec.task if spec is not None else tasks.get(n)
            if task is None:
                raise RMISError(
                    f"--datasets: no result for dataset {n!r} under {results_dir}; found: "
                    + (", ".join(sorted(tasks)) or "none (run `rmis eval` first)")
                )
            (ad if task == "ad" else fd).append(n)
        return [Board("custom", tuple(ad), tuple(fd))]
    if suite == "auto":
        found = {suite_of(r["dataset"]) for r in results}
        chosen = [s for s in ("rmis", "synth", "manifest") if s in found] or ["rmis"]
        return [_as_board(s, results) for s in chosen]
    return [_as_board(suite, results)]


def score_columns(ad: tuple[str, ...], fd: tuple[str, ...]) -> list[str]:
    """Identity, dataset and task-mean columns of a board, in Table 3 order."""
    return [
        "family",
        "variant",
        "config",
        "source",
        "params_millions",
        *ad,
        "ad_mean",
        *fd,
        "fd_mean",
        "rmis",
    ]


def result_files(results_dir: Path) -> list[Path]:
    """Result files in both layouts: ``<model>/<config id>/<dataset>.json`` and the older
    ``<model>/<dataset>.json`` (never ``run.json``)."""
    root = Path(results_dir)
    paths = [*root.glob("*/*.json"), *root.glob("*/*/*.json")]
    return sorted(p for p in paths if p.name != RUN_FILE)


#: Folders rmis itself writes under a results folder (no model results in them).
OUTPUT_DIRS = ("figures", "split_curves", "band_curves")


def result_problem(res: Any) -> str | None:
    """Why a parsed result file cannot go on a board (None: it can): it must be a JSON object
    of kind ``eval`` with a ``dataset`` name, a ``model`` object naming the model, family and
    variant, a finite numeric ``score`` and a ``provenance`` object."""
    if not isinstance(res, dict):
        return f"not an rmis eval result (a JSON {type(res).__name__}, not an object)"
    if res.get("kind") != "eval":
        return 'not an rmis eval result (no "kind": "eval")'
    if not isinstance(res.get("dataset"), str) or not res["dataset"]:
        return "no dataset name"
    m = res.get("model")
    if not isinstance(m, dict) or not all(
        isinstance(m.get(k), str) for k in ("name", "family", "variant")
    ):
        return "no model block with name, family and variant"
    score = res.get("score")
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not np.isfinite(score):
        return f"score is {json.dumps(score)}, not a finite number"
    if not isinstance(res.get("provenance"), dict):
        return "no provenance block"
    return None


def read_results(results_dir: Path) -> list[dict]:
    """All ``rmis eval`` result files under ``results_dir`` (both layouts), each with its
    configuration attached: ``_config_id``, ``_config`` (what it is) and ``_path``."""
    out = []
    runs: dict[Path, dict | None] = {}
    for path in result_files(results_dir):
        if path.relative_to(results_dir).parts[0] in OUTPUT_DIRS:
            continue
        try:
            res = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            log.warning("skipping unreadable result %s: %s", path, " ".join(str(exc).split()))
            continue
        if isinstance(res, dict) and res.get("kind", "eval") != "eval":
            continue  # another rmis file (an `rmis score` result ...), not a board entry
        problem = result_problem(res)
        if problem is not None:
            log.warning("skipping result %s: %s", path, problem)
            continue
        res["_path"] = str(path)
        _attach_config(res, path, Path(results_dir), runs)
        out.append(res)
    return out


def _attach_config(res: dict, path: Path, root: Path, runs: dict[Path, dict | None]) -> None:
    """``_config_id`` and ``_config`` of a result: its folder's name and ``run.json`` (new
    layout), or a ``legacy-...`` id derived from its model block and provenance (old layout)."""
    from rmis.evaluate import config_id

    cfg = legacy_config(res)
    if path.parent.parent.resolve() == root.resolve():  # RESULTS/<model>/<dataset>.json
        cfg["legacy"] = True
        res["_config_id"] = "legacy-" + config_id({**cfg, "runs": None})[:6]
        res["_config"] = cfg
        return
    folder = path.parent
    if folder not in runs:
        try:
            run = json.loads((folder / RUN_FILE).read_text())
            runs[folder] = run if isinstance(run, dict) else None
        except (OSError, ValueError):
            runs[folder] = None
    res["_config_id"] = folder.name
    res["_config"] = runs[folder] or cfg


def legacy_config(res: dict) -> dict[str, Any]:
    """The run configuration a result file describes itself (no ``run.json`` needed): the user's
    options are the recorded ones less those ``--compat`` added for this dataset."""
    from rmis.evaluate import compat_settings

    m = res.get("model") if isinstance(res.get("model"), dict) else {}
    prov = res.get("provenance") if isinstance(res.get("provenance"), dict) else {}
    compat = prov.get("compat") or "none"
    options = dict(m.get("options") or {})
    try:
        extra, _ = compat_settings(str(m.get("name")), str(res.get("dataset")), compat)
    except RMISError:
        extra = {}
    for k, v in extra.items():
        if k in options and options[k] == v:
            del options[k]
    return {
        "model": m.get("name"),
        "family": m.get("family"),
        "variant": m.get("variant"),
        "checkpoint": None,
        "weights_sha256": m.get("weights_sha256"),
        "revision": m.get("revision"),
        "options": options,
        "compat": compat,
        "precision": prov.get("precision") or "fp32",
        "runs": prov.get("runs"),
    }


def model_configs(results: list[dict], model: str) -> dict[str, dict]:
    """``{config id: config}`` of a model's results."""
    return {r["_config_id"]: r["_config"] for r in results if r["model"].get("name") == model}


def config_label(cfg: dict) -> str:
    """What differs from a plain ``rmis eval MODEL`` ("default" when nothing does)."""
    from rmis.evaluate import config_differences

    return ", ".join(config_differences(cfg)) or "default"


def task_means(
    scores: dict[str, float], ad: tuple[str, ...], fd: tuple[str, ...]
) -> tuple[float | None, float | None, float | None]:
    """(AD, FD, overall): task means need all of the task's datasets; overall = mean of the task
    means of the tasks the board has (RMIS = (AD + FD) / 2 when it has both)."""
    if ad and fd:
        o = overall_score(scores, ad, fd)
        return o.ad, o.fd, o.rmis

    def mean(names: tuple[str, ...]) -> float | None:
        if not names or any(n not in scores for n in names):
            return None
        return float(np.mean([scores[n] for n in names]))

    a, f = mean(ad), mean(fd)
    return a, f, a if ad else f


def measured_table(
    results_dir: Path, suite: str | Board, results: list[dict] | None = None
) -> pd.DataFrame:
    """One row per measured (model, configuration): dataset scores, task means, provenance."""
    if results is None:
        results = read_results(results_dir)
    board = _as_board(suite, results)
    ad, fd = board.ad, board.fd
    rows: dict[tuple[str, str, str], dict] = {}
    configs: dict[tuple[str, str], set[str]] = {}
    for res in results:
        if res["dataset"] not in (*ad, *fd):
            continue
        m = res["model"]
        cid = res["_config_id"]
        key = (m["family"], m["variant"], cid)
        configs.setdefault(key[:2], set()).add(cid)
        row = rows.setdefault(
            key,
            {
                "family": m["family"],
                "variant": m["variant"],
                "source": MEASURED_SOURCE,
                "params_millions": m.get("params_millions"),
                "model": m["name"],
                "config_id": cid,
                "_config": res["_config"],
                "weights_sha256": (m.get("weights_sha256") or "")[:12],
                "rmis_version": res["provenance"].get("rmis_version"),
                "git_revision": (res["provenance"].get("git_revision") or "")[:12],
            },
        )
        row[res["dataset"]] = res["score"]
    table = []
    for key, row in rows.items():
        cfg = row.pop("_config")
        label = config_label(cfg)
        several = len(configs[key[:2]]) > 1
        row["config"] = f"{key[2]} ({label})" if several or label != "default" else ""
        scores = {n: row[n] for n in (*ad, *fd) if n in row}
        row["ad_mean"], row["fd_mean"], row["rmis"] = task_means(scores, ad, fd)
        table.append(row)
    cols = [*score_columns(ad, fd), *PROVENANCE_COLUMNS]
    return pd.DataFrame(table, columns=cols).astype({c: float for c in (*ad, *fd)})


def leaderboard(
    results_dir: Path, suite: str | Board = "rmis", results: list[dict] | None = None
) -> pd.DataFrame:
    """Paper rows (rmis board only) and measured rows, sorted by RMIS (rows without one last)."""
    if results is None:
        results = read_results(results_dir)
    board = _as_board(suite, results)
    measured = measured_table(results_dir, board, results)
    if board.name != "rmis":
        return measured.sort_values(
            "rmis", ascending=False, na_position="last", kind="stable"
        ).reset_index(drop=True)
    paper = paper_table()
    paper["source"] = PAPER_SOURCE
    paper["config"] = ""
    ref = {(r.family, str(r.variant)): r.rmis for r in paper.itertuples()}
    measured["delta_rmis"] = [
        (r.rmis - ref[(r.family, str(r.variant))])
        if (r.family, str(r.variant)) in ref and pd.notna(r.rmis)
        else np.nan
        for r in measured.itertuples()
    ]
    board_df = pd.concat([paper, measured], ignore_index=True)
    return board_df.sort_values(
        "rmis", ascending=False, na_position="last", kind="stable"
    ).reset_index(drop=True)


def row_label(row: Any) -> str:
    """``family variant`` plus the configuration where it is shown."""
    config = getattr(row, "config", "")
    label = f"{row.family} {row.variant}"
    return label + (f" @{config}" if isinstance(config, str) and config else "")


def summary_rows(board_df: pd.DataFrame, board: Board) -> tuple[list[str], list[list[str]]]:
    """The compact board (what ``--format table`` shows): header and text cells."""
    header = ["model", "source", "params", "AD", "FD", board.overall_label, "Δ paper"]
    header.append("sets")
    rows = []
    n = len(board.datasets)
    # dataset names need not be identifiers (manifest names carry a '-'): count by column
    present = (
        board_df[list(board.datasets)].notna().sum(axis=1).tolist() if n else [0] * len(board_df)
    )
    for r, have in zip(board_df.itertuples(), present, strict=True):
        rows.append(
            [
                row_label(r),
                MEASURED_SOURCE if r.source == MEASURED_SOURCE else "paper",
                _cell(r.params_millions, "{:g}"),
                _cell(r.ad_mean),
                _cell(r.fd_mean),
                _cell(r.rmis),
                _cell(getattr(r, "delta_rmis", np.nan), "{:+.2f}"),
                f"{have}/{n}",
            ]
        )
    return header, rows


def _cell(value: Any, pattern: str = "{:.2f}") -> str:
    return "-" if value is None or pd.isna(value) else pattern.format(value)


def _title(board: Board) -> str:
    if board.name == "custom":
        return "leaderboard over " + ", ".join(board.datasets)
    return f"{board.name} leaderboard"


def format_text_table(board_df: pd.DataFrame, board: Board) -> str:
    """A plain-text table (columns aligned with spaces; nothing cut), title and note above."""
    header, rows = summary_rows(board_df, board)
    widths = [max(len(c) for c in col) for col in zip(header, *rows, strict=True)]
    left = {0, 1}

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [_title(board)]
    if board.note:
        out.append(board.note)
    out += ["", line(header), line(["-" * w for w in widths]), *map(line, rows)]
    return "\n".join(out) + "\n"


def format_board(board_df: pd.DataFrame, suite: str | Board, fmt: str) -> str:
    """The board as plain-text table, markdown, csv or html text (2 decimals; missing ``-``).
    ``html`` is a fragment (a heading, the note and the table); :func:`html_page` wraps it."""
    board = _as_board(suite, [])
    if fmt == "table":
        return format_text_table(board_df, board)
    cols = [*score_columns(board.ad, board.fd), "delta_rmis", *PROVENANCE_COLUMNS]
    view = board_df[[c for c in cols if c in board_df]]
    if not board.benchmark:
        view = view.rename(columns={"rmis": "overall"})
    if fmt == "csv":
        return view.to_csv(index=False)
    shown = view.copy()
    for c in shown.columns:
        if c in (*PROVENANCE_COLUMNS, "config"):
            shown[c] = ["" if pd.isna(v) or v is None else str(v) for v in shown[c]]
        elif c not in ("family", "variant", "source"):
            pattern = {"delta_rmis": "{:+.2f}", "params_millions": "{:g}"}.get(c, "{:.2f}")
            shown[c] = [_cell(v, pattern) for v in shown[c]]
    if fmt == "markdown":
        head = "| " + " | ".join(shown.columns) + " |"
        sep = "|" + "---|" * len(shown.columns)
        body = ["| " + " | ".join(str(v) for v in row) + " |" for row in shown.values]
        return "\n".join([head, sep, *body]) + "\n"
    if fmt == "html":
        import html

        note = f"<p>{html.escape(board.note)}</p>\n" if board.note else ""
        table = shown.to_html(index=False, escape=True, na_rep="-", border=0)
        return f"<h2>{html.escape(_title(board))}</h2>\n{note}{table}\n"
    raise RMISError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def format_boards(boards: list[tuple[Board, pd.DataFrame]], fmt: str) -> str:
    """Several boards in one text: tables one after the other (markdown with a heading each),
    one CSV with a leading ``board`` column when there are several, one HTML page."""
    if fmt == "html":
        return html_page([format_board(df, b, "html") for b, df in boards])
    if len(boards) == 1:
        board, df = boards[0]
        if fmt == "markdown" and board.note:
            return f"{board.note}\n\n" + format_board(df, board, fmt)
        return format_board(df, board, fmt)
    if fmt == "csv":
        import io

        frames = []
        for board, df in boards:
            part = pd.read_csv(io.StringIO(format_board(df, board, "csv")), dtype=str)
            part.insert(0, "board", board.name)
            frames.append(part)
        return pd.concat(frames, ignore_index=True).to_csv(index=False)
    parts = []
    for board, df in boards:
        text = format_board(df, board, fmt)
        if fmt == "markdown":
            note = f"{board.note}\n\n" if board.note else ""
            text = f"## {_title(board)}\n\n{note}{text}"
        parts.append(text)
    return "\n".join(parts)


def html_page(fragments: list[str], title: str = "rmis leaderboard") -> str:
    """A complete HTML page (doctype, charset, title, a little CSS) holding the fragments."""
    import html

    css = (
        "body{font-family:system-ui,sans-serif;margin:2em}"
        "table{border-collapse:collapse;font-size:0.85em}"
        "th,td{border:1px solid #ccc;padding:0.2em 0.5em;text-align:right;white-space:nowrap}"
        "th{background:#eee}td:nth-child(-n+4){text-align:left}"
        "tbody tr:nth-child(even){background:#f7f7f7}"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{css}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n" + "\n".join(fragments) + "</body>\n</html>\n"
    )


def score_vs_params_series(board: pd.DataFrame) -> dict[str, tuple[list, list]]:
    """The lines of Figure 1: ``{family [@config] [(measured)]: (params, RMIS)}`` sorted by
    params; rows without a positive parameter count or without an RMIS score are left out
    (see :func:`parameter_free_points` and :func:`rows_without_params`)."""
    data = board.dropna(subset=["rmis", "params_millions"])
    data = data[data["params_millions"] > 0]  # a log axis; training-free baselines have none
    if "config" not in data:
        data = data.assign(config="")
    data = data.assign(config=data["config"].fillna(""))
    out = {}
    for (family, source, config), part in data.groupby(["family", "source", "config"], sort=True):
        part = part.sort_values("params_millions")
        label = family + (f" @{config}" if config else "")
        label += " (measured)" if source == MEASURED_SOURCE else ""
        out[label] = (part["params_millions"].tolist(), part["rmis"].tolist())
    return out


def parameter_free_points(board: pd.DataFrame) -> list[tuple[str, float]]:
    """``(label, RMIS)`` of the rows with 0 parameters (training-free baselines)."""
    data = board.dropna(subset=["rmis", "params_millions"])
    data = data[data["params_millions"] <= 0]
    return [
        (row_label(r) + (" *" if r.source == MEASURED_SOURCE else ""), float(r.rmis))
        for r in data.itertuples()
    ]


def rows_without_params(board: pd.DataFrame) -> list[str]:
    """Labels of the rows with a score but no parameter count (not on Figure 1)."""
    data = board[board["rmis"].notna() & board["params_millions"].isna()]
    return [row_label(r) for r in data.itertuples()]


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


def score_vs_params_figure(board: pd.DataFrame, title: str = "") -> Any:
    """Figure 1: RMIS score vs parameters, one line per family; parameter-free rows at a marked
    "0 params" position left of the log axis; rows without a parameter count named below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = score_vs_params_series(board)
    free = parameter_free_points(board)
    lacking = rows_without_params(board)
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, "--s" if label.endswith("(measured)") else "-o", label=label)
    xs_all = [x for xs, _ in series.values() for x in xs]
    if series or free:
        ax.set_xscale("log")
    if free:
        lo = min(xs_all) if xs_all else 1.0
        hi = max(xs_all) if xs_all else 1.0
        x0 = lo / 10  # the "0 params" position, a decade left of the smallest model
        for label, y in free:
            ax.plot([x0], [y], "D", color="black", markersize=6)
            ax.annotate(label, (x0, y), xytext=(6, 4), textcoords="offset points", fontsize=7)
        ax.axvline(x0 * 3, color="grey", linestyle=":", linewidth=1)
        ax.set_xlim(x0 / 3, max(hi * 3, x0 * 30))
        from matplotlib.ticker import FixedLocator, FuncFormatter

        # plain labels right of the dotted line; "0 params" at the parameter-free position
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: "" if v < x0 * 3 else f"{v:g}"))
        ax.xaxis.set_minor_locator(FixedLocator([x0]))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: "0 params"))
    if not series and not free:
        ax.text(
            0.5,
            0.5,
            "no rows with a parameter count and an RMIS score",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
    ax.set_xlabel("parameters (millions, log scale)")
    ax.set_ylabel("RMIS score (%)")
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    if series:
        ax.legend(fontsize=7)
    notes = []
    if free:
        notes.append("◆ parameter-free models, shown at '0 params' left of the dotted line")
    if lacking:
        notes.append(f"not plotted, no parameter count ({len(lacking)}): " + ", ".join(lacking))
    if notes:
        fig.text(0.01, 0.01, _wrap(" | ".join(notes), 150), fontsize=6, va="bottom", ha="left")
        n_lines = _wrap(" | ".join(notes), 150).count("\n") + 1
        fig.tight_layout(rect=(0, 0.03 + 0.025 * n_lines, 1, 1))
    else:
        fig.tight_layout()
    return fig


def plot_score_vs_params(board: pd.DataFrame, out_base: Path, title: str = "") -> list[Path]:
    """Paper Figure 1 (PNG and SVG); see :func:`score_vs_params_figure`."""
    return _save(score_vs_params_figure(board, title), out_base, tight=False)


def rank_matrix(board: pd.DataFrame, datasets: tuple[str, ...]) -> pd.DataFrame:
    """Per-dataset ranks (1 = best; ties share the best rank; missing stays NaN)."""
    scores = board[list(datasets)]
    return scores.rank(axis=0, ascending=False, method="min")


def rank_heatmap_figure(board: pd.DataFrame, datasets: tuple[str, ...]) -> Any:
    """Figure 5: per-dataset rank heatmap, legible from one model up (ranks written in the
    cells of small boards, integer colour bar, a caption explaining ``*``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    ranks = rank_matrix(board, datasets)
    measured = [r.source == MEASURED_SOURCE for r in board.itertuples()]
    labels = [
        row_label(r) + (" *" if m else "")
        for r, m in zip(board.itertuples(), measured, strict=True)
    ]
    longest = max((len(s) for s in labels), default=10)
    width = max(5.0, 1.0 + 0.07 * longest + 0.45 * len(datasets) + 1.2)
    height = max(3.0, 1.6 + 0.25 * len(labels) + 0.07 * max((len(d) for d in datasets), default=0))
    fig, ax = plt.subplots(figsize=(width, height))
    n = max(2, len(labels))
    im = ax.imshow(ranks.to_numpy(dtype=float), cmap="viridis_r", aspect="auto", vmin=1, vmax=n)
    ax.set_xticks(range(len(datasets)), datasets, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    if len(labels) * len(datasets) <= 400:
        values = ranks.to_numpy(dtype=float)
        for i in range(values.shape[0]):
            for j in range(values.shape[1]):
                text = "-" if np.isnan(values[i, j]) else f"{values[i, j]:.0f}"
                # dark text on the light (good) end of viridis_r, white on the dark end
                light = not np.isnan(values[i, j]) and (values[i, j] - 1) / (n - 1) < 0.5
                color = "black" if light else "white"
                ax.text(j, i, text, ha="center", va="center", fontsize=6, color=color)
    bar = fig.colorbar(im, ax=ax, label="rank (1 = best)")
    bar.locator = MaxNLocator(integer=True)
    bar.update_ticks()
    parts = []
    if any(measured):
        parts.append("* = measured by rmis")
    if not all(measured):
        parts.append("others: reported in the paper (Table 3)")
    parts.append("- = no score")
    fig.text(0.01, 0.01, "; ".join(parts), fontsize=7, va="bottom", ha="left")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def plot_rank_heatmap(board: pd.DataFrame, datasets: tuple[str, ...], out_base: Path):
    """Paper Figure 5: per-dataset rank heatmap (PNG and SVG)."""
    return _save(rank_heatmap_figure(board, datasets), out_base, tight=False)


def _save(fig, out_base: Path, tight: bool = True) -> list[Path]:
    """Write ``out_base.png`` and ``.svg`` atomically (``bbox_inches="tight"``: nothing clipped);
    ``tight=False`` keeps the figure's own layout."""
    import matplotlib.pyplot as plt

    out_base.parent.mkdir(parents=True, exist_ok=True)
    if tight:
        fig.tight_layout()
    paths = []
    for ext in ("png", "svg"):
        path = out_base.with_suffix(f".{ext}")
        tmp = path.with_name(f".{path.name}.tmp")
        fig.savefig(tmp, format=ext, dpi=150, bbox_inches="tight")
        tmp.replace(path)
        paths.append(path)
    plt.close(fig)
    return paths
