"""The ``rmis`` command line."""

from __future__ import annotations

import functools
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import typer
import typer.core
from rich.console import Console
from rich.table import Table

import rmis
from rmis.data.specs import PROTOCOLS
from rmis.errors import RMISError

_VERBOSE_FLAGS = ("-v", "--verbose")


class _RootGroup(typer.core.TyperGroup):
    """The root command group; ``-v``/``--verbose`` is also accepted after the subcommand
    (``rmis eval -v ...``): it is moved in front before parsing (never after ``--``)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        end = args.index("--") if "--" in args else len(args)
        head = args[:end]
        if any(a in _VERBOSE_FLAGS for a in head[1:]):
            args = ["-v", *(a for a in head if a not in _VERBOSE_FLAGS), *args[end:]]
        return super().parse_args(ctx, args)

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        """A usage error (bad choice, unknown option, missing argument) is one ``error:`` line
        plus where to look, like every other rmis error; the rest is typer's own handling."""
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except _clickx.UsageError as exc:
            if isinstance(exc, _NO_ARGS_IS_HELP) or exc.ctx is None:
                exc.show()
            else:
                message = _one_line(Exception(exc.format_message())).replace("Value error, ", "")
                err_console.print(
                    f"[bold red]error:[/] {message} "
                    f"(`{exc.ctx.command_path} --help` lists the options)",
                    highlight=False,
                    soft_wrap=True,
                )
            sys.exit(exc.exit_code)
        except _clickx.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except typer.Abort:
            err_console.print("aborted", highlight=False)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


#: click's exception classes as typer uses them (recent typer vendors its own click)
_clickx = sys.modules[typer.BadParameter.__module__]
_NO_ARGS_IS_HELP = getattr(_clickx, "NoArgsIsHelpError", ())


def _flag_aware_display_type(self: Any, ctx: Any) -> str | None:
    # typer's rich help shows a value type (`<bool>`) even for flags that take no value;
    # its plain help does not. Show flags as flags.
    if getattr(self, "is_flag", False) or getattr(self, "count", False):
        return None
    return _typer_display_type(self, ctx)


_typer_display_type = getattr(typer.core.TyperOption, "display_type_rich", None)
if _typer_display_type is not None:  # the typer versions that have this hook (0.16+)
    typer.core.TyperOption.display_type_rich = _flag_aware_display_type  # type: ignore[method-assign]

app = typer.Typer(
    name="rmis",
    cls=_RootGroup,
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


def _one_line(exc: BaseException) -> str:
    """An error's message on one line. An error raised in a DataLoader worker comes back
    wrapped in torch's "Caught ... in DataLoader worker process N" text with the worker's
    traceback: keep only the original message (the traceback's last line)."""
    text = str(exc)
    if "Original Traceback" in text:
        last = text.rstrip().splitlines()[-1]
        name, sep, message = last.partition(": ")
        text = message if sep and name.split(".")[-1].endswith(("Error", "Exception")) else last
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _user_errors(fn: F) -> F:
    """Turn :class:`RMISError` (and file-system errors such as a folder that cannot be written)
    into a one-line ``error: ...`` message and exit status 2, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from rmis.distributed import JobError, current

        agreed = False
        try:
            return fn(*args, **kwargs)
        except RMISError as exc:
            message, agreed = _one_line(exc), isinstance(exc, JobError)
        except OSError as exc:  # permissions, disk full, a path that is a folder ...
            logging.getLogger("rmis").info("details", exc_info=True)
            where = f": {exc.filename!s}" if exc.filename else ""
            message = f"{exc.strerror or _one_line(exc)}{where}"
        job = current()
        if job is not None and not job.is_main:  # under torchrun, rank 0 speaks for the job
            if agreed:  # rank 0 prints this one
                raise typer.Exit(2) from None
            message = f"rank {job.rank}: {message}"
        err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _torchrun_job(fn: F) -> F:
    """Run a command inside the ``torchrun`` job of the environment, if any
    (:func:`rmis.distributed.setup`; the command reads it with ``rmis.distributed.current()``), and
    leave the job when the command ends, however it ends."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from rmis import distributed

        distributed.setup()
        try:
            return fn(*args, **kwargs)
        finally:
            distributed.teardown()

    return wrapper  # type: ignore[return-value]


def _table(title: str) -> Table:
    """A table that stays readable at 80 columns or piped: light rules, no outer edge; add
    name columns with ``no_wrap=True`` and long text with ``overflow="fold"`` (wrapped, never
    cut to an ellipsis)."""
    from rich import box

    return Table(
        title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0)
    )


