"""Reading ``.xlsx`` workbooks (openpyxl, read-only, streamed row by row): each sheet with data is one import source.

A sheet is read like a CSV file (node.ingest.readers.FileReader): the first non-empty row is the header (English or
GB/T Chinese names), the kind comes from ``--kind``, a kind column, the sheet's name (``事项受理``, ``acceptances``)
or, for a one-sheet workbook, the file's name. Errors name the sheet and the row as Excel shows them:
``办件.xlsx[事项受理]:7: acceptance C-7: field accepted_at (受理时间): …``.

Cells become the text a CSV export of them would hold, so a workbook and its CSV export import alike: numbers
without a spurious ``.0`` and to Excel's 15 significant digits, date-time cells in the standard's compact form
``YYYYMMDDThhmmss`` (to the second), empty cells as empty fields; formulas give their saved value. Hidden sheets are
left out, with a warning.

A workbook is loaded once for all its sheets (``_SharedWorkbook``): openpyxl parses every sheet of a workbook that
stores no dimensions whenever it loads it, so a load per sheet would read the whole file once per sheet.
"""

from __future__ import annotations

import datetime as dt
import logging
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openpyxl
from openpyxl.utils.exceptions import InvalidFileException

from node.errors import ValidationError
from node.ingest.readers import FileReader, kind_from_alias, kind_from_file_name
from node.ingest.validate import UNKNOWN_KIND, RecordError

__all__ = ["XLSX_SUFFIXES", "SheetReader", "cell_text", "open_workbook"]

log = logging.getLogger(__name__)

XLSX_SUFFIXES = frozenset({".xlsx", ".xlsm"})
# Excel shows and keeps numbers to 15 significant digits; more would show binary noise (0.30000000000000004).
_EXCEL_DIGITS = 15
_EXACT_FLOAT_INTEGERS = 2**53


def cell_text(value: Any) -> str:
    """The text of one cell value as a CSV export of it holds it ('' for an empty cell)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < _EXACT_FLOAT_INTEGERS:
            return str(int(value))
        return f"{value:.{_EXCEL_DIGITS}g}"
    if isinstance(value, dt.datetime):
        # Excel keeps times as fractions of a day: 09:00 may come back as 08:59:59.999999.
        rounded = (value + dt.timedelta(microseconds=500_000)).replace(microsecond=0)
        return rounded.strftime("%Y%m%dT%H%M%S")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dt.time):
        return value.replace(microsecond=0).isoformat()
    return str(value)


def _load(path: Path) -> Any:
    """The workbook, read-only with saved formula values; ValidationError when it is no readable .xlsx."""
    try:
        with warnings.catch_warnings():
            # openpyxl warns about features it does not read (data validation, styles): irrelevant to the values.
            warnings.simplefilter("ignore")
            return openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (zipfile.BadZipFile, InvalidFileException, KeyError, OSError, ValueError) as exc:
        raise ValidationError(
            f"{path}: 不是可读取的 .xlsx 工作簿 (not a readable .xlsx workbook: {type(exc).__name__}: {exc})",
            field="file",
        ) from exc


class _SharedWorkbook:
    """One workbook, loaded once for all its sheets' readers; closed when the last of them has been read through.

    Read again after that (a second pass), it is loaded again.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._book: Any = None
        self.readers_left = 0

    @property
    def book(self) -> Any:
        """The loaded workbook (loading it when closed)."""
        if self._book is None:
            self._book = _load(self.path)
        return self._book

    def finished(self) -> None:
        """One reader has read its sheet to the end."""
        self.readers_left -= 1
        if self.readers_left <= 0:
            self.close()

    def close(self) -> None:
        """Close the workbook's file, if open."""
        if self._book is not None:
            self._book.close()
            self._book = None


