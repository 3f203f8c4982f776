"""Shared CLI pieces: options, the console, JSON output, domain-error handling and exit codes, log binding.

Exit codes are node.errors.ExitCode (README "Exit codes"): a command failing with a SupnetError exits with the code
its error code maps to; ``--data-dir`` binds the log lines to that node (its id, its clock, its [logging]).

The node stack (node.app: SQLAlchemy, the models, Alembic; node.config: pydantic) loads inside the functions that
open a node or read its config: every command module imports this one, and ``supnet --help`` loads them all.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar
from zoneinfo import ZoneInfo

import typer
from rich.console import Console

from node.errors import ConfigError, InvalidArgumentError, SupnetError, exit_code_for
from node.observability import bind_node

if TYPE_CHECKING:
    from node.app import Node

console = Console()
err_console = Console(stderr=True, soft_wrap=True)


def bind_node_logging(data_dir: Path, *, default_level: str = "WARNING") -> None:
    """Log lines name the node of ``data_dir`` and use its clock; its [logging] applies unless fixed otherwise.

    A directory without a valid config binds nothing: the command itself says what is wrong with it.
    """
    from node.config import load_config

    try:
        config = load_config(data_dir)
    except ConfigError:
        return
    bind_node(
        config.id,
        ZoneInfo(config.calendar.timezone),
        log_format=config.logging.format,
        level=config.logging.level,
        default_level=default_level,
    )


def _bind_data_dir(value: Path | None) -> Path | None:
    if value is not None:
        bind_node_logging(value)
    return value


_DATA_DIR_HELP = "The node's data directory (holds supnet.toml)."
DataDir = Annotated[
    Path,
    typer.Option("--data-dir", "-d", help=_DATA_DIR_HELP, envvar="SUPNET_DATA_DIR", callback=_bind_data_dir),
]
# For command groups whose subcommands may each take --data-dir or inherit the group's.
OptionalDataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", "-d", help=_DATA_DIR_HELP, envvar="SUPNET_DATA_DIR", callback=_bind_data_dir),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]

P = ParamSpec("P")
R = TypeVar("R")


def print_json(value: Any) -> None:
    """Print one JSON document on stdout (non-ASCII kept readable)."""
    sys.stdout.write(json.dumps(value, ensure_ascii=False, default=str) + "\n")


def local_text(value: datetime | None, *, seconds: bool = False) -> str:
    """A node-local time for a table cell ('-' when unset)."""
    if value is None:
        return "-"
    return value.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def view_json(view: Any) -> dict[str, Any]:
    """A dataclass view as JSON-ready values (datetimes as 'YYYY-MM-DD HH:MM:SS', node-local)."""
    return {
        key: (value.isoformat(sep=" ") if isinstance(value, datetime) else value) for key, value in asdict(view).items()
    }


def subcommand_invoked(ctx: typer.Context, data_dir: Path | None) -> bool:
    """Keep a command group's --data-dir for its subcommands; True when one of them runs (the group lists nothing)."""
    ctx.obj = data_dir
    return ctx.invoked_subcommand is not None


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn a SupnetError into a clear one-line message and the exit code of its error code (ExitCode)."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except SupnetError as exc:
            err_console.print(f"[bold red]error[/] [{exc.code}] {exc.message}", highlight=False)
            raise typer.Exit(exit_code_for(exc)) from exc

    return wrapper


@contextmanager
def opened_node(ctx: typer.Context, data_dir: Path | None, *, writes: bool = True) -> Iterator[Node]:
    """Open the node named by this command's --data-dir, or the group's; close it afterwards.

    ``writes=False`` for a read-only subcommand: it never migrates (open_reading_node).
    """
    directory = data_dir or (ctx.obj if isinstance(ctx.obj, Path) else None)
    if directory is None:
        raise InvalidArgumentError("--data-dir is required (or set SUPNET_DATA_DIR)")
    node = open_working_node(directory) if writes else open_reading_node(directory)
    try:
        yield node
    finally:
        node.close()


def open_working_node(data_dir: Path) -> Node:
    """Open a node for work: schema migrated, and metric buckets rebuilt once if an upgrade asked for it."""
    from node.app import open_node
    from node.supervision import rebuild_buckets_if_needed

    node = open_node(data_dir)
    try:
        rebuild_buckets_if_needed(node)
    except BaseException:
        node.close()
        raise
    return node


def open_reading_node(data_dir: Path) -> Node:
    """Open a node for a read-only command: nothing is changed, not even an old schema.

    An old schema, or metric figures an upgrade left to rebuild, is a SchemaOutdatedError naming
    ``supnet db upgrade --data-dir DIR`` (which does both).
    """
    from node.app import open_node, upgrade_command
    from node.store import SchemaOutdatedError, counter_value
    from node.supervision import REBUILD_FLAG

    node = open_node(data_dir, migrate_schema=False)
    try:
        with node.engine.connect() as conn:
            if counter_value(conn, REBUILD_FLAG):
                raise SchemaOutdatedError(
                    "the metric figures wait for their rebuild after a schema upgrade: run "
                    f"'{upgrade_command(data_dir)}' (read-only commands never change the database)"
                )
    except BaseException:
        node.close()
        raise
    return node


def audit_admin_action(data_dir: Path, action: str, target: str, detail: dict[str, Any] | None = None) -> None:
    """Record an administrative command that changed files, not rows (PKI, keys) in the node's audit log."""
    from node.app import open_node
    from node.audit_log import AuditLog, operator_actor

    node = open_node(data_dir)
    try:
        AuditLog(node.engine).record(
            actor=operator_actor(node.config.id), action=action, target=target, detail=detail or {}
        )
    finally:
        node.close()
