"""The SupnetError -> gRPC status mapping, exercised through a real grpc server on an ephemeral port."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from federation import (
    ERROR_CODE_METADATA_KEY,
    ERROR_FIELD_METADATA_KEY,
    BackPressureError,
    ErrorMappingInterceptor,
    IntegrityError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    RelayedRpcError,
    StaleError,
    SupnetError,
    UnauthenticatedError,
    UnavailableError,
    error_code_of,
    status_for,
    supnet_error_from_rpc,
)
from node.errors import CalendarError, ConflictError, InvalidStateError, StoreError, ValidationError


class _SignatureError(UnauthenticatedError):
    """A subclass with its own code must inherit its parent's status."""

    code = "BAD_SIGNATURE_TEST"


ERRORS: list[tuple[BaseException, grpc.StatusCode]] = [
    (NotFoundError("case 42 not found"), grpc.StatusCode.NOT_FOUND),
    (PermissionDeniedError("unknown child gd.x"), grpc.StatusCode.PERMISSION_DENIED),
    (UnauthenticatedError("bad signature"), grpc.StatusCode.UNAUTHENTICATED),
    (_SignatureError("bad signature, subclass"), grpc.StatusCode.UNAUTHENTICATED),
    (IntegrityError("broken chain"), grpc.StatusCode.FAILED_PRECONDITION),
    (StaleError("stale sequence"), grpc.StatusCode.ALREADY_EXISTS),
    (InvalidArgumentError("bad page token"), grpc.StatusCode.INVALID_ARGUMENT),
    (ValidationError("record 3: field x: bad", field="x"), grpc.StatusCode.INVALID_ARGUMENT),
    (ConflictError("case 1 re-sent with other content"), grpc.StatusCode.ALREADY_EXISTS),
    (InvalidStateError("alert already corrected"), grpc.StatusCode.FAILED_PRECONDITION),
    (CalendarError("no calendar for 2031"), grpc.StatusCode.FAILED_PRECONDITION),
    (BackPressureError("outbox full"), grpc.StatusCode.RESOURCE_EXHAUSTED),
    (UnavailableError("child down"), grpc.StatusCode.UNAVAILABLE),
    (StoreError("database gone"), grpc.StatusCode.UNAVAILABLE),
    (SupnetError("unmapped base error"), grpc.StatusCode.INTERNAL),
    (RuntimeError("secret /var/lib/path and SQL text"), grpc.StatusCode.INTERNAL),
]


class _Servicer:
    """Methods raising whatever the test puts in ``self.error``."""

    def __init__(self) -> None:
        self.error: BaseException = RuntimeError("unset")

    def Unary(self, request: bytes, context: grpc.ServicerContext) -> bytes:  # noqa: N802
        raise self.error

    def Stream(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:  # noqa: N802
        yield b"first"
        raise self.error

    def SelfAbort(self, request: bytes, context: grpc.ServicerContext) -> bytes:  # noqa: N802
        context.abort(grpc.StatusCode.OUT_OF_RANGE, "handler chose its own status")
        raise AssertionError("unreachable")

    def Ok(self, request: bytes, context: grpc.ServicerContext) -> bytes:  # noqa: N802
        return b"pong:" + request


def _identity(value: bytes) -> bytes:
    return value


def _start_server(
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]], interceptors: tuple[Any, ...] = ()
) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=interceptors)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Errors", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[_Servicer, grpc.Channel]]:
    servicer = _Servicer()
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(servicer.Unary, _identity, _identity),
        "Stream": grpc.unary_stream_rpc_method_handler(servicer.Stream, _identity, _identity),
        "SelfAbort": grpc.unary_unary_rpc_method_handler(servicer.SelfAbort, _identity, _identity),
        "Ok": grpc.unary_unary_rpc_method_handler(servicer.Ok, _identity, _identity),
    }
    server, port = _start_server(handlers, (ErrorMappingInterceptor(),))
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield servicer, channel
    channel.close()
    server.stop(None)


def _call(channel: grpc.Channel, method: str) -> Callable[..., Any]:
    return channel.unary_unary(f"/test.Errors/{method}", request_serializer=_identity, response_deserializer=_identity)


@pytest.mark.parametrize(("error", "status"), ERRORS, ids=[type(e).__name__ + ":" + str(e)[:12] for e, _ in ERRORS])
def test_unary_error_maps_to_status_and_public_message(
    served: tuple[_Servicer, grpc.Channel], error: BaseException, status: grpc.StatusCode
) -> None:
    servicer, channel = served
    servicer.error = error
    with pytest.raises(grpc.RpcError) as raised:
        _call(channel, "Unary")(b"x", timeout=5)
    call = raised.value
    assert call.code() is status  # type: ignore[attr-defined]
    details = call.details()  # type: ignore[attr-defined]
    if status is grpc.StatusCode.INTERNAL:
        # Nothing of the internal message leaks; the caller gets a reference to quote.
        assert str(error) not in details
        assert details.startswith("internal error (ref ")
        assert error_code_of(call) == "INTERNAL"
    else:
        assert details == str(error)
        assert error_code_of(call) == getattr(error, "code", "")


def test_validation_error_carries_field_in_trailing_metadata(served: tuple[_Servicer, grpc.Channel]) -> None:
    servicer, channel = served
    servicer.error = ValidationError("record 7: accepted_at: not a date", field="accepted_at", reason="format")
    with pytest.raises(grpc.RpcError) as raised:
        _call(channel, "Unary")(b"x", timeout=5)
    trailing = dict(raised.value.trailing_metadata())  # type: ignore[attr-defined]
    assert trailing[ERROR_CODE_METADATA_KEY] == "INVALID_RECORD"
    assert trailing[ERROR_FIELD_METADATA_KEY] == "accepted_at"


