"""Hosted nodes' gRPC servers on one asyncio loop per host, running the same sync servicers on the host's pool.

A sync ``grpc.server`` keeps a thread polling its completion queue, and grpcio wakes it 5 times a second: a host of
85 nodes idled at 1.2% of a core for that alone (bench/grpc_idle.py). ``grpc.aio`` servers on one loop share one
poller. ``ServingLoop`` is that loop (a thread with ``start()``/``stop()``); ``SyncServicerBridge`` is the server
interceptor that runs each sync handler on the host's call pool, through a context with the sync API the servicers
use, and ends the call as grpc's sync server would (docs/architecture.md, "Hosted nodes share one event loop").
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from concurrent import futures
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from grpc import aio

from federation import map_errors

log = logging.getLogger(__name__)

T = TypeVar("T")

# How long start/stop of a server may take on the loop before the caller gives up.
LOOP_CALL_TIMEOUT_SECONDS = 60.0
_DONE = object()
# At a request stream's end, how long the bridge waits to see whether it was a cancel (see _next_request).
_CANCEL_LOOKS = 5
_CANCEL_LOOK_SECONDS = 0.002


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
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name=self._name, daemon=True)
        self._thread.start()
        ready.wait()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = LOOP_CALL_TIMEOUT_SECONDS) -> T:
        """Run a coroutine on the loop from another thread and return its result (cancelled past ``timeout``)."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result(timeout)
        except futures.TimeoutError:
            future.cancel()
            raise

    def stop(self) -> None:
        """Cancel what still runs on the loop (calls of servers not stopped), stop it and wait for its thread."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        try:
            self.run(_cancel_the_rest(), timeout=LOOP_CALL_TIMEOUT_SECONDS)
        except (futures.TimeoutError, RuntimeError) as error:
            log.warning("the serving loop's last calls did not end: %s", error)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(LOOP_CALL_TIMEOUT_SECONDS)
        if thread.is_alive():
            log.warning("the serving loop's thread did not end within %.0f s", LOOP_CALL_TIMEOUT_SECONDS)
        self._thread = self._loop = None


async def _cancel_the_rest() -> None:
    current = asyncio.current_task()
    rest = [task for task in asyncio.all_tasks() if task is not current]
    for task in rest:
        task.cancel()
    await asyncio.gather(*rest, return_exceptions=True)
    await asyncio.get_running_loop().shutdown_asyncgens()


class _Aborted(Exception):  # noqa: N818 - control flow, not an error of ours
    """Raised in the pool thread by ``abort``: the bridge ends the call with this status on the loop."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class _CallEnded(grpc.RpcError):
    """A request stream read after its call was cancelled or timed out (grpc's sync server raises an RpcError too)."""


class _ThreadContext:
    """The sync ServicerContext API the servicers use, over an aio context, for a handler on a pool thread.

    What describes the caller (peer, identities, auth context, metadata) is copied when the call starts, on the loop:
    grpc.aio releases the call when it ends, and reading the peer of an ended call crashes the process. What ends or
    shapes the call (abort, trailing metadata, code) is recorded here and applied on the loop by the bridge.
    """

    def __init__(self, context: aio.ServicerContext[Any, Any]) -> None:
        self._context = context
        self._peer = context.peer()
        self._peer_identities = context.peer_identities()
        self._peer_identity_key = context.peer_identity_key()
        self._auth_context = context.auth_context()
        self._metadata = context.invocation_metadata()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []
        self._finished = False
        self.trailing: tuple[tuple[str, str | bytes], ...] | None = None
        self.aborted: _Aborted | None = None
        self._code: grpc.StatusCode | None = None
        self._details: str | None = None
        # The call's task (the bridge's handler coroutine): grpc cancels it when the client cancels.
        self._task = asyncio.current_task()
        context.add_done_callback(self._on_done)  # type: ignore[arg-type]  # any callable of the context

    def _on_done(self, _context: Any) -> None:
        # On the loop thread, shared by every node of the host: a callback only signals (sets events, cancels).
        self.mark_ended()

    def mark_ended(self) -> None:
        """The call is over (done, cancelled or timed out): run the callbacks once."""
        with self._lock:
            self._finished = True
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("a call's end callback failed")

    def ended(self) -> bool:
        """On the loop: whether the call was cancelled or has ended (its task may not know yet)."""
        task = self._task
        cancelled = task is not None and (task.cancelled() or task.cancelling() > 0)
        return bool(cancelled or self._context.cancelled() or self._context.done())

    # -- reads
    def invocation_metadata(self) -> Any:
        return self._metadata

    def peer(self) -> str:
        return self._peer

    def peer_identities(self) -> Any:
        return self._peer_identities

    def peer_identity_key(self) -> Any:
        return self._peer_identity_key

    def auth_context(self) -> Any:
        return self._auth_context

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

    async def finish(self, error: BaseException | None = None) -> None:
        """On the loop, after the handler returned or raised: apply what it recorded (abort raises AbortError).

        ``error``: what the handler raised besides an abort. As on grpc's sync server, a code the handler set is
        sent; without one the call ends INTERNAL, with a reference to the log rather than the error's text.
        """
        if self.trailing is not None:
            self._context.set_trailing_metadata(self.trailing)
        if self.aborted is not None:
            await self._context.abort(self.aborted.code, self.aborted.details)
        if error is not None:
            if self._code is not None and self._code is not grpc.StatusCode.OK:
                await self._context.abort(self._code, self._details or "")
            reference = uuid.uuid4().hex[:12]
            log.error("a call failed with an internal error, ref %s", reference, exc_info=error)
            await self._context.abort(grpc.StatusCode.INTERNAL, f"internal error (ref {reference})")
        if self._code is not None:
            self._context.set_code(self._code)
        if self._details is not None:
            self._context.set_details(self._details)


