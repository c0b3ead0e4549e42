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


@list_app.command("datasets")
def list_datasets() -> None:
    """The 19 RMIS datasets and their protocol settings."""
    from rmis.data.specs import DATASETS

    table = Table(title="RMIS datasets")
    for col in ("dataset", "task", "modality", "rate (Hz)", "window (s)", "split", "classes"):
        table.add_column(col)
    for spec in DATASETS.values():
        split = (
            f"sealed, test {spec.test_size}"
            if spec.sealed
            else "official"
            if spec.task == "fd"
            else f"DCASE {spec.year} rules"
        )
        n_classes = str(len(spec.classes)) if spec.classes else "normal/anomaly"
        table.add_row(
            spec.name,
            spec.task.upper(),
            spec.modality,
            f"{spec.sample_rate}",
            f"{spec.window_seconds:g}",
            split,
            n_classes,
        )
    console.print(table)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="rmis")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