def _version(value: bool) -> None:
    if value:
        console.print(f"rmis {rmis.__version__} (protocol {rmis.PROTOCOL_VERSION})")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show version.")
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", "-v", help="Log details (also accepted after the command: `rmis eval -v`)."
        ),
    ] = False,
) -> None:
    _setup_logging(verbose)


class _OncePerRun(logging.Filter):
    """Drop a message already shown in this invocation (a file read twice warns once)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[int, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.levelno, record.getMessage())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


class _LogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text}"


def _setup_logging(verbose: bool) -> None:
    """rmis's log (``warning: ...`` lines; details with ``-v``) on the current stderr.

    A handler of the ``rmis`` logger, replaced on every call (so that it writes to the
    stderr of the current invocation); records still propagate to any root handlers."""
    logger = logging.getLogger("rmis")
    for handler in [h for h in logger.handlers if getattr(h, "_rmis_cli", False)]:
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._rmis_cli = True  # type: ignore[attr-defined]
    handler.setFormatter(_LogFormatter("%(message)s"))
    handler.addFilter(_OncePerRun())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if verbose else logging.WARNING)


@app.command()
@_user_errors
def score(
    meta: Annotated[Path, typer.Option("--meta", help="Metadata CSV, one row per file.")],
    embeddings: Annotated[
        Path,
        typer.Option(
            "--embeddings",
            help=".npz: ids + emb (one float32 row per id), or one 1-D vector per file id.",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Result JSON to write.")],
    dataset: Annotated[
        str | None,
        typer.Option("--dataset", help="RMIS dataset name: protocol, test size, classes from it."),
    ] = None,
    protocol: Annotated[
        Protocol | None,
        typer.Option("--protocol", help="The protocol (instead of --dataset)."),
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
    device: Annotated[
        str, typer.Option("--device", help="Torch device for the k-NN: cpu, cuda, cuda:1, mps.")
    ] = "cpu",
) -> None:
    """Score precomputed embeddings with the RMIS protocol ("bring your own embeddings").

    FD META.csv columns: file,label,group (fd) or file,label,split (fd-official-split). AD
    META.csv columns: file,subset,split,machine,section,domain,label. EMB.npz: members `ids`
    (file ids) and `emb` (one row per id), or one 1-D float array per file id. Nothing is
    written if anything is wrong. `-v` logs where the time goes.
    """
    t_import = time.perf_counter()
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
    from rmis.encoders import check_device

    check_device(device)
    log = logging.getLogger("rmis.cli")
    log.info("score: modules imported in %.2f s", time.perf_counter() - t_import)

    started = time.perf_counter()
    table = check_meta(read_meta(meta), protocol, where=str(meta))
    t_read = time.perf_counter()
    log.info("score: metadata read in %.2f s (%d rows)", t_read - started, len(table))
    emb = read_embeddings(embeddings)
    log.info(
        "score: embeddings read in %.2f s (%d, %s layout)",
        time.perf_counter() - t_read,
        len(emb),
        "matrix" if hasattr(emb, "matrix") else "one member per id",
    )
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
    t_write = time.perf_counter()
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
    log.info("score: result written in %.2f s (with file hashes)", time.perf_counter() - t_write)
    _print_score(result, out, dcase_export)


def _print_score(result: dict[str, Any], out: Path, export: Path | None) -> None:
    name = result["dataset"] or result["protocol"]
    line = f"[bold]{name}[/] ({result['protocol']}): score [bold green]{result['score']:.2f}[/]"
    n_runs = len(result.get("runs") or [])
    if result.get("std") is not None:
        line += f" ± {result['std']:.2f} over {n_runs} runs"
    elif n_runs == 1:
        line += " (1 run, no std)"
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
    typer.Option("--dataset-dir", metavar="NAME=PATH", help="A dataset's folder (repeatable)."),
]
DcaseGt = Annotated[
    Path | None,
    typer.Option("--dcase-gt", help="Folder of eval_data_list_20XX.csv (DCASE eval labels)."),
]


DEVICE_HELP = "Torch device: cpu, cuda, cuda:1, mps (checked before any work)."

OptionList = Annotated[
    list[str] | None,
    typer.Option("-o", "--option", metavar="KEY=VALUE", help="Adapter option (repeatable)."),
]
# Choices shown in --help; the same values as rmis.evaluate.SUITES / COMPAT_MODES,
# rmis.extract.PRECISIONS and rmis.data.specs.PROTOCOLS (a test keeps them equal)
Suite = Literal["synth", "rmis"]
BoardSuite = Literal["auto", "rmis", "synth", "manifest"]
BoardFormat = Literal["table", "markdown", "csv", "html"]
Precision = Literal["fp32", "fp16", "bf16"]
Compat = Literal["none", "rmis-official"]
Resampler = Literal["sinc", "soxr"]
RESAMPLER_HELP = (
    "How files are brought to the model's rate: sinc (the benchmark's, an exact port of the "
    "official harness's torchaudio resampling) or soxr (faster; moves embeddings by 2-5 %)."
)
Protocol = Literal[PROTOCOLS]  # type: ignore[valid-type]


def _names(text: str | None) -> list[str] | None:
    """A comma-separated ``--datasets`` value as names, blanks dropped and each name once
    (first occurrence kept, order kept); None when empty."""
    if not text:
        return None
    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    return names or None


HFDataset = Annotated[
    str | None,
    typer.Option(
        "--hf-dataset",
        help="A Hugging Face dataset: hub id user/name[@revision] or a folder of Parquet files "
        '(needs pip install "rmis[hf]").',
    ),
]
HFConfig = Annotated[str | None, typer.Option("--hf-config", help="Its configuration.")]
HFSplit = Annotated[
    str | None, typer.Option("--hf-split", help="One split of it (default: all, concatenated).")
]
AudioColumn = Annotated[str, typer.Option("--audio-column", help="Its audio column.")]
LabelColumn = Annotated[str, typer.Option("--label-column", help="Its class column.")]
GroupColumn = Annotated[
    str | None,
    typer.Option("--group-column", help="Its sealing-group column (default: group)."),
]
SplitColumn = Annotated[
    str | None, typer.Option("--split-column", help="Its train/test column (a given split).")
]
NoSealing = Annotated[
    bool,
    typer.Option(
        "--no-sealing",
        help="Without a group column: every row its own group (recorded in the result).",
    ),
]


def _hf_columns(
    hf_dataset: str | None,
    config: str | None,
    split: str | None,
    audio_column: str,
    label_column: str,
    group_column: str | None,
    split_column: str | None,
    no_sealing: bool,
) -> dict[str, Any]:
    """The keyword arguments of :func:`rmis.evaluate.hf_dataset`; the options need
    --hf-dataset."""
    given = {
        "--hf-config": config is not None,
        "--hf-split": split is not None,
        "--audio-column": audio_column != "audio",
        "--label-column": label_column != "label",
        "--group-column": group_column is not None,
        "--split-column": split_column is not None,
        "--no-sealing": no_sealing,
    }
    if hf_dataset is None and any(given.values()):
        first = next(k for k, v in given.items() if v)
        raise RMISError(f"{first} describes a Hugging Face dataset; use it with --hf-dataset")
    return {
        "config": config,
        "split": split,
        "audio_column": audio_column,
        "label_column": label_column,
        "group_column": group_column,
        "split_column": split_column,
        "no_sealing": no_sealing,
    }


@app.command("eval")
@_user_errors
@_torchrun_job
def eval_(
    model: Annotated[str, typer.Argument(help="Encoder name (see `rmis list models`).")],
    suite: Annotated[Suite, typer.Option("--suite", help="Built-in suite.")] = "rmis",
    datasets: Annotated[
        str | None, typer.Option("--datasets", help="Comma-separated subset of the suite.")
    ] = None,
    manifest: Annotated[
        Path | None,
        typer.Option("--manifest", help="Your own dataset: CSV path,label,group[,split]."),
    ] = None,
    hf_dataset: HFDataset = None,
    hf_config: HFConfig = None,
    hf_split: HFSplit = None,
    audio_column: AudioColumn = "audio",
    label_column: LabelColumn = "label",
    group_column: GroupColumn = None,
    split_column: SplitColumn = None,
    no_sealing: NoSealing = False,
    test_size: Annotated[
        float, typer.Option("--test-size", help="Test fraction of groups (manifest).")
    ] = 0.5,
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            help="Dataset name of the manifest's results (default: the CSV's stem plus a short "
            "hash of its absolute path, e.g. data-3f9a1c).",
        ),
    ] = None,
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
    device: Annotated[str, typer.Option("--device", help=DEVICE_HELP)] = "cpu",
    precision: Annotated[
        Precision, typer.Option("--precision", help="fp16 and bf16 need a GPU.")
    ] = "fp32",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Windows per batch.")] = 32,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=0,
            help="Decoding worker processes (default: one per spare core, at most 4; 0: none).",
        ),
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
    recompute: Annotated[
        bool,
        typer.Option("--recompute", help="Ignore cached embeddings of this run and replace them."),
    ] = False,
    compat: Annotated[
        Compat,
        typer.Option(
            "--compat",
            help="rmis-official: reproduce the official harness's input quirks and its "
            "2-decimal rounding of runs, machines and subsets.",
        ),
    ] = "none",
    dataset_dir: DatasetDirs = None,
    resampler: Annotated[Resampler, typer.Option("--resampler", help=RESAMPLER_HELP)] = "sinc",
    hash_files: Annotated[
        bool,
        typer.Option(
            "--hash-files",
            help="Match cached embeddings to files by a SHA-256 of their content (reused for "
            "moved or copied files; reads every file each run) instead of path, size and "
            "modification time.",
        ),
    ] = False,
) -> None:
    """Evaluate an encoder: extract (or reuse cached) embeddings, score every dataset, write
    one result JSON per dataset (`RESULTS/<model>/<config id>/<dataset>.json`, with a
    `run.json` describing the configuration) and print the table.

    `--suite synth` runs offline on the built-in synthetic suite (generated on first use);
    `--suite rmis --data-root DIR` runs the RMIS datasets found in DIR; `--manifest DATA.csv`
    evaluates your own recordings. Embeddings are cached per file and reused by every dataset
    that holds the file. Under `torchrun --nproc-per-node N -m rmis eval ...` the files are
    shared among N processes (one per GPU with --device cuda); rank 0 scores and reports.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from rmis.distributed import current, rank_device
    from rmis.encoders import load_encoder, parse_options
    from rmis.evaluate import (
        compat_settings,
        default_cache_dir,
        evaluate_dataset,
        manifest_dataset,
        parse_folders,
        preflight_dataset,
        resolve_suite,
        run_config,
    )
    from rmis.extract import check_precision
    from rmis.progress import FilesPerSecond

    dist = current()  # the torchrun job (None: one plain process)
    quiet = dist is not None and not dist.is_main
    if quiet:  # rank 0 prints for the job
        console.quiet = err_console.quiet = True
        logging.getLogger("rmis").setLevel(logging.ERROR)
    device = rank_device(device)
    options = parse_options(option)
    compat_settings(model, "", compat)  # validates the mode before any work
    check_precision(precision, device)
    cache = cache_dir or default_cache_dir()
    names = _names(datasets)
    hf_columns = _hf_columns(
        hf_dataset,
        hf_config,
        hf_split,
        audio_column,
        label_column,
        group_column,
        split_column,
        no_sealing,
    )
    if manifest is not None and hf_dataset is not None:
        raise RMISError("give --manifest or --hf-dataset, not both")
    if manifest is None and hf_dataset is None and name is not None:
        raise RMISError(
            "--name names a --manifest or --hf-dataset dataset; use it with one of them"
        )
    encoders: dict[str, Any] = {}

    def encoder_for(opts: dict[str, Any]) -> Any:
        key = repr(sorted(opts.items()))
        if key not in encoders:
            encoders[key] = load_encoder(model, checkpoint=checkpoint, device=device, **opts)
        return encoders[key]

    def prepare() -> tuple[list[Any], dict[str, str], str]:
        # datasets are listed (the synthetic suite generated on first use) and checked before
        # any file is decoded: a spinner from the first second, a line per generated dataset
        missing: dict[str, str] = {}
        kind = suite
        with err_console.status("reading the datasets") as status:

            def report(text: str) -> None:
                err_console.print(text, highlight=False)
                status.update(text)

            if manifest is not None:
                todo = [manifest_dataset(manifest, test_size, name)]
                kind = "manifest"
            elif hf_dataset is not None:
                from rmis.evaluate import hf_dataset as load_hf_dataset

                report(f"reading Hugging Face dataset {hf_dataset}")
                todo = [load_hf_dataset(hf_dataset, test_size, name, **hf_columns)]
                kind = "manifest"
            else:
                todo, missing = resolve_suite(
                    suite, names, cache, data_root, dcase_gt, parse_folders(dataset_dir), report
                )
            status.update("checking the datasets against the protocol")
            for ds in todo:  # every dataset's scoring checks, before anything is embedded
                preflight_dataset(ds, runs)
        encoder_for(options)  # fail early on a bad model, checkpoint or option
        return todo, missing, kind

    if dist is None:
        todo, missing, suite = prepare()
    else:  # rank 0 first (it generates the synthetic suite on first use), then the others
        for turn in (True, False):
            error = None
            if dist.is_main == turn:
                try:
                    todo, missing, suite = prepare()
                except RMISError as exc:
                    error = _one_line(exc)
            dist.agree(error)
    config = run_config(
        encoder_for(options), options, compat, precision, runs, checkpoint, resampler
    )
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
    with Progress(*columns, console=err_console, transient=True, disable=quiet) as progress:
        for ds in todo:
            progress.console.print(f"[bold]{ds.name}[/]: {len(ds.table)} files", highlight=False)
            extra, input_rate = compat_settings(model, ds.name, compat)
            ds_options = {**options, **extra}
            result = evaluate_dataset(
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
                progress=None if quiet else progress,
                device=device,
                input_rate=input_rate,
                compat=compat,
                config=config,
                recompute=recompute,
                resampler=resampler,
                file_identity="content" if hash_files else "stat",
                dist=dist,
            )
            if result is not None:
                results.append(result)
    if not quiet:
        _print_eval(model, suite, results, missing, results_dir)


