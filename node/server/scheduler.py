"""The periodic jobs of a serving node, run by an APScheduler BackgroundScheduler built from config.

Jobs (ids are stable; intervals come from the node config):

=====================  =====================================================  ====================================
job id                 what                                                   interval
=====================  =====================================================  ====================================
scheduled_report       build the incremental report (also the heartbeat)      federation.report_interval_seconds
full_report            build the full report over the window (heals drift)    federation.full_report_interval_seconds
staleness_check        children silent too long: stale alert                  federation.report_interval_seconds
rule_scan              rule scan (cases overdue with no new event), at start  supervision.scan_interval_seconds
notification_dispatch  turn alerts into notifications, deliver due ones       notifications.dispatch_interval_seconds
certificate_renewal    warn of expiring certificates, re-issue own leaves,    daily, at start (only with pki/)
                       refresh the CRL (federation.renew_before_days ahead)
enrolment_listener     close the enrolment listener when no token is live     60 s (only with a CA; added by
                       any more (node.server.enrolment_gate)                  ServingNode)
=====================  =====================================================  ====================================

Delivering the outbox is not a job here: the report jobs build and wake the ReportSender's loop
(node.reporting.sender), the one timer that sends due reports and retries them at the outbox's backoff. So a
scheduler given a sender delivers only once that sender is started (ServingNode starts it before the scheduler).

Jobs are plain callables in a memory job store (nothing pickled); each runs at most once at a time and
missed runs are coalesced. A failing job is logged and tried again at its next run.

Hosted nodes (node.server.hosting) share one host scheduler: each node's jobs are added to it under
``<node id>/<job id>`` (each with the node's own time zone and intervals, first runs spread by the host), and
stopping a node removes only its jobs. The host runs one ``health_check`` job for all its nodes.

On SQLite, ``notification_dispatch`` reads the database only when its files changed, notifications are pending,
or DISPATCH_RECHECK_SECONDS passed: with nothing new there is nothing to enqueue, deliver or settle.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler

from node.store import ChangeWatch

if TYPE_CHECKING:
    from node.app import Node
    from node.reporting import ReportSender

log = logging.getLogger(__name__)

CERTIFICATE_RENEWAL_SECONDS = 86400.0
# notification_dispatch runs at least this often when the database shows no change (see the docstring).
DISPATCH_RECHECK_SECONDS = 60.0


@dataclass(frozen=True)
class JobSpec:
    """One periodic job: a stable id, the callable and its interval."""

    job_id: str
    func: Callable[[], Any]
    seconds: float
    first_run_delay: float | None = None


class NodeScheduler:
    """Wraps a BackgroundScheduler holding the node's periodic jobs; ``start()`` / ``stop()``."""

    def __init__(
        self,
        node: Node,
        *,
        sender: ReportSender | None = None,
        scan: Callable[[], Any] | None = None,
        dispatch: Callable[[], Any] | None = None,
        shared: BackgroundScheduler | None = None,
        extra_jobs: tuple[JobSpec, ...] = (),
        start_offset: float = 0.0,
    ) -> None:
        """``start_offset``: seconds added to every job's first run (a host spreads its nodes' start-up work)."""
        self._node = node
        self._sender = sender
        self._scan = scan
        self._dispatch = dispatch
        self._extra_jobs = extra_jobs
        # A shared scheduler belongs to the host: started and shut down there; ids carry the node's id.
        self._owns_scheduler = shared is None
        self._scheduler = shared or BackgroundScheduler(timezone=node.config.calendar.timezone)
        self._prefix = "" if shared is None else f"{node.config.id}/"
        self._start_offset = start_offset
        self._started = False
        self._dispatch_watch: ChangeWatch | None = None
        self._notifications_pending = 0

    def job_specs(self) -> list[JobSpec]:
        """The jobs this node runs, from its config (only the ones whose parts exist)."""
        config = self._node.config
        federation = config.federation
        specs: list[JobSpec] = []
        if self._sender is not None and federation.parent_address:
            sender = self._sender
            specs += [
                # The first report goes out right away so a freshly started tree rolls up without waiting.
                JobSpec("scheduled_report", sender.scheduled_report, federation.report_interval_seconds, 0.0),
                JobSpec("full_report", sender.scheduled_full_report, federation.full_report_interval_seconds),
            ]
        if federation.children:
            specs.append(JobSpec("staleness_check", self._check_staleness, federation.report_interval_seconds))
        # The first scan runs at start: cases that fell overdue while the node was down get their cards now.
        specs.append(JobSpec("rule_scan", self._scan or self._run_scan, config.supervision.scan_interval_seconds, 0.0))
        specs.append(
            JobSpec(
                "notification_dispatch",
                self._dispatch or self._run_dispatch,
                config.notifications.dispatch_interval_seconds,
            )
        )
        spotcheck = config.spotcheck
        if spotcheck.interval_seconds > 0 and federation.children:
            specs.append(JobSpec("spot_check", self._spot_check, spotcheck.interval_seconds))
        if (self._node.data_dir / "pki").is_dir():
            # At start too: a node restarted after weeks down renews (or warns) before anything else expires.
            specs.append(JobSpec("certificate_renewal", self._renew_certificates, CERTIFICATE_RENEWAL_SECONDS, 0.0))
        return [*specs, *self._extra_jobs]

    def _renew_certificates(self) -> None:
        from node.notify import NoticeKind, notify_operators
        from node.trust import renew_certificates

        renew_before = timedelta(days=self._node.config.federation.renew_before_days)
        result = renew_certificates(self._node.data_dir, renew_before=renew_before)
        # Leaves this node renews itself need nobody; what it cannot renew (its CA, or no CA key) needs a person.
        if result.ca_warnings:
            notify_operators(
                self._node,
                NoticeKind.CERTIFICATE,
                "certificates",
                "certificates expire soon and this node cannot renew them itself",
                "\n".join([*result.ca_warnings, *result.warnings]),
            )

    def _spot_check(self) -> None:
        import random
        from datetime import timedelta as days

        from node.audit_log import system_actor
        from node.drilldown import DrilldownAsker, DrilldownClient
        from node.errors import SupnetError
        from node.spotcheck import pick_targets, record_failure, record_result, run_spot_check

        node, config = self._node, self._node.config.spotcheck
        rng = random.SystemRandom()  # unpredictable to the targets: never seeded
        today = node.now().date()
        children = [child.id for child in node.config.federation.children]
        with DrilldownClient.for_node(node) as client:
            for target in pick_targets(children, config.targets_per_run, rng):
                try:
                    result = run_spot_check(
                        DrilldownAsker(client),
                        target,
                        node.calendar,
                        rng,
                        samples=config.samples,
                        pairs=config.pairs,
                        day_from=today - days(days=config.days),
                        day_to=today,
                    )
                except SupnetError as exc:  # on record, and the other targets are still checked
                    record_failure(node, target, exc, system_actor(node.config.id))
                    continue
                if result is not None:
                    record_result(node, result, system_actor(node.config.id))

    def _check_staleness(self) -> None:
        from node.reporting import check_children_staleness

        check_children_staleness(self._node)

    def _run_scan(self) -> None:
        from node.supervision import run_scan

        run_scan(self._node)
        if self._sender is not None:
            # Cards raised by the scan change the counters the parent sees.
            self._sender.notify_change()

    def _run_dispatch(self) -> None:
        from node.notify import NotificationDispatcher

        if self._dispatch_watch is None:
            self._dispatch_watch = ChangeWatch(self._node.engine, recheck_seconds=DISPATCH_RECHECK_SECONDS)
        # changed() first, always: it also keeps the files' stamp current. Pending notifications are retried on time.
        if not self._dispatch_watch.changed() and not self._notifications_pending:
            return
        self._notifications_pending = NotificationDispatcher(self._node).run_once().pending

    def _guarded(self, spec: JobSpec) -> Callable[[], None]:
        node_id = self._node.config.id

        def run() -> None:
            try:
                spec.func()
            except Exception:
                log.exception("job %s of node %s failed; it runs again in %.0f s", spec.job_id, node_id, spec.seconds)

        return run

    def start(self) -> None:
        """Add the jobs from config and start the background scheduler."""
        if self._started:
            return
        zone = self._node.config.calendar.timezone
        now = datetime.now(ZoneInfo(zone))
        for spec in self.job_specs():
            delay = (spec.seconds if spec.first_run_delay is None else spec.first_run_delay) + self._start_offset
            self._scheduler.add_job(
                self._guarded(spec),
                "interval",
                seconds=spec.seconds,
                timezone=zone,
                id=self._prefix + spec.job_id,
                name=self._prefix + spec.job_id,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=max(int(spec.seconds), 1),
                next_run_time=now + timedelta(seconds=delay),
            )
            log.info("node %s: job %s every %.1f s", self._node.config.id, spec.job_id, spec.seconds)
        if self._owns_scheduler:
            self._scheduler.start()
        self._started = True

    def job_ids(self) -> list[str]:
        """Ids of this node's scheduled jobs (after start), without the host's node prefix."""
        prefix = self._prefix
        return sorted(job.id[len(prefix) :] for job in self._scheduler.get_jobs() if job.id.startswith(prefix))

    def stop(self, wait: bool = True) -> None:
        """Stop scheduling; with ``wait`` let running jobs finish first (a shared scheduler: only remove ours)."""
        if not self._started:
            return
        self._started = False
        if self._owns_scheduler:
            self._scheduler.shutdown(wait=wait)
            return
        for job in self._scheduler.get_jobs():
            if job.id.startswith(self._prefix):
                with contextlib.suppress(JobLookupError):
                    job.remove()
