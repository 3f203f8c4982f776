"""In-process calls between hosted nodes (node.trust.local_calls): a drill-down or subtree search to a child, or a
report to the parent, hosted by the same process is answered by that node's own servicer without a TLS hop, with the
same answer, the same authorization (the caller identified from its TLS certificate chain) and the same audit as over
gRPC; standalone nodes and a stopped hosted child go over gRPC."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator

import grpc
import pytest

from federation import error_code_of
from federation.proto.v1 import drilldown_pb2 as dd
from node.audit_log import AuditFilter, AuditLog
from node.drilldown import DrilldownClient, rows_of, search_subtree
from node.trust import LocalNodeStub, client_certificates, local_servicer
from tests.harness.tree import Tree, running_tree

CASES = {"gd": 5, "gd.a": 5, "gd.a.x": 40, "gd.a.y": 30, "gd.a.z": 10, "gd.b": 20}
STREET = "gd.a.x"


@pytest.fixture(scope="module", params=["hosted", "standalone"])
def tree(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tree]:
    yield from running_tree(tmp_path_factory.mktemp(f"local-{request.param}"), CASES, hosting=request.param)


def _audited(tree: Tree, node_id: str, action: str, query: str) -> list[tuple[str, str]]:
    """(actor, nonce) of the node's audit entries of ``action`` for the query kind (newest first)."""
    entries = AuditLog(tree[node_id].engine).entries(AuditFilter(action=action), limit=None)
    details = [(entry.actor, json.loads(entry.detail_json)) for entry in entries]
    return [(actor, detail["nonce"]) for actor, detail in details if detail.get("query") == query]


def test_hosted_children_answer_in_process_with_the_same_answers_and_audit(tree: Tree) -> None:
    hosted = tree.hosting == "hosted"
    with DrilldownClient.for_node(tree["gd"], tree.nodes["gd"].address) as client:
        answer = client.ask(STREET, cases=dd.CasesRequest(), page_size=100)
    assert answer.envelope.signer_id == STREET
    with tree.nodes[STREET].db() as conn:
        expected = sorted(row[0] for row in conn.execute("SELECT case_no FROM cases"))
    assert sorted(row.case_no for row in answer.body.cases.cases) == expected

    search = search_subtree(tree["gd"], "gd", address=tree.nodes["gd"].address, cases=dd.CasesRequest())
    parts = {verified.node_id: len(rows_of(verified.part)) for verified in search.parts()}
    assert search.outcome is not None and search.outcome.complete
    assert parts == {node_id: cases for node_id, cases in CASES.items() if cases}

    # The hops below the province were in process exactly when hosted: no channel was ever opened to the children.
    for parent, child in (("gd", "gd.a"), ("gd.a", STREET)):
        router = tree.nodes[parent].server.query.router  # type: ignore[union-attr]
        assert (router.child_channel(child) is None) is hosted, (parent, child)
        assert (local_servicer(child, tree.nodes[child].address) is not None) is hosted

    # Reports go up in process too (running_tree reported every node up), acknowledged and audited alike.
    for node_id in (STREET, "gd.a"):
        assert tree.sender(node_id).in_process is hosted, node_id
    accepted = AuditLog(tree["gd.a"].engine).entries(AuditFilter(action="report.accepted", actor=STREET), limit=None)
    assert accepted and all(entry.result == "ok" for entry in accepted)

    # Audited alike: each hop names its caller, identified from its certificate, on either transport.
    [(street_caller, nonce)] = _audited(tree, STREET, "drilldown.served", "cases")
    assert street_caller == "gd.a"
    assert _audited(tree, "gd.a", "drilldown.forwarded", "cases") == [("gd", nonce)]
    assert [actor for actor, _nonce in _audited(tree, STREET, "drilldown.served", "subtree:cases")] == ["gd.a"]


