"""In-process calls between hosted nodes: a query, subtree search or report to a node served by the same process.

A host process (node.server.hosting) registers each hosted node's NodeService servicer here while it serves. A node
calling a registered node (its child for queries, its parent for reports) at the address it has configured for it
calls that servicer directly instead of over loopback TLS: the same servicer code, authorization, audit and answer
as over gRPC, without the handshake, the framing and the thread hand-offs of a call to its own process. The caller
presents its TLS client certificate chain and the callee identifies it from that exactly as from a handshake
(NodeTrust.identify); errors come back as the ``grpc.RpcError`` the callee's server would have sent
(federation.grpc_errors), so callers treat both alike. docs/architecture.md "Hosted nodes" has the rules.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar

import grpc

from federation import NODE_SERVICE_NAME, public_status
from federation.proto.v1.common_pb2 import SignedEnvelope
from federation.proto.v1.report_pb2 import ReportAck

__all__ = ["LocalNodeService", "LocalNodeStub", "local_servicer", "register_local", "unregister_local"]

# The methods as grpc names them (in the logs of refusals, as the server's interceptor names them).
_SUBMIT_REPORT = f"/{NODE_SERVICE_NAME}/SubmitReport"
_QUERY = f"/{NODE_SERVICE_NAME}/Query"
_QUERY_SUBTREE = f"/{NODE_SERVICE_NAME}/QuerySubtree"
_R = TypeVar("_R")
_ANY_HOSTS = frozenset({"", "0.0.0.0", "[::]", "::", "localhost", "127.0.0.1", "[::1]"})


class LocalNodeService(Protocol):
    """What a hosted node registers: its NodeService servicer (node.server.grpc_server)."""

    def SubmitReport(self, request: SignedEnvelope, context: Any) -> ReportAck: ...  # noqa: N802

    def Query(self, request: SignedEnvelope, context: Any) -> SignedEnvelope: ...  # noqa: N802

    def QuerySubtree(self, request: SignedEnvelope, context: Any) -> Iterator[SignedEnvelope]: ...  # noqa: N802


_lock = threading.Lock()
# (node id, port) -> (the address it listens on, its servicer). Keyed by port too: a process may hold two nodes of
# the same id (test trees side by side), each reached at its own address.
_registered: dict[tuple[str, str], tuple[str, LocalNodeService]] = {}


def _port(address: str) -> str:
    return address.rpartition(":")[2]


def register_local(node_id: str, address: str, servicer: LocalNodeService) -> None:
    """Serve ``node_id``'s calls in process to nodes that reach it at ``address`` (host:port it listens on)."""
    with _lock:
        _registered[(node_id, _port(address))] = (address, servicer)


def unregister_local(node_id: str, servicer: LocalNodeService) -> None:
    """Stop serving in process (the node stops); a later registration of the same node is left alone."""
    with _lock:
        for key, (_address, registered) in list(_registered.items()):
            if key[0] == node_id and registered is servicer:
                del _registered[key]


def local_servicer(node_id: str, address: str) -> LocalNodeService | None:
    """The servicer of ``node_id`` if this process serves it at ``address``; None: call it over gRPC."""
    with _lock:
        entry = _registered.get((node_id, _port(address)))
    if entry is None:
        return None
    host, bound_host = address.rpartition(":")[0], entry[0].rpartition(":")[0]
    if host != bound_host and not (host in _ANY_HOSTS and bound_host in _ANY_HOSTS):
        return None
    return entry[1]


class LocalRpcError(grpc.RpcError, grpc.Call):
    """A failed in-process call, as the callee's server would have ended it (status, message, supnet code)."""

    def __init__(self, status: grpc.StatusCode, details: str, trailing: tuple[tuple[str, str], ...]) -> None:
        super().__init__(f"{status.name}: {details}")
        self._status = status
        self._details = details
        self._trailing = trailing

    def code(self) -> grpc.StatusCode:
        return self._status

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> Any:
        return self._trailing

    def initial_metadata(self) -> Any:
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float:
        return 0.0

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return False


def _cancelled() -> LocalRpcError:
    return LocalRpcError(grpc.StatusCode.CANCELLED, "cancelled", ())


def _deadline_exceeded() -> LocalRpcError:
    return LocalRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded", ())


def _failed(error: BaseException, method: str) -> LocalRpcError:
    status, details, trailing = public_status(error, method)
    return LocalRpcError(status, details, trailing)


