"""Hop-by-hop drill-down routing: answer a query addressed to this node, or forward it one hop down.

Authorization happens first, in node.trust.authorization (identity from the peer certificate; the requester's own
signature on the query). With the PKI (mutual TLS) a forwarding hop relays the query envelope UNCHANGED to the
child on the path, over a channel that accepts only that child's certificate; the child authorizes it the same
way (its parent is the caller, the requester signed it). The answer is signed once, by the answering node,
with its report certificate chain attached, and relayed unchanged; hops on the way up check that it names the
target and answers this very query, and the client at the end verifies its signature through that chain.

In the insecure plaintext mode there are no certificates: a hop accepts a query signed by itself or by its
configured parent's key, so a forwarding hop re-signs the unchanged body bytes with its own key (the body
still names the original requester, and the answer's ``query_digest`` over the canonical body bytes still
matches); the hop directly above the answering node checks the answer with the key configured for that child.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from federation import (
    ERROR_CODE_METADATA_KEY,
    IntegrityError,
    InvalidArgumentError,
    NotFoundError,
    RelayedRpcError,
    UnauthenticatedError,
    UnavailableError,
    envelope_digest,
    parse_body,
    public_key_from_b64,
    serialize,
    short_hex,
    sign_envelope,
    supnet_error_from_rpc,
    verify_envelope,
)
from federation.proto.v1 import drilldown_pb2 as dd
from federation.proto.v1.common_pb2 import SignedEnvelope
from federation.proto.v1.drilldown_pb2 import QueryAnswer, QueryBody
from federation.proto.v1.node_service_pb2_grpc import NodeServiceStub
from node.app import Node
from node.drilldown.answers import answer_alerts, answer_case_detail, answer_cases, answer_complaints
from node.drilldown.figures import answer_ranking, answer_summary
from node.drilldown.spot_checks import answer_spot_check
from node.drilldown.stored_reports import answer_report
from node.trust import (
    DEFAULT_CHANNEL_OPTIONS,
    MIN_NONCE_BYTES,
    QUERY_BODY_TYPE,
    LocalNodeService,
    LocalNodeStub,
    NodeTrust,
    SigningIdentity,
    channel_to,
    is_in_subtree,
    local_servicer,
    presented_certificates,
    signing_identity,
)

__all__ = [
    "RECONNECT_GRACE_SECONDS",
    "QueryRouter",
    "build_query",
    "never_reached",
    "reconnect_grace",
]

log = logging.getLogger(__name__)
audit_log = logging.getLogger("supnet.audit")

# Time kept back from the caller's deadline for relaying the answer up the hops already passed.
FORWARD_MARGIN_SECONDS = 0.05
# Channels to the children reconnect within 2 s of a child coming back (gRPC's default backoff grows to 120 s, and
# a restarted street would stay "unreachable" to drill-down and subtree searches for that long).
CHILD_CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    *DEFAULT_CHANNEL_OPTIONS,
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 2000),
    # Not grpc.min_reconnect_backoff_ms: gRPC also uses it as the time a connection attempt may take (20 s), and
    # a handshake with a slow host must not be cut short by it.
    # A connection to a child is kept while idle (gRPC drops it after 30 min by default): a drill-down to a street
    # nobody asked for a while must not pay a TLS handshake per hop. An idle connection costs a socket, no CPU
    # (no keepalive pings); connect_children opens them ahead of the first query.
    ("grpc.client_idle_timeout_ms", 24 * 3600 * 1000),
)
# A channel whose last connection attempt failed (the child was still starting, or restarted) fails calls at once
# until its backoff (at most 2.4 s with jitter, above) tries again. A call that failed so is made once more, waiting
# this long for the connection (within the caller's deadline), before the child is named unreachable.
RECONNECT_GRACE_SECONDS = 3.0


# How each kind of query addressed to this node is answered: (answer message, next page token).
_ANSWERERS: dict[str, Callable[[Node, dd.QueryBody], tuple[Any, str]]] = {
    "summary": lambda node, body: answer_summary(
        node, body.summary, body.page_size, body.page_token, own_from_records=body.summary.own_from_records
    ),
    "ranking": lambda node, body: answer_ranking(node, body.ranking),
    "cases": lambda node, body: answer_cases(node, body.cases, body.page_size, body.page_token),
    "case_detail": lambda node, body: answer_case_detail(node, body.case_detail),
    "alerts": lambda node, body: answer_alerts(node, body.alerts, body.page_size, body.page_token),
    "complaints": lambda node, body: answer_complaints(node, body.complaints, body.page_size, body.page_token),
    "report": lambda node, body: answer_report(node, body.report),
    "spot_check": lambda node, body: answer_spot_check(node, body.spot_check),
}


def answer_locally(node: Node, body: dd.QueryBody) -> tuple[str, Any, str]:
    """Dispatch a query body addressed to this node: (answer field name, answer message, next page token)."""
    kind = body.WhichOneof("request") or ""
    answerer = _ANSWERERS.get(kind)
    if answerer is None:
        raise InvalidArgumentError("query names no request (summary, ranking, cases, case_detail, alerts, ...)")
    answer, token = answerer(node, body)
    return kind, answer, token


class QueryRouter:
    """Answers an authorized query addressed to this node, or forwards it one hop down and checks the answer."""

    def __init__(
        self,
        node: Node,
        *,
        trust: NodeTrust | None = None,
        identity: SigningIdentity | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._node = node
        self._id = node.config.id
        self._trust = trust
        self._identity = identity
        federation = node.config.federation
        self._children = {child.id: child for child in federation.children}
        # Plaintext mode only: the children's keys from the config.
        self._child_keys = {
            child.id: public_key_from_b64(child.public_key) for child in federation.children if child.public_key
        }
        self._default_timeout = federation.rpc_timeout_seconds
        self._wall_clock = wall_clock
        self._channels: dict[str, tuple[Any, grpc.Channel, NodeServiceStub]] = {}
        self._channels_lock = threading.Lock()
        # Children the last call did not reach: asked again without waiting for a connection (reconnect_grace).
        self._unreachable: set[str] = set()

    def _signer(self) -> SigningIdentity:
        return self._identity or signing_identity(self._node)

    # --- entry point ----------------------------------------------------------------------------

    def handle(self, envelope: SignedEnvelope, body: QueryBody, time_remaining: float | None = None) -> SignedEnvelope:
        """Return the signed answer envelope to an AUTHORIZED query (node.trust.authorization): local or relayed."""
        # DEBUG, not INFO: the durable record of every drill-down is the node's hash-chained audit log
        # (DrilldownAuditor, written before the answer leaves); a log line per query at INFO cost more than
        # 60 us per hop in a serving node (measured) and only repeated that record.
        if body.target_id == self._id:
            answer = self.answer(envelope, body)
            audit_log.debug(
                "drill-down served: %s asked %s for %s",
                body.requester_id,
                self._id,
                body.WhichOneof("request"),
            )
            return answer
        child_id = self._child_towards(body.target_id)
        audit_log.debug(
            "drill-down forwarded: %s asked %s for %s, via %s to %s",
            body.requester_id,
            body.target_id,
            body.WhichOneof("request"),
            self._id,
            child_id,
        )
        return self._forward(envelope, body, child_id, time_remaining)

    # --- local answer ---------------------------------------------------------------------------

    def answer(self, envelope: SignedEnvelope, body: QueryBody) -> SignedEnvelope:
        """Build and sign this node's answer to an authorized query addressed to it."""
        kind, message, next_page_token = answer_locally(self._node, body)
        answer = QueryAnswer(
            target_id=self._id,
            requester_id=body.requester_id,
            query_digest=envelope_digest(envelope),
            answered_at_ms=int(self._wall_clock() * 1000),
            next_page_token=next_page_token,
        )
        getattr(answer, kind).CopyFrom(message)
        return self._signer().sign_message(answer)

    # --- forwarding -----------------------------------------------------------------------------

    def next_hop(self, target_id: str) -> str:
        """The child through which a query for target_id is forwarded (NotFoundError if none)."""
        return self._child_towards(target_id)

    def _child_towards(self, target_id: str) -> str:
        for child_id in self._children:
            if is_in_subtree(target_id, child_id):
                return child_id
        raise NotFoundError(f"node {self._id} has no registered child on the path to {target_id}")

    def child_stub(self, child_id: str, address: str) -> NodeServiceStub | LocalNodeStub:
        """The kept stub to a child's server (the subtree search streams over the same channels).

        A child served by this same process (a host's nodes) is called in process: same servicer, no TLS hop.
        """
        return self._stub(child_id, address)

    def in_process(self, child_id: str, address: str) -> bool:
        """True when this process serves child_id at ``address``: it is called in process (node.trust.local_calls)."""
        return bool(address) and local_servicer(child_id, address) is not None

    def child_channel(self, child_id: str) -> grpc.Channel | None:
        """The kept channel to a child, if one was opened (by a query, a subtree search or connect_children)."""
        with self._channels_lock:
            cached = self._channels.get(child_id)
        return cached[1] if cached is not None else None

    def connect_children(self) -> list[str]:
        """Open (or re-open) the kept channel to every child with an address, without waiting; returns their ids.

        A job of the serving node (node.server.serving), at start and then periodically: the first drill-down to a
        child then finds its connection up (TLS handshake done) instead of opening it on the query's time. A child
        that is down is tried again by gRPC's reconnect backoff and at the next run; a READY channel is left alone.
        """
        nudged: list[str] = []
        for child_id, child in self._children.items():
            if not child.address or self.in_process(child_id, child.address):
                continue  # no address; or served by this process, called without a channel
            self._stub(child_id, child.address)
            channel = self.child_channel(child_id)
            assert channel is not None  # just kept by _stub
            if _connect_now(channel):
                nudged.append(child_id)
        return nudged

    def _stub(self, child_id: str, address: str) -> NodeServiceStub | LocalNodeStub:
        # Rebuilt when this node's TLS files change (rotation); the child's identity is part of the channel.
        # The stub is kept with its channel: building one per query costs more than a stat of the files.
        servicer = local_servicer(child_id, address)
        if servicer is not None:
            return self._local_stub(child_id, servicer)
        stamp = (address, self._trust.stamp() if self._trust is not None else None)
        with self._channels_lock:
            cached = self._channels.get(child_id)
            if cached is not None and cached[0] == stamp:
                return cached[2]
            if cached is not None:
                cached[1].close()
            channel = channel_to(self._node, address, child_id, options=CHILD_CHANNEL_OPTIONS)
            stub = NodeServiceStub(channel)
            self._channels[child_id] = (stamp, channel, stub)
            return stub

    def _local_stub(self, child_id: str, servicer: LocalNodeService) -> LocalNodeStub:
        # A child served by this process: no channel. One kept from before it was hosted here is done with.
        with self._channels_lock:
            remote = self._channels.pop(child_id, None)
        if remote is not None:
            remote[1].close()
        return LocalNodeStub(servicer, presented_certificates(self._trust.pki) if self._trust is not None else None)

    def _forward(
        self, envelope: SignedEnvelope, body: QueryBody, child_id: str, time_remaining: float | None
    ) -> SignedEnvelope:
        address = self._children[child_id].address
        if not address:
            raise UnavailableError(f"node {self._id} has no address configured for its child {child_id}")
        timeout = (time_remaining if time_remaining is not None else self._default_timeout) - FORWARD_MARGIN_SECONDS
        if timeout <= 0:
            raise UnavailableError(f"no time left to forward the query from {self._id} to {child_id}")
        if self._trust is not None:
            # Relayed unchanged: the child checks the requester's own signature, so this hop cannot widen it.
            forwarded = envelope
        else:
            # Plaintext mode: same body bytes signed by this hop, whose key the child has configured.
            forwarded = sign_envelope(self._signer().private_key, self._id, envelope.body_type, envelope.body)
        stub = self._stub(child_id, address)
        started = time.monotonic()
        try:
            reply: SignedEnvelope = stub.Query(forwarded, timeout=timeout)
        except grpc.RpcError as exc:
            grace = self.reconnect_grace(child_id, exc, timeout - (time.monotonic() - started))
            if grace is None:
                raise self._relayed(exc, child_id) from exc
            # Not delivered (no connection): sending the same envelope again is not a replay.
            try:
                reply = stub.Query(forwarded, timeout=grace, wait_for_ready=True)
            except grpc.RpcError as retry_exc:
                raise self._relayed(exc if _still_unconnected(retry_exc) else retry_exc, child_id) from retry_exc
        self.note_reached(child_id, True)
        self._check_answer(reply, envelope, body, child_id)
        return reply

    def reconnect_grace(self, child_id: str, error: grpc.RpcError, seconds_left: float) -> float | None:
        """``reconnect_grace`` for a call to child_id; None also when the last call did not reach it either.

        A child that is down costs its callers the wait once, not at every query or search: its channel reconnects
        by itself within about 2 s once it is back (CHILD_CHANNEL_OPTIONS).
        """
        if child_id in self._unreachable:
            return None
        return reconnect_grace(error, seconds_left)

    def note_reached(self, child_id: str, reached: bool) -> None:
        """Record whether the last call reached child_id (reconnect_grace)."""
        if reached:
            self._unreachable.discard(child_id)
        else:
            self._unreachable.add(child_id)

    def _relayed(self, error: grpc.RpcError, child_id: str) -> RelayedRpcError:
        call: grpc.Call = error  # type: ignore[assignment]
        status = call.code() or grpc.StatusCode.UNKNOWN
        details = call.details() or ""
        code = ""
        for key, value in call.trailing_metadata() or ():
            if key == ERROR_CODE_METADATA_KEY and isinstance(value, str):
                code = value
        self.note_reached(child_id, not never_reached(error))
        if status in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) and not code:
            # The child itself could not be reached (not a refusal it sent): name it.
            details = f"{child_id} unreachable from {self._id}: {supnet_error_from_rpc(error).message}"
            # With a code, the hops above relay it as this hop's finding, not as their own child being unreachable
            # (nor try it again: reconnect_grace).
            code = UnavailableError.code
        elif not details.startswith(child_id):
            details = f"{child_id}: {details}"
        log.info("forwarded query to %s failed: %s %s", child_id, status.name, details)
        return RelayedRpcError(status, details, code)

    def _check_answer(self, reply: SignedEnvelope, query: SignedEnvelope, body: QueryBody, child_id: str) -> None:
        answer = parse_body(reply, QueryAnswer)
        if reply.signer_id != body.target_id or answer.target_id != body.target_id:
            raise IntegrityError(
                f"answer relayed by {child_id} is signed by {reply.signer_id}, not by the target {body.target_id}"
            )
        expected = envelope_digest(query)
        if answer.query_digest != expected:
            raise IntegrityError(
                f"answer from {body.target_id} answers query {short_hex(answer.query_digest)}, "
                f"not {short_hex(expected)}"
            )
        if self._trust is not None:
            # The requester verifies the answer itself through the chain it carries (DrilldownClient); a signature
            # check at every relaying hop would only repeat that (~0.2 ms of Ed25519 per hop, measured).
            if not reply.certificate_chain:
                raise UnauthenticatedError(f"answer from {reply.signer_id} relayed by {child_id} carries no chain")
            return
        child_key = self._child_keys.get(reply.signer_id)
        if child_key is not None:
            verify_envelope(reply, child_key)
        elif reply.signer_id == child_id:
            raise UnauthenticatedError(f"node {self._id} has no public key configured for its child {child_id}")

    def close(self) -> None:
        """Close the channels to the children."""
        with self._channels_lock:
            for _stamp, channel, _stub in self._channels.values():
                channel.close()
            self._channels.clear()


