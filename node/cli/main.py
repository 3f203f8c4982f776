"""Entry point of the ``supnet`` command: collects the command modules of node.cli."""

from __future__ import annotations

import importlib
import logging
import os
import pkgutil

import typer

import node.cli

app = typer.Typer(
    name="supnet",
    help="supnet: federated electronic supervision of administrative approvals.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register_commands() -> None:
    # Each *_cmd module adds its own commands; discovery keeps this file free of merge churn.
    for module in sorted(m.name for m in pkgutil.iter_modules(node.cli.__path__) if m.name.endswith("_cmd")):
        importlib.import_module(f"node.cli.{module}").register(app)


def main() -> None:
    """Run the CLI."""
    logging.basicConfig(
        level=os.environ.get("SUPNET_LOG_LEVEL", "WARNING"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    _register_commands()
    app()


if __name__ == "__main__":
    main()
