"""``supnet serve``: run a node's gRPC server and its scheduled jobs until SIGTERM or SIGINT.

Over mutual TLS when the node has TLS credentials in ``DATA_DIR/pki``; without them only with
``--insecure-plaintext`` (or ``federation.insecure_plaintext = true``), for local experiments.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer

from node.app import Node, open_node
from node.cli.common import DataDir, console, handle_errors
from node.errors import ConfigError
from node.run_state import pid_alive

log = logging.getLogger(__name__)

SERVE_STATE_FILE = "serve.json"


def serve_state_path(data_dir: Path) -> Path:
    """Where a serving node writes its pid and bound address (read by ``supnet query`` and the launcher)."""
    return data_dir / SERVE_STATE_FILE


def read_serve_state(data_dir: Path) -> dict[str, Any] | None:
    """The running server's state file, or None if the node does not seem to be serving."""
    path = serve_state_path(data_dir)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def local_server_address(data_dir: Path) -> str:
    """host:port of this data directory's running server; ConfigError telling how to start one if none."""
    state = read_serve_state(data_dir)
    if state is not None and isinstance(state.get("address"), str) and pid_alive(int(state.get("pid", 0))):
        return str(state["address"])
    raise ConfigError(
        f"no running server for {data_dir}: start it with 'supnet serve --data-dir {data_dir}' (or pass --address)"
    )


class ServingNode:
    """Everything ``supnet serve`` runs for one node: server, report sender, scheduler; started and stopped in order."""

    def __init__(self, node: Node, *, listen: str | None = None) -> None:
        from node.reporting.reports import ReportSender
        from node.server.enrolment_server import EnrolmentServer
        from node.server.grpc_server import NodeServer
        from node.server.scheduler import NodeScheduler

        self.node = node
        self.sender = ReportSender(node) if node.config.federation.parent_address else None
        self.server = NodeServer(node, address=listen, sender=self.sender)
        self.scheduler = NodeScheduler(node, sender=self.sender)
        # Only a node with a CA can enrol children; it writes its address to DATA_DIR/enrol.json.
        self.enrolment = EnrolmentServer.for_node(node)

    def start(self) -> int:
        """Start serving, then the sender loop and the jobs; returns the bound port."""
        port = self.server.start()
        if self.enrolment is not None:
            self.enrolment.start()
        if self.sender is not None:
            self.sender.start()
        self.scheduler.start()
        return port

    def stop(self, grace: float) -> None:
        """Health NOT_SERVING, drain in-flight calls, then stop the jobs (letting a running one finish)."""
        if self.enrolment is not None:
            self.enrolment.stop(grace)
        self.server.stop(grace)
        self.scheduler.stop(wait=True)
        if self.sender is not None:
            self.sender.stop()


def register(app: typer.Typer) -> None:
    """Add ``supnet serve``."""

    @app.command("serve")
    @handle_errors
    def serve(
        data_dir: DataDir,
        listen: Annotated[
            str | None, typer.Option("--listen", help="host:port to listen on (default: federation.listen)")
        ] = None,
        grace: Annotated[float, typer.Option(help="Seconds in-flight calls get to finish on shutdown.")] = 5.0,
        insecure_plaintext: Annotated[
            bool,
            typer.Option(
                "--insecure-plaintext",
                help="Serve and call WITHOUT TLS when the node has no pki/ (local experiments only).",
            ),
        ] = False,
    ) -> None:
        """Serve the node: gRPC (reports, drill-down, ingest, health) plus the scheduled jobs, until SIGTERM/Ctrl-C."""
        # APScheduler logs every run of every job at INFO; a serving node's log should show what the jobs did.
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        node = open_node(data_dir)
        if insecure_plaintext:
            node.config.federation.insecure_plaintext = True
        stop_requested = threading.Event()

        def request_stop(signum: int, _frame: FrameType | None) -> None:
            log.info("node %s got signal %s; shutting down", node.config.id, signal.Signals(signum).name)
            stop_requested.set()

        previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        serving = ServingNode(node, listen=listen)
        state_path = serve_state_path(data_dir)
        try:
            port = serving.start()
            address = serving.server.bound_address
            state = {"node_id": node.config.id, "pid": os.getpid(), "address": address, "port": port}
            if serving.enrolment is not None:
                state["enrol_address"] = serving.enrolment.bound_address
            state["started_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            # Written whole then renamed: a reader (supnet query, a test) never sees half a file.
            partial = state_path.with_suffix(".tmp")
            partial.write_text(json.dumps(state), encoding="utf-8")
            partial.replace(state_path)
            transport = "mutual TLS" if serving.server.mutual_tls else "[bold red]INSECURE PLAINTEXT[/]"
            console.print(
                f"node [bold]{node.config.id}[/] serving on {address} over {transport} (pid {os.getpid()}); "
                "Ctrl-C stops it"
            )
            while not stop_requested.wait(1.0):
                pass
        finally:
            serving.stop(grace)
            state_path.unlink(missing_ok=True)
            node.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        console.print(f"node [bold]{node.config.id}[/] stopped cleanly")