def _next_or_done(iterator: Iterator[Any]) -> Any:
    return next(iterator, _DONE)


class _SyncRequests:
    """An aio request stream read from another thread as a sync iterator (one message at a time, in order).

    A stream whose call was cancelled or timed out ends in an RpcError, as on grpc's sync server, not as a client's
    half-close: the servicer must not take it for a completed stream.
    """

    def __init__(self, requests: AsyncIterator[Any], context: _ThreadContext, loop: asyncio.AbstractEventLoop) -> None:
        self._requests = requests
        self._context = context
        self._loop = loop

    def __iter__(self) -> _SyncRequests:
        return self

    def __next__(self) -> Any:
        try:
            future = asyncio.run_coroutine_threadsafe(_next_request(self._requests, self._context), self._loop)
        except RuntimeError as error:  # the loop is closed: the host is stopping
            raise _CallEnded(f"the server is stopping: {error}") from error
        try:
            return future.result()
        except StopAsyncIteration:
            raise StopIteration from None
        except futures.CancelledError as error:
            raise _CallEnded("the call ended") from error


async def _next_request(requests: AsyncIterator[Any], context: _ThreadContext) -> Any:
    try:
        return await requests.__anext__()
    except StopAsyncIteration:
        # grpc.aio ends the stream the same way for a half-close and for a cancel, and cancels the call's task as it
        # learns of the cancel, in a completion of its own: it is given a moment to arrive.
        for _ in range(_CANCEL_LOOKS):
            if context.ended():
                break
            await asyncio.sleep(_CANCEL_LOOK_SECONDS)
        if context.ended():
            context.mark_ended()
            raise _CallEnded("the call was cancelled or its deadline passed") from None
        raise


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
            argument = _SyncRequests(request, bridge, loop) if streaming_request else request
            response, failure = None, None
            try:
                response = await loop.run_in_executor(pool, behavior, argument, bridge)
            except _Aborted:
                pass
            except Exception as error:
                failure = error
            await bridge.finish(failure)
            return response

        return call

    def _stream(self, behavior: Callable[[Any, Any], Iterator[Any]], *, streaming_request: bool) -> Callable[..., Any]:
        pool = self._pool

        async def call(request: Any, context: aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            loop = asyncio.get_running_loop()
            bridge = _ThreadContext(context)
            argument = _SyncRequests(request, bridge, loop) if streaming_request else request
            responses = behavior(argument, bridge)  # a generator: nothing runs until the first next()
            step: futures.Future[Any] | None = None
            exhausted = False
            failure: Exception | None = None
            try:
                while True:
                    step = pool.submit(_next_or_done, responses)
                    try:
                        item = await asyncio.wrap_future(step)
                    except _Aborted:
                        exhausted = True
                        break
                    except Exception as error:
                        exhausted, failure = True, error
                        break
                    if item is _DONE:
                        exhausted = True
                        break
                    yield item
            finally:
                if not exhausted:
                    _close_after(pool, responses, step)
            await bridge.finish(failure)

        return call


def _close_after(pool: futures.Executor, responses: Iterator[Any], step: futures.Future[Any] | None) -> None:
    """Close a response generator the client left (a cancel) on the pool, once its running step is over."""
    close = getattr(responses, "close", None)
    if close is None:
        return

    def submit_close(_step: object = None) -> None:
        # A pool shut down: the host is stopping, and the generator goes with it.
        with contextlib.suppress(RuntimeError):
            pool.submit(_close_quietly, close)

    if step is None:
        submit_close()
    else:
        # A step already running is not stopped by a cancel: closing waits for it (a generator runs in one thread).
        step.add_done_callback(submit_close)


def _close_quietly(close: Callable[[], None]) -> None:
    try:
        close()
    except Exception:
        log.exception("closing a response stream the client left failed")