def _fmt_std(result: dict[str, Any]) -> str:
    """The std column: 2 decimals; "-" for a single run (undefined); empty for AD."""
    if result.get("std") is not None:
        return f"{result['std']:.2f}"
    return "-" if result.get("runs") else ""


def _print_eval(
    model: str,
    suite: str,
    results: list[dict[str, Any]],
    missing: dict[str, str],
    results_dir: Path,
) -> None:
    from rmis.evaluate import suite_overall

    table = _table(f"{model} on {suite}")
    for col in ("dataset", "task", "protocol", "score", "± std", "files", "embedded", "s"):
        table.add_column(
            col,
            justify="right" if col not in ("dataset", "task", "protocol") else "left",
            no_wrap=col in ("task", "score", "± std", "files", "s"),
            overflow="fold",
            ratio=2 if col == "dataset" else 1 if col in ("protocol", "embedded") else None,
        )
    for r in results:
        prov = r["provenance"]
        table.add_row(
            r["dataset"],
            r["task"].upper(),
            r["protocol"],
            f"{r['score']:.2f}",
            _fmt_std(r),
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
    if results:
        first = results[0]
        folder = results_dir / first["model"]["name"] / first["provenance"]["config_id"]
        console.print(
            f"results written under {folder} (configuration "
            f"{first['provenance']['config_id']}, described in {folder / 'run.json'})",
            highlight=False,
            soft_wrap=True,
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
    checkpoint: Annotated[
        str | None, typer.Option("--checkpoint", help="Weights: file, hub id or URL.")
    ] = None,
    option: OptionList = None,
    device: Annotated[str, typer.Option("--device", help=DEVICE_HELP)] = "cpu",
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Windows per forward pass.")
    ] = 32,
    resampler: Annotated[Resampler, typer.Option("--resampler", help=RESAMPLER_HELP)] = "sinc",
) -> None:
    """Embed arbitrary files with the benchmark's windowing (one vector per file)."""
    from rmis.encoders import load_encoder, parse_options
    from rmis.extract import FileItem, extract
    from rmis.io import atomic_write_bytes

    absent = [str(f) for f in files if not f.is_file()]
    if absent:
        raise RMISError(
            f"audio file {absent[0]!r} not found"
            + (f" (and {len(absent) - 1} more files)" if len(absent) > 1 else "")
        )
    seen: set[str] = set()
    for f in files:
        if str(f) in seen:
            raise RMISError(f"file {str(f)!r} is given more than once")
        seen.add(str(f))
    encoder = load_encoder(model, checkpoint=checkpoint, device=device, **parse_options(option))
    items = [FileItem(str(f), str(f)) for f in files]
    res = extract(
        items,
        encoder,
        window_seconds=window_seconds,
        batch_size=batch_size,
        num_workers=0,
        resampler=resampler,
    )
    import io

    import numpy as np

    buf = io.BytesIO()
    np.savez(buf, **res.embeddings)
    atomic_write_bytes(out, buf.getvalue())
    by_dim: dict[int, list[str]] = {}
    for fid, vec in res.embeddings.items():
        by_dim.setdefault(int(vec.shape[0]), []).append(fid)
    if len(by_dim) == 1:
        console.print(
            f"{len(res.embeddings)} embeddings of dimension {next(iter(by_dim))} written to {out}",
            highlight=False,
        )
    else:  # a native-rate encoder's size can depend on the rate
        console.print(
            f"{len(res.embeddings)} embeddings written to {out}, of different dimensions "
            f"(files at different sample rates?): "
            + "; ".join(
                f"dimension {d}: {', '.join(ids[:5])}"
                + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
                for d, ids in by_dim.items()
            ),
            highlight=False,
            soft_wrap=True,
        )


