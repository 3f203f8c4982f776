"""Shared CLI pieces: options, the console, JSON output and domain-error handling."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from rich.console import Console

from node.errors import SupnetError

console = Console()
err_console = Console(stderr=True, soft_wrap=True)

DataDir = Annotated[
    Path,
    typer.Option("--data-dir", "-d", help="The node's data directory (holds supnet.toml).", envvar="SUPNET_DATA_DIR"),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]

P = ParamSpec("P")
R = TypeVar("R")


def print_json(value: Any) -> None:
    """Print one JSON document on stdout (non-ASCII kept readable)."""
    sys.stdout.write(json.dumps(value, ensure_ascii=False, default=str) + "\n")


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn a SupnetError into a clear one-line message and exit code 2."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except SupnetError as exc:
            err_console.print(f"[bold red]error[/] [{exc.code}] {exc.message}", highlight=False)
            raise typer.Exit(2) from exc

    return wrapper
