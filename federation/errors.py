"""The root of supnet's one exception hierarchy, each class with a stable error code.

The federation layer raises these; node.errors re-exports them and adds the domain ones.
"""

from __future__ import annotations


class SupnetError(Exception):
    """Base of every error supnet raises on purpose; ``code`` is stable across releases."""

    code = "SUPNET"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class NotFoundError(SupnetError):
    """A referenced entity (case, alert, complaint, node) does not exist."""

    code = "NOT_FOUND"


class PermissionDeniedError(SupnetError):
    """The caller is authenticated but not allowed to do this."""

    code = "PERMISSION_DENIED"


class UnauthenticatedError(SupnetError):
    """The caller's identity could not be established."""

    code = "UNAUTHENTICATED"


class IntegrityError(SupnetError):
    """A signature, digest or hash chain does not verify."""

    code = "INTEGRITY"


class StaleError(SupnetError):
    """A report or query is older than what was already accepted (replay, stale sequence)."""

    code = "STALE"


class ExpiredError(SupnetError):
    """A signed request is outside its freshness window: issued too long ago, or ahead of the receiver's clock."""

    code = "EXPIRED"


class UnavailableError(SupnetError):
    """A peer node cannot be reached."""

    code = "UNAVAILABLE"


class BackPressureError(SupnetError):
    """A bounded queue (the outbox) is full."""

    code = "BACK_PRESSURE"


class InvalidArgumentError(SupnetError):
    """A request is malformed (bad field, bad page token, unknown grouping)."""

    code = "INVALID_ARGUMENT"


class HistoryRewrittenError(StaleError):
    """A child's report rewrites a sequence its parent already holds with another digest.

    E.g. the child's database was restored from an old backup: refused until its operator runs
    ``supnet reports resync``.
    """

    code = "HISTORY_REWRITTEN"


class ClockSkewError(SupnetError):
    """A peer's clock differs from ours by more than the tolerance; the message names the skew."""

    code = "CLOCK_SKEW"


class StorageFullError(UnavailableError):
    """The node's database or disk is full: the write was rolled back whole; retry once space is freed."""

    code = "STORAGE_FULL"


# SQLite's SQLITE_FULL, PostgreSQL's disk_full / out_of_memory SQLSTATEs (53100, 53200 is memory: not ours).
_SQLITE_FULL = 13
_POSTGRES_DISK_FULL = "53100"


def is_storage_full(error: BaseException) -> bool:
    """True when a database error (SQLAlchemy's or the driver's own) says the database or its disk is full.

    Duck-typed on the driver's error so this module imports no database library.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if getattr(current, "sqlite_errorcode", None) == _SQLITE_FULL:
            return True
        if _POSTGRES_DISK_FULL in (getattr(current, "sqlstate", None), getattr(current, "pgcode", None)):
            return True
        if "database or disk is full" in str(current):
            return True
        current = getattr(current, "orig", None) or current.__cause__
    return False
