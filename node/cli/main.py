"""Entry point of the ``supnet`` command: global options, logging, exit codes; collects the command modules."""

from __future__ import annotations

import importlib
import logging
import pkgutil
import sys
from enum import StrEnum
from typing import Annotated

import typer

import node.cli
from node.errors import ExitCode, SupnetError, exit_code_for
from node.observability import FORMAT_ENV, configure_logging, set_log_format, software_version

log = logging.getLogger(__name__)

app = typer.Typer(
    name="supnet",
    help="supnet: federated electronic supervision of administrative approvals.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class LogFormatOption(StrEnum):
    """Values of ``--log-format``."""

    TEXT = "text"
    JSON = "json"


# Global options that take a value: skipped when looking for the command name in argv.
_VALUE_OPTIONS = {"--log-format"}
# Commands that live in a module named for another command (the others: "serve" -> serve_cmd). Without an entry
# such a command loads every module, as `supnet --help` does (tests/cli/test_exit_codes.py checks the table).
COMMAND_MODULES = {"restore": "backup_cmd", "spotcheck-directive": "spotcheck_cmd"}


def _print_version(value: bool) -> None:
    if value:
        sys.stdout.write(f"supnet {software_version()}\n")
        raise typer.Exit(ExitCode.OK)


@app.callback()
def _root(
    log_format: Annotated[
        LogFormatOption | None,
        typer.Option(
            "--log-format",
            envvar=FORMAT_ENV,
            help="Log lines on stderr as text or json (one object per line); default: [logging] format, else text.",
        ),
    ] = None,
    _version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """supnet: federated electronic supervision of administrative approvals."""
    if log_format is not None:
        set_log_format("json" if log_format is LogFormatOption.JSON else "text")


def _command_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(node.cli.__path__) if m.name.endswith("_cmd"))


def _command_name(argv: list[str]) -> str:
    """The first argument that is not a global option (or its value): the command."""
    skip = False
    for argument in argv:
        if skip:
            skip = False
        elif argument in _VALUE_OPTIONS:
            skip = True
        elif not argument.startswith("-"):
            return argument
    return ""


def command_module(command: str) -> str:
    """The ``*_cmd`` module that registers ``command`` (it may not exist: then the command is unknown)."""
    return COMMAND_MODULES.get(command, f"{command.replace('-', '_')}_cmd")


def _register_commands(argv: list[str] | None = None) -> None:
    # Each *_cmd module adds its own commands; discovery keeps this file free of merge churn.
    # A command named like its module ("serve" -> serve_cmd) loads only that module: every node
    # process of a federation starts faster without importing the whole CLI.
    modules = _command_modules()
    command = _command_name(argv or [])
    if not command and "--version" in (argv or []):
        return  # nothing to load: the version is printed before any command would run
    wanted = command_module(command) if command else ""
    for module in [wanted] if wanted in modules else modules:
        importlib.import_module(f"node.cli.{module}").register(app)


def main() -> None:
    """Run the CLI; every failure exits with its documented code (node.errors.ExitCode), never a traceback."""
    configure_logging()
    _register_commands(sys.argv[1:])
    try:
        app(prog_name="supnet")
    except SupnetError as exc:
        # Commands turn their errors into this line themselves (common.handle_errors); this catches the rest,
        # e.g. a bad supnet.toml met while a command group is being set up: one line, never a traceback.
        sys.stderr.write(f"error [{exc.code}] {exc.message}\n")
        sys.exit(exit_code_for(exc))
    except Exception as exc:
        log.debug("internal error", exc_info=True)
        sys.stderr.write(
            f"internal error: {type(exc).__name__}: {exc} (SUPNET_LOG_LEVEL=DEBUG shows where; please report it)\n"
        )
        sys.exit(ExitCode.INTERNAL)


if __name__ == "__main__":
    main()
