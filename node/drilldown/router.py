"""Hop-by-hop drill-down routing: answer a query addressed to this node, or forward it one hop down.

Authorization until the trust issue brings mTLS: a hop accepts a query envelope only when its signer is
this node itself (the local operator, who holds the node's key) or the configured parent (verified with
``federation.parent_public_key``). A forwarding hop therefore re-signs the *unchanged* body bytes with its
own key, so the next hop sees its parent as the signer; the body still names the original requester and
the answer's ``query_digest`` (over the canonical body bytes, independent of the signer) still matches.
The answer is signed once, by the answering node, and relayed unchanged; the hop directly above the
answering node checks that signature with the key it has configured for that child.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from federation.canonical import body_type_of, parse_body, serialize
from federation.chain import envelope_digest, short_hex
from federation.errors import (
    IntegrityError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    StaleError,
    UnauthenticatedError,
    UnavailableError,
)
from federation.grpc_errors import ERROR_CODE_METADATA_KEY, supnet_error_from_rpc
from federation.proto.v1.common_pb2 import SignedEnvelope
from federation.proto.v1.drilldown_pb2 import QueryAnswer, QueryBody
from federation.proto.v1.node_service_pb2_grpc import NodeServiceStub
from federation.signing import load_private_key, public_key_from_b64, sign_envelope, sign_message, verify_envelope
from node.app import Node
from node.drilldown.answers import answer_locally

log = logging.getLogger(__name__)
audit_log = logging.getLogger("supnet.audit")

QUERY_BODY_TYPE = body_type_of(QueryBody)
ANSWER_BODY_TYPE = body_type_of(QueryAnswer)
FRESHNESS_WINDOW_SECONDS = 300.0
MIN_NONCE_BYTES = 16
# Time kept back from the caller's deadline for relaying the answer up the hops already passed.
FORWARD_MARGIN_SECONDS = 0.05
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]


def node_key_path(data_dir: Path) -> Path:
    """Where ``supnet init`` puts a node's Ed25519 signing key (reports, drill-down answers, queries)."""
    return data_dir / "keys" / "report_signing.pem"


def load_node_key(node: Node) -> Ed25519PrivateKey:
    """The node's signing key."""
    return load_private_key(node_key_path(node.data_dir))


def is_in_subtree(node_id: str, root_id: str) -> bool:
    """True when node_id is root_id or one of its descendants (dotted-path prefix)."""
    return node_id == root_id or node_id.startswith(root_id + ".")


@dataclass(frozen=True)
class RelayedRpcError(Exception):
    """A downstream hop refused or failed: its status and message are passed up unchanged (hop named)."""

    status: grpc.StatusCode
    details: str
    error_code: str

    def __str__(self) -> str:
        return f"{self.status.name}: {self.details}"


class _NonceCache:
    """Recently seen (requester, nonce) pairs, so a replayed query is refused within the freshness window."""

    def __init__(self, window_seconds: float) -> None:
        self._window = window_seconds
        self._seen: dict[tuple[str, bytes], float] = {}
        self._lock = threading.Lock()

    def check_and_remember(self, requester_id: str, nonce: bytes, now: float) -> None:
        with self._lock:
            if len(self._seen) > 10_000:
                self._seen = {key: expiry for key, expiry in self._seen.items() if expiry > now}
            key = (requester_id, nonce)
            expiry = self._seen.get(key)
            if expiry is not None and expiry > now:
                raise StaleError(f"query from {requester_id} with nonce {nonce.hex()[:12]} was already served (replay)")
            self._seen[key] = now + 2 * self._window


