"""``supnet import``: load CSV / JSON Lines / .xlsx files of every record kind into the node, with a closing summary.

Every run is audited (``records.imported``: the files with their SHA-256, the counts, the OS user who ran it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table

from node.app import open_node
from node.audit_log import operator_actor
from node.cli.common import DataDir, JsonFlag, console, err_console, handle_errors, print_json
from node.config import csv_delimiter
from node.domain import KIND_ORDER
from node.errors import ExitCode
from node.ingest import ENCODINGS, Importer, ImportSummary
from node.supervision import default_listeners

# Below this many bytes an import finishes before a bar would be worth drawing.
PROGRESS_MIN_BYTES = 256 * 1024
SHOWN_ERRORS = 50


def _print_summary(summary: ImportSummary) -> None:
    table = Table(title=f"import summary ({summary.seconds:.1f} s)")
    for column in ("kind", "accepted", "duplicates", "rejected"):
        table.add_column(column, justify="left" if column == "kind" else "right")
    order = {kind: index for index, kind in enumerate(KIND_ORDER)}
    for kind in sorted(summary.by_kind, key=lambda k: order.get(k, len(order))):
        counts = summary.by_kind[kind]
        table.add_row(kind, f"{counts['accepted']:,}", f"{counts['duplicates']:,}", f"{counts['rejected']:,}")
    table.add_row("total", f"{summary.accepted:,}", f"{summary.duplicates:,}", f"{summary.rejected:,}", style="bold")
    console.print(table)
    if summary.rejected_by_reason:
        reasons = Table(title="rejected by reason")
        reasons.add_column("reason")
        reasons.add_column("records", justify="right")
        for reason, count in summary.rejected_by_reason.most_common():
            reasons.add_row(reason, f"{count:,}")
        console.print(reasons)
    for error in summary.errors[:SHOWN_ERRORS]:
        err_console.print(f"[red]rejected[/] {error}", highlight=False, markup=True, soft_wrap=True)
    hidden = len(summary.errors) - SHOWN_ERRORS + summary.errors_omitted
    if hidden > 0:
        err_console.print(f"… and {hidden:,} more rejected records (use --json for the full list)", highlight=False)
    for warning in summary.warnings:
        err_console.print(f"[yellow]warning[/] {warning}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``supnet import``."""

    @app.command("import")
    @handle_errors
    def import_command(
        *,
        data_dir: DataDir,
        files: Annotated[
            list[Path], typer.Argument(help="CSV, JSON Lines or .xlsx files (each sheet with data), any record kinds.")
        ],
        kind: Annotated[
            str | None,
            typer.Option(help="Record kind of every file (else a kind column/field, else the file name)."),
        ] = None,
        encoding: Annotated[
            str, typer.Option(help="auto (UTF-8 if it decodes cleanly, else GB18030), utf-8 or gb18030.")
        ] = "auto",
        delimiter: Annotated[
            str | None,
            typer.Option(
                help="CSV field delimiter: , ; | or tab (default: config ingest.csv_delimiter, else ',').",
                show_default=False,
            ),
        ] = None,
        batch_size: Annotated[
            int | None, typer.Option(help="Records per transaction (default: config store.batch_size).", min=1)
        ] = None,
        max_errors: Annotated[int, typer.Option(help="Most rejected records listed in the summary.", min=0)] = 10_000,
        as_json: JsonFlag = False,
    ) -> None:
        """Import records; exits 1 when any record was rejected (the good ones still land)."""
        if encoding not in ENCODINGS:
            raise typer.BadParameter(f"'{encoding}' is not one of {', '.join(ENCODINGS)}", param_hint="--encoding")
        if delimiter is not None:
            try:
                delimiter = csv_delimiter(delimiter)
            except ValueError as exc:
                raise typer.BadParameter(str(exc), param_hint="--delimiter") from None
        node = open_node(data_dir)
        try:
            importer = Importer(node, listeners=default_listeners(node), batch_size=batch_size, max_errors=max_errors)
            total = sum(path.stat().st_size for path in files if path.is_file())
            show_bar = not as_json and err_console.is_terminal and total >= PROGRESS_MIN_BYTES
            with Progress(
                TextColumn("importing"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=err_console,
                transient=True,
                disable=not show_bar,
            ) as bar:
                task = bar.add_task("import", total=total or None)

                def progress(done: int, all_bytes: int) -> None:
                    bar.update(task, completed=done, total=all_bytes)

                summary = importer.import_files(
                    files,
                    kind=kind,
                    encoding=encoding,
                    delimiter=delimiter,
                    progress=progress,
                    actor=operator_actor(node.config.id),
                )
        finally:
            node.close()
        if as_json:
            print_json(summary.to_dict())
        else:
            _print_summary(summary)
        if summary.rejected:
            raise typer.Exit(ExitCode.RECORDS_REJECTED)
