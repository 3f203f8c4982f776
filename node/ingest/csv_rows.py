"""CSV records with their physical lines, and one clear error for a record the csv module cannot parse.

The csv module stops a field at its field size limit (FREE_TEXT_MAX_LENGTH, 131,072 characters, unless changed)
and drops the record without saying which field. Such a record is one TOO_LONG rejection worded as the validator
words shorter over-long fields (field, length, its limit): the record's lines are read again from the file and split
here, only on this error path. When the long field is a quoted one still open, the rest of it (up to its closing
quote, as CSV reads it) belongs to the same rejected record rather than being read as records of its own.
"""

from __future__ import annotations

import csv
import functools
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from node.domain import RECORD_FIELDS
from node.ingest.validate import BAD_ROW, TOO_LONG, RecordError, problem_message

# (first line, last line, the row or why it was not read) of each CSV record.
CsvRecord = tuple[int, int, "list[str] | RecordError"]
# The header's field names (our English names; other columns start with NUL) and the file's record kind.
Columns = Callable[[], tuple[Sequence[str], str]]

# Each field name's length limit (the same in every kind that has the field).
_LENGTH_LIMITS: dict[str, int | None] = {
    spec.name: spec.length_limit for specs in RECORD_FIELDS.values() for spec in specs
}


@functools.cache
def _field_pattern(delimiter: str) -> re.Pattern[str]:
    """The pattern of one CSV field ending at ``delimiter``.

    A field is quoted ("" escapes a quote, newlines allowed; text after the closing quote stays in the field, as the
    csv module keeps it) or unquoted.
    """
    stop = re.escape(delimiter)
    return re.compile(rf'"((?:[^"]+|"")*)("?)[^{stop}\r\n]*|[^{stop}\r\n]*')


def csv_records(
    path: Path, lines: Iterator[str], codec: str, columns: Columns, delimiter: str = ","
) -> Iterator[CsvRecord]:
    """Parse ``lines`` (the file's physical lines, decoded with ``codec``) into records; never raises csv.Error.

    Fields are split on ``delimiter`` (one character).

    Any other csv.Error (e.g. a bare carriage return in an unquoted field) is one BAD_ROW error; the reader resumes
    at the next line.
    """
    reader = csv.reader(lines, delimiter=delimiter)
    last_line = 0
    skipped = 0  # lines taken from ``lines`` here, past the csv reader's count
    cursor: _LineCursor | None = None
    try:
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as error:
                start, end = last_line + 1, reader.line_num + skipped
                stuck = end == last_line
                if str(error).startswith("field larger than field limit"):
                    cursor = cursor or _LineCursor(path)
                    names, kind = columns()
                    rejected, still_open = _too_long(
                        path, start, cursor.lines(start, end), codec, names=names, kind=kind, delimiter=delimiter
                    )
                    if still_open:
                        taken, closed = _rest_of_quoted_field(lines)
                        skipped += taken
                        end += taken
                        rejected = _with_end(rejected, end, closed)
                else:
                    rejected = RecordError(
                        str(path), start, "?", None, BAD_ROW, f"line is not a valid CSV record: {error}"
                    )
                last_line = end
                yield start, end, rejected
                if stuck:  # nothing consumed: stop rather than report the same place forever
                    return
                continue
            start = last_line + 1
            last_line = reader.line_num + skipped
            yield start, last_line, row
    finally:
        if cursor is not None:
            cursor.close()


def _rest_of_quoted_field(lines: Iterator[str]) -> tuple[int, bool]:
    """Take the lines up to the one closing an open quoted field: (how many, whether a closing quote came).

    Inside a quoted field quotes come in pairs ("" is one quote) until the closing one, and the record's later
    quoted fields close too: the record ends at the first line that makes the count of quotes odd.
    """
    taken = 0
    for text in lines:
        taken += 1
        if text.count('"') % 2:
            return taken, True
    return taken, False


def _with_end(error: RecordError, end: int, closed: bool) -> RecordError:
    where = f"the record runs to line {end}" if closed else f"an unclosed quote: the record runs to the end ({end})"
    return RecordError(error.file, error.line, error.kind, error.field, error.reason, f"{error.message} ({where})")


def _too_long(
    path: Path, line: int, raw_lines: list[bytes], codec: str, *, names: Sequence[str], kind: str, delimiter: str
) -> tuple[RecordError, bool]:
    """The error of a record whose field passed the csv limit, and whether that field is a quoted one still open."""
    text = b"".join(raw_lines).decode("utf-8" if codec == "utf-8-sig" else codec, errors="replace")
    if line == 1:
        text = text.lstrip("\ufeff")
    limit = csv.field_size_limit()
    for column, (length, closed) in enumerate(_field_lengths(text, delimiter)):
        if length <= limit and closed:
            continue
        name = names[column] if column < len(names) else None
        known = name if name is not None and not name.startswith("\x00") else None
        field_limit = _LENGTH_LIMITS.get(known or "") or limit
        size = f"{length} characters" if closed else f"{length} characters or more"
        detail = f"{size}, at most {field_limit} allowed"
        message = problem_message(known, detail, kind) if known else f"column {column + 1}: {detail}"
        return RecordError(str(path), line, kind, known, TOO_LONG, message), not closed
    return RecordError(str(path), line, kind, None, TOO_LONG, f"a field is longer than {limit} characters"), False


def _field_lengths(text: str, delimiter: str = ",") -> Iterator[tuple[int, bool]]:
    """(characters, closed) of each field of the CSV record that starts ``text``; an unclosed quote ends it."""
    pattern = _field_pattern(delimiter)
    position = 0
    while True:
        match = pattern.match(text, position)
        if match is None:  # the pattern matches the empty string: only a safeguard
            return
        quoted = match.group(1)
        if quoted is None:
            yield match.end() - match.start(), True
        else:
            closed = match.group(2) == '"'
            yield len(quoted) - quoted.count('""') + match.end() - match.end(2), closed
            if not closed:
                return
        position = match.end()
        if position >= len(text) or text[position] != delimiter:
            return
        position += 1


class _LineCursor:
    """Physical lines of a file by number, read forward only: the few records a diagnosis needs to see again."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._handle: BinaryIO | None = None
        self._next = 1

    def lines(self, first: int, last: int) -> list[bytes]:
        """Lines ``first`` to ``last`` (1-based, inclusive), as bytes."""
        if self._handle is None or first < self._next:
            self.close()
            self._handle = self._path.open("rb")
            self._next = 1
        found: list[bytes] = []
        while self._next <= last:
            raw = self._handle.readline()
            if not raw:
                break
            if self._next >= first:
                found.append(raw)
            self._next += 1
        return found

    def close(self) -> None:
        """Close the file, if open."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None