class QueryRouter:
    """Serves Query envelopes for one node: authorize the caller, answer locally or forward one hop down."""

    def __init__(
        self,
        node: Node,
        *,
        private_key: Ed25519PrivateKey | None = None,
        freshness_seconds: float = FRESHNESS_WINDOW_SECONDS,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._node = node
        self._id = node.config.id
        self._key = private_key or load_node_key(node)
        self._own_public = self._key.public_key()
        federation = node.config.federation
        self._parent_id = federation.parent_id or node.config.parent_id
        self._parent_key = public_key_from_b64(federation.parent_public_key) if federation.parent_public_key else None
        self._children = {child.id: child for child in federation.children}
        self._child_keys = {
            child.id: public_key_from_b64(child.public_key) for child in federation.children if child.public_key
        }
        self._default_timeout = federation.rpc_timeout_seconds
        self._freshness = freshness_seconds
        self._wall_clock = wall_clock
        self._nonces = _NonceCache(freshness_seconds)
        self._channels: dict[str, grpc.Channel] = {}
        self._channels_lock = threading.Lock()

    # --- entry point ----------------------------------------------------------------------------

    def handle(self, envelope: SignedEnvelope, time_remaining: float | None = None) -> SignedEnvelope:
        """Authorize a query envelope and return the signed answer envelope (local or relayed)."""
        body = self._authorize(envelope)
        if body.target_id == self._id:
            answer = self.answer(envelope, body)
            audit_log.info(
                "drill-down served: %s asked %s for %s (via %s)",
                body.requester_id,
                self._id,
                body.WhichOneof("request"),
                envelope.signer_id,
            )
            return answer
        child_id = self._child_towards(body.target_id)
        audit_log.info(
            "drill-down forwarded: %s asked %s for %s, via %s to %s",
            body.requester_id,
            body.target_id,
            body.WhichOneof("request"),
            self._id,
            child_id,
        )
        return self._forward(envelope, body, child_id, time_remaining)

    # --- authorization --------------------------------------------------------------------------

    def _caller_key(self, signer_id: str) -> Ed25519PublicKey:
        if signer_id == self._id:
            return self._own_public
        if signer_id and signer_id == self._parent_id:
            if self._parent_key is None:
                raise UnauthenticatedError(
                    f"node {self._id} has no public key configured for its parent {signer_id} "
                    "(federation.parent_public_key)"
                )
            return self._parent_key
        raise PermissionDeniedError(
            f"node {self._id} takes drill-down queries only from its parent {self._parent_id or '(none)'} "
            f"or its local operator; the query is signed by {signer_id or '(nobody)'}"
        )

    def _authorize(self, envelope: SignedEnvelope) -> QueryBody:
        if envelope.body_type != QUERY_BODY_TYPE:
            raise InvalidArgumentError(f"Query expects a {QUERY_BODY_TYPE} envelope, got {envelope.body_type!r}")
        try:
            verify_envelope(envelope, self._caller_key(envelope.signer_id))
        except IntegrityError as error:
            # A query whose signature fails does not establish who sent it.
            raise UnauthenticatedError(f"drill-down query refused by {self._id}: {error.message}") from error
        body = parse_body(envelope, QueryBody)
        if not body.target_id:
            raise InvalidArgumentError("query names no target_id")
        if envelope.signer_id == self._id:
            if body.requester_id != self._id:
                raise PermissionDeniedError(
                    f"a query signed by {self._id}'s own key must name {self._id} as requester, not {body.requester_id}"
                )
        elif not is_in_subtree(self._parent_id, body.requester_id):
            raise PermissionDeniedError(
                f"requester {body.requester_id or '(none)'} is not an ancestor of {self._id}; only ancestors drill down"
            )
        if not is_in_subtree(body.target_id, self._id):
            raise PermissionDeniedError(
                f"target {body.target_id} is not in the subtree of {self._id}; only descendants can be queried here"
            )
        now = self._wall_clock()
        age = now - body.issued_at_ms / 1000.0
        if abs(age) > self._freshness:
            raise StaleError(
                f"query from {body.requester_id} was issued {age:.0f} s from now; "
                f"the freshness window is ±{self._freshness:.0f} s (check the clocks)"
            )
        if len(body.nonce) < MIN_NONCE_BYTES:
            raise InvalidArgumentError(f"query nonce must have at least {MIN_NONCE_BYTES} random bytes")
        self._nonces.check_and_remember(body.requester_id, bytes(body.nonce), now)
        if body.WhichOneof("request") is None:
            raise InvalidArgumentError("query names no request (summary, ranking, cases, case_detail, ...)")
        return body

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
        return sign_message(self._key, self._id, answer)

    # --- forwarding -----------------------------------------------------------------------------

    def _child_towards(self, target_id: str) -> str:
        for child_id in self._children:
            if is_in_subtree(target_id, child_id):
                return child_id
        raise NotFoundError(f"node {self._id} has no registered child on the path to {target_id}")

    def _channel(self, address: str) -> grpc.Channel:
        with self._channels_lock:
            channel = self._channels.get(address)
            if channel is None:
                channel = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
                self._channels[address] = channel
            return channel

    def _forward(
        self, envelope: SignedEnvelope, body: QueryBody, child_id: str, time_remaining: float | None
    ) -> SignedEnvelope:
        address = self._children[child_id].address
        if not address:
            raise UnavailableError(f"node {self._id} has no address configured for its child {child_id}")
        timeout = (time_remaining if time_remaining is not None else self._default_timeout) - FORWARD_MARGIN_SECONDS
        if timeout <= 0:
            raise UnavailableError(f"no time left to forward the query from {self._id} to {child_id}")
        # Same body bytes, signed by this hop: the child authorizes its parent, the body keeps the requester.
        forwarded = sign_envelope(self._key, self._id, envelope.body_type, envelope.body)
        stub = NodeServiceStub(self._channel(address))
        try:
            reply: SignedEnvelope = stub.Query(forwarded, timeout=timeout)
        except grpc.RpcError as exc:
            raise self._relayed(exc, child_id) from exc
        self._check_answer(reply, envelope, body, child_id)
        return reply

    def _relayed(self, error: grpc.RpcError, child_id: str) -> RelayedRpcError:
        call: grpc.Call = error  # type: ignore[assignment]
        status = call.code() or grpc.StatusCode.UNKNOWN
        details = call.details() or ""
        code = ""
        for key, value in call.trailing_metadata() or ():
            if key == ERROR_CODE_METADATA_KEY and isinstance(value, str):
                code = value
        if status in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) and not code:
            # The child itself could not be reached (not a refusal it sent): name it.
            details = f"{child_id} unreachable from {self._id}: {supnet_error_from_rpc(error).message}"
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
        child_key = self._child_keys.get(reply.signer_id)
        if child_key is not None:
            verify_envelope(reply, child_key)
        elif reply.signer_id == child_id:
            raise UnauthenticatedError(f"node {self._id} has no public key configured for its child {child_id}")

    def close(self) -> None:
        """Close the channels to the children."""
        with self._channels_lock:
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()


def build_query(
    private_key: Ed25519PrivateKey,
    requester_id: str,
    target_id: str,
    *,
    page_size: int = 0,
    page_token: str = "",
    **request: object,
) -> SignedEnvelope:
    """A signed query envelope: ``request`` is one of summary=, ranking=, cases=, case_detail=, ... messages."""
    import os

    body = QueryBody(
        target_id=target_id,
        requester_id=requester_id,
        issued_at_ms=int(time.time() * 1000),
        nonce=os.urandom(MIN_NONCE_BYTES),
        page_size=page_size,
        page_token=page_token,
        **request,  # type: ignore[arg-type]
    )
    return sign_envelope(private_key, requester_id, QUERY_BODY_TYPE, serialize(body))
