"""Tests of node's root modules (audit_log, config) live in this folder; each package has its folder (tests/<room>/,
tests/federation/), helpers shared by folders are in tests/harness/.

Fixtures every folder may use: a real SQLite file per test, a real PostgreSQL schema per test, and ``db_url``,
which runs a test on both (the ``postgres`` mark). Without the server the PostgreSQL half skips, except under
CI=true, where it fails (tests.harness.postgres.require_postgres). And for every test: CLI consoles that follow
each invocation's COLUMNS. Each folder's conftest.py says what the folder tests and holds the fixtures only its
tests use.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from sqlalchemy.engine import Engine

from tests.harness.postgres import fresh_schema_url


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--runs N``: how many fault runs each harness of tests/faults makes (default: its CI size)."""
    parser.addoption("--runs", type=int, default=0, help="fault runs per harness in tests/faults (0: the CI size)")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A URL pinned (via search_path) to a fresh schema in the test database; dropped afterwards."""
    with fresh_schema_url() as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: os.PathLike[str]) -> str:
    """A URL of a fresh SQLite file."""
    return f"sqlite:///{os.fspath(tmp_path)}/node.db"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: os.PathLike[str]) -> Iterator[str]:
    """The contract-suite fixture: each test using it runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{os.fspath(tmp_path)}/node.db"
    else:
        yield request.getfixturevalue("pg_url")


@pytest.fixture
def migrated_engine(db_url: str) -> Iterator[Engine]:
    """An engine on a fully migrated database (SQLite and PostgreSQL)."""
    from node.store import make_engine, migrate

    engine = make_engine(db_url)
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture(autouse=True)
def _cli_console_follows_columns() -> Iterator[None]:
    """Rich fixes a console's width if COLUMNS was set when it was created (an xdist worker has COLUMNS=80 while it
    imports the tests); one CLI process is one invocation, but tests share the module, so let each CliRunner's
    COLUMNS apply again, from the first test of a worker on."""
    _console_width_from_environment()
    yield
    _console_width_from_environment()


def _console_width_from_environment() -> None:
    import sys

    common = sys.modules.get("node.cli.common")
    if common is not None:
        common.console.width = None  # type: ignore[assignment]
        common.err_console.width = None  # type: ignore[assignment]
