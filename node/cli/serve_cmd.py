"""``supnet serve``: run a node's gRPC server and its scheduled jobs until SIGTERM or SIGINT.

Over mutual TLS when the node has TLS credentials in ``DATA_DIR/pki``; without them only with
``--insecure-plaintext`` (or ``federation.insecure_plaintext = true``), for local experiments. Logs at INFO
unless configured otherwise; with ``--log-format json`` the start and stop lines are log lines too, so the
process writes nothing but JSON.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType
from typing import Annotated

import typer
from rich.text import Text

from node.app import open_node
from node.cli.common import DataDir, bind_node_logging, console, handle_errors
from node.observability import active_log_format
from node.run_state import serve_state_path, write_state_file
from node.server import ServingNode

log = logging.getLogger(__name__)


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
        bind_node_logging(data_dir, default_level="INFO")  # a daemon's log shows what it did

        def say(text: str) -> None:
            if active_log_format() == "json":
                log.info("%s", Text.from_markup(text).plain)
            else:
                console.print(text)

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
            if serving.metrics_server is not None:
                state["metrics_address"] = serving.metrics_server.bound_address
            if serving.web is not None:
                state["web_url"] = serving.web.url
            state["started_at"] = node.now().replace(tzinfo=node.tz).isoformat(timespec="seconds")
            write_state_file(state_path, state)
            transport = "mutual TLS" if serving.server.mutual_tls else "[bold red]INSECURE PLAINTEXT[/]"
            say(
                f"node [bold]{node.config.id}[/] serving on {address} over {transport} (pid {os.getpid()}); "
                "Ctrl-C stops it"
            )
            if serving.web is not None:
                say(f"监察控制台 supervisor console: {serving.web.url}  (accounts: supnet users add NAME --role …)")
            while not stop_requested.wait(1.0):
                pass
        finally:
            serving.stop(grace)
            state_path.unlink(missing_ok=True)
            node.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        say(f"node [bold]{node.config.id}[/] stopped cleanly")
