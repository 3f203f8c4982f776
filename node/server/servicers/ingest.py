"""Ingest servicer: a bidirectional stream of records from business approval systems, answered record by record.

The same validation and storage as ``supnet import`` (node.ingest.importer). Records are gathered into small
batches (what has arrived within a few milliseconds, at most MAX_BATCH records); each batch is ONE
transaction and its answers are sent only after the commit, so a record answered ACCEPTED is durable. If
the stream breaks, nothing answered is lost; records not yet answered may or may not be stored, and
re-sending them is safe: a stored one comes back DUPLICATE.

Each stream is audited when it ends (``records.ingested``): the verified TLS identity of the caller, its address,
the counts (records, accepted, duplicates, rejected by kind and reason) and how the stream ended.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any

import grpc

from federation import AuditResult
from federation.proto.v1.ingest_pb2 import IngestOutcome, IngestRecord, IngestResult
from node.app import Node
from node.audit_log import Action, AuditLog
from node.errors import SupnetError
from node.ingest import Importer, ImportSummary, RecordOutcome, import_counts
from node.supervision import default_listeners
from node.trust import Authorizer

if TYPE_CHECKING:
    from node.observability import NodeMetrics

log = logging.getLogger(__name__)

MAX_BATCH = 500
# How long to wait for more records before committing what has arrived: short, so a client that waits
# for each answer is not slowed down, long enough to batch a client that streams.
LINGER_SECONDS = 0.005
# How often the handler re-checks that the call is still alive while the stream is idle.
IDLE_POLL_SECONDS = 0.5

_OUTCOMES = {
    "accepted": IngestOutcome.INGEST_OUTCOME_ACCEPTED,
    "duplicate": IngestOutcome.INGEST_OUTCOME_DUPLICATE,
    "rejected": IngestOutcome.INGEST_OUTCOME_REJECTED,
}


class _StreamEnd:
    """Sentinel put on the queue when the client half-closes or the stream fails."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


def _pump(requests: Iterator[IngestRecord], inbox: queue.Queue[IngestRecord | _StreamEnd]) -> None:
    try:
        for record in requests:
            inbox.put(record)
        inbox.put(_StreamEnd())
    except Exception as exc:  # a cancelled or broken stream surfaces here as an RpcError
        inbox.put(_StreamEnd(exc))


def _result_of(seq: int, outcome: RecordOutcome | None) -> IngestResult:
    if outcome is None:
        # Every record of a committed batch gets an outcome from the importer; this guards the contract.
        return IngestResult(
            seq=seq,
            outcome=IngestOutcome.INGEST_OUTCOME_REJECTED,
            reason="INTERNAL",
            message=f"record {seq}: no outcome was recorded; re-send it (a stored record comes back DUPLICATE)",
        )
    result = IngestResult(seq=seq, outcome=_OUTCOMES[outcome.status])
    if outcome.error is not None:
        error = outcome.error
        result.reason = error.reason.upper()
        result.field = error.field or ""
        key = f" {error.key}" if error.key else ""
        result.message = f"record {seq} ({error.kind}{key}): {error.message}"
    return result


