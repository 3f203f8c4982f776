"""Hosted nodes: one ``supnet serve`` process serving several nodes, each still a node of its own.

Each hosted node keeps everything that makes it a node: its data directory and database, its keys and
certificates (its own TLS identity on its own port), its config, report and directive senders, metrics registry
and health statuses. To its parent and its children it is indistinguishable from a standalone node.

What the nodes of one process share, so threads stay bounded however many nodes it hosts:

- one thread pool for every hosted node's gRPC calls (``rpc_workers``; the enrolment listeners, open only while a
  node holds a live token, use it too);
- one APScheduler for every hosted node's jobs (``job_workers`` threads), each job under ``<node id>/<job id>``
  with the node's own intervals and time zone. Each node's first runs come START_STAGGER_SECONDS after the
  previous node's, so a host that starts hundreds of nodes does not build their first reports and scans at once;
- one ``health_check`` job (``host/health_check``) that evaluates every hosted node's health in turn, instead of
  one job per node competing for the job threads;
- one Prometheus ``/metrics`` endpoint (node.observability.hosted) serving every hosted node's registry, each
  series labelled ``node`` with the node's id, instead of one HTTP server and one port per node. It listens on the
  host file's ``metrics_listen``; without a host file (``supnet serve -d a -d b``), on the first node's
  ``metrics.listen``. The nodes' own ``metrics.listen`` is not used while they are hosted.

Connections are not shared: every call presents the calling node's own client certificate, so a channel belongs
to one node. A report to a hosted parent and a drill-down or subtree search forwarded to a hosted child call that
node's servicer in process, presenting the caller's certificate chain (node.trust.local_calls); a directive goes over
loopback TLS like any call to another process. A drill-down arriving over gRPC holds one pool thread while the hops
below answer; the pool's threads are created only when needed, so a generous ``rpc_workers`` costs nothing idle.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from concurrent import futures
from pathlib import Path

from apscheduler.executors.pool import ThreadPoolExecutor as JobPool
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler

from node.app import Node
from node.config import HostConfig
from node.errors import ConfigError
from node.observability import MetricsServer, hosted_registry
from node.server.health import HEALTH_INTERVAL_SECONDS
from node.server.serving import ServingNode

log = logging.getLogger(__name__)

DEFAULT_RPC_WORKERS = HostConfig.model_fields["rpc_workers"].default
DEFAULT_JOB_WORKERS = HostConfig.model_fields["job_workers"].default
# Hosted nodes stop a few at a time: each waits for its in-flight calls (up to the grace) and its sender threads.
_STOP_PARALLEL = 16
# The n-th hosted node's jobs first run n times this much later than a standalone node's (85 nodes: over 17 s).
START_STAGGER_SECONDS = 0.2
HOST_HEALTH_JOB_ID = "host/health_check"


def check_distinct(nodes: Sequence[Node]) -> None:
    """ConfigError if two of the nodes are the same data directory or claim the same node id."""
    seen_dirs: dict[Path, str] = {}
    seen_ids: dict[str, Path] = {}
    for node in nodes:
        folder = node.data_dir.resolve()
        if folder in seen_dirs:
            raise ConfigError(f"data directory {node.data_dir} is listed twice for one host")
        if node.config.id in seen_ids:
            raise ConfigError(
                f"node id {node.config.id} is claimed by both {seen_ids[node.config.id]} and {node.data_dir}: "
                "every hosted node is a node of its own"
            )
        seen_dirs[folder] = node.config.id
        seen_ids[node.config.id] = node.data_dir


class NodeHost:
    """Several ServingNodes in one process on a shared call pool and a shared scheduler; start() / stop()."""

    def __init__(
        self,
        nodes: Sequence[Node],
        *,
        rpc_workers: int = DEFAULT_RPC_WORKERS,
        job_workers: int = DEFAULT_JOB_WORKERS,
        listen: dict[str, str] | None = None,
        metrics_listen: str | None = None,
    ) -> None:
        """``listen`` (node id -> host:port) overrides a node's federation.listen (tests bind port 0).

        ``metrics_listen`` is where the host's one /metrics listens (empty: none; None: the first node's
        metrics.listen, what ``supnet serve -d a -d b`` without a host file uses).
        """
        if not nodes:
            raise ConfigError("a host needs at least one node (--data-dir, or data_dirs in the host config)")
        check_distinct(nodes)
        self.rpc_workers = rpc_workers
        self.executor = futures.ThreadPoolExecutor(max_workers=rpc_workers, thread_name_prefix="rpc-host")
        self.scheduler = BackgroundScheduler(executors={"default": JobPool(max_workers=job_workers)})
        overrides = listen or {}
        self.members: dict[str, ServingNode] = {
            node.config.id: ServingNode(
                node,
                listen=overrides.get(node.config.id),
                executor=self.executor,
                scheduler=self.scheduler,
                start_offset=index * START_STAGGER_SECONDS,
                metrics_endpoint=False,
            )
            for index, node in enumerate(nodes)
        }
        if metrics_listen is None:
            metrics_listen = nodes[0].config.metrics.listen
        registries = {node_id: member.metrics.registry for node_id, member in self.members.items()}
        self.metrics_server = (
            MetricsServer(
                hosted_registry(registries),
                metrics_listen,
                owner=f"host of {len(nodes)} nodes",
                setting="metrics_listen of the host, or the first node's metrics.listen",
            )
            if metrics_listen
            else None
        )
        self._started: list[ServingNode] = []

    def start(self) -> dict[str, int]:
        """Start the scheduler, then every node (node id -> bound port).

        A node that cannot start stops the ones already started and raises: a host serves all its nodes or none,
        as a standalone ``supnet serve`` serves its node or exits.
        """
        self.scheduler.start()
        ports: dict[str, int] = {}
        try:
            for node_id, member in self.members.items():
                ports[node_id] = member.start()
                self._started.append(member)
            if self.metrics_server is not None:
                self.metrics_server.start()
        except BaseException:
            self.stop(0.0)
            raise
        # Each node's health was evaluated as it started; from here on, one job re-evaluates them all.
        self.scheduler.add_job(
            self._evaluate_health,
            "interval",
            seconds=HEALTH_INTERVAL_SECONDS,
            id=HOST_HEALTH_JOB_ID,
            name=HOST_HEALTH_JOB_ID,
            max_instances=1,
            coalesce=True,
        )
        log.info("host serving %d nodes (shared: %d call threads)", len(ports), self.rpc_workers)
        return ports

    @property
    def metrics_address(self) -> str:
        """host:port of the host's /metrics once started ("" without an endpoint); every hosted node's serve.json."""
        if self.metrics_server is None or not self.metrics_server.port:
            return ""
        return self.metrics_server.bound_address

    def _evaluate_health(self) -> None:
        for member in list(self._started):
            try:
                member.server.health.evaluate()
            except Exception:
                # One node's bad moment must not end the checks of the others; the next run decides again.
                log.exception("health check of node %s failed; trying again", member.node.config.id)

    def stop(self, grace: float) -> None:
        """Stop every started node (a few at a time, each as a standalone node stops), then the shared pools."""
        started, self._started = self._started, []
        if self.metrics_server is not None:
            self.metrics_server.stop()
        with contextlib.suppress(JobLookupError):
            self.scheduler.remove_job(HOST_HEALTH_JOB_ID)
        if started:
            with futures.ThreadPoolExecutor(max_workers=_STOP_PARALLEL, thread_name_prefix="host-stop") as pool:
                for stopping in [pool.submit(member.stop, grace) for member in started]:
                    error = stopping.exception()
                    if error is not None:
                        log.error("a hosted node did not stop cleanly: %s", error)
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        self.executor.shutdown(wait=False)
