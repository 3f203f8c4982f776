"""The import API: validated records land in batches, idempotently, with their effects on cases.

``Importer(node).import_files(paths)`` (the CLI) and ``Importer(node).import_records(records)`` (gRPC ingest) share
one pipeline:

1. each record is validated on its own (node.ingest.validate); a bad one becomes a RecordError, the rest go on;
2. a batch (config ``store.batch_size``) is written in ONE transaction, kind by kind in dependency order (items,
   cases, special procedures, steps, payments, completions, evaluations, complaints): a batch commits whole or not
   at all, so what the summary counts as accepted is durable;
3. each kind has a natural key: a known key with the same content is a duplicate (no change), with other content a
   conflict naming the differing fields; nothing is ever overwritten;
4. case effects (status, counters, clock stops, recomputed deadlines) are applied in the same transaction, and
   listeners (metrics, rules) see the new records before the commit;
5. whatever a listener needs the calendar for is checked here first, per record: a completion whose working days
   cannot be counted (a year without holiday data) is rejected with its file, line and field, never the batch.
   Steps get their own due (``step_due_at``, from 环节时限) for the step-overdue rule.

Speed: items are preloaded into a dict, due dates and working days used are memoised per day, existence checks are
one query per batch, rows go in through the driver's executemany (SQLite, values pre-formatted in SQLAlchemy's own
DATETIME storage format so the ORM reads them back) or COPY (PostgreSQL, where case updates, metric buckets and
alerts are COPY'd into a staging table and applied by one set-based statement per batch, node.store.bulk), and the
cyclic garbage collector is paused while a batch is processed (it only re-scanned the batch's short-lived rows).
``bench/ingest.py`` measures it against raw sqlite3 and COPY, with the share of time in the database.

This module runs the pipeline (records -> batches -> one transaction each -> listeners -> summary); what each kind
checks and writes is node.ingest.handlers (and .procedures for special procedures), the checks against stored rows
node.ingest.storage, the memoised due dates node.ingest.deadlines, the SQL of each database node.ingest.backends;
the records passed between the stages are typed in node.ingest.records.

Given an ``actor`` (the CLI's OS user, gRPC's verified TLS identity), an import is audited: one ``records.imported``
entry per file import (each file's name, size and SHA-256, counts accepted / duplicates / rejected, and an error
if it stopped), written after the last batch in a transaction of its own (:func:`audit_import`).
"""

from __future__ import annotations

import gc
import hashlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from federation import AuditResult, StorageFullError, crash_point, is_storage_full
from node.audit_log import Action, AuditLog
from node.domain import FIELD_NAMES, KIND_ORDER
from node.errors import StoreError
from node.ingest.deadlines import Deadlines
from node.ingest.handlers import KindHandlers
from node.ingest.listeners import IngestListener
from node.ingest.outcomes import BatchContext, ImportedFile, ImportSummary, OutcomeCallback, RecordOutcome
from node.ingest.readers import FileReader, kind_from_alias, open_files
from node.ingest.records import RawFields, RawRecord, Tagged, ValidatedRow
from node.ingest.storage import RecordStore
from node.ingest.validate import UNKNOWN_KIND, RecordError, RecordInvalid, Validator, canonical_field, record_key

if TYPE_CHECKING:
    from node.app import Node
    from node.domain import WorkCalendar

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]

_MAX_ATTEMPTS = 5
_RETRY_PAUSE_SECONDS = 0.2
# Processing phases of a batch: dependencies first. Special procedures start and end in one phase, in input order,
# because an end closes whichever procedure is open at that moment.
_PHASES: tuple[tuple[str, ...], ...] = (
    ("item",),
    ("acceptance",),
    ("procedure_start", "procedure_end"),
    ("step",),
    ("payment",),
    ("completion",),
    ("evaluation",),
    ("complaint",),
)
_PHASE_OF: dict[str, int] = {kind: index for index, kinds in enumerate(_PHASES) for kind in kinds}
assert set(_PHASE_OF) == set(KIND_ORDER)


