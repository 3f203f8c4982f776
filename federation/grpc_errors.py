"""The one place that maps SupnetError to a gRPC status code and public message (servers) and back (clients).

Decisions (stable; clients and tests rely on them):

====================================  ===================  ==================================================
error (code)                          gRPC status          why
====================================  ===================  ==================================================
NotFoundError (NOT_FOUND)             NOT_FOUND
PermissionDeniedError                 PERMISSION_DENIED    e.g. a report from a node that is not a registered
                                                           child ("unknown child")
UnauthenticatedError                  UNAUTHENTICATED      e.g. a report whose signature does not verify: the
                                                           sender's identity is not established
IntegrityError (INTEGRITY)            FAILED_PRECONDITION  broken hash chain, sequence gap: the receiver's
                                                           state does not allow it; resending the same bytes
                                                           will not help until the sender fixes its order
StaleError (STALE)                    ALREADY_EXISTS       stale sequence: that sequence is already stored
                                                           with a different digest (history rewrite/replay);
                                                           a drill-down query's nonce seen before (replay)
ExpiredError (EXPIRED)                FAILED_PRECONDITION  a query issued outside the freshness window (too
                                                           old, or ahead of the receiver's clock): not a
                                                           replay; a new query helps once the clocks agree
HistoryRewrittenError                 ALREADY_EXISTS       a child's restored (rewound) chain: STALE's
(HISTORY_REWRITTEN)                                        status, its own code so the child's sender tells
                                                           its operators to resync
ClockSkewError (CLOCK_SKEW)           FAILED_PRECONDITION  a report dated beyond the clock tolerance
ValidationError (INVALID_RECORD),     INVALID_ARGUMENT
InvalidArgumentError
ConflictError (CONFLICT)              ALREADY_EXISTS
InvalidStateError, CalendarError      FAILED_PRECONDITION
BackPressureError                     RESOURCE_EXHAUSTED
UnavailableError, StoreError,         UNAVAILABLE          retryable
StorageFullError (STORAGE_FULL)                            (a full database: retry once space is freed)
ConfigError                           FAILED_PRECONDITION
anything else                         INTERNAL             public message is a reference id only; the
                                                           details (traceback) go to the log
====================================  ===================  ==================================================

Lookup is by the stable ``code`` of the error class, walking the class hierarchy, so a new subclass
(e.g. ``class SignatureError(UnauthenticatedError)`` with its own code) inherits its parent's status
unless ``_STATUS_BY_CODE`` names one for its code. Every call aborted for an error carries trailing
metadata ``supnet-error-code`` (and ``supnet-error-field`` for validation errors) so clients can rebuild
the error with :func:`supnet_error_from_rpc`.

Servers apply the mapping with :class:`ErrorMappingInterceptor`, so servicers just raise. It wraps every
kind of method, streaming responses included (an error raised while the response iterator runs ends the
stream with its status), answers request bytes that do not parse with INVALID_ARGUMENT, and leaves a call
the handler aborted itself as it is. A :class:`RelayedRpcError` (a downstream hop's refusal) passes up with
the status, message and code that hop sent.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import grpc

from federation.errors import (
    BackPressureError,
    ClockSkewError,
    ExpiredError,
    HistoryRewrittenError,
    IntegrityError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    StaleError,
    StorageFullError,
    SupnetError,
    UnauthenticatedError,
    UnavailableError,
)

log = logging.getLogger(__name__)

ERROR_CODE_METADATA_KEY = "supnet-error-code"
ERROR_FIELD_METADATA_KEY = "supnet-error-field"

# Keyed by SupnetError.code (not class) so node-side errors map without federation importing node.
_STATUS_BY_CODE: dict[str, grpc.StatusCode] = {
    "NOT_FOUND": grpc.StatusCode.NOT_FOUND,
    "PERMISSION_DENIED": grpc.StatusCode.PERMISSION_DENIED,
    "UNAUTHENTICATED": grpc.StatusCode.UNAUTHENTICATED,
    "INTEGRITY": grpc.StatusCode.FAILED_PRECONDITION,
    "STALE": grpc.StatusCode.ALREADY_EXISTS,
    "EXPIRED": grpc.StatusCode.FAILED_PRECONDITION,
    "INVALID_ARGUMENT": grpc.StatusCode.INVALID_ARGUMENT,
    "INVALID_RECORD": grpc.StatusCode.INVALID_ARGUMENT,
    "CONFLICT": grpc.StatusCode.ALREADY_EXISTS,
    "INVALID_STATE": grpc.StatusCode.FAILED_PRECONDITION,
    "CALENDAR_NO_DATA": grpc.StatusCode.FAILED_PRECONDITION,
    "CONFIG": grpc.StatusCode.FAILED_PRECONDITION,
    "CLOCK_SKEW": grpc.StatusCode.FAILED_PRECONDITION,
    "BACK_PRESSURE": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "UNAVAILABLE": grpc.StatusCode.UNAVAILABLE,
    "STORE": grpc.StatusCode.UNAVAILABLE,
}

# Client side: which federation error a status becomes when the server sent no supnet code.
_ERROR_BY_STATUS: dict[grpc.StatusCode, type[SupnetError]] = {
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.FAILED_PRECONDITION: IntegrityError,
    grpc.StatusCode.ALREADY_EXISTS: StaleError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: BackPressureError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: UnavailableError,
}

_ERROR_BY_CODE: dict[str, type[SupnetError]] = {
    cls.code: cls
    for cls in (
        NotFoundError,
        PermissionDeniedError,
        UnauthenticatedError,
        IntegrityError,
        StaleError,
        ExpiredError,
        InvalidArgumentError,
        BackPressureError,
        UnavailableError,
        HistoryRewrittenError,
        ClockSkewError,
        StorageFullError,
    )
}


@dataclass(frozen=True)
class RelayedRpcError(Exception):
    """A downstream hop refused or failed: its status and message are passed up unchanged (hop named)."""

    status: grpc.StatusCode
    details: str
    error_code: str

    def __str__(self) -> str:
        return f"{self.status.name}: {self.details}"


def status_for(error: BaseException) -> grpc.StatusCode:
    """The gRPC status for an error: by its code, else its nearest ancestor's code, else INTERNAL."""
    if isinstance(error, RelayedRpcError):
        return error.status
    if not isinstance(error, SupnetError):
        return grpc.StatusCode.INTERNAL
    for cls in type(error).__mro__:
        code = cls.__dict__.get("code")
        if isinstance(code, str) and code in _STATUS_BY_CODE:
            return _STATUS_BY_CODE[code]
    return grpc.StatusCode.INTERNAL


