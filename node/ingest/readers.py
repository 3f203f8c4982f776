"""Reading import files: CSV (English or GB/T Chinese headers) and JSON Lines, in UTF-8 or GB18030, streamed.

A reader yields RawRecords ``(kind, line, fields)`` where ``fields`` is a dict keyed by our English field names, or a
RecordError when the line itself cannot be read (bad JSON, undecodable bytes, unknown kind, wrong column count).
Files are streamed line by line so memory does not grow with the file.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

from node.domain import KIND_ALIASES, KIND_ORDER
from node.errors import ValidationError
from node.ingest.records import RawFields, RawRecord
from node.ingest.validate import (
    BAD_ENCODING,
    BAD_JSON,
    BAD_ROW,
    MISSING_FIELD,
    UNKNOWN_KIND,
    RecordError,
    canonical_field,
)

log = logging.getLogger(__name__)

Encoding = Literal["auto", "utf-8", "gb18030"]
ENCODINGS: tuple[str, ...] = ("auto", "utf-8", "gb18030")
KIND_FIELD_NAMES = frozenset({"kind", "记录类型"})

_SCAN_CHUNK = 1 << 20
_JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson", ".json"})
_STEM_SEPARATORS = re.compile(r"[-_.\s]")


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


def detect_encoding(path: Path) -> str:
    """The encoding of an import file: 'utf-8-sig' (BOM), 'utf-8' (strict decode succeeds) or 'gb18030'.

    A deterministic rule instead of a statistical detector (chardet, charset-normalizer): those guess from a
    sample and can flip between GBK, Big5 and Latin encodings on short or mixed files, so the same file could import
    differently on two nodes. Non-ASCII GB18030 text essentially never forms valid UTF-8 by accident, so "decodes
    strictly as UTF-8" is a reliable test, and the exchange files of Chinese systems are one of exactly these two.
    """
    with path.open("rb") as handle:
        if handle.read(3) == codecs.BOM_UTF8:
            return "utf-8-sig"
    return "utf-8" if decodes_cleanly(path, "utf-8") else "gb18030"


def decodes_cleanly(path: Path, codec: str) -> bool:
    """True when the whole file decodes strictly with ``codec`` (streamed in 1 MB chunks, C speed)."""
    decoder = codecs.getincrementaldecoder(codec)("strict")
    with path.open("rb") as handle:
        try:
            while chunk := handle.read(_SCAN_CHUNK):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return False
    return True


def _resolve_encoding(path: Path, encoding: str) -> str:
    if encoding == "auto":
        return detect_encoding(path)
    normalized = encoding.lower().replace("_", "-")
    if normalized in {"utf-8", "utf8"}:
        # Tolerate a BOM even when UTF-8 is forced: Windows tools write one.
        return "utf-8-sig"
    if normalized in {"gb18030", "gbk", "gb2312"}:
        # GB18030 is a superset of GBK and GB2312, so it reads their files too.
        return "gb18030"
    raise ValidationError(f"{path}: unknown encoding '{encoding}' (use auto, utf-8 or gb18030)", field="encoding")


@dataclass
class FileReader:
    """Streams one import file's records; ``prepare()`` checks the file and finds its kind before any import."""

    path: Path
    kind: str | None = None
    encoding: str = "auto"
    format: Literal["csv", "jsonl"] = "csv"
    resolved_encoding: str = ""
    primary_kind: str | None = None
    warnings: list[str] = field(default_factory=list)
    _header: list[str] = field(default_factory=list)
    _header_line: int = 0
    _kind_column: int | None = None
    _prepared: bool = False
    _clean: bool = False
    _bytes_read: int = 0
    _position: Callable[[], int] | None = None

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
        self.resolved_encoding = _resolve_encoding(self.path, self.encoding)
        # A file known to decode cleanly is read through the C text layer; otherwise line by line, so that one
        # undecodable line is one rejected record rather than a failed file.
        auto_utf8 = self.encoding == "auto" and self.resolved_encoding == "utf-8"
        self._clean = auto_utf8 or decodes_cleanly(self.path, self.resolved_encoding)
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
                self._bytes_read += len(raw)
                text_bytes = raw[3:] if number == 1 and bom and raw.startswith(codecs.BOM_UTF8) else raw
                try:
                    yield number, text_bytes.decode(codec)
                except UnicodeDecodeError:
                    yield number, None

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
            raise ValidationError(f"{self.path}: empty file: no header row", field="header")
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
                    f"{self.path}: columns '{seen[name]}' and '{clean}' are the same field {name}", field="header"
                )
            seen[name] = clean
            names.append(name)
        if unknown:
            self.warnings.append(f"{self.path}: ignored unknown columns: {', '.join(unknown)}")
        self._header = names
        if self.kind is not None:
            self.primary_kind = self.kind
        elif self._kind_column is not None:
            value = first_data[self._kind_column] if first_data and len(first_data) > self._kind_column else None
            self.primary_kind = kind_from_alias(value) or kind_from_file_name(self.path)
        else:
            self.primary_kind = kind_from_file_name(self.path)
            if self.primary_kind is None:
                raise ValidationError(
                    f"{self.path}: cannot tell the record kind: use --kind, a 'kind' column, or a file name such as "
                    "acceptances.csv / 事项受理.csv",
                    field="kind",
                    reason=UNKNOWN_KIND,
                )

    def _prepare_jsonl(self) -> None:
        default = self.kind or kind_from_file_name(self.path)
        self.primary_kind = default
        for _, text in self._lines():
            if text is None or not text.strip():
                continue
            try:
                value = json.loads(text)
            except ValueError:
                break
            if isinstance(value, dict):
                line_kind = next((value[name] for name in KIND_FIELD_NAMES if name in value), None)
                self.primary_kind = kind_from_alias(line_kind) or default
            break

    def _parsed(self, reader: Any) -> Iterator[tuple[int, list[str] | RecordError]]:
        """(first line, row) per CSV record; a record the csv module cannot parse is one BAD_ROW error, not a crash.

        csv.Error comes from e.g. a field over the csv field size limit, or a bare carriage return in an unquoted
        field (a quoted field whose opening line did not decode); the reader resumes at the next line.
        """
        last_line = 0
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as error:
                start, stuck = last_line + 1, reader.line_num == last_line
                last_line = reader.line_num
                yield start, self._error(start, "?", BAD_ROW, None, f"line is not a valid CSV record: {error}")
                if stuck:  # nothing consumed: stop rather than report the same place forever
                    return
                continue
            start = last_line + 1
            last_line = reader.line_num
            yield start, row

    def _csv_rows(self) -> Iterator[tuple[int, list[str] | RecordError]]:
        if self._clean:
            with self._text() as handle:
                yield from self._parsed(csv.reader(handle))
            return
        undecodable: list[int] = []

        def texts() -> Iterator[str]:
            for number, text in self._lines():
                if text is None:
                    undecodable.append(number)
                    yield "\n"
                else:
                    yield text

        reader = csv.reader(texts())
        for start, row in self._parsed(reader):
            last_line = reader.line_num
            if isinstance(row, RecordError):
                yield start, row
                continue
            if undecodable and start <= undecodable[0] <= last_line:
                bad = undecodable.pop(0)
                yield (
                    bad,
                    self._error(
                        bad, "?", BAD_ENCODING, None, f"line is not valid {self.resolved_encoding} (use --encoding)"
                    ),
                )
                continue
            yield start, row

    def _error(self, line: int, kind: str, reason: str, field_name: str | None, message: str) -> RecordError:
        return RecordError(str(self.path), line, kind, field_name, reason, message)

    def __iter__(self) -> Iterator[RawRecord]:
        if not self._prepared:
            self.prepare()
        if self.format == "csv":
            yield from self._iter_csv()
        else:
            yield from self._iter_jsonl()

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
                        self._error(line, kind, UNKNOWN_KIND, "kind", f"unknown record kind {row[kind_column]!r}"),
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
                yield (
                    "?",
                    line,
                    self._error(
                        line, "?", BAD_ENCODING, None, f"line is not valid {self.resolved_encoding} (use --encoding)"
                    ),
                )
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
                    yield (
                        str(line_kind),
                        line,
                        self._error(line, str(line_kind), UNKNOWN_KIND, "kind", f"unknown record kind {line_kind!r}"),
                    )
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


def open_files(paths: list[Path], *, kind: str | None = None, encoding: str = "auto") -> list[FileReader]:
    """Prepare every file (so a bad one fails before anything is imported) and order them by KIND_ORDER."""
    if encoding not in ENCODINGS:
        raise ValidationError(f"unknown encoding '{encoding}' (use auto, utf-8 or gb18030)", field="encoding")
    readers = [FileReader(Path(path), kind=kind, encoding=encoding).prepare() for path in paths]
    order = {name: index for index, name in enumerate(KIND_ORDER)}
    # Stable sort: files of one kind keep the order they were given in.
    return sorted(readers, key=lambda reader: order.get(reader.primary_kind or "", len(order)))