def test_internal_error_details_go_to_the_log(
    served: tuple[_Servicer, grpc.Channel], caplog: pytest.LogCaptureFixture
) -> None:
    servicer, channel = served
    servicer.error = RuntimeError("the secret internal detail")
    with caplog.at_level(logging.ERROR, logger="federation.grpc_errors"), pytest.raises(grpc.RpcError) as raised:
        _call(channel, "Unary")(b"x", timeout=5)
    reference = raised.value.details().removeprefix("internal error (ref ").rstrip(")")  # type: ignore[attr-defined]
    logged = [record for record in caplog.records if reference in record.getMessage()]
    assert logged and logged[0].exc_info is not None
    assert "the secret internal detail" in str(logged[0].exc_info[1])


def test_streaming_error_after_first_message(served: tuple[_Servicer, grpc.Channel]) -> None:
    servicer, channel = served
    servicer.error = NotFoundError("page 3 is gone")
    stream = channel.unary_stream("/test.Errors/Stream", request_serializer=_identity, response_deserializer=_identity)
    received = []
    with pytest.raises(grpc.RpcError) as raised:
        for message in stream(b"x", timeout=5):
            received.append(message)
    assert received == [b"first"]
    assert raised.value.code() is grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
    assert raised.value.details() == "page 3 is gone"  # type: ignore[attr-defined]


def test_handler_abort_passes_through_untouched(served: tuple[_Servicer, grpc.Channel]) -> None:
    _servicer, channel = served
    with pytest.raises(grpc.RpcError) as raised:
        _call(channel, "SelfAbort")(b"x", timeout=5)
    assert raised.value.code() is grpc.StatusCode.OUT_OF_RANGE  # type: ignore[attr-defined]
    assert raised.value.details() == "handler chose its own status"  # type: ignore[attr-defined]


def test_success_is_untouched(served: tuple[_Servicer, grpc.Channel]) -> None:
    _servicer, channel = served
    assert _call(channel, "Ok")(b"ping", timeout=5) == b"pong:ping"


def test_relayed_error_passes_up_as_the_downstream_hop_sent_it(served: tuple[_Servicer, grpc.Channel]) -> None:
    servicer, channel = served
    for error in [
        RelayedRpcError(grpc.StatusCode.PERMISSION_DENIED, "gd.gz: gd.sz may not ask", "PERMISSION_DENIED"),
        RelayedRpcError(grpc.StatusCode.UNAVAILABLE, "gd.gz unreachable from gd: UNAVAILABLE: down", ""),
    ]:
        servicer.error = error
        with pytest.raises(grpc.RpcError) as raised:
            _call(channel, "Unary")(b"x", timeout=5)
        assert raised.value.code() is error.status  # type: ignore[attr-defined]
        assert raised.value.details() == error.details  # type: ignore[attr-defined]
        assert error_code_of(raised.value) == error.error_code


def test_interceptor_maps_plain_function_handlers() -> None:
    def failing(request: bytes, context: grpc.ServicerContext) -> bytes:
        raise StaleError("report gd.a #3 is at or below the last accepted #5")

    def streaming(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        yield b"one"
        raise BackPressureError("queue full")

    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(failing, _identity, _identity),
        "Stream": grpc.unary_stream_rpc_method_handler(streaming, _identity, _identity),
    }
    server, port = _start_server(handlers, (ErrorMappingInterceptor(),))
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        with pytest.raises(grpc.RpcError) as raised:
            _call(channel, "Unary")(b"x", timeout=5)
        assert raised.value.code() is grpc.StatusCode.ALREADY_EXISTS  # type: ignore[attr-defined]
        error = supnet_error_from_rpc(raised.value, "parent")
        assert isinstance(error, StaleError)
        assert "at or below the last accepted #5" in error.message
        stream = channel.unary_stream(
            "/test.Errors/Stream", request_serializer=_identity, response_deserializer=_identity
        )
        with pytest.raises(grpc.RpcError) as raised_stream:
            list(stream(b"x", timeout=5))
        assert raised_stream.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
    finally:
        channel.close()
        server.stop(None)


def test_client_side_rebuilds_the_error_class(served: tuple[_Servicer, grpc.Channel]) -> None:
    servicer, channel = served
    for error, expected_class in [
        (PermissionDeniedError("unknown child gd.q"), PermissionDeniedError),
        (UnauthenticatedError("bad signature"), UnauthenticatedError),
        (IntegrityError("broken chain"), IntegrityError),
        (BackPressureError("full"), BackPressureError),
    ]:
        servicer.error = error
        with pytest.raises(grpc.RpcError) as raised:
            _call(channel, "Unary")(b"x", timeout=5)
        rebuilt = supnet_error_from_rpc(raised.value, "127.0.0.1")
        assert type(rebuilt) is expected_class
        assert str(error) in rebuilt.message and rebuilt.message.startswith("127.0.0.1: ")


def test_unreachable_peer_becomes_unavailable_error() -> None:
    # Port 1 on localhost: nothing listens, so the channel fails fast with UNAVAILABLE.
    channel = grpc.insecure_channel("127.0.0.1:1")
    try:
        with pytest.raises(grpc.RpcError) as raised:
            _call(channel, "Unary")(b"x", timeout=2)
        assert isinstance(supnet_error_from_rpc(raised.value, "parent"), UnavailableError)
    finally:
        channel.close()


def test_status_for_non_supnet_error_is_internal() -> None:
    assert status_for(ValueError("x")) is grpc.StatusCode.INTERNAL
    assert status_for(_SignatureError("x")) is grpc.StatusCode.UNAUTHENTICATED
