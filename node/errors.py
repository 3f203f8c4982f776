"""One exception hierarchy for the node, each class with a stable error code."""

from __future__ import annotations


class SupnetError(Exception):
    """Base of every error supnet raises on purpose; ``code`` is stable across releases."""

    code = "SUPNET"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


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


class NotFoundError(SupnetError):
    """A referenced entity (case, alert, complaint, node) does not exist."""

    code = "NOT_FOUND"


class InvalidStateError(SupnetError):
    """An operation is not allowed in the entity's current state."""

    code = "INVALID_STATE"


class StoreError(SupnetError):
    """The database cannot be opened or migrated."""

    code = "STORE"


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


class UnavailableError(SupnetError):
    """A peer node cannot be reached."""

    code = "UNAVAILABLE"


class BackPressureError(SupnetError):
    """A bounded queue (the outbox) is full."""

    code = "BACK_PRESSURE"
