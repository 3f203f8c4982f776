"""Domain errors of the node, on top of the federation hierarchy rooted at SupnetError."""

from __future__ import annotations

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
    "BackPressureError",
    "CalendarError",
    "ConfigError",
    "ConflictError",
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