class _CallContext:
    """The servicer context of one in-process call: the caller's certificates, the deadline, cancellation."""

    def __init__(self, caller_pems: tuple[bytes, bytes] | None, timeout: float | None) -> None:
        self._auth: dict[str, list[bytes]] = (
            {"x509_pem_cert": [caller_pems[0]], "x509_pem_cert_chain": [caller_pems[1]]} if caller_pems else {}
        )
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._callbacks: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._ended = False

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._auth

    def peer(self) -> str:
        return "local"

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(self._deadline - time.monotonic(), 0.0)

    def expired(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def add_callback(self, callback: Callable[[], None]) -> bool:
        with self._lock:
            if self._ended:
                return False
            self._callbacks.append(callback)
            return True

    def end(self) -> None:
        """The call is over (done, failed or cancelled): run its callbacks once, as grpc does on termination."""
        with self._lock:
            callbacks, self._callbacks, self._ended = self._callbacks, [], True
        for callback in callbacks:
            callback()


class _SubtreeCall:
    """An in-process QuerySubtree call: iterate the replies; ``cancel()`` stops the callee's fan-out."""

    def __init__(self, replies: Iterator[SignedEnvelope], context: _CallContext) -> None:
        self._replies = replies
        self._context = context
        self._cancelled = threading.Event()

    def __iter__(self) -> Iterator[SignedEnvelope]:
        return self

    def __next__(self) -> SignedEnvelope:
        if self._cancelled.is_set():
            raise _cancelled()
        if self._context.expired():
            self._context.end()
            raise _deadline_exceeded()
        try:
            reply = next(self._replies)
        except StopIteration:
            self._context.end()
            raise
        except Exception as error:
            self._context.end()
            if self._cancelled.is_set():
                raise _cancelled() from error
            raise _failed(error, _QUERY_SUBTREE) from error
        if self._context.expired():  # as over gRPC: a message after the deadline ends the call instead
            self._context.end()
            raise _deadline_exceeded()
        return reply

    def cancel(self) -> bool:
        self._cancelled.set()
        self._context.end()  # the callee's on_cancel: its producers stop and its children's calls are cancelled
        return True


class LocalNodeStub:
    """The NodeServiceStub calls nodes make of each other (reports, queries), answered by a servicer in this process."""

    def __init__(self, servicer: LocalNodeService, caller_pems: tuple[bytes, bytes] | None) -> None:
        self._servicer = servicer
        self._caller_pems = caller_pems

    def _unary(
        self,
        method: str,
        behaviour: Callable[[SignedEnvelope, Any], _R],
        request: SignedEnvelope,
        timeout: float | None,
    ) -> _R:
        context = _CallContext(self._caller_pems, timeout)
        try:
            reply = behaviour(request, context)
        except Exception as error:
            raise _failed(error, method) from error
        finally:
            context.end()
        if context.expired():
            # As over gRPC, an answer after the deadline is not delivered. A report stored meanwhile is acknowledged
            # again when it is sent again (the parent holds it with the same digest).
            raise _deadline_exceeded()
        return reply

    def SubmitReport(  # noqa: N802
        self, request: SignedEnvelope, *, timeout: float | None = None, wait_for_ready: bool | None = None
    ) -> ReportAck:
        """One report, verified, stored and applied by the parent's own servicer; its ack after the commit."""
        del wait_for_ready  # the parent is here: there is no connection to wait for
        return self._unary(_SUBMIT_REPORT, self._servicer.SubmitReport, request, timeout)

    def Query(  # noqa: N802
        self, request: SignedEnvelope, *, timeout: float | None = None, wait_for_ready: bool | None = None
    ) -> SignedEnvelope:
        """One drill-down query, answered (or forwarded further down) by the child's own servicer."""
        del wait_for_ready  # the child is here: there is no connection to wait for
        return self._unary(_QUERY, self._servicer.Query, request, timeout)

    def QuerySubtree(  # noqa: N802
        self, request: SignedEnvelope, *, timeout: float | None = None, wait_for_ready: bool | None = None
    ) -> _SubtreeCall:
        """A subtree query's stream of signed envelopes from the child's own servicer (lazily, as over gRPC)."""
        del wait_for_ready
        context = _CallContext(self._caller_pems, timeout)
        return _SubtreeCall(iter(self._servicer.QuerySubtree(request, context)), context)
