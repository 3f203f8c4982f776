"""``supnet serve``: run a node's gRPC server and its scheduled jobs until SIGTERM or SIGINT.

Several ``--data-dir`` (or ``--host-config FILE`` listing data directories) host several nodes in one process
(node.server.hosting): each its own node on its own port, sharing the process's call and job threads and one
Prometheus endpoint (the host file's ``metrics_listen``; without a host file, the first node's ``metrics.listen``).
Every hosted node gets its own ``serve.json`` naming this process, and as ``metrics_address`` that shared endpoint.

Over mutual TLS when the node has TLS credentials in ``DATA_DIR/pki``; without them only with
``--insecure-plaintext`` (or ``federation.insecure_plaintext = true``), for local experiments. Logs at INFO
unless configured otherwise; with ``--log-format json`` the start and stop lines are log lines too, so the
process writes nothing but JSON.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
from rich.text import Text

from node.app import Node, open_node
from node.cli.common import bind_node_logging, console, handle_errors
from node.config import load_host_config
from node.errors import ConfigError
from node.observability import active_log_format, unbind_node
from node.run_state import serve_state_path, write_state_file
from node.server import DEFAULT_JOB_WORKERS, DEFAULT_RPC_WORKERS, NodeHost, ServingNode

log = logging.getLogger(__name__)


def register(app: typer.Typer) -> None:
    """Add ``supnet serve``."""

    @app.command("serve")
    @handle_errors
    def serve(
        data_dirs: Annotated[
            list[Path] | None,
            typer.Option(
                "--data-dir",
                "-d",
                help="The node's data directory (holds supnet.toml); repeat it to host several nodes in one process.",
                envvar="SUPNET_DATA_DIR",
            ),
        ] = None,
        host_config: Annotated[
            Path | None,
            typer.Option("--host-config", help="TOML file listing the data_dirs this process hosts (and its pools)."),
        ] = None,
        listen: Annotated[
            str | None,
            typer.Option("--listen", help="host:port to listen on (default: federation.listen; one node only)"),
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
        """Serve the node(s): gRPC (reports, drill-down, ingest, health) and scheduled jobs, until SIGTERM/Ctrl-C."""
        folders = list(data_dirs or [])
        pools: dict[str, int] = {}
        metrics_listen: str | None = None  # a host without a host file: the first node's metrics.listen
        if host_config is not None:
            host = load_host_config(host_config)
            folders += host.data_dirs
            pools = {"rpc_workers": host.rpc_workers, "job_workers": host.job_workers}
            metrics_listen = host.metrics_listen
        if not folders:
            raise ConfigError("say which node to serve: --data-dir DIR (repeatable) or --host-config FILE")
        if listen is not None and len(folders) > 1:
            raise ConfigError("--listen names one address: with several nodes each listens on its federation.listen")
        bind_node_logging(folders[0], default_level="INFO")  # a daemon's log shows what it did
        if len(folders) > 1:
            unbind_node()  # lines of a host name their node in the text, not the first node's id

        def say(text: str) -> None:
            if active_log_format() == "json":
                log.info("%s", Text.from_markup(text).plain)
            else:
                console.print(text)

        nodes: list[Node] = []
        try:
            for folder in folders:
                nodes.append(open_node(folder))
                if insecure_plaintext:
                    nodes[-1].config.federation.insecure_plaintext = True
            if len(nodes) == 1 and host_config is None:
                _serve_one(nodes[0], listen, grace, say)
            else:
                _serve_hosted(nodes, pools, metrics_listen, grace, say)
        finally:
            for node in nodes:
                node.close()


@contextlib.contextmanager
def _stop_on_signal(names: str) -> Iterator[threading.Event]:
    """SIGTERM / SIGINT set the event; the handlers stay until the block (the shutdown included) is over."""
    stop_requested = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("%s got signal %s; shutting down", names, signal.Signals(signum).name)
        stop_requested.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop_requested
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _state(serving: ServingNode, port: int, metrics_address: str = "", **extra: Any) -> dict[str, Any]:
    """serve.json; ``metrics_address`` of a hosted node is its host's (it has no endpoint of its own)."""
    node = serving.node
    state: dict[str, Any] = {
        "node_id": node.config.id,
        "pid": os.getpid(),
        "address": serving.server.bound_address,
        "port": port,
    }
    if serving.metrics_server is not None:
        metrics_address = serving.metrics_server.bound_address
    if metrics_address:
        state["metrics_address"] = metrics_address
    if serving.web is not None:
        state["web_url"] = serving.web.url
    state["started_at"] = node.now().replace(tzinfo=node.tz).isoformat(timespec="seconds")
    return {**state, **extra}


def _serve_one(node: Node, listen: str | None, grace: float, say: Any) -> None:
    serving = ServingNode(node, listen=listen)
    state_path = serve_state_path(node.data_dir)
    with _stop_on_signal(f"node {node.config.id}") as stop_requested:
        try:
            port = serving.start()
            write_state_file(state_path, _state(serving, port))
            transport = "mutual TLS" if serving.server.mutual_tls else "[bold red]INSECURE PLAINTEXT[/]"
            say(
                f"node [bold]{node.config.id}[/] serving on {serving.server.bound_address} over {transport} "
                f"(pid {os.getpid()}); Ctrl-C stops it"
            )
            if serving.web is not None:
                say(f"监察控制台 supervisor console: {serving.web.url}  (accounts: supnet users add NAME --role …)")
            while not stop_requested.wait(1.0):
                pass
        finally:
            serving.stop(grace)
            state_path.unlink(missing_ok=True)
    say(f"node [bold]{node.config.id}[/] stopped cleanly")


def _serve_hosted(nodes: list[Node], pools: dict[str, int], metrics_listen: str | None, grace: float, say: Any) -> None:
    host = NodeHost(
        nodes,
        rpc_workers=pools.get("rpc_workers", DEFAULT_RPC_WORKERS),
        job_workers=pools.get("job_workers", DEFAULT_JOB_WORKERS),
        metrics_listen=metrics_listen,
    )
    state_paths = [serve_state_path(node.data_dir) for node in nodes]
    ids = ", ".join(node.config.id for node in nodes[:5]) + (" …" if len(nodes) > 5 else "")
    with _stop_on_signal(f"host of {len(nodes)} nodes") as stop_requested:
        try:
            ports = host.start()
            for serving in host.members.values():
                node_id = serving.node.config.id
                state = _state(serving, ports[node_id], host.metrics_address, hosted_nodes=len(nodes))
                write_state_file(serve_state_path(serving.node.data_dir), state)
                transport = "mutual TLS" if serving.server.mutual_tls else "[bold red]INSECURE PLAINTEXT[/]"
                say(f"node [bold]{node_id}[/] serving on {serving.server.bound_address} over {transport} (hosted)")
            say(
                f"本进程托管 {len(nodes)} 个节点 hosting {len(nodes)} nodes ({ids}) in pid {os.getpid()}; "
                "Ctrl-C stops them"
            )
            if host.metrics_address:
                say(f"所有托管节点的指标 metrics of all hosted nodes: http://{host.metrics_address}/metrics")
            while not stop_requested.wait(1.0):
                pass
        finally:
            host.stop(grace)
            for path in state_paths:
                path.unlink(missing_ok=True)
    say(f"{len(nodes)} hosted nodes stopped cleanly")