@app.command("check-model")
@_user_errors
def check_model(
    model: Annotated[str, typer.Argument(help="Encoder name.")],
    checkpoint: Annotated[
        str | None, typer.Option("--checkpoint", help="Weights: file, hub id or URL.")
    ] = None,
    option: OptionList = None,
    device: Annotated[str, typer.Option("--device", help=DEVICE_HELP)] = "cpu",
    window_seconds: Annotated[
        float, typer.Option("--window-seconds", min=0.01, help="Window length to test (s).")
    ] = 1.0,
    seconds: Annotated[
        float | None, typer.Option("--seconds", min=0.01, hidden=True)  # old name
    ] = None,
) -> None:
    """Check an adapter on short random inputs at several rates: shape, dtype, determinism,
    batch-size independence and NaN-freedom. Exits 1 if a check fails."""
    from rmis.checks import check_encoder
    from rmis.encoders import load_encoder, parse_options

    if seconds is not None:
        window_seconds = seconds
    encoder = load_encoder(model, checkpoint=checkpoint, device=device, **parse_options(option))
    rows = check_encoder(encoder, seconds=window_seconds)
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
@_user_errors
def list_models(
    pattern: Annotated[
        str | None,
        typer.Argument(help="Only names matching this shell pattern, e.g. 'ced-*'."),
    ] = None,
) -> None:
    """Registered encoders and their metadata, one block per variant."""
    import textwrap

    from rich.markup import escape

    from rmis.encoders import list_encoders

    infos = list_encoders(pattern)
    if not infos:
        raise RMISError(f"no registered model matches {pattern!r} (see `rmis list models`)")
    width = max(40, min(console.width, 100))
    family = None
    for i in infos:
        if i.family != family:
            family = i.family
            console.print(f"[bold]{escape(family)}[/]", highlight=False)
        facts = [f"variant {i.variant}"]
        if i.params_millions is not None:
            facts.append(f"{i.params_millions:g} M params")
        facts.append("native rate" if i.sample_rate is None else f"{i.sample_rate} Hz")
        if i.dim is not None:
            facts.append(f"dim {i.dim}")
        console.print(f"  [cyan]{escape(i.name)}[/]  " + escape(", ".join(facts)), highlight=False)
        rows = [
            ("front-end", i.frontend),
            ("pooling", i.pooling or ("" if i.dim is not None else i.embedding)),
            ("licence", i.license),
            ("weights", i.checkpoints[0] if i.checkpoints else "none needed"),
        ]
        for label, value in rows:
            if not value:
                continue
            lines = textwrap.wrap(
                value,
                width=width,
                initial_indent=f"    {label + ':':<11}",
                subsequent_indent=" " * 15,
                break_long_words=True,
                break_on_hyphens=False,
            )
            for line in lines:
                console.print(escape(line), highlight=False, soft_wrap=True)


