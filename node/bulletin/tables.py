"""Tables, the one shape every writer takes: titled columns of a kind (text, count, rate, score), rows, charts.

``bulletin_sections`` lays a Bulletin out as sections (one sheet, CSV block or printed page each) in Simplified
Chinese; ``records_table`` turns the records a listing command prints with ``--json`` into one table, columns named
as the JSON keys (nested objects flattened as ``a.b``, lists as JSON text).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Chart", "Column", "Section", "TableSpec", "flatten_record", "records_table"]

KINDS = ("text", "int", "rate", "score", "number")


@dataclass(frozen=True, slots=True)
class Column:
    """A column: the row key it shows, its header, and how its values are written (KINDS)."""

    key: str
    header: str
    kind: str = "text"


@dataclass(frozen=True, slots=True)
class Chart:
    """A chart of a table: one bar per row (``category`` names it), one series per value column."""

    title: str
    category: str
    series: tuple[str, ...]
    kind: str = "column"
    """column (vertical bars) or bar (horizontal bars, e.g. a ranking)."""


@dataclass(frozen=True, slots=True)
class TableSpec:
    """A titled table; ``footer`` is a total row (not charted); ``note`` says what was left out and why."""

    title: str
    columns: tuple[Column, ...]
    rows: tuple[Mapping[str, Any], ...]
    charts: tuple[Chart, ...] = ()
    footer: Mapping[str, Any] | None = None
    note: str = ""

    def column(self, key: str) -> Column:
        """The column showing ``key``."""
        return next(column for column in self.columns if column.key == key)


@dataclass(frozen=True, slots=True)
class Section:
    """One part of a report file: a sheet of the xlsx, a block of the CSV, a page of the HTML."""

    key: str
    title: str
    tables: tuple[TableSpec, ...]
    intro: tuple[str, ...] = field(default=())


def flatten_record(record: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A JSON record as one row: nested objects become ``a.b`` keys, lists JSON text."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_record(value, f"{name}."))
        elif isinstance(value, list | tuple):
            flat[name] = json.dumps(value, ensure_ascii=False, default=str)
        else:
            flat[name] = value
    return flat


def _kind_of(values: Iterable[Any]) -> str:
    kinds = {type(value) for value in values if value is not None}
    if kinds and kinds <= {int}:
        return "int"
    if kinds and kinds <= {int, float}:
        return "number"
    return "text"


def records_table(title: str, records: Sequence[Mapping[str, Any]]) -> TableSpec:
    """One table of the records a listing prints with ``--json``; columns in the order keys first appear."""
    rows = [flatten_record(record) for record in records]
    keys: dict[str, None] = {}
    for row in rows:
        keys.update(dict.fromkeys(row))
    columns = tuple(Column(key, key, _kind_of(row.get(key) for row in rows)) for key in keys)
    return TableSpec(title, columns, tuple(rows))
