"""The bridge that runs sync servicers on hosted nodes' grpc.aio servers (node.server.aio_bridge).

A real grpc.aio server on a ServingLoop with the bridge as its interceptor, a small service of sync handlers, and a
real sync client: what a sync grpc server would answer, the supnet error mapping, a client's cancel reaching the
handler's add_callback and closing its response generator, request streams, and a server made by NodeServer on the
loop serving its node.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from federation import ERROR_CODE_METADATA_KEY
from federation.proto.v1.node_service_pb2 import NodeInfoRequest
from node.errors import PermissionDeniedError
from node.server import ServingLoop
from node.server.aio_bridge import SyncServicerBridge

SERVICE = "test.Bridge"


class _Handlers:
    """Sync handlers with the ServicerContext calls supnet's servicers make."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()
        self.closed = threading.Event()
        self.contexts: list[Any] = []

    def echo(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        assert context.is_active()
        assert 0 < (context.time_remaining() or 0) <= 10
        metadata = dict(context.invocation_metadata())
        self.contexts.append(context)
        extra = metadata.get("x-extra", "")
        return request + (extra.encode() if isinstance(extra, str) else extra)

    def refuse(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        raise PermissionDeniedError("not yours")

    def parts(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        assert context.add_callback(self.cancelled.set)
        try:
            for number in range(1000):
                time.sleep(0.02)
                yield b"part %d" % number
        finally:
            self.closed.set()

    def totals(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        running = 0
        for request in requests:
            running += int(request)
            yield str(running).encode()

    def parse(self, request: NodeInfoRequest, context: grpc.ServicerContext) -> bytes:
        return b"parsed"


@pytest.fixture
def bridged() -> Iterator[tuple[grpc.Channel, _Handlers, ServingLoop]]:
    handlers = _Handlers()
    service = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Echo": grpc.unary_unary_rpc_method_handler(handlers.echo),
            "Refuse": grpc.unary_unary_rpc_method_handler(handlers.refuse),
            "Parts": grpc.unary_stream_rpc_method_handler(handlers.parts),
            "Totals": grpc.stream_stream_rpc_method_handler(handlers.totals),
            "Parse": grpc.unary_unary_rpc_method_handler(
                handlers.parse, request_deserializer=NodeInfoRequest.FromString
            ),
        },
    )
    loop = ServingLoop("grpc-test")
    loop.start()
    pool = futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="rpc-test")

    async def serve() -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server(interceptors=[SyncServicerBridge(pool)])
        server.add_generic_rpc_handlers((service,))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    server, port = loop.run(serve())
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield channel, handlers, loop
    finally:
        channel.close()
        loop.run(server.stop(0))
        loop.stop()
        pool.shutdown(wait=False)


def _method(channel: grpc.Channel, kind: str, name: str) -> Any:
    return getattr(channel, kind)(f"/{SERVICE}/{name}")


def test_a_sync_handler_answers_on_the_pool_with_the_callers_metadata(
    bridged: tuple[grpc.Channel, _Handlers, ServingLoop],
) -> None:
    channel, handlers, _ = bridged
    assert _method(channel, "unary_unary", "Echo")(b"hi", timeout=10, metadata=(("x-extra", "!"),)) == b"hi!"
    # After the call, its context says so, and a callback can no longer be added.
    context = handlers.contexts[-1]
    for _ in range(100):
        if not context.is_active():
            break
        time.sleep(0.01)
    assert not context.is_active()
    assert context.add_callback(lambda: None) is False


def test_a_supnet_error_becomes_its_status_and_code_as_on_a_sync_server(
    bridged: tuple[grpc.Channel, _Handlers, ServingLoop],
) -> None:
    channel, _, _ = bridged
    with pytest.raises(grpc.RpcError) as raised:
        _method(channel, "unary_unary", "Refuse")(b"", timeout=10)
    error: Any = raised.value
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error.details() == "not yours"
    assert (ERROR_CODE_METADATA_KEY, PermissionDeniedError.code) in tuple(error.trailing_metadata())


def test_a_clients_cancel_reaches_add_callback_and_closes_the_response_stream(
    bridged: tuple[grpc.Channel, _Handlers, ServingLoop],
) -> None:
    # The subtree search stops its fan-out by this callback (node.drilldown.subtree): on grpc.aio's own path for
    # sync handlers it never came (bench/grpc_idle.py).
    channel, handlers, _ = bridged
    call = _method(channel, "unary_stream", "Parts")(b"", timeout=30)
    assert next(call) == b"part 0"
    assert next(call) == b"part 1"
    call.cancel()
    assert handlers.cancelled.wait(5), "the cancel did not reach the handler's add_callback"
    assert handlers.closed.wait(5), "the handler's response generator was not closed"


def test_a_request_stream_is_read_in_order_from_the_pool_thread(
    bridged: tuple[grpc.Channel, _Handlers, ServingLoop],
) -> None:
    channel, _, _ = bridged
    replies = _method(channel, "stream_stream", "Totals")(iter([b"1", b"2", b"3", b"4"]), timeout=10)
    assert [int(reply) for reply in replies] == [1, 3, 6, 10]


def test_undecodable_request_bytes_are_invalid_argument(bridged: tuple[grpc.Channel, _Handlers, ServingLoop]) -> None:
    channel, _, _ = bridged
    with pytest.raises(grpc.RpcError) as raised:
        _method(channel, "unary_unary", "Parse")(b"\xff\xff\xff", timeout=10)
    error: Any = raised.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT  # grpc's own answer would be INTERNAL
    assert "not a valid protobuf message" in error.details()
