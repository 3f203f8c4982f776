"""Reading import files: CSV (English or GB/T Chinese headers) and JSON Lines, in UTF-8 or GB18030, streamed.

A reader yields RawRecords ``(kind, line, fields)`` where ``fields`` is a dict keyed by our English field names, or a
RecordError when the line itself cannot be read (bad JSON or JSON nested too deeply, undecodable bytes, unknown kind,
wrong column count, a CSV field over the csv module's limit). Files are streamed line by line so memory does not
grow with the file. Which encoding a file is read in: node.ingest.encodings; CSV records: node.ingest.csv_rows;
.xlsx workbooks: node.ingest.xlsx (a sheet is read as a CSV file is, through the same header and row handling).

CSV fields are split on ``delimiter`` (``,`` unless ``--delimiter`` / ``ingest.csv_delimiter`` say otherwise); a
header with no known column that another common delimiter (tab, ``;``, ``|``, ``,``) would split into known columns
is refused with a hint naming the delimiter to use, before anything is imported.
"""

from __future__ import annotations

import codecs
import io
import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

from node.config import delimiter_label
from node.domain import KIND_ALIASES, KIND_ORDER
from node.errors import ValidationError
from node.ingest.csv_rows import csv_records
from node.ingest.encodings import resolve_encoding, undecodable_message
from node.ingest.records import RawFields, RawRecord
from node.ingest.validate import (
    BAD_ENCODING,
    BAD_JSON,
    BAD_ROW,
    MISSING_FIELD,
    UNKNOWN_KIND,
    RecordError,
    canonical_field,
    shown_value,
)

log = logging.getLogger(__name__)

Encoding = Literal["auto", "utf-8", "gb18030"]
ENCODINGS: tuple[str, ...] = ("auto", "utf-8", "gb18030")
KIND_FIELD_NAMES = frozenset({"kind", "记录类型"})

_JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson", ".json"})
_STEM_SEPARATORS = re.compile(r"[-_.\s]")
# Delimiters a header is tried with when it has no known column under the one in use.
_OTHER_DELIMITERS = ("\t", ";", "|", ",")


def kind_from_alias(value: Any) -> str | None:
    """The record kind a name stands for ('acceptances', '事项受理', 'case' ...), or None."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    return KIND_ALIASES.get(text) or KIND_ALIASES.get(text.lower())


def kind_from_file_name(path: Path) -> str | None:
    """The kind a file's name implies: 'acceptances.csv', '事项受理.csv', 'acceptance-2026-03.csv', else None."""
    stem = path.name.split(".")[0].strip()
    # Longest prefix at a separator first, so 'procedure_start-2026' is procedure_start, not 'procedure'.
    cuts = [match.start() for match in _STEM_SEPARATORS.finditer(stem)]
    for end in [len(stem), *reversed(cuts)]:
        kind = kind_from_alias(stem[:end])
        if kind is not None:
            return kind
    without_digits = stem.rstrip("0123456789-_ ")
    if without_digits != stem and (kind := kind_from_alias(without_digits)) is not None:
        return kind
    # Otherwise any one part may name it ('gz-acceptances', '2026-03-事项办结'), as long as only one kind is named.
    starts = [0, *(cut + 1 for cut in cuts)]
    named = {
        kind
        for start in starts
        for end in [*cuts, len(stem)]
        if end > start and (kind := kind_from_alias(stem[start:end])) is not None
    }
    return named.pop() if len(named) == 1 else None


