"""Log lines of a supnet process: one handler on stderr, text or JSON, the node's clock and id on every line.

Every line carries the time in the node's time zone as ISO 8601 with its UTC offset (the zone the node's own
messages use, e.g. "scan as of 2026-12-06T07:37:41"), the level, the node id ("-" before a node is known), the
logger and the message; JSON lines are one object each (``time``, ``level``, ``node``, ``logger``, ``message``,
``exception`` when there is one).

Which format and level, first match wins: ``--log-format`` (or ``SUPNET_LOG_FORMAT``), then ``[logging] format``
of the node's supnet.toml, else text; ``SUPNET_LOG_LEVEL``, then ``[logging] level``, else INFO for ``supnet
serve`` and WARNING for other commands. Alembic's own lines (one per migration step) show only at DEBUG.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Literal

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
FORMAT_ENV = "SUPNET_LOG_FORMAT"
LEVEL_ENV = "SUPNET_LOG_LEVEL"
# Libraries whose INFO lines are about themselves, not about what the node did.
_CHATTY = ("alembic", "apscheduler")


@dataclass
class _LogState:
    node_id: str = ""
    zone: tzinfo | None = None  # None: the machine's local zone (before a node's config is read)
    log_format: LogFormat = "text"
    format_fixed: bool = False  # --log-format / SUPNET_LOG_FORMAT: the node's config does not override it
    level_fixed: bool = False  # SUPNET_LOG_LEVEL
    handler: logging.Handler | None = None


_state = _LogState()
_lock = threading.Lock()


def log_time(created: float) -> str:
    """A record's time on the node's clock: ISO 8601, milliseconds, with the UTC offset."""
    moment = datetime.fromtimestamp(created, _state.zone) if _state.zone else datetime.fromtimestamp(created)
    return moment.astimezone(_state.zone).isoformat(timespec="milliseconds")


class TextFormatter(logging.Formatter):
    """``2026-12-06T07:37:42.213+08:00 INFO [gd.gz] node.server.grpc_server: message``."""

    def format(self, record: logging.LogRecord) -> str:
        line = (
            f"{log_time(record.created)} {record.levelname} [{_state.node_id or '-'}] {record.name}: "
            f"{record.getMessage()}"
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        elif record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line; non-ASCII kept as is (UTF-8), a traceback in ``exception``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": log_time(record.created),
            "level": record.levelname,
            "node": _state.node_id or None,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def _formatter(log_format: LogFormat) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


def _apply_level(level: str) -> None:
    logging.getLogger().setLevel(level)
    # Their INFO lines (Alembic's "Context impl SQLiteImpl", every APScheduler run) only at DEBUG.
    quiet = logging.DEBUG if logging.getLogger().getEffectiveLevel() <= logging.DEBUG else logging.WARNING
    for name in _CHATTY:
        logging.getLogger(name).setLevel(quiet)


def _checked_level(value: str) -> str:
    level = value.strip().upper()
    return level if level in LOG_LEVELS else "WARNING"


def configure_logging() -> None:
    """Install the one stderr handler (a process's first step); format and level from the environment."""
    with _lock:
        root = logging.getLogger()
        if _state.handler is not None:
            root.removeHandler(_state.handler)
        env_format = os.environ.get(FORMAT_ENV, "").strip().lower()
        if env_format in LOG_FORMATS:
            _state.log_format, _state.format_fixed = env_format, True
        env_level = os.environ.get(LEVEL_ENV, "").strip()
        _state.level_fixed = bool(env_level)
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_formatter(_state.log_format))
        _state.handler = handler
        root.addHandler(handler)
        _apply_level(_checked_level(env_level) if env_level else "WARNING")


def set_log_format(log_format: LogFormat) -> None:
    """The format the command line asked for (``--log-format``): kept whatever the node's config says."""
    with _lock:
        _state.log_format, _state.format_fixed = log_format, True
        if _state.handler is not None:
            _state.handler.setFormatter(_formatter(log_format))


def active_log_format() -> LogFormat:
    """The format log lines are written in now (a JSON process keeps its stdout free of other text too)."""
    return _state.log_format if _state.handler is not None else "text"


def bind_node(
    node_id: str,
    zone: tzinfo,
    *,
    log_format: LogFormat = "text",
    level: str = "",
    default_level: str = "WARNING",
) -> None:
    """From now on lines name this node and use its clock; its config's format and level apply unless fixed.

    Without the process's handler (``configure_logging`` not called: a command run inside a test) only the node
    id and clock are taken, the logging set-up of the host process is left alone.
    """
    with _lock:
        _state.node_id, _state.zone = node_id, zone
        if _state.handler is None:
            return
        if not _state.format_fixed:
            _state.log_format = log_format
            _state.handler.setFormatter(_formatter(log_format))
        if not _state.level_fixed:
            _apply_level(_checked_level(level or default_level))


def unbind_node() -> None:
    """Lines no longer name a node (tests, a process done with its node)."""
    with _lock:
        _state.node_id, _state.zone = "", None
