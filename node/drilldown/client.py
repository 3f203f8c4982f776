"""Client side of drill-down: sign a query with the local node's key, send it to the local server, check the answer.

The answer envelope is signed by the answering node. When that is this node or one of its children, the
client verifies the signature itself; an answer from further down was verified by the answering node's
parent on the way up (each hop checks its own child) and is marked as such until certificates let any
ancestor verify any descendant directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from federation.canonical import parse_body
from federation.chain import envelope_digest, short_hex
from federation.errors import IntegrityError
from federation.grpc_errors import supnet_error_from_rpc
from federation.proto.v1.common_pb2 import SignedEnvelope
from federation.proto.v1.drilldown_pb2 import QueryAnswer
from federation.proto.v1.node_service_pb2_grpc import NodeServiceStub
from federation.signing import public_key_from_b64, verify_envelope
from node.app import Node
from node.drilldown.router import CHANNEL_OPTIONS, build_query, load_node_key

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
    ) -> None:
        self.requester_id = requester_id
        self.address = address
        self.timeout = timeout
        self._key = private_key
        self._known = dict(known_keys or {})
        self._known.setdefault(requester_id, private_key.public_key())
        self._channel = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
        self._stub = NodeServiceStub(self._channel)

    @classmethod
    def for_node(cls, node: Node, address: str | None = None, *, timeout: float | None = None) -> DrilldownClient:
        """A client acting as the local operator of ``node`` (its key), talking to its running server."""
        from node.cli.serve_cmd import local_server_address

        children = node.config.federation.children
        known = {child.id: public_key_from_b64(child.public_key) for child in children if child.public_key}
        return cls(
            node.config.id,
            load_node_key(node),
            address or local_server_address(node.data_dir),
            known_keys=known,
            timeout=timeout if timeout is not None else max(node.config.federation.rpc_timeout_seconds, 10.0),
        )

    def ask(self, target_id: str, *, page_size: int = 0, page_token: str = "", **request: Any) -> Answer:
        """One query (``request`` is summary=, ranking=, cases=, case_detail=, alerts=, complaints= or report=)."""
        query = build_query(
            self._key, self.requester_id, target_id, page_size=page_size, page_token=page_token, **request
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
