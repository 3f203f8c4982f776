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
