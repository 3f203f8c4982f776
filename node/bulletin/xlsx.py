"""Sections as an Excel workbook (XlsxWriter): one sheet per section, native Excel charts beside their tables.

Figures are written as numbers (rates as fractions formatted as percentages), so a cell holds what ``--json`` holds.
A listing (``plain``) is one bare table per sheet: header on the first row, filters on, nothing above it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import IO, Any

import xlsxwriter

from node.bulletin.tables import Chart, Section, TableSpec

__all__ = ["sheet_name", "text_width", "write_xlsx"]

_FORBIDDEN = re.compile(r"[\[\]:*?/\\]")
_MAX_SHEET = 31
_CHART_ROWS = 18
_NUMBER_FORMATS = {"int": "#,##0", "rate": "0.0%", "score": "0.00", "number": "General"}


def text_width(text: str) -> int:
    """Display width of a text: CJK and full-width characters count twice."""
    return sum(2 if ord(char) >= 0x2E80 else 1 for char in text)


def sheet_name(title: str, taken: set[str]) -> str:
    """A valid, unique sheet name: at most 31 characters, none of the ones Excel forbids (_FORBIDDEN)."""
    base = _FORBIDDEN.sub("_", title).strip("'") or "Sheet"
    name, number = base[:_MAX_SHEET], 2
    while name.lower() in taken:
        suffix = f" ({number})"
        name, number = base[: _MAX_SHEET - len(suffix)] + suffix, number + 1
    taken.add(name.lower())
    return name


class _Writer:
    def __init__(self, workbook: Any) -> None:
        self.book = workbook
        self.title = workbook.add_format({"bold": True, "font_size": 14})
        self.subtitle = workbook.add_format({"bold": True, "font_size": 11})
        self.header = workbook.add_format(
            {"bold": True, "bg_color": "#DDE5F0", "border": 1, "text_wrap": True, "valign": "vcenter"}
        )
        self.note = workbook.add_format({"italic": True, "font_color": "#555555"})
        self.cells = {kind: workbook.add_format({"border": 1, "num_format": f}) for kind, f in _NUMBER_FORMATS.items()}
        self.cells["text"] = workbook.add_format({"border": 1})
        self.footer = {
            kind: workbook.add_format({"border": 1, "bold": True, "num_format": f})
            for kind, f in _NUMBER_FORMATS.items()
        }
        self.footer["text"] = workbook.add_format({"border": 1, "bold": True})

    def cell(self, sheet: Any, row: int, col: int, value: Any, kind: str, *, footer: bool = False) -> None:
        fmt = (self.footer if footer else self.cells).get(kind, self.cells["text"])
        if value is None or value == "":
            sheet.write_blank(row, col, None, fmt)
        elif isinstance(value, bool):
            sheet.write_boolean(row, col, value, fmt)
        elif isinstance(value, int | float) and kind != "text":
            sheet.write_number(row, col, value, fmt)
        else:
            sheet.write_string(row, col, str(value), fmt)

    def table(self, sheet: Any, name: str, spec: TableSpec, top: int, widths: list[int], *, plain: bool) -> int:
        """Write ``spec`` from row ``top``; returns the next free row."""
        row = top
        if not plain:
            sheet.write_string(row, 0, spec.title, self.subtitle)
            row += 1
        header_row = row
        for col, column in enumerate(spec.columns):
            sheet.write_string(row, col, column.header, self.header)
            widths[col] = max(widths[col], min(text_width(column.header), 24))
        row += 1
        first = row
        for record in spec.rows:
            for col, column in enumerate(spec.columns):
                value = record.get(column.key)
                self.cell(sheet, row, col, value, column.kind)
                widths[col] = max(widths[col], min(text_width(str(value if value is not None else "")) + 1, 50))
            row += 1
        last = row - 1
        if spec.footer is not None:
            for col, column in enumerate(spec.columns):
                self.cell(sheet, row, col, spec.footer.get(column.key), column.kind, footer=True)
            row += 1
        if plain and spec.columns:
            sheet.autofilter(header_row, 0, max(last, header_row), len(spec.columns) - 1)
            sheet.freeze_panes(header_row + 1, 0)
        if spec.note:
            sheet.write_string(row, 0, spec.note, self.note)
            row += 1
        chart_rows = 0
        if spec.rows:
            for index, chart in enumerate(spec.charts):
                placed = self.chart(name, spec, chart, (header_row, first, last))
                sheet.insert_chart(top + index * _CHART_ROWS, len(spec.columns) + 1, placed)
                chart_rows = (index + 1) * _CHART_ROWS
        return max(row, top + chart_rows) + 1

    def chart(self, name: str, spec: TableSpec, chart: Chart, rows: tuple[int, int, int]) -> Any:
        header_row, first, last = rows
        placed = self.book.add_chart({"type": chart.kind})
        keys = [column.key for column in spec.columns]
        category = keys.index(chart.category)
        percent = False
        for key in chart.series:
            col = keys.index(key)
            percent = percent or spec.columns[col].kind == "rate"
            placed.add_series(
                {
                    "name": [name, header_row, col],
                    "categories": [name, first, category, last, category],
                    "values": [name, first, col, last, col],
                }
            )
        placed.set_title({"name": chart.title})
        value_axis = {"num_format": "0%" if percent else "General", "major_gridlines": {"visible": True}}
        if chart.kind == "bar":
            placed.set_x_axis(value_axis)
            placed.set_y_axis({"reverse": True})  # the first row (rank 1) on top
            placed.set_size({"width": 640, "height": max(300, 22 * (last - first + 1) + 90)})
        else:
            placed.set_y_axis(value_axis)
            placed.set_size({"width": 720, "height": 320})
        placed.set_legend({"position": "bottom"} if len(chart.series) > 1 else {"none": True})
        return placed


def write_xlsx(sections: list[Section], target: str | Path | IO[bytes], *, plain: bool = False) -> None:
    """Write ``sections`` as a workbook to a path or a binary stream."""
    options = {"in_memory": True, "strings_to_numbers": False, "strings_to_formulas": False, "strings_to_urls": False}
    book = xlsxwriter.Workbook(target if not isinstance(target, Path) else str(target), options)
    writer = _Writer(book)
    taken: set[str] = set()
    for section in sections:
        name = sheet_name(section.title, taken)
        sheet = book.add_worksheet(name)
        sheet.set_paper(9)  # A4
        sheet.set_landscape()
        sheet.fit_to_pages(1, 0)
        widths = [8] * max((len(table.columns) for table in section.tables), default=1)
        row = 0
        if not plain:
            sheet.write_string(0, 0, section.title, writer.title)
            row = 1
            for line in section.intro:
                sheet.write_string(row, 0, line)
                row += 1
            row += 1 if section.intro else 0
        for table in section.tables:
            row = writer.table(sheet, name, table, row, widths, plain=plain)
        for col, width in enumerate(widths):
            sheet.set_column(col, col, width)
    book.close()
