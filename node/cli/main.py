"""Entry point of the ``supnet`` command: collects the command modules of node.cli."""

from __future__ import annotations

import importlib
import logging
import os
import pkgutil
import sys

import typer

import node.cli
from node.errors import SupnetError

app = typer.Typer(
    name="supnet",
    help="supnet: federated electronic supervision of administrative approvals.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """supnet: federated electronic supervision of administrative approvals."""


def _command_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(node.cli.__path__) if m.name.endswith("_cmd"))


def _register_commands(argv: list[str] | None = None) -> None:
    # Each *_cmd module adds its own commands; discovery keeps this file free of merge churn.
    # A command named like its module ("serve" -> serve_cmd) loads only that module: every node
    # process of a federation starts faster without importing the whole CLI.
    modules = _command_modules()
    wanted = f"{argv[0].replace('-', '_')}_cmd" if argv and not argv[0].startswith("-") else ""
    for module in [wanted] if wanted in modules else modules:
        importlib.import_module(f"node.cli.{module}").register(app)


def main() -> None:
    """Run the CLI."""
    logging.basicConfig(
        level=os.environ.get("SUPNET_LOG_LEVEL", "WARNING"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    _register_commands(sys.argv[1:])
    try:
        app(prog_name="supnet")
    except SupnetError as exc:
        # Commands turn their errors into this line themselves (common.handle_errors); this catches the rest,
        # e.g. a bad supnet.toml met while a command group is being set up: one line, never a traceback.
        sys.stderr.write(f"error [{exc.code}] {exc.message}\n")
        sys.exit(2)


if __name__ == "__main__":
    main()
