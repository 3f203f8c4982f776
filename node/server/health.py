"""Readiness of a serving node: gRPC health statuses re-evaluated every few seconds from what the node needs.

===================================  ====================================================================
health service name                  NOT_SERVING while
===================================  ====================================================================
"" (the node), NodeService,          the database cannot be read; the revocation list (pki/crl.pem) is
IngestService                        unusable or past its next-update time (every peer would be refused,
                                     or accepted against stale revocations)
``supnet.reports``                   upward reporting: the database cannot be read, or the report outbox
                                     is full (the parent has not acknowledged federation.outbox_max_reports
                                     reports; new ones are refused until it does)
===================================  ====================================================================

A full outbox leaves the node SERVING: it still takes its children's reports, answers queries and ingests,
and restarting it would not make the parent acknowledge. Probes that care about reporting ask for
``supnet.reports`` (``supnet health --service supnet.reports``). On SQLite the database and outbox are read again
only when the database files changed (``node.store.ChangeWatch``) or ``DATABASE_RECHECK_SECONDS`` passed: a host
evaluates hundreds of nodes every few seconds, and an idle node's answer cannot change without a write. On
shutdown every name goes NOT_SERVING first (NodeServer.stop). A change of status is logged (WARNING with the
reason, INFO when it recovers) and shown as ``supnet_health_serving{service}``.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from sqlalchemy.exc import SQLAlchemyError

from node.errors import SupnetError
from node.reporting import node_outbox
from node.store import ChangeWatch
from node.trust import PkiDirectory, node_channel

if TYPE_CHECKING:
    from node.app import Node
    from node.observability import NodeMetrics
    from node.trust import NodeTrust

log = logging.getLogger(__name__)

REPORTS_SERVICE = "supnet.reports"
OVERALL = health.OVERALL_HEALTH
HEALTH_INTERVAL_SECONDS = 5.0
# On SQLite, the database is read at least this often even when its files show no change (see the docstring).
DATABASE_RECHECK_SECONDS = 60.0
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass(frozen=True)
class HealthState:
    """One evaluation: each problem ("" when fine) and the statuses that follow from them."""

    database: str = ""
    crl: str = ""
    outbox: str = ""

    @property
    def serving(self) -> bool:
        """The node (overall, NodeService, IngestService) can serve."""
        return not self.database and not self.crl

    @property
    def reporting(self) -> bool:
        """Upward reporting works (``supnet.reports``)."""
        return not self.database and not self.outbox

    def problems(self) -> list[str]:
        """What is wrong, in words."""
        return [problem for problem in (self.database, self.crl, self.outbox) if problem]


class HealthMonitor:
    """Sets the health servicer's statuses from the node's state; ``start()`` evaluates, then every ``interval``."""

    def __init__(
        self,
        node: Node,
        servicer: Any,
        *,
        services: Sequence[str],
        trust: NodeTrust | None = None,
        metrics: NodeMetrics | None = None,
        interval: float = HEALTH_INTERVAL_SECONDS,
    ) -> None:
        self._node = node
        self._servicer = servicer
        self._services = [OVERALL, *services]
        self._trust = trust
        self._metrics = metrics
        self._interval = interval
        self._outbox = node_outbox(node)
        self._watch = ChangeWatch(node.engine, recheck_seconds=DATABASE_RECHECK_SECONDS)
        self._pending: int | None = None  # the outbox's pending count at the last good read
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.state: HealthState | None = None
        self._crl_seen: tuple[tuple[int, int, int], dt.datetime | None] | None = None
        servicer.set(REPORTS_SERVICE, SERVING)

    def check(self) -> HealthState:
        """Look at the database, the outbox and the revocation list now."""
        database, outbox = "", ""
        # changed() first, always: it is also what keeps the files' stamp current.
        pending = self._pending if not self._watch.changed() else None
        try:
            if pending is None:
                with self._node.engine.connect() as conn:
                    pending = self._outbox.pending_count(conn)
        except SQLAlchemyError as error:
            database = f"the database cannot be read: {type(error).__name__}: {str(error).splitlines()[0]}"
            self._pending = None  # read again at the next check, whatever the files say
        else:
            self._pending = pending
            if self._node.config.federation.parent_address and pending >= self._outbox.max_pending:
                outbox = (
                    f"the report outbox is full: {pending} reports await the parent's acknowledgement "
                    f"(federation.outbox_max_reports = {self._outbox.max_pending})"
                )
        return HealthState(database=database, crl=self._crl_problem(), outbox=outbox)

    def _crl_problem(self) -> str:
        if self._trust is None:
            return ""
        try:
            self._trust.revoked()  # fails closed on an unreadable or forged crl.pem
            path = self._trust.pki.file("crl.pem")
            if not path.exists():
                return ""
            next_update = self._crl_next_update(path)
        except SupnetError as error:
            return error.message
        now = self._node.now().replace(tzinfo=self._node.tz).astimezone(dt.UTC)
        if next_update is not None and now > next_update:
            return (
                f"revocation list {path} expired at {next_update.astimezone(self._node.tz).isoformat()} (its "
                "next update): supnet serve's certificate_renewal job re-signs it at start and daily; see its log"
            )
        return ""

    def _crl_next_update(self, path: Path) -> dt.datetime | None:
        # Parsed again only when the file changes: a host checks hundreds of nodes every few seconds.
        info = path.stat()
        stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
        if self._crl_seen is None or self._crl_seen[0] != stamp:
            assert self._trust is not None
            self._crl_seen = (stamp, self._trust.pki.load_crl().next_update_utc)
        return self._crl_seen[1]

    def evaluate(self) -> HealthState:
        """Check and set every status; a change is logged."""
        state = self.check()
        previous, self.state = self.state, state
        if previous == state:
            return state  # statuses and gauges already say so (the usual idle pass)
        statuses = {name: state.serving for name in self._services}
        statuses[REPORTS_SERVICE] = state.reporting
        for name, ok in statuses.items():
            self._servicer.set(name, SERVING if ok else NOT_SERVING)
            if self._metrics is not None:
                self._metrics.health.labels(name or "overall").set(1 if ok else 0)
        node_id = self._node.config.id
        if previous is None or previous.problems() != state.problems():
            if state.problems():
                log.warning(
                    "node %s health: %s (NOT_SERVING: %s)",
                    node_id,
                    "; ".join(state.problems()),
                    ", ".join(name or '""' for name, ok in statuses.items() if not ok),
                )
            elif previous is not None:
                log.info("node %s health: SERVING again", node_id)
        return state

    @property
    def interval(self) -> float:
        """Seconds between evaluations."""
        return self._interval

    def start(self, *, background: bool = True) -> None:
        """Evaluate now, then (``background``) every ``interval`` seconds in a daemon thread.

        Without ``background`` the caller re-evaluates (a host's scheduler job calls ``evaluate``).
        """
        self.evaluate()
        if self._thread is not None or not background:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name=f"health-{self._node.config.id}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.wait(self._interval):
            try:
                self.evaluate()
            except Exception:
                # A bad moment must not end the checks; the next one decides again.
                log.exception("health check of node %s failed; trying again", self._node.config.id)

    def stop(self) -> None:
        """Stop re-evaluating (the statuses stay as they are)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None


PROBE_STATES = ("SERVING", "NOT_SERVING", "SERVICE_UNKNOWN", "UNKNOWN", "UNREACHABLE")


def probe_health(
    address: str, node_id: str, pki: PkiDirectory | None, *, service: str = "", timeout: float = 3.0
) -> tuple[str, str]:
    """(state, detail) of a node's health for ``service``: one of PROBE_STATES.

    With ``pki`` (the node's own directory) the probe presents the node's own TLS certificate and accepts only
    ``node_id``'s; without, plaintext (the insecure plaintext mode). Own credentials that cannot be used (expired,
    corrupt) raise their error, naming the file and how to renew it.
    """
    with node_channel(pki, address, node_id) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError as error:
            code = error.code() if isinstance(error, grpc.Call) else None
            if code == grpc.StatusCode.NOT_FOUND:
                return "SERVICE_UNKNOWN", f"{node_id} has no health status for {service!r}"
            details = error.details() if isinstance(error, grpc.Call) else str(error)
            return "UNREACHABLE", f"{node_id} at {address}: {code.name if code else 'error'}: {details}"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status), ""
