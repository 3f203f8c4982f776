"""``supnet init``: create a node's data directory, config file, database schema and report-signing key."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import typer
from rich.table import Table

from node.bootstrap import init_node
from node.cli.common import DataDir, JsonFlag, console, handle_errors, print_json
from node.config import LEVELS
from node.errors import ConfigError

log = logging.getLogger(__name__)


def _node_at(option: str, value: str, *, address_required: bool) -> dict[str, str]:
    """``ID@HOST:PORT`` (or just ``ID`` where the address may be left out) of a parent or child node."""
    node_id, at, address = value.partition("@")
    if not node_id or (at and not address) or (address_required and not address):
        form = "ID@HOST:PORT" if address_required else "ID or ID@HOST:PORT"
        raise ConfigError(f"{option}: '{value}' is not {form} (e.g. gd@10.0.0.1:7100)")
    return {"id": node_id, "address": address}


def _federation_options(listen: str, enrol_listen: str, parent: str, children: list[str]) -> dict[str, Any]:
    """The federation keys the options set (the config validates them and names a bad key)."""
    section: dict[str, Any] = {}
    if listen:
        section["listen"] = listen
    if enrol_listen:
        section["enrol_listen"] = enrol_listen
    if parent:
        node = _node_at("--parent", parent, address_required=True)
        section["parent_id"], section["parent_address"] = node["id"], node["address"]
    if children:
        nodes = [_node_at("--child", child, address_required=False) for child in children]
        section["children"] = [{key: value for key, value in node.items() if value} for node in nodes]
    return section


def register(app: typer.Typer) -> None:
    """Add ``supnet init``."""

    @app.command("init")
    @handle_errors
    def init_command(
        *,
        data_dir: DataDir,
        node_id: Annotated[str, typer.Option("--id", help="Node id: dotted path such as gd.gz.py.")],
        level: Annotated[str, typer.Option(help=f"Administrative level: {', '.join(LEVELS)}.")] = "district",
        db: Annotated[
            str, typer.Option("--db", help="SQLAlchemy database URL (default: SQLite node.db in the data dir).")
        ] = "",
        name: Annotated[str, typer.Option(help="Human name of the node, e.g. 番禺区.")] = "",
        force: Annotated[bool, typer.Option("--force", help="Overwrite an existing supnet.toml.")] = False,
        listen: Annotated[
            str, typer.Option("--listen", help="host:port for gRPC (federation.listen), e.g. 0.0.0.0:7100.")
        ] = "",
        enrol_listen: Annotated[
            str,
            typer.Option("--enrol-listen", help="host:port of the enrolment listener (federation.enrol_listen)."),
        ] = "",
        parent: Annotated[
            str, typer.Option("--parent", help="The parent node as ID@HOST:PORT of its gRPC server.")
        ] = "",
        children: Annotated[
            list[str] | None,
            typer.Option("--child", help="A direct child as ID or ID@HOST:PORT (for drill-down); repeatable."),
        ] = None,
        as_json: JsonFlag = False,
    ) -> None:
        """Create a node's data directory, config file, database and report-signing key."""
        if level not in LEVELS:
            raise ConfigError(f"--level: '{level}' is not one of {', '.join(LEVELS)}")
        federation = _federation_options(listen, enrol_listen, parent, children or [])
        result = init_node(data_dir, node_id, level=level, db_url=db, name=name, force=force, federation=federation)
        if as_json:
            print_json(
                {
                    "data_dir": str(result.data_dir),
                    "config": str(result.config_file),
                    "database": result.database,
                    "signing_key": str(result.private_key),
                    "public_key": str(result.public_key),
                    "public_key_b64": result.public_key_b64,
                    "key_created": result.key_created,
                }
            )
            return
        table = Table(title=f"node {node_id} initialised", show_header=False)
        table.add_row("data dir", str(result.data_dir))
        table.add_row("config", str(result.config_file))
        table.add_row("database", result.database)
        key_note = "" if result.key_created else " (existing key kept)"
        table.add_row("signing key", f"{result.private_key}{key_note}")
        table.add_row("public key", f"{result.public_key}  {result.public_key_b64}")
        console.print(table)
