"""The ``rmis`` command line."""

from __future__ import annotations

import functools
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

import rmis
from rmis.errors import RMISError

app = typer.Typer(
    name="rmis",
    help="Reproducible evaluation of foundation models of industrial signals (RMIS benchmark).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
list_app = typer.Typer(help="List what rmis knows about.", no_args_is_help=True)
app.add_typer(list_app, name="list")
data_app = typer.Typer(
    help="Inspect datasets: metadata tables, checks, where to get them.", no_args_is_help=True
)
app.add_typer(data_app, name="data")

console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def _user_errors(fn: F) -> F:
    """Turn :class:`RMISError` into a one-line message and exit status 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RMISError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        console.print(f"rmis {rmis.__version__} (protocol {rmis.PROTOCOL_VERSION})")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show version.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log details.")] = False,
) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")


@app.command()
@_user_errors
def score(
    meta: Annotated[Path, typer.Option("--meta", help="Metadata CSV, one row per file.")],
    embeddings: Annotated[
        Path, typer.Option("--embeddings", help=".npz with one 1-D vector per file id.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Result JSON to write.")],
    dataset: Annotated[
        str | None,
        typer.Option("--dataset", help="RMIS dataset name: protocol, test size, classes from it."),
    ] = None,
    protocol: Annotated[
        str | None,
        typer.Option(
            "--protocol",
            help="fd | fd-official-split | dcase2020 ... dcase2025 (instead of --dataset).",
        ),
    ] = None,
    classes: Annotated[
        str | None,
        typer.Option("--classes", help="Comma-separated class order (FD; default: sorted)."),
    ] = None,
    test_size: Annotated[
        float | None, typer.Option("--test-size", help="Test fraction of groups (fd; 0.5).")
    ] = None,
    runs: Annotated[int, typer.Option("--runs", min=1, help="Sealed-split runs.")] = 10,
    k: Annotated[int, typer.Option("--k", min=1, help="Neighbours of the FD k-NN.")] = 5,
    split_curve: Annotated[
        bool, typer.Option("--split-curve", help="Also compute the multi-split-ratio curve.")
    ] = False,
    dcase_export: Annotated[
        Path | None,
        typer.Option("--dcase-export", help="Write official DCASE anomaly-score CSVs here."),
    ] = None,
    device: Annotated[str, typer.Option("--device", help="Torch device for k-NN.")] = "cpu",
) -> None:
    """Score precomputed embeddings with the RMIS protocol ("bring your own embeddings").

    FD META.csv columns: file,label,group (fd) or file,label,split (fd-official-split). AD
    META.csv columns: file,subset,split,machine,section,domain,label. EMB.npz: one 1-D float
    array per file id. Nothing is written if anything is wrong.
    """
    from rmis.data.specs import PROTOCOLS, get_dataset
    from rmis.io import atomic_write_json, read_embeddings
    from rmis.provenance import RESULT_SCHEMA_VERSION, base_provenance, sha256_file
    from rmis.scoring import (
        check_meta,
        dcase_export_files,
        read_meta,
        score_table,
        write_dcase_export,
    )

    if (dataset is None) == (protocol is None):
        raise RMISError("give exactly one of --dataset NAME or --protocol NAME")
    class_list = [c.strip() for c in classes.split(",")] if classes else None
    if dataset is not None:
        if class_list is not None or test_size is not None:
            raise RMISError(
                f"--dataset {dataset} fixes the class order and test size of the published "
                "protocol; use --protocol fd with --classes/--test-size for other settings"
            )
        spec = get_dataset(dataset)
        protocol = spec.protocol
        class_list = list(spec.classes) or None
        test_size = spec.test_size
        where = dataset
    else:
        if protocol not in PROTOCOLS:
            raise RMISError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
        where = str(meta)
    if test_size is None:
        test_size = 0.5
    if dcase_export is not None and not protocol.startswith("dcase"):
        raise RMISError("--dcase-export applies to dcase protocols only")

    started = time.perf_counter()
    table = check_meta(read_meta(meta), protocol, where=str(meta))
    emb = read_embeddings(embeddings)
    with console.status(f"scoring {where} ({protocol})"):
        body = score_table(
            table,
            emb,
            protocol=protocol,
            classes=class_list,
            test_size=test_size,
            runs=runs,
            k=k,
            split_curve=split_curve,
            where=where,
            device=device,
        )
    export = dcase_export_files(table, body["clip_scores"]) if dcase_export else None
    result = {
        "schema_version": RESULT_SCHEMA_VERSION,
        "kind": "score",
        "dataset": dataset,
        **body,
        "provenance": base_provenance()
        | {
            "command": "rmis score",
            "meta": {"path": str(meta), "sha256": sha256_file(meta)},
            "embeddings": {"path": str(embeddings), "sha256": sha256_file(embeddings)},
            "runs": runs,
            "seconds": round(time.perf_counter() - started, 3),
        },
    }
    atomic_write_json(out, result)
    if export is not None:
        write_dcase_export(export, dcase_export)
    _print_score(result, out, dcase_export)


def _print_score(result: dict[str, Any], out: Path, export: Path | None) -> None:
    name = result["dataset"] or result["protocol"]
    line = f"[bold]{name}[/] ({result['protocol']}): score [bold green]{result['score']:.2f}[/]"
    if result.get("runs"):
        line += f" ± {result['std']:.2f} over {len(result['runs'])} runs"
    if "auc" in result:
        line += f"; split-curve area {result['auc']:.2f}"
    if "subsets" in result:
        line += "; " + ", ".join(f"{s} {v:.2f}" for s, v in result["subsets"].items())
    console.print(line, highlight=False)
    console.print(f"result written to {out}", highlight=False)
    if export is not None:
        console.print(f"DCASE submission files written under {export}", highlight=False)


DataRoot = Annotated[
    Path | None,
    typer.Option("--data-root", envvar="RMIS_DATA_ROOT", help="Folder of RMIS datasets."),
]
DatasetDirs = Annotated[
    list[str] | None,
    typer.Option("--dataset-dir", help="NAME=PATH: a dataset's folder (repeatable)."),
]
DcaseGt = Annotated[
    Path | None,
    typer.Option("--dcase-gt", help="Folder of eval_data_list_20XX.csv (DCASE eval labels)."),
]


OptionList = Annotated[
    list[str] | None,
    typer.Option("-o", "--option", help="Adapter option key=value (repeatable)."),
]


@app.command("eval")
@_user_errors
def eval_(
    model: Annotated[str, typer.Argument(help="Encoder name (see `rmis list models`).")],
    suite: Annotated[str, typer.Option("--suite", help="synth | rmis.")] = "rmis",
    datasets: Annotated[
        str | None, typer.Option("--datasets", help="Comma-separated subset of the suite.")
    ] = None,
    manifest: Annotated[
        Path | None,
        typer.Option("--manifest", help="Your own dataset: CSV path,label,group[,split]."),
    ] = None,
    test_size: Annotated[
        float, typer.Option("--test-size", help="Test fraction of groups (manifest).")
    ] = 0.5,
    data_root: Annotated[
        Path | None,
        typer.Option("--data-root", envvar="RMIS_DATA_ROOT", help="Folder of RMIS datasets."),
    ] = None,
    dcase_gt: Annotated[
        Path | None,
        typer.Option("--dcase-gt", help="Folder of eval_data_list_20XX.csv (DCASE eval labels)."),
    ] = None,
    checkpoint: Annotated[
        str | None, typer.Option("--checkpoint", help="Weights: file, hub id or URL.")
    ] = None,
    option: OptionList = None,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:1 ...")] = "cpu",
    precision: Annotated[str, typer.Option("--precision", help="fp32 | fp16 | bf16 (GPU).")] = (
        "fp32"
    ),
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Windows per batch.")] = 32,
    workers: Annotated[
        int | None, typer.Option("--workers", min=0, help="Decoding worker processes.")
    ] = None,
    runs: Annotated[int, typer.Option("--runs", min=1, help="Sealed-split runs.")] = 10,
    results_dir: Annotated[
        Path, typer.Option("--results-dir", help="Where result JSON files go.")
    ] = Path("results"),
    cache_dir: Annotated[
        Path | None,
        typer.Option("--cache-dir", envvar="RMIS_CACHE_DIR", help="Embedding/data cache."),
    ] = None,
    skip_bad_files: Annotated[
        bool, typer.Option("--skip-bad-files", help="List bad files in the result, go on.")
    ] = False,
    compat: Annotated[
        str,
        typer.Option(
            "--compat", help="none | rmis-official (reproduce the official harness's quirks)."
        ),
    ] = "none",
    dataset_dir: Annotated[
        list[str] | None,
        typer.Option("--dataset-dir", help="NAME=PATH: a dataset's folder (repeatable)."),
    ] = None,
) -> None:
    """Evaluate an encoder: extract (or reuse cached) embeddings, score every dataset, write
    one result JSON per dataset (`RESULTS/<model>/<dataset>.json`) and print the table.

    `--suite synth` runs offline on the built-in synthetic suite (generated on first use);
    `--suite rmis --data-root DIR` runs the RMIS datasets found in DIR; `--manifest DATA.csv`
    evaluates your own recordings.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from rmis.encoders import load_encoder, parse_options
    from rmis.evaluate import (
        compat_settings,
        default_cache_dir,
        evaluate_dataset,
        manifest_dataset,
        parse_folders,
        resolve_suite,
    )
    from rmis.progress import FilesPerSecond

    options = parse_options(option)
    cache = cache_dir or default_cache_dir()
    names = [d.strip() for d in datasets.split(",")] if datasets else None
    missing: dict[str, str] = {}
    if manifest is not None:
        todo = [manifest_dataset(manifest, test_size)]
        suite = "manifest"
    else:
        todo, missing = resolve_suite(
            suite, names, cache, data_root, dcase_gt, parse_folders(dataset_dir)
        )
    compat_settings(model, "", compat)  # validates the mode before any work
    encoders: dict[str, Any] = {}

    def encoder_for(opts: dict[str, Any]) -> Any:
        key = repr(sorted(opts.items()))
        if key not in encoders:
            encoders[key] = load_encoder(model, checkpoint=checkpoint, device=device, **opts)
        return encoders[key]

    encoder_for(options)  # fail early on a bad model, checkpoint or option
    results = []
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        FilesPerSecond(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, transient=True) as progress:
        for ds in todo:
            progress.console.print(f"[bold]{ds.name}[/]: {len(ds.table)} files", highlight=False)
            extra, input_rate = compat_settings(model, ds.name, compat)
            ds_options = {**options, **extra}
            results.append(
                evaluate_dataset(
                    ds,
                    encoder_for(ds_options),
                    options=ds_options,
                    results_dir=results_dir,
                    cache_dir=cache,
                    runs=runs,
                    batch_size=batch_size,
                    num_workers=workers,
                    precision=precision,
                    skip_bad_files=skip_bad_files,
                    progress=progress,
                    device=device,
                    input_rate=input_rate,
                    compat=compat,
                )
            )
    _print_eval(model, suite, results, missing, results_dir)


def _print_eval(
    model: str,
    suite: str,
    results: list[dict[str, Any]],
    missing: dict[str, str],
    results_dir: Path,
) -> None:
    from rmis.evaluate import suite_overall

    table = Table(title=f"{model} on {suite}")
    for col in ("dataset", "task", "protocol", "score", "± std", "files", "embedded", "s"):
        table.add_column(col, justify="right" if col not in ("dataset", "task") else "left")
    for r in results:
        prov = r["provenance"]
        table.add_row(
            r["dataset"],
            r["task"].upper(),
            r["protocol"],
            f"{r['score']:.2f}",
            f"{r['std']:.2f}" if r.get("runs") else "",
            str(r["n_files"]),
            f"{prov['files_embedded']} new",
            f"{prov['seconds_total']:.1f}",
        )
    for name, why in missing.items():
        table.add_row(name, "", "", "missing", "", "", why, "")
    console.print(table)
    for r in results:
        if r["skipped_files"]:
            console.print(
                f"[yellow]{r['dataset']}: {len(r['skipped_files'])} files skipped[/] (listed in "
                "the result file)",
                highlight=False,
            )
    if suite in ("synth", "rmis"):
        overall, complete = suite_overall(suite, {r["dataset"]: r["score"] for r in results})
        parts = []
        for label, value in (("AD", overall.ad), ("FD", overall.fd), ("RMIS", overall.rmis)):
            parts.append(f"{label} {value:.2f}" if value is not None else f"{label} -")
        note = "" if complete else f" (partial: {len(overall.missing)} datasets missing)"
        console.print(f"[bold]{suite}[/]: " + ", ".join(parts) + note, highlight=False)
    console.print(
        f"results written under {results_dir / results[0]['model']['name']}", highlight=False
    )


@app.command()
@_user_errors
def embed(
    model: Annotated[str, typer.Argument(help="Encoder name.")],
    files: Annotated[list[Path], typer.Argument(help="Audio files to embed.")],
    out: Annotated[Path, typer.Option("--out", help="Output .npz (keys: paths as given).")],
    window_seconds: Annotated[
        float, typer.Option("--window-seconds", min=0.01, help="Window length in seconds.")
    ] = 10.0,
    checkpoint: Annotated[str | None, typer.Option("--checkpoint", help="Weights.")] = None,
    option: OptionList = None,
    device: Annotated[str, typer.Option("--device")] = "cpu",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 32,
) -> None:
    """Embed arbitrary files with the benchmark's windowing (one vector per file)."""
    from rmis.encoders import load_encoder, parse_options
    from rmis.extract import FileItem, extract
    from rmis.io import atomic_write_bytes

    encoder = load_encoder(model, checkpoint=checkpoint, device=device, **parse_options(option))
    items = [FileItem(str(f), str(f)) for f in files]
    if len({i.id for i in items}) != len(items):
        raise RMISError("a file is given more than once")
    res = extract(
        items, encoder, window_seconds=window_seconds, batch_size=batch_size, num_workers=0
    )
    import io

    import numpy as np

    buf = io.BytesIO()
    np.savez(buf, **res.embeddings)
    atomic_write_bytes(out, buf.getvalue())
    dim = next(iter(res.embeddings.values())).shape[0]
    console.print(
        f"{len(res.embeddings)} embeddings of dimension {dim} written to {out}", highlight=False
    )


@app.command("check-model")
@_user_errors
def check_model(
    model: Annotated[str, typer.Argument(help="Encoder name.")],
    checkpoint: Annotated[str | None, typer.Option("--checkpoint", help="Weights.")] = None,
    option: OptionList = None,
    device: Annotated[str, typer.Option("--device")] = "cpu",
    seconds: Annotated[float, typer.Option("--seconds", help="Window length to test.")] = 1.0,
) -> None:
    """Check an adapter on short random inputs at several rates: shape, dtype, determinism,
    batch-size independence and NaN-freedom. Exits 1 if a check fails."""
    from rmis.checks import check_encoder
    from rmis.encoders import load_encoder, parse_options

    encoder = load_encoder(model, checkpoint=checkpoint, device=device, **parse_options(option))
    rows = check_encoder(encoder, seconds=seconds)
    table = Table(title=f"check-model {model}")
    for col in ("rate (Hz)", "check", "result", "detail"):
        table.add_column(col)
    for r in rows:
        mark = "[green]ok[/]" if r.ok else "[red]FAIL[/]"
        table.add_row(str(r.rate), r.check, mark, r.detail)
    console.print(table)
    if not all(r.ok for r in rows):
        raise typer.Exit(1)


@list_app.command("models")
def list_models() -> None:
    """Registered encoders and their metadata."""
    from rmis.encoders import list_encoders

    table = Table(title="rmis encoders")
    for col in ("name", "family", "variant", "params (M)", "input rate", "embedding", "weights"):
        table.add_column(col, min_width=12 if col == "name" else None)
    for i in list_encoders():
        rate = "native" if i.sample_rate is None else f"{i.sample_rate} Hz"
        params = "" if i.params_millions is None else f"{i.params_millions:g}"
        table.add_row(
            i.name,
            i.family,
            i.variant,
            params,
            rate,
            i.embedding,
            i.checkpoints[0] if i.checkpoints else "none needed",
        )
    console.print(table)


@list_app.command("datasets")
def list_datasets(
    data_root: Annotated[
        Path | None,
        typer.Option("--data-root", envvar="RMIS_DATA_ROOT", help="Folder of RMIS datasets."),
    ] = None,
) -> None:
    """The 19 RMIS datasets, their protocol settings and whether they are under the data root."""
    from rmis.data.specs import DATASETS

    table = Table(title="RMIS datasets" + (f" under {data_root}" if data_root else ""))
    for col in (
        "dataset",
        "task",
        "modality",
        "rate (Hz)",
        "window (s)",
        "split",
        "classes",
        "found",
    ):
        table.add_column(col, min_width=14 if col == "dataset" else None)
    for spec in DATASETS.values():
        split = (
            f"sealed {spec.test_size}"
            if spec.sealed
            else "official"
            if spec.task == "fd"
            else f"DCASE {spec.year}"
        )
        n_classes = str(len(spec.classes)) if spec.classes else "2"
        found = (
            ""
            if data_root is None
            else ("[green]yes[/]" if (data_root / spec.name).is_dir() else "[red]no[/]")
        )
        table.add_row(
            spec.name,
            spec.task.upper(),
            spec.modality,
            f"{spec.sample_rate}",
            f"{spec.window_seconds:g}",
            split,
            n_classes,
            found,
        )
    console.print(table)


@app.command()
@_user_errors
def leaderboard(
    results_dir: Annotated[
        Path, typer.Option("--results-dir", help="Where `rmis eval` wrote results.")
    ] = Path("results"),
    suite: Annotated[str, typer.Option("--suite", help="rmis | synth.")] = "rmis",
    fmt: Annotated[str, typer.Option("--format", help="table | markdown | csv | html.")] = "table",
    out: Annotated[Path | None, typer.Option("--out", help="Write the board here.")] = None,
    figures_dir: Annotated[
        Path | None, typer.Option("--figures-dir", help="Figures (default RESULTS/figures).")
    ] = None,
) -> None:
    """Paper rows and measured rows side by side, sorted by RMIS; also writes the figures
    score-vs-parameters (paper Fig. 1) and the per-dataset rank heatmap (Fig. 5), PNG + SVG."""
    from rmis.io import atomic_write_text
    from rmis.leaderboard import (
        MEASURED_SOURCE,
        format_board,
        plot_rank_heatmap,
        plot_score_vs_params,
        suite_datasets,
    )
    from rmis.leaderboard import (
        leaderboard as build,
    )

    board = build(results_dir, suite)
    if board.empty:
        raise RMISError(f"no results for the {suite} suite under {results_dir}; run `rmis eval`")
    ad, fd = suite_datasets(suite)
    if fmt == "table":
        table = Table(title=f"{suite} leaderboard")
        cols = ["model", "source", "params (M)", "AD", "FD", "RMIS", "Δ paper", "datasets"]
        for col in cols:
            table.add_column(col)
        for r in board.itertuples():
            have = sum(pd_notna(getattr(r, n)) for n in (*ad, *fd))
            delta = getattr(r, "delta_rmis", float("nan"))
            table.add_row(
                f"{r.family} {r.variant}",
                "[bold cyan]measured[/]" if r.source == MEASURED_SOURCE else "paper",
                _fmt(r.params_millions, "{:g}"),
                _fmt(r.ad_mean),
                _fmt(r.fd_mean),
                _fmt(r.rmis),
                _fmt(delta, "{:+.2f}"),
                f"{have}/{len(ad) + len(fd)}",
            )
        console.print(table)
        text = None
    else:
        text = format_board(board, suite, fmt)
        if out is None:
            typer.echo(text, nl=False)
    if out is not None:
        atomic_write_text(out, text if text is not None else format_board(board, suite, "csv"))
        console.print(f"leaderboard written to {out}", highlight=False)
    figs = figures_dir or results_dir / "figures"
    written = plot_score_vs_params(board, figs / f"{suite}_score_vs_params")
    written += plot_rank_heatmap(board, (*ad, *fd), figs / f"{suite}_rank_heatmap")
    err_console.print("figures: " + ", ".join(str(p) for p in written), highlight=False)


def _suite_for_curves(
    suite: str,
    datasets: str | None,
    cache: Path,
    data_root: Path | None,
    dataset_dir: list[str] | None,
    dcase_gt: Path | None,
) -> list[Any]:
    from rmis.evaluate import parse_folders, resolve_suite

    names = [d.strip() for d in datasets.split(",")] if datasets else None
    return resolve_suite(suite, names, cache, data_root, dcase_gt, parse_folders(dataset_dir))[0]


CurveSuite = Annotated[str, typer.Option("--suite", help="synth | rmis.")]
CurveDatasets = Annotated[str | None, typer.Option("--datasets", help="Comma-separated.")]
CurveResults = Annotated[Path, typer.Option("--results-dir", help="Where results are.")]
CurveCache = Annotated[Path | None, typer.Option("--cache-dir", envvar="RMIS_CACHE_DIR")]
CurveRuns = Annotated[int, typer.Option("--runs", min=1, help="Runs per test size.")]


@app.command("split-curve")
@_user_errors
def split_curve(
    models: Annotated[list[str], typer.Argument(help="One or more evaluated models.")],
    suite: CurveSuite = "rmis",
    datasets: CurveDatasets = None,
    results_dir: CurveResults = Path("results"),
    cache_dir: CurveCache = None,
    runs: CurveRuns = 10,
    data_root: DataRoot = None,
    dataset_dir: DatasetDirs = None,
    dcase_gt: DcaseGt = None,
) -> None:
    """Multi-split-ratio curves of every sealed FD dataset from cached embeddings (no
    re-extraction): areas (paper Table 5 layout), plots and the Pearson correlation between
    fixed-split scores and curve areas."""
    from rmis.curves import areas_table, plot_split_curves, split_curves
    from rmis.evaluate import default_cache_dir
    from rmis.io import atomic_write_json, atomic_write_text

    cache = cache_dir or default_cache_dir()
    todo = _suite_for_curves(suite, datasets, cache, data_root, dataset_dir, dcase_gt)
    with console.status("computing split curves"):
        curves = split_curves(models, todo, results_dir, cache, runs=runs)
    if not curves["areas"]:
        raise RMISError("no sealed fault-diagnosis dataset among the chosen ones")
    out = results_dir / "split_curves" / suite
    table = areas_table(curves)
    atomic_write_text(out / "areas.csv", table.to_csv(index=False))
    atomic_write_json(out / "curves.json", curves)
    figs = plot_split_curves(curves, out / "split_curves")
    view = Table(title=f"split-curve areas ({suite})")
    for col in table.columns:
        view.add_column(col)
    for row in table.itertuples(index=False):
        view.add_row(row[0], *[f"{v:.2f}" for v in row[1:]])
    console.print(view)
    for label, key in (
        ("(model, dataset) pairs", "pearson_pairs"),
        ("model means", "pearson_model_means"),
    ):
        r = curves[key]
        console.print(
            f"Pearson r, fixed-split score vs curve area over {label}: "
            + ("n/a (fewer than 3)" if r is None else f"{r:.3f}"),
            highlight=False,
        )
    console.print(
        f"written: {out / 'areas.csv'}, {out / 'curves.json'}, " + ", ".join(map(str, figs)),
        highlight=False,
    )


@app.command("band-curve")
@_user_errors
def band_curve_cmd(
    model: Annotated[str, typer.Argument(help="An evaluated FISHER-style model.")],
    suite: CurveSuite = "rmis",
    datasets: CurveDatasets = None,
    results_dir: CurveResults = Path("results"),
    cache_dir: CurveCache = None,
    runs: CurveRuns = 10,
    data_root: DataRoot = None,
    dataset_dir: DatasetDirs = None,
    dcase_gt: DcaseGt = None,
) -> None:
    """Performance vs the number of low-frequency sub-bands kept (paper Figure 6), from one
    extraction: the first b bands' embedding is a slice of the full one."""
    from rmis.curves import band_curve, plot_band_curve
    from rmis.evaluate import default_cache_dir
    from rmis.io import atomic_write_text

    cache = cache_dir or default_cache_dir()
    todo = _suite_for_curves(suite, datasets, cache, data_root, dataset_dir, dcase_gt)
    with console.status("scoring sub-band prefixes"):
        table = band_curve(model, todo, results_dir, cache, runs=runs)
    out = results_dir / "band_curves" / suite / model
    atomic_write_text(out.with_suffix(".csv"), table.to_csv(index=False))
    figs = plot_band_curve(table, model, out)
    view = Table(title=f"{model}: score vs sub-bands kept ({suite})")
    for col in ("dataset", "bands", "up to (Hz)", "score"):
        view.add_column(col)
    for r in table.itertuples():
        view.add_row(r.dataset, f"{r.bands}/{r.of}", _fmt(r.top_hz, "{:.0f}"), f"{r.score:.2f}")
    console.print(view)
    console.print(
        f"written: {out.with_suffix('.csv')}, " + ", ".join(map(str, figs)), highlight=False
    )


def pd_notna(value: Any) -> bool:
    return value == value and value is not None  # NaN != NaN


def _fmt(value: Any, pattern: str = "{:.2f}") -> str:
    return "-" if value is None or value != value else pattern.format(value)


@data_app.command("table")
@_user_errors
def data_table(
    dataset: Annotated[str, typer.Argument(help="RMIS dataset name.")],
    out: Annotated[Path, typer.Option("--out", help="CSV to write.")],
    data_root: DataRoot = None,
    dataset_dir: DatasetDirs = None,
    dcase_gt: DcaseGt = None,
) -> None:
    """The metadata table rmis derives for one dataset (rows sorted by file; `file` relative
    to the dataset folder): audit how your copy is read, or feed it to `rmis score`."""
    from rmis.data.specs import get_dataset
    from rmis.evaluate import dataset_folder, dataset_table, parse_folders
    from rmis.io import atomic_write_text

    get_dataset(dataset)
    folder = dataset_folder(dataset, data_root, parse_folders(dataset_dir))
    if folder is None or not folder.is_dir():
        raise RMISError(f"dataset {dataset!r} not found at {folder} (give --data-root DIR)")
    table = dataset_table(dataset, folder, dcase_gt).drop(columns="path")
    atomic_write_text(out, table.to_csv(index=False))
    console.print(f"{len(table)} rows written to {out}", highlight=False)


@data_app.command("check")
@_user_errors
def data_check(
    data_root: DataRoot = None,
    dataset_dir: DatasetDirs = None,
    dcase_gt: DcaseGt = None,
    datasets: Annotated[
        str | None, typer.Option("--datasets", help="Comma-separated subset.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Per dataset: found, files, hours, sample rates, classes and groups, unmatched and
    unreadable files, and whether a sealed split is possible. Exits 1 on problems."""
    import json

    from rmis.datacheck import check_root
    from rmis.evaluate import parse_folders

    names = [d.strip() for d in datasets.split(",")] if datasets else None
    checks = check_root(data_root, parse_folders(dataset_dir), dcase_gt, names)
    if as_json:
        typer.echo(json.dumps([c.to_json() for c in checks], indent=2))
    else:
        table = Table(title="rmis data check" + (f" of {data_root}" if data_root else ""))
        for col in (
            "dataset",
            "found",
            "files",
            "hours",
            "rates (Hz)",
            "classes/groups",
            "sealable",
            "problems",
        ):
            table.add_column(col, min_width=14 if col == "dataset" else None)
        for c in checks:
            if c.classes:
                cls = ", ".join(f"{k} {v['files']}/{v['groups']}" for k, v in c.classes.items())
            else:
                cls = ", ".join(f"{k} {v}" for k, v in c.machines.items())
            table.add_row(
                c.name,
                "[green]yes[/]" if c.found else "no",
                str(c.files) if c.found else "",
                f"{c.hours:.2f}" if c.found else "",
                ",".join(map(str, c.sample_rates)),
                cls,
                "" if c.sealable is None else ("yes" if c.sealable else "[red]no[/]"),
                "[red]" + "; ".join(c.problems) + "[/]" if c.problems else "",
            )
        console.print(table)
    if any(c.problems for c in checks):
        raise typer.Exit(1)


@data_app.command("download-help")
def data_download_help() -> None:
    """Where each RMIS source dataset is published and how the release must be laid out
    (rmis never redistributes the data)."""
    from rmis.data.release import RELEASE_SOURCES

    console.print(
        "rmis reads the official preprocessed RMIS release: one folder per dataset under the "
        "data root, named as in `rmis list datasets`.\n",
        highlight=False,
    )
    for name, text in RELEASE_SOURCES.items():
        console.print(f"[bold]{name}[/]\n{text}\n", highlight=False)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="rmis")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