@pytest.mark.parametrize("tree", ["hosted"], indirect=True)
def test_an_in_process_call_is_authorized_like_a_tls_call(tree: Tree) -> None:
    servicer = local_servicer(STREET, tree.nodes[STREET].address)
    assert servicer is not None
    query = tree.query("gd", STREET, cases=dd.CasesRequest())

    # gd.b is no parent of the street: refused as over TLS, with the supnet code the servers send.
    sibling = LocalNodeStub(servicer, client_certificates(tree["gd.b"]))
    with pytest.raises(grpc.RpcError) as refused:
        sibling.Query(query, timeout=5)
    call = refused.value
    assert call.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
    assert error_code_of(refused.value) == "PERMISSION_DENIED"
    assert "only from its parent gd.a" in call.details()  # type: ignore[attr-defined]
    # No certificate at all: the caller is not established.
    anonymous = LocalNodeStub(servicer, None)
    with pytest.raises(grpc.RpcError) as unauthenticated:
        anonymous.Query(tree.query("gd", STREET, cases=dd.CasesRequest()), timeout=5)
    assert unauthenticated.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
    # The parent's own certificates: answered, and the same query again is a replay, refused as over TLS.
    parent = LocalNodeStub(servicer, client_certificates(tree["gd.a"]))
    assert parent.Query(query, timeout=5).signer_id == STREET
    with pytest.raises(grpc.RpcError) as replayed:
        parent.Query(query, timeout=5)
    assert replayed.value.code() == grpc.StatusCode.ALREADY_EXISTS  # type: ignore[attr-defined]


@pytest.mark.parametrize("tree", ["hosted"], indirect=True)
def test_a_stopped_hosted_child_is_reached_over_grpc_and_named_unreachable(tree: Tree) -> None:
    child = "gd.a.y"
    port = tree.nodes[child].port
    tree.stop_server(child)
    try:
        assert local_servicer(child, tree.nodes[child].address) is None
        search = search_subtree(
            tree["gd"], "gd", address=tree.nodes["gd"].address, deadline_seconds=10, cases=dd.CasesRequest()
        )
        answered = {verified.node_id for verified in search.parts()}
        assert search.outcome is not None and not search.outcome.complete
        assert child not in answered and STREET in answered
        assert [missing.node_id for missing in search.outcome.missing] == [child]
    finally:
        tree.start_server(child, port)
    assert local_servicer(child, tree.nodes[child].address) is not None


@pytest.mark.parametrize("tree", ["hosted"], indirect=True)
def test_in_process_children_left_unasked_at_the_deadline_are_named(tree: Tree) -> None:
    # gd.a asks its three hosted streets with two producers, one street after the other. Both producers wait on the
    # first two streets, whose databases another connection holds locked (their audit write waits), so the third is
    # never asked in time: gd.a names it in a gap of its own; the locked ones are named missing by the asker.
    locks = []
    for street in ("gd.a.x", "gd.a.y"):
        lock = sqlite3.connect(tree.nodes[street].data_dir / "node.db", isolation_level=None, timeout=5)
        lock.execute("BEGIN EXCLUSIVE")
        locks.append(lock)
    try:
        started = time.monotonic()
        search = search_subtree(
            tree["gd"], "gd.a", address=tree.nodes["gd"].address, deadline_seconds=3, cases=dd.CasesRequest()
        )
        answered = {verified.node_id for verified in search.parts()}
        elapsed = time.monotonic() - started
    finally:
        for lock in locks:
            lock.execute("ROLLBACK")
            lock.close()
    assert search.outcome is not None and not search.outcome.complete
    assert elapsed < 3 + 1, elapsed
    assert answered == {"gd.a"}
    missing = {item.node_id: item for item in search.outcome.missing}
    assert set(missing) == {"gd.a.x", "gd.a.y", "gd.a.z"}
    assert missing["gd.a.z"].reported_by == "gd.a" and "no time left at gd.a to ask gd.a.z" in missing["gd.a.z"].detail