# -- garbage collection ------------------------------------------------------------------------------------------
class _GcPause:
    """Pause the cyclic garbage collector while batches are processed (nested and concurrent batches share it).

    A batch allocates hundreds of thousands of small dicts and tuples that all live until it commits: the collector
    would run its full passes over them again and again (about a tenth of the import's CPU) and free nothing, since
    they hold no reference cycles; plain reference counting frees them when the batch ends. The previous state is
    restored when the last concurrent batch ends, so a collection then catches up on anything cyclic.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._was_enabled = False

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._depth == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0 and self._was_enabled:
                    gc.enable()


_gc_paused = _GcPause()


class Importer:
    """Validates and stores records of every kind; one instance may serve many imports (gRPC ingest keeps one)."""

    def __init__(
        self,
        node: Node,
        *,
        listeners: Sequence[IngestListener] = (),
        batch_size: int | None = None,
        max_errors: int = 10_000,
    ) -> None:
        self.node = node
        self._engine = node.engine
        self._validator = Validator(node.tz)
        self._store = RecordStore(node.engine, listeners)
        self._handlers = KindHandlers(self._store, Deadlines(node)).by_kind
        self._batch_size = batch_size or node.config.store.batch_size
        self._max_errors = max_errors
        self._clock_skew = timedelta(seconds=node.config.ingest.clock_skew_seconds)
        dbapi = node.engine.dialect.loaded_dbapi
        # The bulk paths use the driver's cursor, so its own exception classes arrive unwrapped.
        self._retryable: tuple[type[BaseException], ...] = (
            IntegrityError,
            OperationalError,
            dbapi.IntegrityError,
            dbapi.OperationalError,
        )
        self._database_errors: tuple[type[BaseException], ...] = (DBAPIError, dbapi.Error)

    @property
    def calendar(self) -> WorkCalendar:
        """The node's working-day calendar."""
        return self.node.calendar

    # -- public API --------------------------------------------------------------------------------------------
    def import_records(
        self,
        records: Iterable[tuple[str, int, Mapping[str, Any]]],
        *,
        source: str = "grpc",
        on_outcome: OutcomeCallback | None = None,
    ) -> ImportSummary:
        """Import (kind, line, fields) records; fields may use English or GB/T Chinese names, values text or JSON."""
        summary = ImportSummary()
        started = time.perf_counter()
        self._run(source, self._normalized(source, records), summary, on_outcome, None)
        summary.seconds = time.perf_counter() - started
        return summary

    def import_files(
        self,
        paths: Sequence[Path | str],
        *,
        kind: str | None = None,
        encoding: str = "auto",
        delimiter: str | None = None,
        progress: ProgressCallback | None = None,
        on_outcome: OutcomeCallback | None = None,
        actor: str | None = None,
    ) -> ImportSummary:
        """Import CSV / JSON Lines / .xlsx files (all checked first, taken in KIND_ORDER); progress gets (done, total).

        ``delimiter`` splits CSV fields (default: the config's ``ingest.csv_delimiter``).

        With ``actor``, the import is audited (module docstring), also when it stops on an error.
        """
        if delimiter is None:
            delimiter = self.node.config.ingest.csv_delimiter
        readers = open_files([Path(path) for path in paths], kind=kind, encoding=encoding, delimiter=delimiter)
        summary = ImportSummary()
        started = time.perf_counter()
        total = sum(reader.size for reader in readers)
        done_before = 0
        for reader in readers:
            entry: ImportedFile = {
                "path": str(reader.path),
                "format": reader.format,
                "encoding": reader.resolved_encoding,
                "kind": reader.primary_kind,
                "bytes": reader.size,
                "sha256": file_sha256(reader.path),
            }
            if reader.sheet is not None:
                entry["sheet"] = reader.sheet
            summary.files.append(entry)
        try:
            for reader in readers:

                def report(current: FileReader = reader, offset: int = done_before) -> None:
                    if progress is not None:
                        progress(offset + current.bytes_read, total)

                self._run(reader.source, iter(reader), summary, on_outcome, report)
                summary.warnings.extend(reader.warnings)
                done_before += reader.size
                if progress is not None:
                    progress(done_before, total)
        except BaseException as exc:
            summary.seconds = time.perf_counter() - started
            if actor is not None:
                self._audit_failed(actor, summary, exc)
            raise
        summary.seconds = time.perf_counter() - started
        if actor is not None:
            audit_import(self._engine, actor, summary)
        log.info(
            "import of %s file(s): %s accepted, %s duplicates, %s rejected in %.1f s",
            len(readers),
            summary.accepted,
            summary.duplicates,
            summary.rejected,
            summary.seconds,
        )
        return summary

    def _audit_failed(self, actor: str, summary: ImportSummary, exc: BaseException) -> None:
        """Audit an import that stopped; the error that stopped it wins over one met while auditing."""
        why = exc.message if isinstance(exc, StoreError) else (str(exc) or type(exc).__name__)
        try:
            audit_import(self._engine, actor, summary, error=why)
        except Exception as audit_error:  # the database that failed the import may fail this too
            log.warning("import stopped (%s) and could not be audited: %s", why, audit_error)

    # -- pipeline ----------------------------------------------------------------------------------------------
    def _normalized(self, source: str, records: Iterable[tuple[str, int, Mapping[str, Any]]]) -> Iterator[RawRecord]:
        for kind_name, line, fields in records:
            kind = kind_from_alias(kind_name)
            if kind is None:
                error = RecordError(
                    source, line, str(kind_name), "kind", UNKNOWN_KIND, f"unknown record kind {kind_name!r}"
                )
                yield str(kind_name), line, error
                continue
            names = FIELD_NAMES[kind]
            if all(key in names for key in fields):
                yield kind, line, dict(fields)
            else:
                mapped: RawFields = {}
                for key, value in fields.items():
                    mapped[canonical_field(key) or key] = value
                yield kind, line, mapped

    def _run(
        self,
        source: str,
        records: Iterator[RawRecord],
        summary: ImportSummary,
        on_outcome: OutcomeCallback | None,
        after_batch: Callable[[], None] | None,
    ) -> None:
        batch: list[RawRecord] = []
        for record in records:
            batch.append(record)
            if len(batch) >= self._batch_size:
                self._process(source, batch, summary, on_outcome)
                batch = []
                if after_batch is not None:
                    after_batch()
        if batch:
            self._process(source, batch, summary, on_outcome)
            if after_batch is not None:
                after_batch()

    def _process(
        self, source: str, batch: list[RawRecord], summary: ImportSummary, on_outcome: OutcomeCallback | None
    ) -> None:
        """Validate a batch, then store it in one transaction (retried whole if a concurrent writer collides)."""
        with _gc_paused():
            self._process_batch(source, batch, summary, on_outcome)

    def _process_batch(
        self, source: str, batch: list[RawRecord], summary: ImportSummary, on_outcome: OutcomeCallback | None
    ) -> None:
        early_errors: list[RecordError] = []
        phases: list[list[Tagged[ValidatedRow]]] = [[] for _ in _PHASES]
        validate = self._validator.validate
        for kind, line, fields in batch:
            if isinstance(fields, RecordError):
                early_errors.append(fields)
                continue
            try:
                row = validate(kind, fields)
            except RecordInvalid as invalid:
                early_errors.append(
                    RecordError(
                        source, line, kind, invalid.field, invalid.reason, invalid.message, record_key(kind, fields)
                    )
                )
                continue
            phases[_PHASE_OF[kind]].append((line, kind, row))
        first_line, last_line = batch[0][1], batch[-1][1]
        attempt = 0
        while True:
            attempt += 1
            try:
                with self._engine.begin() as conn:
                    self._store.backend.begin_batch(conn)
                    context = BatchContext(
                        conn, source, self.node.now(), on_outcome is not None, clock_skew=self._clock_skew
                    )
                    for error in early_errors:
                        context.reject_error(error)
                    for index, pending in enumerate(phases):
                        if pending:
                            self._handlers[_PHASES[index][0]](context, pending)
                    crash_point("import.batch_stored")
                crash_point("import.batch_committed")
                break
            except self._retryable as exc:
                if is_storage_full(exc):
                    raise _storage_full(source, first_line, last_line, exc) from exc
                # Another writer stored one of our keys (or held the SQLite lock) between our check and our write:
                # the whole batch rolled back, so run it again and the re-check sees the other writer's rows.
                cause = getattr(exc, "orig", None) or exc
                if attempt == _MAX_ATTEMPTS:
                    raise StoreError(
                        f"{source} lines {first_line}-{last_line}: batch failed {attempt} times: {cause}"
                    ) from exc
                log.warning(
                    "%s lines %s-%s: batch collided with another writer (%s); retrying",
                    source,
                    first_line,
                    last_line,
                    cause,
                )
                time.sleep(_RETRY_PAUSE_SECONDS * attempt)
            except self._database_errors as exc:
                if is_storage_full(exc):
                    raise _storage_full(source, first_line, last_line, exc) from exc
                cause = getattr(exc, "orig", None) or exc
                raise StoreError(f"{source} lines {first_line}-{last_line}: database error: {cause}") from exc
        self._merge(context, summary, on_outcome)

    def _merge(self, context: BatchContext, summary: ImportSummary, on_outcome: OutcomeCallback | None) -> None:
        self._store.remember_items(context.new_items)
        for kind, counts in context.counts.items():
            summary.by_kind.setdefault(kind, Counter()).update(counts)
            summary.accepted += counts["accepted"]
            summary.duplicates += counts["duplicates"]
            summary.rejected += counts["rejected"]
        for error in sorted(context.errors, key=lambda e: e.line):
            summary.rejected_by_reason[error.reason] += 1
            if len(summary.errors) < self._max_errors:
                summary.errors.append(error)
            else:
                summary.errors_omitted += 1
        if on_outcome is not None:
            for outcome in sorted(context.outcomes, key=lambda o: o.line):
                on_outcome(outcome)


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, hex (what the import audit records for each file)."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