@dataclass
class FileReader:
    """Streams one import file's records; ``prepare()`` checks the file and finds its kind before any import."""

    path: Path
    kind: str | None = None
    encoding: str = "auto"
    format: Literal["csv", "jsonl", "xlsx"] = "csv"
    delimiter: str = ","
    sheet: str | None = None
    resolved_encoding: str = ""
    primary_kind: str | None = None
    warnings: list[str] = field(default_factory=list)
    _header: list[str] = field(default_factory=list)
    _header_line: int = 0
    _kind_column: int | None = None
    _prepared: bool = False
    _clean: bool = False
    # Undecodable physical lines (read line by line): line number -> (byte offset in the file, the bad bytes).
    _undecodable: dict[int, tuple[int, bytes]] = field(default_factory=dict)
    _bytes_read: int = 0
    _position: Callable[[], int] | None = None

    @property
    def source(self) -> str:
        """Where errors say a record came from: the file (a workbook's reader adds its sheet)."""
        return str(self.path)

    @property
    def bytes_read(self) -> int:
        """Bytes of the file consumed so far (for progress)."""
        if self._position is not None:
            try:
                return self._position()
            except ValueError:  # the file was read to the end and closed
                return self.size
        return self._bytes_read

    @property
    def size(self) -> int:
        """The file's size in bytes (for progress)."""
        return self.path.stat().st_size

    def prepare(self) -> FileReader:
        """Check the file can be read and resolve encoding, format, header and kind; ValidationError otherwise."""
        if not self.path.is_file():
            raise ValidationError(f"{self.path}: no such file", field="file")
        if self.kind is not None:
            resolved = kind_from_alias(self.kind)
            if resolved is None:
                raise ValidationError(f"unknown record kind '{self.kind}' (--kind)", field="kind", reason=UNKNOWN_KIND)
            self.kind = resolved
        # A file known to decode cleanly is read through the C text layer; otherwise line by line, so that one
        # undecodable line is one rejected record rather than a failed file (node.ingest.encodings).
        how = resolve_encoding(self.path, self.encoding)
        self.resolved_encoding, self._clean = how.codec, how.clean
        if how.warning is not None:
            self.warnings.append(how.warning)
        self.format = "jsonl" if self._looks_like_jsonl() else "csv"
        if self.format == "csv":
            self._prepare_csv()
        else:
            self._prepare_jsonl()
        self._prepared = True
        log.debug(
            "import file %s: format %s, encoding %s, kind %s",
            self.path,
            self.format,
            self.resolved_encoding,
            self.primary_kind,
        )
        return self

    def _looks_like_jsonl(self) -> bool:
        if self.path.suffix.lower() in _JSONL_SUFFIXES:
            return True
        if self.path.suffix.lower() == ".csv":
            return False
        for _, text in self._lines():
            if text is not None and text.strip():
                return text.lstrip().startswith("{")
        return False

    def _text(self) -> TextIO:
        """The file as text (only for a file that decodes cleanly); progress follows the byte position."""
        binary = self.path.open("rb")
        self._position = binary.tell
        return io.TextIOWrapper(binary, encoding=self.resolved_encoding, newline="")

    def _lines(self) -> Iterator[tuple[int, str | None]]:
        """(line number, text) per physical line; text None when the line's bytes do not decode."""
        if self._clean:
            with self._text() as text_handle:
                yield from enumerate(text_handle, start=1)
            return
        self._position = None
        self._bytes_read = 0
        bom = self.resolved_encoding == "utf-8-sig"
        codec = "utf-8" if bom else self.resolved_encoding
        with self.path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                offset = self._bytes_read
                self._bytes_read += len(raw)
                skip = 3 if number == 1 and bom and raw.startswith(codecs.BOM_UTF8) else 0
                try:
                    yield number, (raw[skip:] if skip else raw).decode(codec)
                except UnicodeDecodeError as exc:
                    self._undecodable[number] = (offset + skip + exc.start, exc.object[exc.start : exc.end])
                    yield number, None

    def _encoding_error(self, line: int, kind: str) -> RecordError:
        """The rejection of an undecodable line, naming its byte offset and bytes."""
        offset, bad = self._undecodable.pop(line, (None, b""))
        return self._error(line, kind, BAD_ENCODING, None, undecodable_message(self.resolved_encoding, offset, bad))

    def _prepare_csv(self) -> None:
        header_row: list[str] | None = None
        first_data: list[str] | None = None
        for _, row in self._csv_rows():
            if isinstance(row, RecordError) or not row or not any(cell.strip() for cell in row):
                if header_row is None and isinstance(row, RecordError):
                    raise ValidationError(f"{self.path}: header line: {row.message}", field="header")
                continue
            if header_row is None:
                header_row = row
                continue
            first_data = row
            break
        if header_row is None:
            self._no_header()
            return
        names: list[str] = []
        seen: dict[str, str] = {}
        unknown: list[str] = []
        for index, title in enumerate(header_row):
            clean = title.strip().lstrip("\ufeff")
            if clean in KIND_FIELD_NAMES:
                self._kind_column = index
                names.append(f"\x00kind{index}")
                continue
            name = canonical_field(clean)
            if name is None:
                unknown.append(clean)
                names.append(f"\x00unknown{index}")
                continue
            if name in seen:
                raise ValidationError(
                    f"{self.source}: columns '{seen[name]}' and '{clean}' are the same field {name}", field="header"
                )
            seen[name] = clean
            names.append(name)
        if self.format == "csv" and len(unknown) == len(header_row):
            self._check_delimiter(header_row)
        if unknown:
            self.warnings.append(f"{self.source}: ignored unknown columns: {', '.join(unknown)}")
        self._header = names
        if self.kind is not None:
            self.primary_kind = self.kind
        elif self._kind_column is not None:
            value = first_data[self._kind_column] if first_data and len(first_data) > self._kind_column else None
            self.primary_kind = kind_from_alias(value) or self._kind_from_name()
        else:
            self.primary_kind = self._kind_from_name()
            if self.primary_kind is None:
                raise ValidationError(
                    f"{self.source}: cannot tell the record kind: {self._kind_hint()}",
                    field="kind",
                    reason=UNKNOWN_KIND,
                )

    def _no_header(self) -> None:
        """A source with no header row: an empty file is an error (an empty sheet is skipped: node.ingest.xlsx)."""
        raise ValidationError(f"{self.source}: empty file: no header row", field="header")

    def _kind_from_name(self) -> str | None:
        """The kind the source's name implies (a file's; a sheet's for a workbook), or None."""
        return kind_from_file_name(self.path)

    def _kind_hint(self) -> str:
        return "use --kind, a 'kind' column, or a file name such as acceptances.csv / 事项受理.csv"

    def _check_delimiter(self, header_row: list[str]) -> None:
        """Refuse a header none of whose columns is known when another delimiter would split it into known ones."""
        text = self.delimiter.join(header_row)
        for other in _OTHER_DELIMITERS:
            if other == self.delimiter or other not in text:
                continue
            cells = [cell.strip().strip('"').lstrip("\ufeff") for cell in text.split(other)]
            known = [cell for cell in cells if cell in KIND_FIELD_NAMES or canonical_field(cell) is not None]
            if len(known) >= 2:
                shown = ", ".join(known[:4]) + (" …" if len(known) > 4 else "")
                flag = "tab" if other == "\t" else other
                raise ValidationError(
                    f"{self.source}: 表头看起来以{delimiter_label(other)}分隔，而不是{delimiter_label(self.delimiter)} "
                    f"(the header looks {delimiter_label(other, english=True)}-separated, not "
                    f"{delimiter_label(self.delimiter, english=True)}-separated: split so it has the columns {shown}); "
                    f"请使用 use --delimiter '{flag}' (or ingest.csv_delimiter in supnet.toml)",
                    field="header",
                )

    def _prepare_jsonl(self) -> None:
        default = self.kind or kind_from_file_name(self.path)
        self.primary_kind = default
        for _, text in self._lines():
            if text is None or not text.strip():
                continue
            try:
                value = json.loads(text)
            except (ValueError, RecursionError):
                break
            if isinstance(value, dict):
                line_kind = next((value[name] for name in KIND_FIELD_NAMES if name in value), None)
                self.primary_kind = kind_from_alias(line_kind) or default
            break

    def _columns(self) -> tuple[list[str], str]:
        return self._header, self.kind or self.primary_kind or "?"

    def _csv_rows(self) -> Iterator[tuple[int, list[str] | RecordError]]:
        """(first line, row or why it was not read) per CSV record (node.ingest.csv_rows)."""
        if self._clean:
            with self._text() as handle:
                records = csv_records(self.path, handle, self.resolved_encoding, self._columns, self.delimiter)
                for start, _, row in records:
                    yield start, row
            return
        undecodable: list[int] = []

        def texts() -> Iterator[str]:
            for number, text in self._lines():
                if text is None:
                    undecodable.append(number)
                    yield "\n"
                else:
                    yield text

        records = csv_records(self.path, texts(), self.resolved_encoding, self._columns, self.delimiter)
        for start, last_line, row in records:
            if isinstance(row, RecordError):
                yield start, row
                continue
            while undecodable and undecodable[0] < start:
                # Inside a record already rejected (the csv module's error): said once, by that error.
                self._undecodable.pop(undecodable.pop(0), None)
            if undecodable and start <= undecodable[0] <= last_line:
                bad = undecodable.pop(0)
                yield bad, self._encoding_error(bad, "?")
                continue
            yield start, row

    def _error(self, line: int, kind: str, reason: str, field_name: str | None, message: str) -> RecordError:
        return RecordError(self.source, line, kind, field_name, reason, message)

    def __iter__(self) -> Iterator[RawRecord]:
        if not self._prepared:
            self.prepare()
        if self.format == "jsonl":
            yield from self._iter_jsonl()
        else:
            yield from self._iter_csv()

    def _iter_csv(self) -> Iterator[RawRecord]:
        names = self._header
        width = len(names)
        kind_column = self._kind_column
        fixed_kind = self.kind
        default_kind = self.primary_kind or "?"
        header_seen = False
        plain = kind_column is None or fixed_kind is not None
        kind = fixed_kind or default_kind
        for line, row in self._csv_rows():
            if plain and header_seen and row.__class__ is list and len(row) == width and width > 1:
                # The common case: a well-formed row of a single-kind file.
                yield kind, line, dict(zip(names, row, strict=False))
                continue
            if isinstance(row, RecordError):
                yield row.kind, line, row
                continue
            if not header_seen:
                if row and any(cell.strip() for cell in row):
                    header_seen = True
                continue
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            kind = fixed_kind or default_kind
            if fixed_kind is None and kind_column is not None and kind_column < len(row):
                resolved = kind_from_alias(row[kind_column])
                if resolved is None:
                    yield (
                        kind,
                        line,
                        self._error(
                            line, kind, UNKNOWN_KIND, "kind", f"unknown record kind {shown_value(row[kind_column])}"
                        ),
                    )
                    continue
                kind = resolved
            if len(row) != width:
                yield (
                    kind,
                    line,
                    self._error(line, kind, BAD_ROW, None, f"row has {len(row)} columns but the header has {width}"),
                )
                continue
            yield kind, line, dict(zip(names, row, strict=True))

    def _iter_jsonl(self) -> Iterator[RawRecord]:
        default_kind = self.kind or kind_from_file_name(self.path)
        unknown: set[str] = set()
        for line, text in self._lines():
            if text is None:
                yield "?", line, self._encoding_error(line, "?")
                continue
            if not text.strip():
                continue
            try:
                value = json.loads(text)
            except ValueError as exc:
                yield (
                    default_kind or "?",
                    line,
                    self._error(line, default_kind or "?", BAD_JSON, None, f"not valid JSON: {exc}"),
                )
                continue
            except RecursionError:
                # json's C parser recurses per nesting level and stops at the interpreter's recursion limit: one
                # line nested thousands deep is one bad record, and the file's other lines go on.
                yield (
                    default_kind or "?",
                    line,
                    self._error(
                        line,
                        default_kind or "?",
                        BAD_JSON,
                        None,
                        "not valid JSON for a record: nested too deeply (a line must be one flat JSON object)",
                    ),
                )
                continue
            if not isinstance(value, dict):
                yield (
                    default_kind or "?",
                    line,
                    self._error(line, default_kind or "?", BAD_JSON, None, "a line must be one JSON object"),
                )
                continue
            fields: RawFields = {}
            line_kind: Any = None
            for key, item in value.items():
                if key in KIND_FIELD_NAMES:
                    line_kind = item
                    continue
                name = canonical_field(key)
                if name is None:
                    unknown.add(key)
                else:
                    fields[name] = item
            if line_kind is not None:
                kind = kind_from_alias(line_kind)
                if kind is None:
                    # Shown short: the value may be long, or JSON nested deep (its plain str() would recurse).
                    named = line_kind[:60] if isinstance(line_kind, str) else shown_value(line_kind)
                    message = f"unknown record kind {shown_value(line_kind)}"
                    yield named, line, self._error(line, named, UNKNOWN_KIND, "kind", message)
                    continue
            elif default_kind is not None:
                kind = default_kind
            else:
                yield (
                    "?",
                    line,
                    self._error(
                        line, "?", MISSING_FIELD, "kind", "field kind (记录类型): missing, and no --kind given"
                    ),
                )
                continue
            yield kind, line, fields
        if unknown:
            self.warnings.append(f"{self.path}: ignored unknown fields: {', '.join(sorted(unknown))}")


