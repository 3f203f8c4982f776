"""``supnet health``: probe a serving node's gRPC health as the node itself, for Docker, systemd and scripts.

The probe presents the node's own TLS certificate (``DATA_DIR/pki``), so it passes mutual TLS, and accepts only
the node's own server certificate. It reads no table and migrates nothing. Exit code by state: 0 SERVING,
1 NOT_SERVING, 2 a service name the node does not know, 3 UNREACHABLE (nothing answers: not started, stopped,
wrong address); a missing or invalid config exits 4, unusable own credentials 6 (node.errors.ExitCode).
"""

from __future__ import annotations

from typing import Annotated

import typer

from node.app import open_node
from node.cli.common import DataDir, JsonFlag, console, err_console, handle_errors, print_json
from node.errors import ExitCode
from node.run_state import live_address, serve_state_path
from node.server import REPORTS_SERVICE, probe_health
from node.trust import transport_pki

EXIT_BY_STATE = {
    "SERVING": ExitCode.OK,
    "NOT_SERVING": ExitCode.NOT_SERVING,
    "UNKNOWN": ExitCode.NOT_SERVING,
    "SERVICE_UNKNOWN": ExitCode.USAGE,
    "UNREACHABLE": ExitCode.UNREACHABLE,
}


def register(app: typer.Typer) -> None:
    """Add ``supnet health``."""

    @app.command("health")
    @handle_errors
    def health(
        data_dir: DataDir,
        address: Annotated[
            str | None,
            typer.Option("--address", help="host:port to probe (default: serve.json, else federation.listen)."),
        ] = None,
        service: Annotated[
            str,
            typer.Option(
                "--service",
                help=f"Health service name: '' the node (default), {REPORTS_SERVICE} upward reporting, or "
                "federation.proto.v1.NodeService / IngestService.",
            ),
        ] = "",
        timeout: Annotated[float, typer.Option(help="Seconds to wait for the answer.")] = 3.0,
        json_output: JsonFlag = False,
    ) -> None:
        """Probe the node's health over its own mutual TLS: exit 0 SERVING, 1 NOT_SERVING, 3 UNREACHABLE."""
        node = open_node(data_dir, migrate_schema=False)  # config and PKI only: no connection is made
        try:
            node_id = node.config.id
            pki = transport_pki(node)  # ConfigError (exit 4) for a node that could not serve at all
            listen = node.config.federation.listen
        finally:
            node.close()
        target = address or live_address(serve_state_path(data_dir))
        if target is None and not listen.endswith(":0"):
            target = listen
        if target is None:
            state, detail = "UNREACHABLE", f"{node_id} is not serving (no live serve.json in {data_dir})"
        else:
            state, detail = probe_health(target, node_id, pki, service=service, timeout=timeout)
        if json_output:
            print_json({"node": node_id, "address": target, "service": service, "state": state, "detail": detail})
        elif state == "SERVING":
            console.print(f"SERVING: {node_id} at {target}", highlight=False)
        else:
            err_console.print(f"{state}: {detail or f'{node_id} at {target} (its log says why)'}", highlight=False)
        raise typer.Exit(EXIT_BY_STATE.get(state, ExitCode.NOT_SERVING))
