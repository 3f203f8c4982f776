"""One asyncio event loop per host process, on which every hosted node's gRPC server (``grpc.aio``) runs.

A synchronous ``grpc.server`` keeps a thread polling its completion queue, waking five times a second even when
no call comes: at 85 hosted nodes per process that polling was most of an idle host's CPU. ``grpc.aio`` servers
share the process's one completion queue, which wakes only for work, so a host runs all its nodes' servers on
this one loop thread. Their handlers stay the synchronous servicers, run on the host's shared call pool (grpc's
``migration_thread_pool``); the loop thread only moves bytes. See docs/architecture.md, "hosted nodes".
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

from node.errors import UnavailableError

T = TypeVar("T")

# Starting, binding or stopping a server on the loop takes milliseconds; a loop that does not answer in this time
# is stuck, and the caller gets an error instead of hanging.
LOOP_CALL_TIMEOUT_SECONDS = 60.0


class CallLoop:
    """An event loop on its own thread; ``call`` runs a function on it, ``wait`` awaits a coroutine there."""

    def __init__(self, name: str = "grpc-host-loop") -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = False

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def start(self) -> None:
        """Start the loop's thread (once)."""
        if not self._started:
            self._started = True
            self._thread.start()

    def call(self, function: Callable[[], T], timeout: float = LOOP_CALL_TIMEOUT_SECONDS) -> T:
        """Run ``function`` on the loop's thread (grpc.aio objects must be made there) and return its result."""

        async def run() -> T:
            return function()

        return self.wait(run, timeout)

    def wait(self, coroutine: Callable[[], Awaitable[T]], timeout: float = LOOP_CALL_TIMEOUT_SECONDS) -> T:
        """Await ``coroutine()`` on the loop and return its result (UnavailableError if the loop does not answer)."""
        if not self._started:
            raise UnavailableError("the host's call loop is not running")

        async def run() -> T:
            return await coroutine()

        future = asyncio.run_coroutine_threadsafe(run(), self._loop)
        try:
            return future.result(timeout)
        except TimeoutError as exc:
            future.cancel()
            raise UnavailableError(f"the host's call loop did not answer within {timeout:.0f} s") from exc

    def stop(self) -> None:
        """Stop the loop and join its thread (the servers on it must be stopped first)."""
        if not self._started:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=LOOP_CALL_TIMEOUT_SECONDS)
        if not self._thread.is_alive():
            self._loop.close()
        self._started = False
