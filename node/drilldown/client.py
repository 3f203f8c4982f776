"""Client side of drill-down: sign a query with the local node's key, send it to the local server, check the answer.

The local operator talks to its own node's server over mutual TLS with the node's own TLS certificate, and
signs the query with the node's report key, its certificate chain attached. The answer envelope is signed
by the answering node with ITS report chain attached: the client verifies any descendant's answer directly
through that chain up to the root (and this node's revocation list).

In the insecure plaintext mode there are no chains: an answer of this node or one of its children is
checked with the configured key; one from further down was checked by the answering node's parent on the way
up and is marked as such.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from federation import (
    IntegrityError,
    UnauthenticatedError,
    envelope_digest,
    parse_body,
    public_key_from_b64,
    short_hex,
    supnet_error_from_rpc,
    verify_envelope,
)
from federation.proto.v1.common_pb2 import SignedEnvelope
from federation.proto.v1.drilldown_pb2 import QueryAnswer
from federation.proto.v1.node_service_pb2_grpc import NodeServiceStub
from node.app import Node
from node.drilldown.router import build_query
from node.run_state import local_server_address
from node.trust import DEFAULT_CHANNEL_OPTIONS, NodeTrust, node_channel, signing_identity, transport_pki

DEFAULT_MAX_PAGES = 1000


@dataclass(frozen=True)
class Answer:
    """One verified answer: the parsed body, the envelope as received, and how its signature was checked."""

    body: QueryAnswer
    envelope: SignedEnvelope
    verified_by: str

    @property
    def kind(self) -> str:
        """Which answer the body carries (summary, ranking, cases, ...)."""
        return self.body.WhichOneof("answer") or ""


class DrilldownClient:
    """Sends signed queries to one node's server and returns checked answers."""

    def __init__(
        self,
        requester_id: str,
        private_key: Ed25519PrivateKey,
        address: str,
        *,
        known_keys: dict[str, Ed25519PublicKey] | None = None,
        timeout: float = 10.0,
        certificate_chain: tuple[bytes, ...] = (),
        trust: NodeTrust | None = None,
        channel: grpc.Channel | None = None,
    ) -> None:
        """Without ``channel``, a plaintext channel to ``address`` (tests, the plaintext mode); see for_node."""
        self.requester_id = requester_id
        self.address = address
        self.timeout = timeout
        self._key = private_key
        self._chain = certificate_chain
        self._trust = trust
        self._known = dict(known_keys or {})
        self._known.setdefault(requester_id, private_key.public_key())
        self._channel = channel or node_channel(None, address, requester_id, options=DEFAULT_CHANNEL_OPTIONS)
        self._stub = NodeServiceStub(self._channel)

    @classmethod
    def for_node(cls, node: Node, address: str | None = None, *, timeout: float | None = None) -> DrilldownClient:
        """A client acting as the local operator of ``node`` (its keys and TLS certificate), talking to its server.

        UnauthenticatedError before anything is sent if the node's own certificate has expired; ConfigError if
        it has no TLS credentials and is not in the insecure plaintext mode.
        """
        target = address or local_server_address(node.data_dir)
        pki = transport_pki(node)
        identity = signing_identity(node)
        children = node.config.federation.children
        known = {child.id: public_key_from_b64(child.public_key) for child in children if child.public_key}
        # The node's own server must present the node's own certificate: the channel accepts no other.
        channel = node_channel(pki, target, node.config.id, options=DEFAULT_CHANNEL_OPTIONS)
        return cls(
            node.config.id,
            identity.private_key,
            target,
            known_keys=known,
            timeout=timeout if timeout is not None else max(node.config.federation.rpc_timeout_seconds, 10.0),
            certificate_chain=identity.certificate_chain,
            trust=NodeTrust(pki) if pki is not None else None,
            channel=channel,
        )

    def ask(self, target_id: str, *, page_size: int = 0, page_token: str = "", **request: Any) -> Answer:
        """One query (``request`` is summary=, ranking=, cases=, case_detail=, alerts=, complaints= or report=)."""
        query = build_query(
            self._key,
            self.requester_id,
            target_id,
            page_size=page_size,
            page_token=page_token,
            certificate_chain=self._chain,
            **request,
        )
        try:
            reply: SignedEnvelope = self._stub.Query(query, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise supnet_error_from_rpc(exc, self.address) from exc
        return self._checked(reply, query, target_id)

    def ask_pages(
        self, target_id: str, *, page_size: int = 0, max_pages: int = DEFAULT_MAX_PAGES, **request: Any
    ) -> Iterator[Answer]:
        """Every page of a paged answer, following next_page_token."""
        token = ""
        for _ in range(max_pages):
            answer = self.ask(target_id, page_size=page_size, page_token=token, **request)
            yield answer
            token = answer.body.next_page_token
            if not token:
                return

    def _checked(self, reply: SignedEnvelope, query: SignedEnvelope, target_id: str) -> Answer:
        body = parse_body(reply, QueryAnswer)
        if reply.signer_id != target_id or body.target_id != target_id:
            raise IntegrityError(f"answer is signed by {reply.signer_id}, not by the target {target_id}")
        if body.query_digest != envelope_digest(query):
            raise IntegrityError(f"answer from {target_id} answers another query ({short_hex(body.query_digest)})")
        if self._trust is not None:
            if not reply.certificate_chain:
                raise UnauthenticatedError(f"answer from {reply.signer_id} carries no certificate chain")
            self._trust.verify_envelope(reply)
            verified_by = (
                f"signature of {reply.signer_id} checked here through its certificate chain to the root "
                f"{self._trust.root_node_id}"
            )
            return Answer(body=body, envelope=reply, verified_by=verified_by)
        key = self._known.get(reply.signer_id)
        if key is not None:
            verify_envelope(reply, key)
            verified_by = f"signature of {reply.signer_id} checked here"
        else:
            verified_by = f"signature of {reply.signer_id} checked by its parent on the way up"
        return Answer(body=body, envelope=reply, verified_by=verified_by)

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> DrilldownClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