def public_status(error: BaseException, method: str = "") -> tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]]:
    """Status, public message and trailing metadata for an error; logs it (internal ones with traceback)."""
    if isinstance(error, RelayedRpcError):
        # The downstream hop already chose the status and public message (and logged it): pass them up as sent.
        return error.status, error.details, ((ERROR_CODE_METADATA_KEY, error.error_code),) if error.error_code else ()
    status = status_for(error)
    if status is grpc.StatusCode.INTERNAL:
        # Internal details (SQL, paths, tracebacks) stay in the log; the caller gets a reference to quote.
        reference = uuid.uuid4().hex[:12]
        log.error("rpc %s failed with an internal error, ref %s", method, reference, exc_info=error)
        return status, f"internal error (ref {reference})", ((ERROR_CODE_METADATA_KEY, "INTERNAL"),)
    assert isinstance(error, SupnetError)
    log.info("rpc %s refused: %s %s: %s", method, status.name, error.code, error.message)
    metadata: list[tuple[str, str]] = [(ERROR_CODE_METADATA_KEY, error.code)]
    field = getattr(error, "field", None)
    if isinstance(field, str) and field:
        metadata.append((ERROR_FIELD_METADATA_KEY, field))
    return status, error.message, tuple(metadata)


def _already_aborted(context: Any) -> bool:
    # A handler that called context.abort() itself raises a bare Exception after setting the code;
    # that status must pass through untouched instead of becoming INTERNAL.
    code_getter = getattr(context, "code", None)
    if code_getter is None:
        return False
    try:
        code = code_getter()
    except (AttributeError, NotImplementedError):
        return False
    return code is not None and code is not grpc.StatusCode.OK