@list_app.command("datasets")
def list_datasets(
    data_root: Annotated[
        Path | None,
        typer.Option("--data-root", envvar="RMIS_DATA_ROOT", help="Folder of RMIS datasets."),
    ] = None,
) -> None:
    """The 19 RMIS datasets, their protocol settings and whether they are under the data root."""
    from rmis.data.specs import DATASETS

    table = _table("RMIS datasets" + (f" under {data_root}" if data_root else ""))
    for col in (
        "dataset",
        "task",
        "modality",
        "rate\n(Hz)",
        "window\n(s)",
        "split",
        "classes",
        "found",
    ):
        table.add_column(col, no_wrap=col in ("dataset", "modality"), overflow="fold")
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
    suite: Annotated[
        BoardSuite,
        typer.Option(
            "--suite",
            help="auto: one board per suite found in the results folder; manifest: every "
            "non-RMIS, non-synth dataset found.",
        ),
    ] = "auto",
    datasets: Annotated[
        str | None,
        typer.Option(
            "--datasets",
            help="Comma-separated: one board over exactly these datasets (AD/FD/overall are "
            "the means of its own AD/FD datasets).",
        ),
    ] = None,
    fmt: Annotated[
        BoardFormat,
        typer.Option("--format", help="table: plain text with --out; html: a complete page."),
    ] = "table",
    out: Annotated[Path | None, typer.Option("--out", help="Write the board(s) here.")] = None,
    figures_dir: Annotated[
        Path | None, typer.Option("--figures-dir", help="Figures (default RESULTS/figures).")
    ] = None,
) -> None:
    """One row per (model, configuration), paper rows beside measured rows on the rmis board,
    sorted by RMIS; also writes per board the figures score-vs-parameters (paper Fig. 1) and
    the per-dataset rank heatmap (Fig. 5), PNG + SVG, as `FIGURES/<board>_*.{png,svg}`."""
    from rmis.io import atomic_write_text
    from rmis.leaderboard import (
        FORMATS,
        find_boards,
        format_boards,
        plot_rank_heatmap,
        plot_score_vs_params,
        read_results,
        summary_rows,
    )
    from rmis.leaderboard import (
        leaderboard as build,
    )

    if fmt not in FORMATS:
        raise RMISError(f"unknown --format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if not results_dir.is_dir():
        raise RMISError(
            f"no results folder {str(results_dir)!r}: run `rmis eval MODEL ...` first, or point "
            "--results-dir at the folder it wrote"
        )
    names = _names(datasets)
    boards = []
    results = read_results(results_dir)
    for b in find_boards(results_dir, suite, names):
        df = build(results_dir, b, results)
        if df.empty:
            raise RMISError(
                f"no results for the {b.name} board under {results_dir}; run `rmis eval` first"
            )
        boards.append((b, df))
    if fmt == "table":
        for b, df in boards:
            header, rows = summary_rows(df, b)
            table = _table(f"{b.name} leaderboard" if b.name != "custom" else "leaderboard")
            table.caption = "params in millions; sets: datasets scored / on the board"
            for i, col in enumerate(header):
                table.add_column(
                    col, no_wrap=i != 0, overflow="fold", justify="left" if i < 2 else "right"
                )
            for cells in rows:
                if cells[1] == "measured":
                    cells[1] = "[bold cyan]measured[/]"
                table.add_row(*cells)
            console.print(table)
            if b.note or b.name == "custom":
                console.print(
                    ("datasets: " + ", ".join(b.datasets) + ". " if b.name == "custom" else "")
                    + b.note,
                    highlight=False,
                    soft_wrap=True,
                )
    text = format_boards(boards, fmt)
    if out is None and fmt != "table":
        typer.echo(text, nl=False)
    if out is not None:
        atomic_write_text(out, text)
        console.print(f"leaderboard written to {out}", highlight=False)
    figs = figures_dir or results_dir / "figures"
    written = []
    for b, df in boards:
        title = f"{b.name} board" + (": " + ", ".join(b.datasets) if b.name == "custom" else "")
        written += plot_score_vs_params(df, figs / f"{b.name}_score_vs_params", title)
        written += plot_rank_heatmap(df, b.datasets, figs / f"{b.name}_rank_heatmap")
    err_console.print(
        "figures: " + ", ".join(str(p) for p in written), highlight=False, soft_wrap=True
    )


def _suite_for_curves(
    suite: str,
    datasets: str | None,
    cache: Path,
    data_root: Path | None,
    dataset_dir: list[str] | None,
    dcase_gt: Path | None,
) -> list[Any]:
    from rmis.evaluate import parse_folders, resolve_suite

    names = _names(datasets)
    return resolve_suite(suite, names, cache, data_root, dcase_gt, parse_folders(dataset_dir))[0]


CurveSuite = Annotated[Suite, typer.Option("--suite", help="The suite `rmis eval` ran.")]
CurveDatasets = Annotated[
    str | None, typer.Option("--datasets", help="Comma-separated subset of the suite.")
]
CurveResults = Annotated[
    Path, typer.Option("--results-dir", help="Where `rmis eval` wrote results.")
]
CurveCache = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir",
        envvar="RMIS_CACHE_DIR",
        help="The cache `rmis eval` used (its embeddings are read, never recomputed).",
    ),
]
CurveRuns = Annotated[int, typer.Option("--runs", min=1, help="Sealed-split runs per test size.")]
BandRuns = Annotated[
    int, typer.Option("--runs", min=1, help="Sealed-split runs per number of sub-bands.")
]


