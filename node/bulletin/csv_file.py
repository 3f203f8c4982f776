"""Sections as CSV text, and CSV bytes in the encoding asked for.

A report is one file of blocks: each section's title, its tables (title, header, rows, total, note), an empty row
between. A listing (``plain``) is its table alone: header and rows, values as ``--json`` has them. Files are UTF-8
with a byte order mark by default (Excel and WPS then read Chinese right), or GB18030 on request.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from typing import Any

from node.bulletin.tables import Section, TableSpec
from node.errors import InvalidArgumentError

__all__ = ["CSV_ENCODINGS", "csv_bytes", "csv_text"]

CSV_ENCODINGS = ("utf-8", "gb18030")


def _plain_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return json.dumps(value)
    return value


def _shown_value(value: Any, kind: str) -> Any:
    if value is None:
        return ""
    if kind == "rate" and isinstance(value, int | float):
        return f"{value * 100:.2f}%"
    if kind == "score" and isinstance(value, int | float):
        return f"{value:.2f}"
    return _plain_value(value)


def _table_rows(table: TableSpec, *, plain: bool) -> list[list[Any]]:
    keys = [(column.key, column.kind) for column in table.columns]
    show = _plain_value if plain else None

    def line(record: Mapping[str, Any]) -> list[Any]:
        if show is not None:
            return [show(record.get(key)) for key, _ in keys]
        return [_shown_value(record.get(key), kind) for key, kind in keys]

    rows = [[column.header for column in table.columns]]
    rows.extend(line(record) for record in table.rows)
    if table.footer is not None:
        rows.append(line(table.footer))
    return rows


def csv_text(sections: list[Section], *, plain: bool = False) -> str:
    """The CSV text of ``sections`` (a listing: ``plain``, its first table only)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    if plain:
        writer.writerows(_table_rows(sections[0].tables[0], plain=True))
        return buffer.getvalue()
    for section in sections:
        writer.writerow([f"【{section.title}】"])
        writer.writerows([line] for line in section.intro)
        for table in section.tables:
            writer.writerow([table.title])
            writer.writerows(_table_rows(table, plain=False))
            if table.note:
                writer.writerow([table.note])
            writer.writerow([])
    return buffer.getvalue()


def csv_bytes(text: str, encoding: str = "utf-8", *, bom: bool = True) -> bytes:
    """CSV text encoded: UTF-8 (with a byte order mark when ``bom``) or GB18030 (which encodes every character)."""
    name = encoding.lower().replace("_", "-")
    if name in ("utf-8", "utf8"):
        return ("\ufeff" if bom else "").encode("utf-8") + text.encode("utf-8")
    if name == "gb18030":
        return text.encode("gb18030")
    raise InvalidArgumentError(f"--encoding must be one of {', '.join(CSV_ENCODINGS)}, not {encoding!r}")