@dataclass
class SheetReader(FileReader):
    """One sheet of a workbook, read as a CSV file's rows are (``FileReader`` does the header, kinds and rows)."""

    sheet_count: int = 1
    share: int = 0  # this sheet's part of the file's bytes, for progress
    empty: bool = False
    workbook: _SharedWorkbook | None = None
    _rows_done: int = 0
    _rows_expected: int = 0

    @property
    def source(self) -> str:
        """``file[sheet]``: where errors say a record came from."""
        return f"{self.path}[{self.sheet}]"

    @property
    def size(self) -> int:
        """The sheet's share of the workbook's bytes (progress over a workbook adds up to its size)."""
        return self.share

    @property
    def bytes_read(self) -> int:
        """The share of the sheet's rows read so far, in bytes of the share (openpyxl does not tell bytes)."""
        if not self._rows_expected:
            return 0
        return min(self.share, self.share * self._rows_done // self._rows_expected)

    def prepare(self) -> SheetReader:
        """Find the header and the kind; ``empty`` when the sheet holds no data (then it is not imported)."""
        if self.kind is not None:
            resolved = kind_from_alias(self.kind)
            if resolved is None:
                raise ValidationError(f"unknown record kind '{self.kind}' (--kind)", field="kind", reason=UNKNOWN_KIND)
            self.kind = resolved
        self.format = "xlsx"
        self.resolved_encoding = ""
        self._prepare_csv()
        self._prepared = True
        return self

    def _no_header(self) -> None:
        self.empty = True  # not an error: a workbook's other sheets may hold the data

    def _kind_from_name(self) -> str | None:
        named = kind_from_alias(self.sheet) or kind_from_file_name(Path(self.sheet or ""))
        if named is None and self.sheet_count == 1:
            named = kind_from_file_name(self.path)
        return named

    def _kind_hint(self) -> str:
        return "use --kind, a 'kind' column, or a sheet name such as acceptances / 事项受理"

    def _csv_rows(self) -> Iterator[tuple[int, list[str] | RecordError]]:
        """(row number as Excel shows it, its cells as text): trailing empty cells dropped, short rows padded."""
        if self.workbook is None:
            self.workbook = _SharedWorkbook(self.path)
            self.workbook.readers_left = 1
        sheet = self.workbook.book[self.sheet]
        if not self._rows_expected:
            self._rows_expected = sheet.max_row or 0
        # The stored dimension may be wrong (some writers leave 'A1'): read every row there is.
        sheet.reset_dimensions()
        width = len(self._header)
        self._rows_done = 0
        for number, values in enumerate(sheet.iter_rows(min_row=1, values_only=True), start=1):
            self._rows_done = number
            cells = [cell_text(value) for value in values]
            while cells and not cells[-1]:
                cells.pop()
            if width and len(cells) < width:
                cells.extend([""] * (width - len(cells)))
            yield number, cells
        if self._prepared:  # read through for the import (not just its header while preparing)
            self.workbook.finished()

    def __iter__(self) -> Iterator[Any]:
        if not self._prepared:
            self.prepare()
        if self.empty:
            return iter(())
        return self._iter_csv()


def open_workbook(path: Path, *, kind: str | None = None) -> list[SheetReader]:
    """A prepared reader per visible sheet with data; ValidationError when the workbook has none."""
    workbook = _SharedWorkbook(path)
    try:
        sheets = [(sheet.title, sheet.sheet_state) for sheet in workbook.book.worksheets]
        readers = _sheet_readers(path, workbook, sheets, kind)
    except BaseException:
        workbook.close()
        raise
    workbook.readers_left = len(readers)
    return readers


def _sheet_readers(
    path: Path, workbook: _SharedWorkbook, sheets: list[tuple[str, str]], kind: str | None
) -> list[SheetReader]:
    visible = [title for title, state in sheets if state == "visible"]
    hidden = [title for title, state in sheets if state != "visible"]
    size = path.stat().st_size
    readers = []
    for index, title in enumerate(visible):
        share = size // len(visible) + (size % len(visible) if index == len(visible) - 1 else 0)
        reader = SheetReader(
            path, kind=kind, sheet=title, sheet_count=len(visible), share=share, workbook=workbook
        ).prepare()
        if not reader.empty:
            readers.append(reader)
    if not readers:
        raise ValidationError(f"{path}: 没有含数据的工作表 (no visible sheet holds data)", field="file")
    if hidden:
        readers[0].warnings.append(f"{path}: 隐藏的工作表未导入 (hidden sheets not imported): {', '.join(hidden)}")
    # The bytes of sheets left out (empty) go to the first read one, so progress still ends at the file's size.
    readers[0].share += size - sum(reader.share for reader in readers)
    log.debug("workbook %s: sheets %s", path, [reader.sheet for reader in readers])
    return readers
