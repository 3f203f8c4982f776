"""``--format csv|xlsx`` and ``--out FILE`` of every listing command: the rows ``--json`` prints, as a file.

One helper for all of them: ``emit_rows`` writes the records (nested objects flattened as ``a.b``), CSV to stdout
when there is no ``--out``; an xlsx always needs ``--out``. CSV files are UTF-8 with a byte order mark (Excel and WPS
read Chinese right), or GB18030 with ``--encoding gb18030``; CSV on stdout carries no byte order mark.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from node.cli.common import console, print_json
from node.errors import InvalidArgumentError

FormatOption = Annotated[
    str | None,
    typer.Option("--format", help="csv | xlsx: the rows --json prints, as a file (csv to stdout without --out)."),
]
OutOption = Annotated[Path | None, typer.Option("--out", help="File for --format csv|xlsx (format from its suffix).")]
EncodingOption = Annotated[
    str, typer.Option("--encoding", help="CSV encoding: utf-8 (with BOM in a file; default) or gb18030 (Excel/WPS).")
]
WideFlag = Annotated[bool, typer.Option("--wide", help="Every column at full width (the terminal may wrap lines).")]

_SUFFIXES = {".csv": "csv", ".xlsx": "xlsx"}


def tabular_format(fmt: str | None, out: Path | None, *, as_json: bool = False) -> str | None:
    """The file format asked for (None: tables or JSON); InvalidArgumentError for a bad combination."""
    if fmt is None and out is not None:
        fmt = _SUFFIXES.get(out.suffix.lower())
        if fmt is None:
            raise InvalidArgumentError(f"--out {out}: give --format csv|xlsx (or a file ending in .csv or .xlsx)")
    if fmt is None:
        return None
    if fmt not in ("csv", "xlsx"):
        raise InvalidArgumentError(f"--format must be csv or xlsx, not {fmt!r}")
    if as_json:
        raise InvalidArgumentError("--json and --format are alternatives: give one")
    if fmt == "xlsx" and out is None:
        raise InvalidArgumentError("--format xlsx writes a file: give --out FILE.xlsx")
    return fmt


def emit_rows(
    fmt: str | None,
    out: Path | None,
    records: Sequence[Mapping[str, Any]],
    *,
    title: str,
    encoding: str = "utf-8",
    as_json: bool = False,
) -> bool:
    """Write ``records`` as csv or xlsx when ``--format``/``--out`` ask for it; False when they do not."""
    chosen = tabular_format(fmt, out, as_json=as_json)
    if chosen is None:
        return False
    from node.bulletin import Section, csv_bytes, csv_text, records_table, write_xlsx

    sections = [Section("rows", title, (records_table(title, records),))]
    if chosen == "xlsx" and out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_xlsx(sections, out, plain=True)
    else:
        content = csv_bytes(csv_text(sections, plain=True), encoding, bom=out is not None)
        if out is None:
            sys.stdout.buffer.write(content)
            sys.stdout.flush()
            return True
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(content)
    console.print(f"已写入 {out}（{chosen}，{len(records)} 行 rows）", highlight=False)
    return True


def emit_listing(
    records: Sequence[Mapping[str, Any]],
    document: Any,
    *,
    title: str,
    fmt: str | None,
    out: Path | None,
    encoding: str,
    as_json: bool,
) -> bool:
    """A listing's rows as a file (``--format``/``--out``) or its whole JSON ``document`` (``--json``).

    False when neither is asked for: the command prints its table. The two together are an error (emit_rows).
    """
    if emit_rows(fmt, out, records, title=title, encoding=encoding, as_json=as_json):
        return True
    if as_json:
        print_json(document)
    return as_json


@dataclass(frozen=True, slots=True)
class TableOutput:
    """A listing's output options, handed on to the helpers that print it: file format, file, encoding, --wide."""

    fmt: str | None = None
    out: Path | None = None
    encoding: str = "utf-8"
    wide: bool = False

    def emit(self, records: Sequence[Mapping[str, Any]], *, title: str, as_json: bool = False) -> bool:
        """``emit_rows`` with these options."""
        return emit_rows(self.fmt, self.out, records, title=title, encoding=self.encoding, as_json=as_json)