def open_files(
    paths: list[Path], *, kind: str | None = None, encoding: str = "auto", delimiter: str = ","
) -> list[FileReader]:
    """Prepare every file (so a bad one fails before anything is imported) and order them by KIND_ORDER.

    A workbook (.xlsx) gives one reader per sheet with data; a CSV file is split on ``delimiter``.
    """
    from node.ingest.xlsx import XLSX_SUFFIXES, open_workbook  # it builds on this module's FileReader

    if encoding not in ENCODINGS:
        raise ValidationError(f"unknown encoding '{encoding}' (use auto, utf-8 or gb18030)", field="encoding")
    readers: list[FileReader] = []
    for path in map(Path, paths):
        suffix = path.suffix.lower()
        if suffix in XLSX_SUFFIXES and path.is_file():
            readers.extend(open_workbook(path, kind=kind))
        elif suffix == ".xls":
            raise ValidationError(
                f"{path}: 旧版 .xls 格式不支持，请在 Excel / WPS 中另存为 .xlsx 或 CSV "
                "(the old .xls format is not read: save it as .xlsx or CSV)",
                field="file",
            )
        else:
            readers.append(FileReader(path, kind=kind, encoding=encoding, delimiter=delimiter).prepare())
    order = {name: index for index, name in enumerate(KIND_ORDER)}
    # Stable sort: files of one kind keep the order they were given in.
    return sorted(readers, key=lambda reader: order.get(reader.primary_kind or "", len(order)))