@app.command("split-curve")
@_user_errors
def split_curve(
    models: Annotated[
        list[str],
        typer.Argument(
            help="One or more evaluated models; MODEL@CONFIGID picks one configuration of a "
            "model evaluated in several."
        ),
    ],
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
    model: Annotated[
        str,
        typer.Argument(
            help="An evaluated FISHER-style model (MODEL@CONFIGID if it has several "
            "configurations)."
        ),
    ],
    suite: CurveSuite = "rmis",
    datasets: CurveDatasets = None,
    results_dir: CurveResults = Path("results"),
    cache_dir: CurveCache = None,
    runs: BandRuns = 10,
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
    if folder is None:
        raise RMISError(
            f"no data root: give --data-root DIR (the folder holding {dataset}/) or "
            f"--dataset-dir {dataset}=PATH"
        )
    if not folder.is_dir():
        raise RMISError(
            f"dataset {dataset!r} not found: no folder {str(folder)!r} (check --data-root, or "
            f"give --dataset-dir {dataset}=PATH)"
        )
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
    hf_dataset: HFDataset = None,
    hf_config: HFConfig = None,
    hf_split: HFSplit = None,
    audio_column: AudioColumn = "audio",
    label_column: LabelColumn = "label",
    group_column: GroupColumn = None,
    split_column: SplitColumn = None,
    no_sealing: NoSealing = False,
    test_size: Annotated[
        float, typer.Option("--test-size", help="Test fraction of groups (--hf-dataset).")
    ] = 0.5,
) -> None:
    """Per dataset: found, files, hours, sample rates, classes and groups, unmatched and
    unreadable files, and whether a sealed split is possible. Exits 1 on problems.
    `--hf-dataset ID_OR_DIR` checks a Hugging Face dataset as `rmis eval` reads it."""
    import json

    from rmis.datacheck import check_root
    from rmis.evaluate import parse_folders

    names = _names(datasets)
    hf_columns = _hf_columns(
        hf_dataset,
        hf_config,
        hf_split,
        audio_column,
        label_column,
        group_column,
        split_column,
        no_sealing,
    )
    if hf_dataset is not None:
        from rmis.data.hf import check_hf

        checks = [check_hf(hf_dataset, test_size, **hf_columns)]
    else:
        checks = check_root(data_root, parse_folders(dataset_dir), dcase_gt, names)
    if as_json:
        typer.echo(json.dumps([c.to_json() for c in checks], indent=2))
    else:
        where = hf_dataset or data_root
        table = _table("rmis data check" + (f" of {where}" if where else ""))
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
            table.add_column(
                col,
                no_wrap=col in ("dataset", "found", "sealable"),
                overflow="fold",
                ratio=2 if col in ("classes/groups", "problems") else None,
            )
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
