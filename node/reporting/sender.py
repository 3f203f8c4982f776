"""Delivery of the outbox to the parent over gRPC: ``ReportSender`` and its loop, the node's one delivery timer.

The loop sends whatever the outbox says is due (the outbox's backoff paces retries after a failure), looks at the
outbox at least every 1–5 s, and with ``federation.report_on_change`` polls the metric revision each second and
builds a debounced incremental report. Idle passes read no table unless the database files changed
(``node.store.ChangeWatch``), and a started loop does not even poll the files: the process's shared
``node.store.FileWatcher`` wakes it when they change, so an idle node's loop sleeps until its next due report (or
the watch's long recheck). The scheduler's report jobs only build, then
wake the loop.

A lasting failure is logged once at ERROR and its backed-off retries at WARNING: a refusal by the parent (each
report's retries follow the outbox's exponential backoff, capped at ``federation.retry_max_seconds``), and own
TLS credentials that cannot be used (then no report is attempted; the sender backs off the same way, and tries
again at once when the credential files change).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc

from federation import BackPressureError, IntegrityError, SupnetError, crash_point, short_hex, supnet_error_from_rpc
from federation.proto.v1.common_pb2 import SignedEnvelope
from federation.proto.v1.node_service_pb2_grpc import NodeServiceStub
from node.reporting.refusals import notice_refused_by_parent
from node.reporting.reports import ReportKindName, build_reports, node_outbox
from node.store import ChangeWatch, NextDue, current_revision
from node.trust import (
    LocalNodeService,
    LocalNodeStub,
    channel_to,
    client_certificates,
    credentials_stamp,
    local_servicer,
    pki_directory,
)

if TYPE_CHECKING:
    from node.app import Node

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SendResult:
    """What one ``send_pending`` pass did."""

    acked: int = 0
    failed: bool = False
    error: str = ""
    pending: int = 0


# With report_on_change, how often the sender looks for changes other processes wrote to the database.
CHANGE_POLL_SECONDS = 1.0
# The loop looks at the outbox at least every retry_base_seconds, kept within these bounds.
MIN_OUTBOX_CHECK_SECONDS = 1.0
MAX_OUTBOX_CHECK_SECONDS = 5.0


class ReportSender:
    """Delivers the outbox to the parent, oldest first; its background loop is the one delivery timer.

    ``start()`` runs a daemon thread that sends whatever is due (retries follow the outbox's backoff) and,
    when ``federation.report_on_change`` is on, builds an incremental report ``report_debounce_seconds``
    after the last ``notify_change()``. The scheduler's jobs ``scheduled_report`` and ``scheduled_full_report``
    build and wake the loop; ``report_now`` and ``send_pending`` deliver at once, on the caller's thread.
    A refused or undelivered report is recorded in the outbox, not raised.
    """

    def __init__(self, node: Node) -> None:
        self.node = node
        self._outbox = node_outbox(node)
        self._channel: grpc.Channel | None = None
        self._channel_stamp: object = None
        self._stub: NodeServiceStub | None = None
        self._send_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._changed_at: float | None = None
        self._seen_revision: int | None = None
        # Idle passes look at the database files, not the database (node.store.ChangeWatch); the outbox's next
        # due time is kept from the last real look.
        self._watch = ChangeWatch(node.engine)
        self._due = NextDue(node.engine, self._outbox.next_attempt_at, node.now)
        self._thread: threading.Thread | None = None
        # Unusable own credentials: how often in a row, when to try again (monotonic), the files' stamp then.
        self._credential_failures = 0
        self._credentials_retry_at = 0.0
        self._failed_stamp: object = None
        # The last failure logged at ERROR ("code: message"): its repeats are logged at WARNING until one succeeds.
        self._reported_failure = ""

    @property
    def parent_address(self) -> str:
        """The configured parent address ('' at the root)."""
        return self.node.config.federation.parent_address

    @property
    def parent_id(self) -> str:
        """The parent's node id (the identity its TLS certificate must name)."""
        return self.node.config.federation.parent_id or self.node.config.parent_id

    def _credentials_stamp(self) -> object:
        pki = pki_directory(self.node.data_dir)
        return credentials_stamp(pki)

    def _local_parent(self) -> LocalNodeService | None:
        """The parent's servicer when this same process serves it (node.trust.local_calls); None: over TLS."""
        return local_servicer(self.parent_id, self.parent_address) if self.parent_address else None

    @property
    def in_process(self) -> bool:
        """True while reports go to a parent served by this same process, not over TLS."""
        return self._local_parent() is not None

    def _stub_or_none(self) -> NodeServiceStub | LocalNodeStub | None:
        servicer = self._local_parent()
        if servicer is not None:
            self._reset_channel()  # one kept from before the parent was hosted here is done with
            return LocalNodeStub(servicer, client_certificates(self.node))
        if self._channel is not None and self._channel_stamp != self._credentials_stamp():
            # Our TLS files changed (rotation, renewal): the next report goes over a channel with the new ones.
            self._reset_channel()
        if self._stub is None:
            if self._channel is None:
                if not self.parent_address:
                    return None
                self._channel_stamp = self._credentials_stamp()
                # Mutual TLS accepting only the parent's certificate (plaintext only under the explicit switch).
                self._channel = channel_to(self.node, self.parent_address, self.parent_id)
            self._stub = NodeServiceStub(self._channel)
        return self._stub

    def _credentials_backing_off(self) -> bool:
        """True while own unusable credentials wait for their retry (new credential files end the wait)."""
        if not self._credential_failures or time.monotonic() >= self._credentials_retry_at:
            return False
        return self._credentials_stamp() == self._failed_stamp

    def _credentials_unusable(self, error: SupnetError) -> SendResult:
        """Own credentials are unusable (expired, missing, corrupt): nothing can be sent until an operator acts."""
        self._credential_failures += 1
        delay = self._outbox.backoff.delay(self._credential_failures).total_seconds()
        self._credentials_retry_at = time.monotonic() + delay
        self._failed_stamp = self._credentials_stamp()
        self._log_failure(
            f"{error.code}: {error.message}",
            "node %s cannot open a channel to its parent: [%s] %s; next try in %.0f s",
            self.node.config.id,
            error.code,
            error.message,
            delay,
        )
        return SendResult(failed=True, error=error.message)

    def _log_failure(self, failure: str, message: str, *args: object, level: int = logging.ERROR) -> None:
        """Log a failure at ``level`` the first time, its repeats (same code and message) at WARNING."""
        if failure == self._reported_failure:
            level = min(level, logging.WARNING)
        elif level >= logging.ERROR:
            self._reported_failure = failure
        log.log(level, message, *args)

    def send_pending(self) -> SendResult:
        """Send due reports oldest first until one fails; refusals and an unreachable parent are recorded."""
        if self._stopping.is_set():
            return SendResult()  # stopped: a late scheduler job must not open a new channel during shutdown
        if self._credentials_backing_off():
            return SendResult(failed=True, error="own TLS credentials unusable; backing off")
        try:
            stub = self._stub_or_none()
        except SupnetError as unusable:
            return self._credentials_unusable(unusable)
        if self._credential_failures:
            log.info("node %s: own TLS credentials usable again", self.node.config.id)
            self._credential_failures = 0
            self._reported_failure = ""
        if stub is None:
            return SendResult()
        timeout = self.node.config.federation.rpc_timeout_seconds
        acked = 0
        with self._send_lock:
            with self.node.engine.connect() as conn:
                due = self._outbox.due(conn, self.node.now())
            for entry in due:
                if self._stopping.is_set():
                    break
                envelope = SignedEnvelope.FromString(entry.envelope)
                try:
                    crash_point("send.before_call")
                    ack = stub.SubmitReport(envelope, timeout=timeout)
                    if ack.sequence != entry.sequence or ack.digest != entry.digest:
                        raise IntegrityError(
                            f"parent acknowledged #{ack.sequence} ({short_hex(ack.digest)}) for report "
                            f"#{entry.sequence} ({short_hex(entry.digest)})"
                        )
                except (grpc.RpcError, SupnetError) as failure:
                    error = (
                        supnet_error_from_rpc(failure, self.parent_address)
                        if isinstance(failure, grpc.RpcError)
                        else failure
                    )
                    if error.code == "UNAVAILABLE":
                        # A fresh channel on the next attempt: gRPC's own reconnect backoff (up to minutes)
                        # must not delay noticing that the parent is back; the outbox backoff paces retries.
                        self._reset_channel()
                    return self._record_failure(entry.sequence, error, acked)
                crash_point("send.acked_unmarked")
                with self.node.engine.begin() as conn:
                    acked += self._outbox.mark_acked(conn, entry.sequence, entry.digest, self.node.now())
                self._reported_failure = ""  # the next failure is news again
                log.info(
                    "report #%s of %s acknowledged by the parent (%s)",
                    entry.sequence,
                    self.node.config.id,
                    "stored" if ack.stored else "already stored",
                )
            with self.node.engine.begin() as conn:
                self._outbox.prune(conn)
                pending = self._outbox.pending_count(conn)
        return SendResult(acked=acked, pending=pending)

    def _reset_channel(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
            self._stub = None

    def _record_failure(self, sequence: int, error: SupnetError, acked: int) -> SendResult:
        with self.node.engine.begin() as conn:
            retry_at = self._outbox.mark_failed(conn, sequence, f"[{error.code}] {error.message}", self.node.now())
            pending = self._outbox.pending_count(conn)
        # A refusal (bad chain, unknown child) needs an operator, once; an unreachable parent only needs time.
        level = logging.WARNING if error.code in {"UNAVAILABLE", "BACK_PRESSURE"} else logging.ERROR
        self._log_failure(
            f"{error.code}: {error.message}",
            "report #%s of %s not delivered to %s: [%s] %s; retry at %s, %s pending",
            sequence,
            self.node.config.id,
            self.parent_address,
            error.code,
            error.message,
            retry_at,
            pending,
            level=level,
        )
        self._notice_refusal(error)
        return SendResult(acked=acked, failed=True, error=error.message, pending=pending)

    def _notice_refusal(self, error: SupnetError) -> None:
        # A refusal no retry heals (rewritten history, clock skew) needs this node's operators: tell them how.
        try:
            notice_refused_by_parent(self.node, error)
        except Exception:
            log.exception("node %s could not queue the operator notice of a refused report", self.node.config.id)

    def _build(self, kind: ReportKindName, *, only_if_changed: bool = False) -> None:
        """Build a report if there is room; a full outbox or a failed build is logged, not raised."""
        try:
            build_reports(self.node, kind, only_if_changed=only_if_changed)
        except BackPressureError:
            pass  # counted, logged and noticed by build_reports; still drain the outbox so room frees up
        except SupnetError as error:
            log.error("node %s could not build a %s report: [%s] %s", self.node.config.id, kind, error.code, error)

    def report_now(self, kind: ReportKindName = "incremental", *, only_if_changed: bool = False) -> SendResult:
        """Build a report (if there is room) and send everything due; delivery failures are recorded, not raised."""
        self._build(kind, only_if_changed=only_if_changed)
        return self.send_pending()

    def scheduled_report(self) -> None:
        """Scheduler job: the periodic incremental report (also the heartbeat); the loop delivers it at once."""
        self._build("incremental")
        self._wake.set()

    def scheduled_full_report(self) -> None:
        """Scheduler job: the periodic full report over the configured window; the loop delivers it at once."""
        self._build("full")
        self._wake.set()

    def notify_change(self) -> None:
        """Tell the sender local or child data changed; with report_on_change a report follows after the debounce."""
        if not self.node.config.federation.report_on_change:
            return
        self._changed_at = time.monotonic()
        self._wake.set()

    def start(self) -> None:
        """Start the background delivery loop (idempotent); reports built by the scheduler's jobs need it."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        self._watch.attach(self._wake.set)
        self._thread = threading.Thread(target=self._run, name=f"report-sender-{self.node.config.id}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop and close the channel to the parent; pending reports stay in the outbox."""
        self._stopping.set()
        self._watch.detach()
        self._wake.set()
        # Closing the channel first cancels an in-flight SubmitReport at once (it is recorded as a failed
        # attempt and retried after a restart) instead of holding shutdown for up to rpc_timeout_seconds. A report
        # delivered in process (a parent of the same host) has no channel: stop waits for the parent's commit.
        channel = self._channel  # read once: the loop may reset it meanwhile
        if channel is not None:
            channel.close()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        with self._send_lock:
            self._reset_channel()

    def _seconds_until_due(self, *, look: bool = True) -> float:
        """Seconds until the oldest pending report is due (0: now; infinity: nothing pending).

        ``look=False``: from the outbox as last read (the loop's idle passes, when nothing wrote to the database).
        While own credentials are unusable, not before their retry: a report never attempted is due at once,
        and the loop must not spin on it.
        """
        due = self._due.seconds(look=look)
        if self._credentials_backing_off():
            due = max(due, self._credentials_retry_at - time.monotonic())
        return due

    def _poll_revision(self) -> None:
        """Notice metric changes written by other processes on this database (``supnet import``, ``supnet scan``).

        In-process writers call ``notify_change``; a CLI import beside ``supnet serve`` can only be seen in the
        database. Our own changes are seen here too: harmless, the debounced report is built only if changed.
        """
        with self.node.engine.connect() as conn:
            revision = current_revision(conn)
        if self._seen_revision is not None and revision > self._seen_revision and self._changed_at is None:
            log.debug(
                "node %s: metric revision %s -> %s; report follows", self.node.config.id, self._seen_revision, revision
            )
            self._changed_at = time.monotonic()
        self._seen_revision = revision

    def _run(self) -> None:
        federation = self.node.config.federation
        debounce = federation.report_debounce_seconds
        on_change = federation.report_on_change
        # Also without a wake-up the loop looks at the outbox this often: a report queued or made due elsewhere
        # (``report_now`` on another thread, another process) is delivered, or retried at its backoff, in time.
        check_every = min(max(federation.retry_base_seconds, MIN_OUTBOX_CHECK_SECONDS), MAX_OUTBOX_CHECK_SECONDS)
        woken = True
        while not self._stopping.is_set():
            try:
                # Cleared before acting: a wake-up while this pass runs makes the next pass start at once.
                # stop() sets _stopping before waking us, so checking it after the clear loses no stop.
                self._wake.clear()
                if self._stopping.is_set():
                    break
                # A wake-up (a report built, a change notified) or a write seen in the files: read the database.
                look = self._watch.changed() or woken
                if on_change and look:
                    self._poll_revision()
                changed_at = self._changed_at
                acted = False
                if changed_at is not None and time.monotonic() - changed_at >= debounce:
                    self._changed_at = None
                    self.report_now("incremental", only_if_changed=True)
                    acted = True
                elif self._seconds_until_due(look=look) <= 0:
                    self.send_pending()
                    acted = True
                wait = self._seconds_until_due(look=acted)
                if self._watch.attached:
                    # Writes by anyone wake us through the FileWatcher: sleep until due, or the watch's recheck.
                    wait = min(wait, self._watch.seconds_to_recheck())
                else:
                    wait = min(wait, check_every, CHANGE_POLL_SECONDS if on_change else check_every)
                changed_at = self._changed_at
                if changed_at is not None:
                    wait = min(wait, max(changed_at + debounce - time.monotonic(), 0.0))
                woken = self._wake.wait(wait)
            except Exception:
                # The loop must survive a bad moment (database locked, parent gone); the outbox keeps the data.
                log.exception("report sender loop of %s failed; continuing", self.node.config.id)
                self._stopping.wait(1.0)
                woken = True
