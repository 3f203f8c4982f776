"""Hosted nodes' gRPC servers on one asyncio loop per host, running the same sync servicers on the host's pool.

A sync ``grpc.server`` keeps a thread polling its completion queue, and grpcio wakes it 5 times a second: a host of
85 nodes idled at 1.2% of a core for that alone (bench/grpc_idle.py). ``grpc.aio`` servers on one loop share one
poller. ``ServingLoop`` is that loop (a thread with ``start()``/``stop()``); ``SyncServicerBridge`` is the server
interceptor that runs each sync handler on the host's call pool, through a context with the sync API the servicers
use, and ends the call as grpc's sync server would (docs/architecture.md, "Hosted nodes share one event loop").
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from concurrent import futures
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from grpc import aio

from federation import map_errors

T = TypeVar("T")

# How long start/stop of a server may take on the loop before the caller gives up.
LOOP_CALL_TIMEOUT_SECONDS = 60.0
_DONE = object()


class ServingLoop:
    """One asyncio event loop on a thread of its own, for the gRPC servers of a host's nodes."""

    def __init__(self, name: str = "grpc-loop") -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running loop (after ``start()``)."""
        if self._loop is None:
            raise RuntimeError("the serving loop is not started")
        return self._loop

    def start(self) -> None:
        """Start the loop's thread (idempotent)."""
        if self._thread is not None:
            return
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name=self._name, daemon=True)
        self._thread.start()
        ready.wait()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = LOOP_CALL_TIMEOUT_SECONDS) -> T:
        """Run a coroutine on the loop from another thread and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self) -> None:
        """Stop the loop (its servers stopped first) and wait for its thread."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(LOOP_CALL_TIMEOUT_SECONDS)
        self._thread = self._loop = None


class _Aborted(Exception):  # noqa: N818 - control flow, not an error of ours
    """Raised in the pool thread by ``abort``: the bridge ends the call with this status on the loop."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class _ThreadContext:
    """The sync ServicerContext API the servicers use, over an aio context, for a handler on a pool thread.

    Reads (metadata, peer, auth context, time remaining) go straight to the aio context; what ends or shapes the
    call (abort, trailing metadata, code) is recorded here and applied on the loop by the bridge.
    """

    def __init__(self, context: aio.ServicerContext[Any, Any]) -> None:
        self._context = context
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []
        self._finished = False
        self.trailing: tuple[tuple[str, str | bytes], ...] | None = None
        self.aborted: _Aborted | None = None
        self._code: grpc.StatusCode | None = None
        self._details: str | None = None
        context.add_done_callback(self._on_done)  # type: ignore[arg-type]  # any callable of the context

    def _on_done(self, _context: Any) -> None:
        with self._lock:
            self._finished = True
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    # -- reads
    def invocation_metadata(self) -> Any:
        return self._context.invocation_metadata()

    def peer(self) -> str:
        return self._context.peer()

    def peer_identities(self) -> Any:
        return self._context.peer_identities()

    def peer_identity_key(self) -> Any:
        return self._context.peer_identity_key()

    def auth_context(self) -> Any:
        return self._context.auth_context()

    def time_remaining(self) -> float | None:
        return self._context.time_remaining()

    def is_active(self) -> bool:
        with self._lock:
            return not self._finished

    def add_callback(self, callback: Callable[[], None]) -> bool:
        """As grpc's: called when the call ends (also by a cancel); False if it has already ended."""
        with self._lock:
            if self._finished:
                return False
            self._callbacks.append(callback)
            return True

    # -- what ends or shapes the call
    def set_trailing_metadata(self, metadata: Sequence[tuple[str, str | bytes]]) -> None:
        self.trailing = tuple(metadata)

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def code(self) -> grpc.StatusCode | None:
        return self.aborted.code if self.aborted is not None else self._code

    def details(self) -> str | None:
        return self.aborted.details if self.aborted is not None else self._details

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.aborted = _Aborted(code, details)
        raise self.aborted

    def abort_with_status(self, status: Any) -> None:
        self.abort(status.code, status.details)

    async def finish(self) -> None:
        """On the loop, after the handler returned or raised: apply what it recorded (abort raises AbortError)."""
        if self.trailing is not None:
            self._context.set_trailing_metadata(self.trailing)
        if self.aborted is not None:
            await self._context.abort(self.aborted.code, self.aborted.details)
        if self._code is not None:
            self._context.set_code(self._code)
        if self._details is not None:
            self._context.set_details(self._details)