def _abort(context: grpc.ServicerContext, error: BaseException, method: str) -> None:
    status, message, metadata = public_status(error, method)
    if metadata:
        context.set_trailing_metadata(metadata)
    context.abort(status, message)


class _Undecodable:
    """A request message whose bytes did not parse (grpc itself would answer INTERNAL for it)."""

    def __init__(self, method: str, error: Exception) -> None:
        self.error = InvalidArgumentError(f"request to {method} is not a valid protobuf message: {error}")


def _lenient(deserializer: Callable[[bytes], Any] | None, method: str) -> Callable[[bytes], Any] | None:
    """Wrap a request deserializer so bad bytes become an _Undecodable the behaviour answers INVALID_ARGUMENT."""
    if deserializer is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as error:  # DecodeError, or whatever a custom deserializer raises
            return _Undecodable(method, error)

    return parse


def _checked_stream(requests: Iterator[Any]) -> Iterator[Any]:
    """A request stream that raises InvalidArgumentError at the first message that did not parse."""
    for request in requests:
        if isinstance(request, _Undecodable):
            raise request.error
        yield request


def _wrap_behavior(
    behavior: Callable[..., Any], method: str, streaming_response: bool, streaming_request: bool = False
) -> Callable[..., Any]:
    def checked(request: Any) -> Any:
        if streaming_request:
            return _checked_stream(request)
        if isinstance(request, _Undecodable):
            raise request.error
        return request

    if streaming_response:

        def stream_behavior(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            try:
                yield from behavior(checked(request), context)
            except Exception as exc:
                if _already_aborted(context):
                    raise
                _abort(context, exc, method)

        return stream_behavior

    def unary_behavior(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return behavior(checked(request), context)
        except Exception as exc:
            if _already_aborted(context):
                raise
            _abort(context, exc, method)
            raise

    return unary_behavior


if TYPE_CHECKING:
    _ServerInterceptorBase = grpc.ServerInterceptor[Any, Any]
else:  # grpc's runtime class is not generic; only its stubs are
    _ServerInterceptorBase = grpc.ServerInterceptor


class ErrorMappingInterceptor(_ServerInterceptorBase):
    """Sync server interceptor applying the same mapping to every method of every servicer."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        # Undecodable request bytes become INVALID_ARGUMENT (grpc's own answer would be INTERNAL).
        deserializer = _lenient(handler.request_deserializer, method)
        # Each handler has exactly one non-None behaviour; rebuild it with the wrapped one.
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_behavior(handler.unary_unary, method, False),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_behavior(handler.unary_stream, method, True),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                _wrap_behavior(handler.stream_unary, method, False, True),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                _wrap_behavior(handler.stream_stream, method, True, True),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


def supnet_error_from_rpc(error: grpc.RpcError, peer: str = "") -> SupnetError:
    """Client side: turn a failed call into the matching federation error (message kept, peer named)."""
    call = cast(grpc.Call, error)
    try:
        status = call.code()
        details = call.details() or ""
        trailing = call.trailing_metadata() or ()
    except AttributeError:  # an RpcError that is not a Call (e.g. a channel-level failure)
        return UnavailableError(f"{peer or 'peer'}: {error}")
    sent_code = ""
    for key, value in trailing:
        if key == ERROR_CODE_METADATA_KEY and isinstance(value, str):
            sent_code = value
    error_class = _ERROR_BY_CODE.get(sent_code) or _ERROR_BY_STATUS.get(status, SupnetError)
    prefix = f"{peer}: " if peer else ""
    status_name = status.name if status is not None else "UNKNOWN"
    result = error_class(f"{prefix}{status_name}: {details}")
    if error_class is SupnetError and sent_code:
        result.code = sent_code
    return result


def error_code_of(error: grpc.RpcError) -> str:
    """The supnet error code a server attached to a failed call ('' when none)."""
    call = cast(grpc.Call, error)
    try:
        trailing = call.trailing_metadata() or ()
    except AttributeError:
        return ""
    for key, value in trailing:
        if key == ERROR_CODE_METADATA_KEY and isinstance(value, str):
            return value
    return ""
