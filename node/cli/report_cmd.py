"""``supnet report``: the periodic 电子监察通报 of a node as an xlsx workbook, a CSV file or a print-ready HTML page.

``--level children`` (default) reads the node's own database: its own data and each child's subtree from the
children's signed reports, as ``supnet query NODE summary --by child`` answers. ``--level subtree`` lists every node
below by its own data, asking each one through the node's server with signed, verified drill-down queries.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from node.cli.common import DataDir, JsonFlag, console, handle_errors, open_working_node, print_json
from node.errors import InvalidArgumentError

_SUFFIXES = {".xlsx": "xlsx", ".csv": "csv", ".html": "html", ".htm": "html"}


def _format_of(fmt: str | None, out: Path | None) -> str:
    from node.bulletin import FORMATS

    if fmt is None and out is not None:
        fmt = _SUFFIXES.get(out.suffix.lower())
    if fmt is None:
        raise InvalidArgumentError("give --format xlsx|csv|html (or an --out FILE ending in .xlsx, .csv or .html)")
    if fmt not in FORMATS:
        raise InvalidArgumentError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if fmt == "xlsx" and out is None:
        raise InvalidArgumentError("--format xlsx writes a file: give --out FILE.xlsx")
    return fmt


def register(app: typer.Typer) -> None:
    """Add ``supnet report``."""

    @app.command("report")
    @handle_errors
    def report_command(
        *,
        data_dir: DataDir,
        period: Annotated[
            str | None,
            typer.Option("--period", help="2026-11 (月), 2026-Q4 (季度), 2026-H2 (半年) or 2026 (年度)."),
        ] = None,
        day_from: Annotated[str | None, typer.Option("--from", help="Or a range: first day YYYY-MM-DD.")] = None,
        day_to: Annotated[str | None, typer.Option("--to", help="Last day YYYY-MM-DD (included).")] = None,
        level: Annotated[
            str,
            typer.Option(
                "--level",
                help="children: own data and each child's subtree (from this node's database); subtree: every "
                "node below by its own data (signed queries through this node's server, which must be serving).",
            ),
        ] = "children",
        fmt: Annotated[str | None, typer.Option("--format", help="xlsx | csv | html (default: from --out).")] = None,
        out: Annotated[
            Path | None, typer.Option("--out", help="File to write (csv and html go to stdout without it).")
        ] = None,
        encoding: Annotated[
            str, typer.Option("--encoding", help="CSV: utf-8 (with BOM, default) or gb18030 (Excel/WPS).")
        ] = "utf-8",
        address: Annotated[
            str | None, typer.Option("--address", help="--level subtree: host:port of this node's server.")
        ] = None,
        max_listed: Annotated[
            int, typer.Option("--max-listed", min=0, help="List at most this many red cards and overdue cases.")
        ] = 500,
        as_json: JsonFlag = False,
    ) -> None:
        """Write the periodic 电子监察通报: totals and rates, rankings, scores, cards, complaints, directives."""
        from node.bulletin import (
            AskingSource,
            bulletin_file,
            bulletin_title,
            gather_bulletin,
            report_period,
        )
        from node.drilldown import DrilldownClient

        chosen = report_period(period, day_from, day_to)
        file_format = None if as_json else _format_of(fmt, out)
        node = open_working_node(data_dir)
        try:
            if level == "subtree":
                with DrilldownClient.for_node(node, address) as client:
                    bulletin = gather_bulletin(
                        node, chosen, level=level, source=AskingSource(client), max_listed=max_listed
                    )
            else:
                bulletin = gather_bulletin(node, chosen, level=level, max_listed=max_listed)
        finally:
            node.close()
        if file_format is None:
            print_json(bulletin.as_dict())
            return
        content = bulletin_file(bulletin, file_format, encoding=encoding)
        if out is None:
            sys.stdout.buffer.write(content)
            sys.stdout.flush()
            return
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(content)
        console.print(f"已写入 {out}（{file_format}）：{bulletin_title(bulletin)}", highlight=False)