def _next_or_done(iterator: Iterator[Any]) -> Any:
    return next(iterator, _DONE)


class _SyncRequests:
    """An aio request stream read from a pool thread as a sync iterator (one message at a time, in order)."""

    def __init__(self, requests: AsyncIterator[Any], loop: asyncio.AbstractEventLoop) -> None:
        self._requests = requests
        self._loop = loop

    def __iter__(self) -> _SyncRequests:
        return self

    def __next__(self) -> Any:
        try:
            return asyncio.run_coroutine_threadsafe(_anext(self._requests), self._loop).result()
        except StopAsyncIteration:
            raise StopIteration from None


async def _anext(requests: AsyncIterator[Any]) -> Any:
    return await requests.__anext__()


if TYPE_CHECKING:
    _AioInterceptorBase = aio.ServerInterceptor[Any, Any]
else:  # grpc's runtime class is not generic; only its stubs are
    _AioInterceptorBase = aio.ServerInterceptor


class SyncServicerBridge(_AioInterceptorBase):
    """Runs every sync handler (errors mapped as on a sync server) on ``pool`` and streams as the sync server does."""

    def __init__(self, pool: futures.Executor) -> None:
        self._pool = pool

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler: grpc.RpcMethodHandler[Any, Any] | None = await continuation(handler_call_details)
        if handler is None:
            return None  # type: ignore[return-value]  # no such method: grpc answers UNIMPLEMENTED
        method = handler_call_details.method
        if any(
            inspect.iscoroutinefunction(behavior) or inspect.isasyncgenfunction(behavior)
            for behavior in (handler.unary_unary, handler.unary_stream, handler.stream_unary, handler.stream_stream)
            if behavior is not None
        ):
            return handler  # an aio servicer already (reflection on an aio server)
        mapped = map_errors(handler, method)
        if mapped.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(mapped.unary_unary, streaming_request=False),
                request_deserializer=mapped.request_deserializer,
                response_serializer=mapped.response_serializer,
            )
        if mapped.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._unary(mapped.stream_unary, streaming_request=True),
                request_deserializer=mapped.request_deserializer,
                response_serializer=mapped.response_serializer,
            )
        if mapped.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(mapped.unary_stream, streaming_request=False),
                request_deserializer=mapped.request_deserializer,
                response_serializer=mapped.response_serializer,
            )
        if mapped.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._stream(mapped.stream_stream, streaming_request=True),
                request_deserializer=mapped.request_deserializer,
                response_serializer=mapped.response_serializer,
            )
        return mapped

    def _unary(self, behavior: Callable[[Any, Any], Any], *, streaming_request: bool) -> Callable[..., Any]:
        pool = self._pool

        async def call(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            loop = asyncio.get_running_loop()
            bridge = _ThreadContext(context)
            argument = _SyncRequests(request, loop) if streaming_request else request
            try:
                response = await loop.run_in_executor(pool, behavior, argument, bridge)
            except _Aborted:
                response = None
            await bridge.finish()
            return response

        return call

    def _stream(self, behavior: Callable[[Any, Any], Iterator[Any]], *, streaming_request: bool) -> Callable[..., Any]:
        pool = self._pool

        async def call(request: Any, context: aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            loop = asyncio.get_running_loop()
            bridge = _ThreadContext(context)
            argument = _SyncRequests(request, loop) if streaming_request else request
            responses = behavior(argument, bridge)  # a generator: nothing runs until the first next()
            pending: asyncio.Future[Any] | None = None
            exhausted = False
            try:
                while True:
                    pending = loop.run_in_executor(pool, _next_or_done, responses)
                    try:
                        item = await pending
                    except _Aborted:
                        exhausted = True
                        break
                    if item is _DONE:
                        exhausted = True
                        break
                    yield item
            finally:
                if not exhausted:
                    _close_later(pool, responses, pending)
            await bridge.finish()

        return call


def _close_later(pool: futures.Executor, responses: Iterator[Any], pending: asyncio.Future[Any] | None) -> None:
    """Close a response generator the caller left (a cancel): once its running step is over, on the pool."""
    close = getattr(responses, "close", None)
    if close is None:
        return
    if pending is None or pending.done():
        pool.submit(close)
    else:
        pending.add_done_callback(lambda _future: pool.submit(close))
