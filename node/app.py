"""App composition: open a node's data directory into one object holding config, engine, calendar, clock.

Opening decides what happens to an old schema: a writing command (``migrate_schema=True``) migrates it, unless
``store.auto_migrate`` is off; a read-only one never changes it and fails with the command to run instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from sqlalchemy import Engine

from node.config import NodeConfig, database_url, load_config
from node.store import make_engine, migrate, require_current_schema

if TYPE_CHECKING:
    from node.domain import WorkCalendar


@dataclass
class Node:
    """One opened node: everything a command, servicer or job needs, built once."""

    data_dir: Path
    config: NodeConfig
    engine: Engine
    clock: Callable[[], datetime] | None = None

    @property
    def tz(self) -> ZoneInfo:
        """The node's time zone (Asia/Shanghai by default)."""
        return ZoneInfo(self.config.calendar.timezone)

    def now(self) -> datetime:
        """Current naive local time in the node's zone (tests inject a clock)."""
        if self.clock is not None:
            return self.clock()
        return datetime.now(self.tz).replace(tzinfo=None)

    @cached_property
    def calendar(self) -> WorkCalendar:
        """The working-day calendar: chinesecalendar plus the operator holiday file."""
        from node.domain import load_calendar

        holidays = self.config.calendar.holidays_file
        return load_calendar(self.data_dir / holidays if holidays else None)

    def close(self) -> None:
        """Release database connections."""
        self.engine.dispose()


def upgrade_command(data_dir: Path) -> str:
    """The command that brings this node's schema (and its metric figures) up to date."""
    return f"supnet db upgrade --data-dir {data_dir}"


def open_node(data_dir: Path, *, clock: Callable[[], datetime] | None = None, migrate_schema: bool = True) -> Node:
    """Open a node's data directory: load config, connect, and see to the schema.

    ``migrate_schema`` (writing commands): bring the schema up to date, or with ``store.auto_migrate = false``
    refuse as a reader does. Otherwise (read-only commands) nothing is changed: an old schema is a
    SchemaOutdatedError naming ``supnet db upgrade --data-dir DIR``.
    """
    config = load_config(data_dir)
    engine = make_engine(database_url(data_dir, config))
    try:
        if migrate_schema and config.store.auto_migrate:
            migrate(engine)
        else:
            require_current_schema(engine, upgrade_command=upgrade_command(data_dir))
    except BaseException:
        engine.dispose()
        raise
    return Node(data_dir=data_dir, config=config, engine=engine, clock=clock)
