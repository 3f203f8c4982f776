"""DirectiveService.Deliver's authorization over real mutual TLS: who may hand a directive or an event to whom.

Each refused call is made with a real node's TLS certificate and a real node's report key, as that node (or a relay
on the way) could; every refusal must be audited at the receiving node with the caller its certificate names. The
legitimate path (parent → child for directives, closing and reopening; child → parent for deliveries,
acknowledgements and responses) is exercised by test_lifecycle_tree.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from sqlalchemy import select

from federation import envelope_digest, serialize
from federation.proto.v1.common_pb2 import SignedEnvelope
from federation.proto.v1.directive_pb2 import DirectiveBody, DirectiveEvent, DirectiveEventKind, DirectiveKind
from federation.proto.v1.directive_pb2_grpc import DirectiveServiceStub
from node.directives import IssueRequest, get_directive, issue, to_ms
from node.store import AuditLogEntry, Directive, DirectiveOutboxEntry
from tests.directives.conftest import IDS, DirectiveTree, wait_for
from tests.harness.tree import node_identity

STREET = "gd.a.x.s1"
SIBLING_STREET = "gd.a.x.s2"


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DirectiveTree]:
    built = DirectiveTree(tmp_path_factory.mktemp("authz") / "tree", IDS)
    built.start_loops()
    yield built
    built.close()


def _body(issuer: str, target: str, *, text: str = "请核查并报告。") -> DirectiveBody:
    return DirectiveBody(
        id=f"{issuer}/20250324-{os.urandom(4).hex()}",
        kind=DirectiveKind.DIRECTIVE_KIND_SUPERVISE,
        issuer_id=issuer,
        issued_by="someone",
        target_id=target,
        text=text,
        respond_within_workdays=3,
        issued_at_ms=int(time.time() * 1000),
        nonce=os.urandom(16),
    )


def _signed(tree: DirectiveTree, signer: str, body: DirectiveBody | DirectiveEvent) -> SignedEnvelope:
    return node_identity(tree, signer).sign_message(body)


def _deliver(tree: DirectiveTree, caller: str, server: str, envelope: SignedEnvelope) -> grpc.StatusCode:
    channel = tree.channel(caller, server)
    try:
        DirectiveServiceStub(channel).Deliver(envelope, timeout=10)
    except grpc.RpcError as error:
        return error.code()  # type: ignore[no-any-return,attr-defined]
    finally:
        channel.close()
    return grpc.StatusCode.OK


def _refusals(tree: DirectiveTree, node_id: str, actor: str) -> list[dict[str, object]]:
    with tree[node_id].engine.connect() as conn:
        rows = conn.execute(
            select(AuditLogEntry.detail).where(
                AuditLogEntry.action == "directive.refused",  # type: ignore[arg-type]
                AuditLogEntry.actor == actor,  # type: ignore[arg-type]
            )
        ).all()
    return [json.loads(row.detail) for row in rows]


def _held(tree: DirectiveTree, node_id: str, directive_id: str) -> bool:
    with tree[node_id].engine.connect() as conn:
        return conn.execute(select(Directive.id).where(Directive.id == directive_id)).first() is not None  # type: ignore[arg-type]


def _refused_and_audited(
    tree: DirectiveTree, caller: str, server: str, envelope: SignedEnvelope, status: grpc.StatusCode, reason: str
) -> None:
    before = len(_refusals(tree, server, caller))
    assert _deliver(tree, caller, server, envelope) == status
    refusals = _refusals(tree, server, caller)
    assert len(refusals) == before + 1, "the refusal is audited with the caller's certificate identity"
    assert reason in str(refusals[-1]["reason"]), refusals[-1]


def _delivered_directive(tree: DirectiveTree) -> str:
    issued = issue(tree["gd"], IssueRequest(target_id=STREET, kind="supervise", text="请按期办结。"))
    tree.senders["gd"].wake()
    wait_for(lambda: get_directive(tree["gd"], issued.id).status == "delivered", what="delivery")
    return issued.id


def _event(tree: DirectiveTree, directive_id: str, kind: int, actor: str, *, holder: str = "gd") -> DirectiveEvent:
    with tree[holder].engine.connect() as conn:
        digest = conn.execute(select(Directive.digest).where(Directive.id == directive_id)).scalar_one()  # type: ignore[arg-type]
    return DirectiveEvent(
        directive_id=directive_id,
        directive_digest=bytes(digest),
        kind=kind,  # type: ignore[arg-type]
        actor_id=actor,
        actor_person="someone",
        at_ms=to_ms(tree[holder].now(), tree[holder].tz),
        text="已办结。",
        nonce=os.urandom(16),
    )


def test_a_sibling_cannot_issue_to_its_siblings_subtree(tree: DirectiveTree) -> None:
    body = _body("gd.a.y", STREET)
    # The sibling district, over its own certificate, to the district above the street: not its parent.
    _refused_and_audited(
        tree, "gd.a.y", "gd.a.x", _signed(tree, "gd.a.y", body), grpc.StatusCode.PERMISSION_DENIED, "not an ancestor"
    )
    # The sibling street straight to the street.
    body = _body(SIBLING_STREET, STREET)
    _refused_and_audited(
        tree,
        SIBLING_STREET,
        STREET,
        _signed(tree, SIBLING_STREET, body),
        grpc.StatusCode.PERMISSION_DENIED,
        "not an ancestor",
    )
    assert not _held(tree, STREET, body.id)


def test_a_child_cannot_issue_upward(tree: DirectiveTree) -> None:
    for target in ("gd.a.x", "gd"):
        body = _body(STREET, target)
        _refused_and_audited(
            tree, STREET, "gd.a.x", _signed(tree, STREET, body), grpc.StatusCode.PERMISSION_DENIED, "not an ancestor"
        )
        assert not _held(tree, "gd.a.x", body.id)
    # Even a directive signed by a true ancestor comes only from the parent, never up from a child.
    body = _body("gd", STREET)
    _refused_and_audited(
        tree, STREET, "gd.a.x", _signed(tree, "gd", body), grpc.StatusCode.PERMISSION_DENIED, "only from its parent"
    )


def test_a_relay_that_alters_the_body_is_refused(tree: DirectiveTree) -> None:
    original = _signed(tree, "gd", _body("gd", STREET, text="请在三个工作日内答复。"))
    altered = SignedEnvelope()
    altered.CopyFrom(original)
    body = DirectiveBody.FromString(original.body)
    body.respond_within_workdays = 60  # the relay grants itself more time
    altered.body = serialize(body)
    _refused_and_audited(tree, "gd.a", "gd.a.x", altered, grpc.StatusCode.UNAUTHENTICATED, "signature")
    assert not _held(tree, "gd.a.x", body.id)
    # The same relay passing it on unchanged is fine.
    assert _deliver(tree, "gd.a", "gd.a.x", original) == grpc.StatusCode.OK


def test_a_replayed_directive_is_acknowledged_not_applied_again_and_audited(tree: DirectiveTree) -> None:
    envelope = _signed(tree, "gd", _body("gd", STREET))
    channel = tree.channel("gd.a", "gd.a.x")
    try:
        stub = DirectiveServiceStub(channel)
        first = stub.Deliver(envelope, timeout=10)
        again = stub.Deliver(envelope, timeout=10)
    finally:
        channel.close()
    assert first.stored and not again.stored
    assert first.digest == again.digest == envelope_digest(envelope)
    directive_id = DirectiveBody.FromString(envelope.body).id
    with tree["gd.a.x"].engine.connect() as conn:
        queued = conn.execute(
            select(DirectiveOutboxEntry.next_hop).where(DirectiveOutboxEntry.directive_id == directive_id)  # type: ignore[arg-type]
        ).all()
        actions = conn.execute(
            select(AuditLogEntry.actor, AuditLogEntry.action).where(
                AuditLogEntry.target == f"directive:{directive_id}"  # type: ignore[arg-type]
            )
        ).all()
    assert queued == [(STREET,)]  # relayed once
    assert ("gd.a", "directive.relayed") in actions and ("gd.a", "directive.duplicate") in actions


def test_a_forged_response_is_refused(tree: DirectiveTree) -> None:
    directive_id = _delivered_directive(tree)
    responded = DirectiveEventKind.DIRECTIVE_EVENT_KIND_RESPONDED
    # The sibling street answers in its own name: it is not the target.
    forged = _signed(tree, SIBLING_STREET, _event(tree, directive_id, responded, SIBLING_STREET))
    _refused_and_audited(tree, SIBLING_STREET, "gd.a.x", forged, grpc.StatusCode.PERMISSION_DENIED, "not by its target")
    # ... or in the target's name, signed with its own key.
    forged = _signed(tree, SIBLING_STREET, _event(tree, directive_id, responded, STREET))
    _refused_and_audited(tree, SIBLING_STREET, "gd.a.x", forged, grpc.StatusCode.PERMISSION_DENIED, "names")
    # The target's own (true) response handed up by its sibling: events come up the way they were made.
    true_response = _signed(tree, STREET, _event(tree, directive_id, responded, STREET))
    _refused_and_audited(tree, SIBLING_STREET, "gd.a.x", true_response, grpc.StatusCode.PERMISSION_DENIED, "the way")
    # A relay answering for the street it relays to.
    forged = _signed(tree, "gd.a.x", _event(tree, directive_id, responded, "gd.a.x"))
    _refused_and_audited(tree, "gd.a.x", "gd.a", forged, grpc.StatusCode.PERMISSION_DENIED, "not by its target")
    # The target's true response altered on the way up.
    altered = SignedEnvelope()
    altered.CopyFrom(true_response)
    event = DirectiveEvent.FromString(true_response.body)
    event.text = "已全部办结。"
    altered.body = serialize(event)
    _refused_and_audited(tree, STREET, "gd.a.x", altered, grpc.StatusCode.UNAUTHENTICATED, "signature")
    # A relay closing in the issuer's place.
    closing = _signed(tree, "gd.a", _event(tree, directive_id, DirectiveEventKind.DIRECTIVE_EVENT_KIND_CLOSED, "gd.a"))
    _refused_and_audited(tree, "gd.a", "gd.a.x", closing, grpc.StatusCode.PERMISSION_DENIED, "only its issuer")
    # A response coming DOWN from the parent instead of up from a child.
    _refused_and_audited(tree, "gd.a", "gd.a.x", true_response, grpc.StatusCode.PERMISSION_DENIED, "children")
    assert get_directive(tree["gd"], directive_id).status == "delivered"
    assert get_directive(tree[STREET], directive_id).status == "delivered"


def test_a_call_without_a_node_certificate_of_this_tree_never_reaches_the_servicer(tmp_path: Path) -> None:
    # Refused in the TLS handshake (tests/trust covers the handshake itself); here: plaintext nodes refuse directives.
    tree = DirectiveTree(tmp_path / "plain", ["gd", "gd.a"], plaintext=True)
    try:
        body = _body("gd", "gd.a")
        status = _deliver(tree, "gd", "gd.a", _signed(tree, "gd", body))
        assert status == grpc.StatusCode.PERMISSION_DENIED
    finally:
        tree.close()


def test_an_escalation_by_anyone_but_the_issuer_is_refused(tree: DirectiveTree) -> None:
    directive_id = _delivered_directive(tree)
    with tree["gd"].engine.connect() as conn:
        held = conn.execute(select(Directive.envelope).where(Directive.id == directive_id)).scalar_one()  # type: ignore[arg-type]
    # The street "escalates" the province's directive to its own parent, carrying the true directive.
    event = _event(tree, directive_id, DirectiveEventKind.DIRECTIVE_EVENT_KIND_ESCALATED, STREET)
    event.directive.CopyFrom(SignedEnvelope.FromString(bytes(held)))
    forged = _signed(tree, STREET, event)
    _refused_and_audited(tree, STREET, "gd.a.x", forged, grpc.StatusCode.PERMISSION_DENIED, "only its own directives")
    assert get_directive(tree["gd.a.x"], directive_id).role == "relayed"


def test_malformed_messages_are_invalid_arguments_and_audited(tree: DirectiveTree) -> None:
    # Signed by the province and handed over by its child gd.a as a relay would, but not a directive one can act on.
    empty = _body("gd", STREET, text=" ")
    _refused_and_audited(
        tree, "gd.a", "gd.a.x", _signed(tree, "gd", empty), grpc.StatusCode.INVALID_ARGUMENT, "must not be empty"
    )
    bad_id = _body("gd", STREET)
    bad_id.id = "gd.a/20250324-00000000"  # naming another issuer
    _refused_and_audited(
        tree, "gd.a", "gd.a.x", _signed(tree, "gd", bad_id), grpc.StatusCode.INVALID_ARGUMENT, "naming issuer gd"
    )
    # Not a directive message at all.
    wrong_type = node_identity(tree, "gd").sign("federation.proto.v1.QueryBody", b"")
    assert _deliver(tree, "gd.a", "gd.a.x", wrong_type) == grpc.StatusCode.INVALID_ARGUMENT
    channel = tree.channel("gd.a", "gd.a.x")
    try:
        raw = channel.unary_unary("/federation.proto.v1.DirectiveService/Deliver", None, None)
        with pytest.raises(grpc.RpcError) as caught:
            raw(b"\xff\xfe not a protobuf message", timeout=10)
    finally:
        channel.close()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