def never_reached(error: grpc.RpcError) -> bool:
    """The call did not reach the child: UNAVAILABLE without a supnet error code (a refusal the child sent has one)."""
    call: grpc.Call = error  # type: ignore[assignment]
    if call.code() != grpc.StatusCode.UNAVAILABLE:
        return False
    return not any(key == ERROR_CODE_METADATA_KEY for key, _value in call.trailing_metadata() or ())


def reconnect_grace(error: grpc.RpcError, seconds_left: float) -> float | None:
    """The time to wait for a child's connection before trying a call once more, or None to give up now.

    Only a call that never reached the child is tried again, with time left on the caller's deadline.
    """
    if seconds_left <= FORWARD_MARGIN_SECONDS or not never_reached(error):
        return None
    return min(seconds_left, RECONNECT_GRACE_SECONDS)


def _still_unconnected(retry_error: grpc.RpcError) -> bool:
    """The second try ran out of its grace still waiting to connect: the first error says why (refused, ...)."""
    call: grpc.Call = retry_error  # type: ignore[assignment]
    return call.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def _connect_now(channel: grpc.Channel) -> bool:
    """Start connecting an IDLE channel without waiting; False if this grpcio offers no way to (nothing done).

    grpcio's public way, ``subscribe(try_to_connect=True)``, runs a polling thread per channel that raises when the
    channel is closed under it (rotation, stop); the call it makes, ``check_connectivity_state(True)`` of the core
    channel, is non-blocking and threadless, so it is called directly (tests/drilldown checks it connects).
    """
    check = getattr(getattr(channel, "_channel", None), "check_connectivity_state", None)
    if check is None:
        log.debug("this grpcio cannot connect a channel ahead of its first call; children connect on first use")
        return False
    try:
        check(True)
    except ValueError:
        # Closed meanwhile by a rotation rebuilding it (or by stop): the new channel is nudged at the next run.
        return False
    return True


def build_query(
    private_key: Ed25519PrivateKey,
    requester_id: str,
    target_id: str,
    *,
    page_size: int = 0,
    page_token: str = "",
    certificate_chain: Sequence[bytes] = (),
    **request: object,
) -> SignedEnvelope:
    """A query envelope signed by the requester (``request``: one of summary=, ranking=, cases=, ... messages).

    With the PKI, pass the requester's report certificate chain (DER, leaf first): every hop verifies the
    signature through it.
    """
    body = QueryBody(
        target_id=target_id,
        requester_id=requester_id,
        issued_at_ms=int(time.time() * 1000),
        nonce=os.urandom(MIN_NONCE_BYTES),
        page_size=page_size,
        page_token=page_token,
        **request,  # type: ignore[arg-type]
    )
    return sign_envelope(private_key, requester_id, QUERY_BODY_TYPE, serialize(body), certificate_chain)