_TARGET_NAMES = 10


def import_counts(summary: ImportSummary) -> dict[str, Any]:
    """The counts an import audit entry records (also the gRPC ingest stream's)."""
    return {
        "records": summary.records,
        "accepted": summary.accepted,
        "duplicates": summary.duplicates,
        "rejected": summary.rejected,
        "by_kind": {kind: dict(counts) for kind, counts in sorted(summary.by_kind.items())},
        "rejected_by_reason": dict(sorted(summary.rejected_by_reason.items())),
    }


def audit_import(engine: Engine, actor: str, summary: ImportSummary, *, error: str | None = None) -> int:
    """Append the ``records.imported`` entry of a file import (files with SHA-256, counts, who); returns its seq."""
    # A workbook is listed once per sheet: named once.
    names = list(dict.fromkeys(Path(entry["path"]).name for entry in summary.files))
    target = ", ".join(names[:_TARGET_NAMES]) + (f" (+{len(names) - _TARGET_NAMES} more)" if len(names) > 10 else "")
    detail: dict[str, Any] = {
        "files": [
            {"path": entry["path"], "bytes": entry["bytes"], "sha256": entry["sha256"], "kind": entry["kind"]}
            | ({"sheet": entry["sheet"]} if "sheet" in entry else {})
            for entry in summary.files
        ],
        **import_counts(summary),
        "seconds": round(summary.seconds, 3),
    }
    if error is not None:
        detail["error"] = error
    return AuditLog(engine).record(
        actor=actor,
        action=Action.RECORDS_IMPORTED,
        target=target,
        detail=detail,
        result=AuditResult.OK if error is None else AuditResult.ERROR,
    )


__all__ = [
    "ImportSummary",
    "Importer",
    "OutcomeCallback",
    "ProgressCallback",
    "RecordError",
    "RecordOutcome",
    "audit_import",
    "file_sha256",
    "import_counts",
]


def _storage_full(source: str, first_line: int, last_line: int, cause: BaseException) -> StorageFullError:
    # Not a collision to retry: no retry frees space. The batch rolled back whole; earlier batches are stored.
    log.error("%s lines %s-%s: the database or disk is full (%s)", source, first_line, last_line, cause)
    return StorageFullError(
        f"{source} lines {first_line}-{last_line}: not stored, the database or disk is full (数据库或磁盘已满); "
        "nothing of these lines was written and the records before them are stored. Free space, then run the same "
        "import again (records already stored are recognised)"
    )
