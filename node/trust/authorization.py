"""Who may call what on a node: the one place with the authorization rules, called by the thin servicers.

Identity comes ONLY from the verified peer certificate of the call (node.trust.tls.NodeTrust.identify: the
mutual-TLS client certificate, re-verified up to the root and against this node's revocation list), never
from request metadata or a field of the request.

==================  ========================================================================================
RPC                 allowed (anything else: PERMISSION_DENIED; no/invalid certificate: UNAUTHENTICATED)
==================  ========================================================================================
SubmitReport        a registered child (config ``federation.children``) over its TLS certificate, and the
                    report envelope's signer must be that same child; its report certificate chain (in the
                    envelope) must verify up to the root and not be revoked here
Query (drill-down)  over a TLS certificate of this node's parent, or of this node itself (its local
                    operator); the query is signed by the requester with its report key and carries its report
                    chain, verified at every hop; the requester must be the signer and an ancestor of this
                    node (via the parent) or this node itself (local operator). Forwarding hops relay the
                    envelope unchanged, so no hop can widen what the requester may see.
QuerySubtree        as Query, at every hop of the subtree: the caller is this node's parent (or this node itself,
(subtree search)    its local operator, asking as itself); the requester signed it and is an ancestor of this node
                    (or this node itself); this node lies in the subtree asked about or on the way down to its
                    root; same freshness window and
                    replay cache. Not in the plaintext mode (parts are verified through certificate chains).
Ingest              an INGEST certificate issued for this node (a business system's credential); a node's TLS
                    certificate, even the parent's, may not ingest
Deliver             (DirectiveService) a directive, or a closed/reopened event, only from this node's parent; a
(directives)        delivered/acknowledged/responded/escalated event only from a registered child. Always signed
                    through a report certificate chain verified up to the root (a relay that altered the body is
                    UNAUTHENTICATED); a directive's signer is its issuer, a strict ancestor of its target, and this
                    node lies on the way between them; an event's signer is the actor it names, and an event going
                    up comes through the child on its way. What only the stored directive can tell (the event's
                    signer is its target or issuer, the digest binds it) is node.directives' check. Not in the
                    plaintext mode: PERMISSION_DENIED there.
GetNodeInfo         any authenticated peer under the same root
Health, reflection  open (no servicer of ours)
==================  ========================================================================================

The audit log names the caller of each call as ``caller_name`` spells the verified peer (never a claimed
requester or signer, which go into the entry's detail).

Insecure plaintext mode (``federation.insecure_plaintext``, no certificates): there is no peer identity;
reports are checked with the children's public keys from the config, queries must be signed by this node's
own key or by the parent's configured key (a forwarding hop re-signs), ingest is open to whoever can reach
the port. Local experiments only.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeVar

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from federation import (
    ExpiredError,
    IntegrityError,
    InvalidArgumentError,
    PermissionDeniedError,
    StaleError,
    UnauthenticatedError,
    body_type_of,
    parse_body,
    public_key_from_b64,
    require_canonical_encoding,
    verify_envelope,
)
from federation.proto.v1.common_pb2 import SignedEnvelope
from federation.proto.v1.directive_pb2 import DirectiveBody, DirectiveEvent, DirectiveEventKind
from federation.proto.v1.drilldown_pb2 import QueryBody
from federation.proto.v1.subtree_pb2 import SubtreeQueryBody
from node.audit_log import recent_query_nonces
from node.trust.node_ids import is_ancestor
from node.trust.node_keys import signing_identity
from node.trust.pki import CertificateRole
from node.trust.tls import NodeTrust, PeerIdentity

if TYPE_CHECKING:
    from node.app import Node

log = logging.getLogger(__name__)

QUERY_BODY_TYPE = body_type_of(QueryBody)
SUBTREE_QUERY_BODY_TYPE = body_type_of(SubtreeQueryBody)
_Query = TypeVar("_Query", QueryBody, SubtreeQueryBody)
DIRECTIVE_BODY_TYPE = body_type_of(DirectiveBody)
DIRECTIVE_EVENT_TYPE = body_type_of(DirectiveEvent)
# Events that travel up (made by a recipient, or the issuer escalating to its parent) and down (made by the issuer).
UPWARD_DIRECTIVE_EVENTS: frozenset[int] = frozenset(
    {
        DirectiveEventKind.DIRECTIVE_EVENT_KIND_DELIVERED,
        DirectiveEventKind.DIRECTIVE_EVENT_KIND_ACKNOWLEDGED,
        DirectiveEventKind.DIRECTIVE_EVENT_KIND_RESPONDED,
        DirectiveEventKind.DIRECTIVE_EVENT_KIND_ESCALATED,
    }
)
DOWNWARD_DIRECTIVE_EVENTS: frozenset[int] = frozenset(
    {DirectiveEventKind.DIRECTIVE_EVENT_KIND_CLOSED, DirectiveEventKind.DIRECTIVE_EVENT_KIND_REOPENED}
)
# ±15 min: nodes whose clocks are up to ~10 min apart still query each other (a report is refused from 15 min
# ahead, federation.receiver.MAX_CLOCK_SKEW_SECONDS); replays stay refused by the nonce cache (2 windows long).
FRESHNESS_WINDOW_SECONDS = 900.0
MIN_NONCE_BYTES = 16
# The caller as the audit log names it when no certificate names one: the insecure plaintext mode has no
# identities; a certificate the server refused to identify (revoked, two identities) names nobody.
PLAINTEXT_CALLER = "(plaintext)"
UNAUTHENTICATED_CALLER = "(unauthenticated)"


def caller_name(peer: PeerIdentity | None) -> str:
    """Who called, for the audit log: the verified certificate's node id (its role too, if not a node's TLS one)."""
    if peer is None:
        return PLAINTEXT_CALLER
    return peer.node_id if peer.role is CertificateRole.TLS else f"{peer.node_id} ({peer.role.value} certificate)"


def is_in_subtree(node_id: str, root_id: str) -> bool:
    """True when node_id is root_id or one of its descendants (dotted-path prefix)."""
    return is_ancestor(root_id, node_id, or_self=True)


@dataclass(frozen=True)
class DirectiveMessage:
    """A directive message that passed authorization: its verified signer, the TLS caller and the parsed body."""

    direction: Literal["down", "up"]
    caller: PeerIdentity
    signer_id: str
    directive: DirectiveBody | None = None
    event: DirectiveEvent | None = None

    @property
    def directive_id(self) -> str:
        """The directive this message is, or is about."""
        if self.directive is not None:
            return self.directive.id
        assert self.event is not None
        return self.event.directive_id


class NonceCache:
    """Recently seen (caller, requester, nonce), so a replayed query is refused within the freshness window.

    Keyed on the verified caller (caller_name) as well as the requester: an entry remembered from the audit log
    after a restart then stands for what that caller sent, so a query another peer was refused for (a sibling
    replaying or inventing a nonce in an ancestor's name) can never block the ancestor's own. No replay slips
    through by it: a query reaches the nonce check only from this node's parent, or from this node itself
    when it is the requester, so one requester's queries always arrive from the same caller.
    """

    def __init__(self, window_seconds: float) -> None:
        self._window = window_seconds
        self._seen: dict[tuple[str, str, bytes], float] = {}
        self._lock = threading.Lock()

    def seed(self, seen: Iterable[tuple[str, str, bytes, float]]) -> int:
        """Remember (caller, requester, nonce, when seen as epoch seconds), e.g. from the audit log after a restart."""
        with self._lock:
            before = len(self._seen)
            for caller, requester_id, nonce, at in seen:
                self._seen[(caller, requester_id, nonce)] = at + 2 * self._window
            return len(self._seen) - before

    def check_and_remember(self, caller: str, requester_id: str, nonce: bytes, now: float) -> None:
        """StaleError if the triple was seen within the window; remember it otherwise."""
        with self._lock:
            if len(self._seen) > 10_000:
                self._seen = {key: expiry for key, expiry in self._seen.items() if expiry > now}
            key = (caller, requester_id, nonce)
            expiry = self._seen.get(key)
            if expiry is not None and expiry > now:
                raise StaleError(f"query from {requester_id} with nonce {nonce.hex()[:12]} was already served (replay)")
            self._seen[key] = now + 2 * self._window


class Authorizer:
    """The authorization rules of one node (see the module docstring); thread-safe."""

    def __init__(
        self,
        node: Node,
        trust: NodeTrust | None,
        *,
        freshness_seconds: float = FRESHNESS_WINDOW_SECONDS,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._node = node
        self.trust = trust
        self._id = node.config.id
        federation = node.config.federation
        self._parent_id = federation.parent_id or node.config.parent_id
        self._freshness = freshness_seconds
        self._wall_clock = wall_clock
        self._nonces = NonceCache(freshness_seconds)
        self._remember_audited_nonces(node)
        # Plaintext mode only: keys from the config instead of certificates.
        self._parent_key = public_key_from_b64(federation.parent_public_key) if federation.parent_public_key else None

    def _remember_audited_nonces(self, node: Node) -> None:
        # A restart must not open a window for replays: queries audited within the replay horizon stay refused.
        horizon = self._wall_clock() - 2 * self._freshness
        since = dt.datetime.fromtimestamp(horizon, dt.UTC)
        remembered = self._nonces.seed(
            (
                self._legacy_caller(seen.requester) if seen.caller is None else seen.caller,
                seen.requester,
                seen.nonce,
                seen.at.timestamp(),
            )
            for seen in recent_query_nonces(node.engine, since)
        )
        if remembered:
            log.info("node %s: %s recent query nonces remembered from the audit log", self._id, remembered)

    def _legacy_caller(self, requester_id: str) -> str:
        """The caller of a query audited before entries named it: the only one its requester could come from."""
        if self.trust is None:
            return PLAINTEXT_CALLER
        return self._id if requester_id == self._id else self._parent_id

    @property
    def node_id(self) -> str:
        """The id of the node this authorizer guards."""
        return self._id

    def _registered_children(self) -> frozenset[str]:
        return frozenset(child.id for child in self._node.config.federation.children)

    # --- identity -------------------------------------------------------------------------------------------

    def peer(self, context: grpc.ServicerContext) -> PeerIdentity | None:
        """The verified caller (UnauthenticatedError if it cannot be established); None in plaintext mode."""
        return None if self.trust is None else self.trust.identify(context)

    def _node_peer(self, context: grpc.ServicerContext, what: str, peer: PeerIdentity | None = None) -> PeerIdentity:
        assert self.trust is not None
        if peer is None:
            peer = self.trust.identify(context)
        if peer.role is not CertificateRole.TLS:
            raise PermissionDeniedError(
                f"{what} on {self._id} needs a node's TLS certificate; {peer} is a {peer.role.value} credential"
            )
        return peer

    # --- per RPC ----------------------------------------------------------------------------------------------

    def node_info(self, context: grpc.ServicerContext) -> PeerIdentity | None:
        """GetNodeInfo: any authenticated peer of the same root."""
        return self.peer(context)

    def report(
        self, context: grpc.ServicerContext, envelope: SignedEnvelope, peer: PeerIdentity | None = None
    ) -> PeerIdentity | None:
        """SubmitReport: a registered child over its own TLS certificate, signing as itself with a valid chain.

        Only the peer and chain rules are checked here; the receiver then checks the signature (through the
        chain verified here), the body and the hash chain. ``peer``: the caller, if already identified.
        """
        if self.trust is None:
            return None
        peer = self._node_peer(context, "submitting a report", peer)
        if peer.node_id not in self._registered_children():
            raise PermissionDeniedError(
                f"node {peer.node_id} is not a registered child of {self._id}; only children submit reports here"
            )
        if envelope.signer_id != peer.node_id:
            raise PermissionDeniedError(
                f"report signed as {envelope.signer_id or '(nobody)'} arrived over the connection of {peer.node_id}; "
                "a child submits only its own reports"
            )
        # Verifies the report certificate chain (root, subtree, revocation) and caches the key it binds; the
        # revocation list was re-read by _node_peer above.
        self.trust.resolve_envelope(envelope, revocations_current=True)
        return peer

    def ingest(self, context: grpc.ServicerContext) -> str:
        """Ingest: only an INGEST credential issued for this node; returns a description of the caller."""
        if self.trust is None:
            return context.peer()
        peer = self.trust.identify(context)
        if peer.role is not CertificateRole.INGEST:
            raise PermissionDeniedError(
                f"ingest into {self._id} needs an ingest credential issued by {self._id}; "
                f"{peer} is a node's {peer.role.value} certificate"
            )
        if peer.node_id != self._id:
            raise PermissionDeniedError(f"the ingest credential {peer.label} is for {peer.node_id}, not for {self._id}")
        return peer.label

    def query(
        self, context: grpc.ServicerContext, envelope: SignedEnvelope, peer: PeerIdentity | None = None
    ) -> QueryBody:
        """Query: authorize the caller and the signed query; returns the parsed body (see the module docstring).

        ``peer``: the caller, if already identified (the servicer does, to name it in the audit log).
        """
        if envelope.body_type != QUERY_BODY_TYPE:
            raise InvalidArgumentError(f"Query expects a {QUERY_BODY_TYPE} envelope, got {envelope.body_type!r}")
        if self.trust is not None:
            peer = self._node_peer(context, "a drill-down query", peer)
            body = self._query_with_certificates(peer, envelope, QueryBody)
        else:
            peer = None
            body = self._query_with_keys(envelope)
        if not is_in_subtree(body.target_id, self._id):
            raise PermissionDeniedError(
                f"target {body.target_id} is not in the subtree of {self._id}; only descendants can be queried here"
            )
        self._fresh_and_new(body, peer)
        if body.WhichOneof("request") is None:
            raise InvalidArgumentError("query names no request (summary, ranking, cases, case_detail, ...)")
        return body

    def subtree_query(
        self, context: grpc.ServicerContext, envelope: SignedEnvelope, peer: PeerIdentity | None = None
    ) -> SubtreeQueryBody:
        """QuerySubtree: authorize the caller and the signed subtree query at this hop (see the module docstring)."""
        if envelope.body_type != SUBTREE_QUERY_BODY_TYPE:
            raise InvalidArgumentError(
                f"QuerySubtree expects a {SUBTREE_QUERY_BODY_TYPE} envelope, got {envelope.body_type!r}"
            )
        if self.trust is None:
            raise PermissionDeniedError(
                f"node {self._id} runs without certificates (insecure plaintext mode): a subtree search needs every "
                "node's part verified through its certificate chain"
            )
        peer = self._node_peer(context, "a subtree query", peer)
        body = self._query_with_certificates(peer, envelope, SubtreeQueryBody)
        if peer.node_id == self._id and not is_in_subtree(body.target_id, self._id):
            raise PermissionDeniedError(
                f"{self._id}'s own operator searches only its own subtree, not that of {body.target_id}"
            )
        if not (is_in_subtree(self._id, body.target_id) or is_in_subtree(body.target_id, self._id)):
            raise PermissionDeniedError(
                f"node {self._id} is neither in the subtree of {body.target_id} that the query searches nor on the "
                "way down to it"
            )
        self._fresh_and_new(body, peer)
        if body.WhichOneof("request") is None:
            raise InvalidArgumentError(
                "subtree query names no request (cases, alerts, complaints, directives, ranking)"
            )
        return body

    def _fresh_and_new(self, body: QueryBody | SubtreeQueryBody, peer: PeerIdentity | None) -> None:
        """The freshness window and the replay cache, shared by both kinds of query."""
        now = self._wall_clock()
        age = now - body.issued_at_ms / 1000.0  # seconds since it was issued, by this node's clock
        if age > self._freshness:
            raise ExpiredError(
                f"query from {body.requester_id} was issued {age:.0f} s ago; queries older than "
                f"{self._freshness:.0f} s are refused at {self._id} (ask again; if it was just sent, check the clocks)"
            )
        if -age > self._freshness:
            raise ExpiredError(
                f"query from {body.requester_id} was issued {-age:.0f} s from now by {self._id}'s clock; queries "
                f"more than {self._freshness:.0f} s ahead are refused (check the clocks)"
            )
        if len(body.nonce) < MIN_NONCE_BYTES:
            raise InvalidArgumentError(f"query nonce must have at least {MIN_NONCE_BYTES} random bytes")
        self._nonces.check_and_remember(caller_name(peer), body.requester_id, bytes(body.nonce), now)

    def directive(
        self, context: grpc.ServicerContext, envelope: SignedEnvelope, peer: PeerIdentity | None = None
    ) -> DirectiveMessage:
        """Deliver: authorize the caller and the signed directive or event (see the module docstring)."""
        if envelope.body_type not in (DIRECTIVE_BODY_TYPE, DIRECTIVE_EVENT_TYPE):
            raise InvalidArgumentError(
                f"Deliver expects a {DIRECTIVE_BODY_TYPE} or {DIRECTIVE_EVENT_TYPE} envelope, "
                f"got {envelope.body_type!r}"
            )
        if self.trust is None:
            raise PermissionDeniedError(
                f"node {self._id} runs without certificates (insecure plaintext mode): directives need signatures "
                "every hop can verify through certificate chains"
            )
        peer = self._node_peer(context, "delivering a directive", peer)
        try:
            self.trust.verify_envelope(envelope, revocations_current=True)  # _node_peer re-read crl.pem
        except IntegrityError as error:
            # Altered on the way (or signed by another key): nobody is established as its author.
            raise UnauthenticatedError(f"directive message refused by {self._id}: {error.message}") from error
        signer = envelope.signer_id
        if envelope.body_type == DIRECTIVE_BODY_TYPE:
            body = parse_body(envelope, DirectiveBody)
            require_canonical_encoding(envelope, body)
            self._directive_route(peer, signer, body)
            return DirectiveMessage("down", peer, signer, directive=body)
        event = parse_body(envelope, DirectiveEvent)
        require_canonical_encoding(envelope, event)
        if event.actor_id != signer:
            raise PermissionDeniedError(
                f"directive event signed by {signer} names {event.actor_id or '(nobody)'} as its actor; "
                "whoever makes an event signs it"
            )
        if event.kind in DOWNWARD_DIRECTIVE_EVENTS:
            self._from_parent(peer, "closing or reopening a directive")
            return DirectiveMessage("down", peer, signer, event=event)
        if event.kind in UPWARD_DIRECTIVE_EVENTS:
            if peer.node_id not in self._registered_children():
                raise PermissionDeniedError(
                    f"node {self._id} takes directive events going up only from its registered children; "
                    f"the caller is {peer.node_id}"
                )
            if not is_ancestor(peer.node_id, signer, or_self=True):
                raise PermissionDeniedError(
                    f"a directive event of {signer} comes up the way it was made, not through {peer.node_id}"
                )
            return DirectiveMessage("up", peer, signer, event=event)
        raise InvalidArgumentError(f"directive event of unknown kind {event.kind}")

    def _from_parent(self, peer: PeerIdentity, what: str) -> None:
        if not self._parent_id or peer.node_id != self._parent_id:
            raise PermissionDeniedError(
                f"node {self._id} takes {what} only from its parent {self._parent_id or '(none: it is the root)'}; "
                f"the caller is {peer.node_id}"
            )

    def _directive_route(self, peer: PeerIdentity, signer: str, body: DirectiveBody) -> None:
        """A directive goes down from its issuer, through this node, to its target (or the target's subtree)."""
        if body.issuer_id != signer:
            raise PermissionDeniedError(
                f"directive {body.id or '?'} names {body.issuer_id or '(nobody)'} as issuer but is signed by {signer}; "
                "an issuer signs its own directives"
            )
        if not is_ancestor(body.issuer_id, body.target_id):
            raise PermissionDeniedError(
                f"directive {body.id or '?'}: issuer {body.issuer_id} is not an ancestor of target "
                f"{body.target_id or '(none)'}; directives go only to a descendant"
            )
        on_path = is_ancestor(body.issuer_id, self._id) and (
            is_in_subtree(body.target_id, self._id) or (body.whole_subtree and is_in_subtree(self._id, body.target_id))
        )
        if not on_path:
            raise PermissionDeniedError(
                f"directive {body.id or '?'} from {body.issuer_id} to {body.target_id} does not pass through {self._id}"
            )
        self._from_parent(peer, "directives")

    def _query_with_certificates(
        self, peer: PeerIdentity, envelope: SignedEnvelope, message_type: type[_Query]
    ) -> _Query:
        assert self.trust is not None
        if peer.node_id not in (self._id, self._parent_id):
            raise PermissionDeniedError(
                f"node {self._id} takes drill-down queries only from its parent {self._parent_id or '(none)'} "
                f"or its own operator; the caller is {peer.node_id}"
            )
        try:
            self.trust.verify_envelope(envelope, revocations_current=True)  # _node_peer re-read crl.pem
        except IntegrityError as error:
            # A query whose signature fails does not establish who asks.
            raise UnauthenticatedError(f"drill-down query refused by {self._id}: {error.message}") from error
        body = parse_body(envelope, message_type)
        if not body.target_id:
            raise InvalidArgumentError("query names no target_id")
        if body.requester_id != envelope.signer_id:
            raise PermissionDeniedError(
                f"query signed by {envelope.signer_id} names {body.requester_id or '(none)'} as requester; "
                "a requester signs its own queries"
            )
        if peer.node_id == self._id:
            if body.requester_id != self._id:
                raise PermissionDeniedError(
                    f"{self._id}'s own operator may ask only as {self._id}, not relay a query of {body.requester_id}"
                )
        elif not is_ancestor(body.requester_id, self._id):
            raise PermissionDeniedError(
                f"requester {body.requester_id or '(none)'} is not an ancestor of {self._id}; only ancestors drill down"
            )
        return body

    def _caller_key(self, signer_id: str) -> Ed25519PublicKey:
        if signer_id == self._id:
            return signing_identity(self._node).private_key.public_key()
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

    def _query_with_keys(self, envelope: SignedEnvelope) -> QueryBody:
        try:
            verify_envelope(envelope, self._caller_key(envelope.signer_id))
        except IntegrityError as error:
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
        return body
