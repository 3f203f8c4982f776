"""``supnet generate``: write a node's synthetic approval data as files that ``supnet import`` accepts."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from node.cli.common import JsonFlag, console, handle_errors, print_json
from node.errors import ValidationError
from node.synthetic import DEFAULT_FROM, DEFAULT_TO, FileFormat, GenerateSummary, generate, node_profile


def parse_day(text: str, option: str) -> date:
    """A YYYY-MM-DD option value, or a ValidationError naming the option."""
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        message = f"{option} {text!r}: expected a date YYYY-MM-DD"
        raise ValidationError(message, field=option, reason="bad_date") from None


def print_generate_summary(summary: GenerateSummary) -> None:
    """The files written and their row counts, as a table."""
    profile = node_profile(summary.node_id)
    table = Table(
        title=f"{summary.node_id} {profile.place} ({profile.level}): {summary.cases:,} cases",
        caption=f"{summary.date_from} … {summary.date_to}, seed {summary.seed}, in {summary.out_dir}",
    )
    table.add_column("file")
    table.add_column("rows", justify="right")
    for name, rows in summary.files.items():
        table.add_row(name, f"{rows:,}")
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add ``supnet generate``."""

    @app.command("generate")
    @handle_errors
    def generate_command(
        *,
        node_id: Annotated[str, typer.Option("--id", help="Node id (dotted path such as gd.gz.py) the data is for.")],
        cases: Annotated[int, typer.Option("--cases", help="How many cases (办件) to generate.")] = 10_000,
        seed: Annotated[int, typer.Option("--seed", help="Random seed: same arguments give identical files.")] = 1,
        out: Annotated[Path, typer.Option("--out", help="Directory to write the files into.")] = Path("generated"),
        date_from: Annotated[
            str, typer.Option("--from", help="First acceptance day (YYYY-MM-DD).")
        ] = DEFAULT_FROM.isoformat(),
        date_to: Annotated[
            str, typer.Option("--to", help="Last day of data; cases still open then stay open.")
        ] = DEFAULT_TO.isoformat(),
        file_format: Annotated[
            str, typer.Option("--format", help="csv: one file per kind, Chinese headers; jsonl: one file.")
        ] = "csv",
        holidays: Annotated[
            Path | None, typer.Option("--holidays", help="Operator holiday file for years chinesecalendar lacks.")
        ] = None,
        workers: Annotated[
            int | None, typer.Option("--workers", help="Processes for large runs (default: one per CPU).")
        ] = None,
        as_json: JsonFlag = False,
    ) -> None:
        """Write synthetic items, cases, steps, fees, evaluations and complaints for one node (GB/T 39046 fields)."""
        if file_format not in ("csv", "jsonl"):
            raise ValidationError(f"--format {file_format!r}: expected csv or jsonl", field="format", reason="bad_code")
        chosen: FileFormat = "csv" if file_format == "csv" else "jsonl"
        summary = generate(
            node_id,
            cases,
            seed,
            out,
            date_from=parse_day(date_from, "--from"),
            date_to=parse_day(date_to, "--to"),
            file_format=chosen,
            holidays_file=holidays,
            workers=workers,
        )
        if as_json:
            print_json(summary.to_dict())
            return
        print_generate_summary(summary)
        paths = " ".join(str(path) for path in summary.paths)
        console.print(f"import them with: supnet import --data-dir DIR {paths}", highlight=False, soft_wrap=True)
