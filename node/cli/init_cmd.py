"""``supnet init``: create a node's data directory, config file, database schema and report-signing key."""

from __future__ import annotations

import logging
from typing import Annotated

import typer
from rich.table import Table

from node.bootstrap import init_node
from node.cli.common import DataDir, JsonFlag, console, handle_errors, print_json
from node.config import LEVELS
from node.errors import ConfigError

log = logging.getLogger(__name__)


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
        as_json: JsonFlag = False,
    ) -> None:
        """Create a node's data directory, config file, database and report-signing key."""
        if level not in LEVELS:
            raise ConfigError(f"--level: '{level}' is not one of {', '.join(LEVELS)}")
        result = init_node(data_dir, node_id, level=level, db_url=db, name=name, force=force)
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
