"""Writing the generated rows: part files per chunk and kind, joined into GB/T 39046 CSV files or one JSONL file.

CSV files carry the standard's Chinese field names as headers; JSON lines carry the English names and their kind.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import IO, Literal

from node.domain import KIND_ORDER, RECORD_FIELDS

FileFormat = Literal["csv", "jsonl"]
FILE_NAMES: dict[str, str] = {
    "item": "items.csv",
    "acceptance": "acceptances.csv",
    "step": "steps.csv",
    "procedure_start": "procedure_starts.csv",
    "procedure_end": "procedure_ends.csv",
    "payment": "payments.csv",
    "completion": "completions.csv",
    "evaluation": "evaluations.csv",
    "complaint": "complaints.csv",
}
JSONL_FILE_NAME = "records.jsonl"
PARTS_DIR = ".supnet-generate-parts"  # under the output directory while chunks are written; removed at the end
Row = tuple[str, ...]
Sink = Callable[[Row], None]  # writes one row of one kind

# The columns written per kind, in file order. The importer maps columns by header name, so these need not follow
# RECORD_FIELDS' order; fields the generator never fills (complaint 处理人, 反馈意见) are left out.
# fmt: off
COLUMNS: dict[str, tuple[str, ...]] = {
    "item": tuple(spec.name for spec in RECORD_FIELDS["item"]),
    "acceptance": (
        "case_no", "implementation_code", "department", "department_code", "acceptor", "accepted_at",
        "declared_promised_at", "case_type_code", "area_code", "applicant_name", "applicant_id_type",
        "applicant_id_no", "apply_source_code", "applied_at",
    ),
    "step": (
        "case_no", "step_name", "action", "handler", "post", "opinion", "started_at", "ended_at", "status_code",
        "step_limit", "entered_at",
    ),
    "procedure_start": ("case_no", "kind_code", "started_at", "reason"),
    "procedure_end": ("case_no", "ended_at", "result"),
    "payment": ("case_no", "amount", "paid_at"),
    "completion": (
        "case_no", "handler_name", "completed_at", "result_code", "reason", "certificate_name", "certificate_no",
        "fee_flag",
    ),
    "evaluation": ("case_no", "channel", "evaluated_at", "satisfaction_code", "comment"),
    "complaint": (
        "complaint_no", "title", "complainant", "respondent_unit", "respondent_person", "content", "source_code",
        "received_at", "handling_unit", "promised_limit", "extension_workdays", "overdue_days", "area_code", "case_no",
    ),
}

# fmt: on


def _check_columns() -> None:
    """Fail at import, not in a user's import, if the shared field contract and these columns drift apart."""
    for kind, columns in COLUMNS.items():
        specs = {spec.name: spec for spec in RECORD_FIELDS[kind]}
        unknown = [name for name in columns if name not in specs]
        missing = [name for name, spec in specs.items() if spec.required and name not in columns]
        if unknown or missing:
            raise RuntimeError(f"generator columns of {kind!r} out of date: unknown {unknown}, required {missing}")


_check_columns()
_HEADERS: dict[str, list[str]] = {
    kind: [next(spec.cn for spec in RECORD_FIELDS[kind] if spec.name == name) for name in columns]
    for kind, columns in COLUMNS.items()
}


class PartWriter:
    """Rows of one chunk, one part file per kind: CSV rows without header, or JSON lines with their kind."""

    def __init__(self, parts_dir: Path, chunk: str, file_format: FileFormat) -> None:
        self.counts: dict[str, int] = dict.fromkeys(KIND_ORDER, 0)
        self.write: dict[str, Sink] = {}
        self._handles: list[IO[str]] = []
        for kind in KIND_ORDER:
            handle = part_path(parts_dir, chunk, kind).open("w", encoding="utf-8", newline="")
            self._handles.append(handle)
            self.write[kind] = self._csv_sink(kind, handle) if file_format == "csv" else self._jsonl_sink(kind, handle)

    def _csv_sink(self, kind: str, handle: IO[str]) -> Sink:
        writerow = csv.writer(handle).writerow  # the hot path: ~700,000 rows per 100,000 cases
        counts = self.counts

        def write(row: Row) -> None:
            writerow(row)
            counts[kind] += 1

        return write

    def _jsonl_sink(self, kind: str, handle: IO[str]) -> Sink:
        columns = COLUMNS[kind]
        counts = self.counts

        def write(row: Row) -> None:
            record = {"kind": kind}
            record.update((name, value) for name, value in zip(columns, row, strict=True) if value != "")
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            counts[kind] += 1

        return write

    def close(self) -> None:
        """Close every part file."""
        for handle in self._handles:
            handle.close()


def part_path(parts_dir: Path, chunk: str, kind: str) -> Path:
    """The part file of one chunk and kind."""
    return parts_dir / f"{chunk}.{kind}.part"


def assemble(out_dir: Path, parts_dir: Path, chunks: list[str], file_format: FileFormat) -> None:
    """Join the parts, chunk after chunk, into the final files: deterministic whatever ran the chunks."""
    if file_format == "csv":
        for kind in KIND_ORDER:
            with (out_dir / FILE_NAMES[kind]).open("w", encoding="utf-8", newline="") as target:
                csv.writer(target).writerow(_HEADERS[kind])
                for chunk in chunks:
                    with part_path(parts_dir, chunk, kind).open(encoding="utf-8", newline="") as source:
                        shutil.copyfileobj(source, target, 1 << 20)
        return
    with (out_dir / JSONL_FILE_NAME).open("w", encoding="utf-8", newline="") as target:
        for kind in KIND_ORDER:  # dependency order: items before cases before their steps ...
            for chunk in chunks:
                with part_path(parts_dir, chunk, kind).open(encoding="utf-8", newline="") as source:
                    shutil.copyfileobj(source, target, 1 << 20)
