"""Domain errors of the node, on top of the federation hierarchy rooted at SupnetError; the exit code of each."""

from __future__ import annotations

from enum import IntEnum

from federation.errors import (
    BackPressureError,
    ExpiredError,
    IntegrityError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    StaleError,
    SupnetError,
    UnauthenticatedError,
    UnavailableError,
)

__all__ = [
    "EXIT_CODES",
    "BackPressureError",
    "CalendarError",
    "ConfigError",
    "ConflictError",
    "ExitCode",
    "ExpiredError",
    "IntegrityError",
    "InvalidArgumentError",
    "InvalidStateError",
    "NotFoundError",
    "PermissionDeniedError",
    "StaleError",
    "StoreError",
    "SupnetError",
    "UnauthenticatedError",
    "UnavailableError",
    "ValidationError",
    "exit_code_for",
]


class ConfigError(SupnetError):
    """A configuration file or value is missing or invalid; the message names the key."""

    code = "CONFIG"


class CalendarError(SupnetError):
    """The working-day calendar cannot answer (e.g. a year with no holiday data)."""

    code = "CALENDAR_NO_DATA"


class ValidationError(SupnetError):
    """An input record is invalid: the message names the field and why."""

    code = "INVALID_RECORD"

    def __init__(self, message: str, *, field: str | None = None, reason: str = "invalid") -> None:
        super().__init__(message)
        self.field = field
        self.reason = reason


class ConflictError(SupnetError):
    """A record re-sends a known key with different immutable content."""

    code = "CONFLICT"


class InvalidStateError(SupnetError):
    """An operation is not allowed in the entity's current state."""

    code = "INVALID_STATE"


class StoreError(SupnetError):
    """The database cannot be opened or migrated."""

    code = "STORE"


class ExitCode(IntEnum):
    """The exit status of every ``supnet`` command (README "Exit codes"); errors map to one by their code."""

    OK = 0
    # The command ran and its answer is no: records rejected by import, not a working day; health NOT_SERVING.
    NO = 1
    RECORDS_REJECTED = 1
    NOT_SERVING = 1
    # A bad command line or argument value (click's own usage errors exit 2 too).
    USAGE = 2
    # A node, the parent or the database cannot be reached; health UNREACHABLE.
    UNAVAILABLE = 3
    UNREACHABLE = 3
    # supnet.toml missing or invalid; a year without holiday data.
    CONFIG = 4
    NOT_FOUND = 5
    # Refused by the rules: not authenticated, not allowed, outside the freshness window, stale.
    REFUSED = 6
    # A signature, digest, hash chain or recomputed figure does not match (verify, audit --verify, metrics check).
    VERIFICATION_FAILED = 7
    # Not allowed in the current state, or a record conflicting with the stored one.
    CONFLICT = 8
    # An answer that is not whole: some nodes of a subtree search did not answer in time (they are listed).
    PARTIAL = 9
    # An error with no code of its own here, or a bug: the message (or the log at DEBUG) says more.
    INTERNAL = 70


# Error code (SupnetError.code) -> exit code; codes not listed exit INTERNAL.
EXIT_CODES: dict[str, ExitCode] = {
    InvalidArgumentError.code: ExitCode.USAGE,
    ValidationError.code: ExitCode.USAGE,
    UnavailableError.code: ExitCode.UNAVAILABLE,
    StoreError.code: ExitCode.UNAVAILABLE,
    BackPressureError.code: ExitCode.UNAVAILABLE,
    "LAUNCH": ExitCode.UNAVAILABLE,  # node.localtree: a node of a local tree could not be started
    "STORAGE_FULL": ExitCode.UNAVAILABLE,  # the database or disk is full: retry once space is freed
    "SCHEMA_OUTDATED": ExitCode.CONFIG,  # node.store: the database needs `supnet db upgrade`
    "CLOCK_SKEW": ExitCode.REFUSED,
    "HISTORY_REWRITTEN": ExitCode.REFUSED,  # a restored node's chain: `supnet reports resync`
    ConfigError.code: ExitCode.CONFIG,
    CalendarError.code: ExitCode.CONFIG,
    NotFoundError.code: ExitCode.NOT_FOUND,
    PermissionDeniedError.code: ExitCode.REFUSED,
    UnauthenticatedError.code: ExitCode.REFUSED,
    ExpiredError.code: ExitCode.REFUSED,
    StaleError.code: ExitCode.REFUSED,
    IntegrityError.code: ExitCode.VERIFICATION_FAILED,
    ConflictError.code: ExitCode.CONFLICT,
    InvalidStateError.code: ExitCode.CONFLICT,
}


def exit_code_for(error: SupnetError) -> ExitCode:
    """The exit code of a command that fails with ``error``."""
    return EXIT_CODES.get(error.code, ExitCode.INTERNAL)