class IngestServicer:
    """IngestService.Ingest: per-record ACCEPTED / DUPLICATE / REJECTED, durable before answered.

    An error raised while the response stream runs (refused credential, undecodable record) ends the stream
    with its status: the server's ErrorMappingInterceptor wraps the response iterator.
    """

    def __init__(
        self,
        node: Node,
        *,
        authorizer: Authorizer,
        on_accepted: Callable[[int], None] | None = None,
        metrics: NodeMetrics | None = None,
    ) -> None:
        self._node = node
        self._metrics = metrics
        self._authorizer = authorizer
        self._importer = Importer(node, listeners=default_listeners(node))
        # One importer, one writer at a time: SQLite has a single writer anyway, and batches stay whole.
        self._lock = threading.Lock()
        self._on_accepted = on_accepted

    def _audit_stream(self, peer: str, address: str, totals: ImportSummary, ended: str, started: float) -> None:
        """The stream's ``records.ingested`` entry; a failure to write it is logged, never raised into gRPC."""
        try:
            AuditLog(self._node.engine).record(
                actor=peer,
                action=Action.RECORDS_INGESTED,
                target=self._node.config.id,
                detail={
                    "peer_address": address,
                    **import_counts(totals),
                    "ended": ended,
                    "seconds": round(time.monotonic() - started, 3),
                },
                result=AuditResult.OK if ended == "completed" else AuditResult.ERROR,
            )
        except Exception as exc:
            log.warning("ingest stream from %s (%s) could not be audited: %s", peer, ended, exc)

    def _import_batch(self, batch: list[IngestRecord], peer: str, totals: ImportSummary) -> list[IngestResult]:
        outcomes: dict[int, RecordOutcome] = {}

        def remember(outcome: RecordOutcome) -> None:
            outcomes[outcome.line] = outcome

        # The importer's "line" is the position in this batch; the client's seq is echoed back.
        records: list[tuple[str, int, dict[str, Any]]] = [
            (record.kind, index, dict(record.fields)) for index, record in enumerate(batch, start=1)
        ]
        with self._lock:
            summary = self._importer.import_records(records, source=f"grpc:{peer}", on_outcome=remember)
        totals.accepted += summary.accepted
        totals.duplicates += summary.duplicates
        totals.rejected += summary.rejected
        totals.rejected_by_reason.update(summary.rejected_by_reason)
        for kind, counts in summary.by_kind.items():
            totals.by_kind.setdefault(kind, Counter()).update(counts)
        if self._metrics is not None:
            # Counted once the batch committed, one per record (a retried batch reports a record again).
            for outcome in outcomes.values():
                reason = outcome.error.reason if outcome.error is not None else ""
                self._metrics.record_ingested(outcome.kind, outcome.status, reason)
        if summary.accepted and self._on_accepted is not None:
            self._on_accepted(summary.accepted)
        return [_result_of(record.seq, outcomes.get(index)) for index, record in enumerate(batch, start=1)]

    def Ingest(  # noqa: N802
        self, request_iterator: Iterator[IngestRecord], context: grpc.ServicerContext
    ) -> Iterator[IngestResult]:
        """Stream of records in, one result per record out, in the order sent."""
        # Before reading a single record: only the node's ingest credential may write here.
        peer = self._authorizer.ingest(context)
        started = time.monotonic()
        totals = ImportSummary()
        ended = "cancelled"
        try:
            ended = yield from self._answer(request_iterator, context, peer, totals)
        except SupnetError as exc:
            ended = f"failed: [{exc.code}] {exc.message}"
            raise
        except Exception as exc:
            ended = f"failed: {type(exc).__name__}: {exc}"
            raise
        finally:
            # Also for a stream the client cancelled (GeneratorExit): what was answered is stored and counted.
            self._audit_stream(peer, context.peer(), totals, ended, started)

    def _answer(
        self, request_iterator: Iterator[IngestRecord], context: grpc.ServicerContext, peer: str, totals: ImportSummary
    ) -> Generator[IngestResult, None, str]:
        """Answer the stream batch by batch; returns how it ended (completed, or why not) for the audit entry."""
        how = "completed"
        inbox: queue.Queue[IngestRecord | _StreamEnd] = queue.Queue(maxsize=4 * MAX_BATCH)
        pump = threading.Thread(target=_pump, args=(request_iterator, inbox), name="ingest-pump", daemon=True)
        pump.start()
        answered = 0
        ended = False
        # A message that did not parse (federation.grpc_errors) ends the stream with INVALID_ARGUMENT once
        # the records before it are answered; a cancelled or broken stream just ends.
        failure: SupnetError | None = None
        while not ended:
            try:
                first = inbox.get(timeout=IDLE_POLL_SECONDS)
            except queue.Empty:
                if not context.is_active():
                    how = "cancelled: the client went away"
                    break
                continue
            if isinstance(first, _StreamEnd):
                ended = True
                if first.error is not None:
                    log.info("ingest stream from %s ended early: %s", peer, first.error)
                    failure = first.error if isinstance(first.error, SupnetError) else None
                    how = f"ended early: {first.error}"
                break
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    item = inbox.get(timeout=LINGER_SECONDS)
                except queue.Empty:
                    break
                if isinstance(item, _StreamEnd):
                    ended = True
                    if item.error is not None:
                        log.info("ingest stream from %s ended early: %s", peer, item.error)
                        failure = item.error if isinstance(item.error, SupnetError) else None
                        how = f"ended early: {item.error}"
                    break
                batch.append(item)
            results = self._import_batch(batch, peer, totals)
            answered += len(results)
            yield from results
        log.info("ingest stream from %s closed after %s records", peer, answered)
        if failure is not None:
            raise failure
        return how
