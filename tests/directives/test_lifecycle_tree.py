"""A 督办 from the province to a street three hops down and back, over mutual TLS between real nodes: delivered,
acknowledged, responded, closed — every hop holding the same signed history; a street that was down gets its
directive after restarting; activity counts at the target; SQLite and PostgreSQL (the street's store)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from node.directives import (
    FindingDraft,
    IssueRequest,
    acknowledge,
    close,
    directive_history,
    get_directive,
    issue,
    reopen,
    respond,
)
from node.store import AuditLogEntry, Notification
from node.supervision import activity_totals
from tests.directives.conftest import IDS, DirectiveTree, wait_for

STREET = "gd.a.x.s1"
PATH = ("gd", "gd.a", "gd.a.x", STREET)


def _status(tree: DirectiveTree, node_id: str, directive_id: str) -> str:
    return get_directive(tree[node_id], directive_id).status


def _settled(tree: DirectiveTree, directive_id: str, status: str) -> bool:
    return all(_status(tree, node_id, directive_id) == status for node_id in PATH)


def test_province_to_street_and_back(tmp_path: Path, db_url: str) -> None:
    tree = DirectiveTree(tmp_path / "tree", IDS, db_urls={STREET: db_url})
    try:
        tree.start_loops()
        issued = issue(
            tree["gd"],
            IssueRequest(
                target_id=STREET,
                kind="supervise",
                case_no="C-0001",
                text="该件已超承诺时限，请于期限内办结并报告。",
                respond_within_workdays=3,
                issued_by="省监察室 王某",
            ),
        )
        tree.senders["gd"].wake()
        directive_id = issued.id
        assert issued.role == "issued" and issued.status == "issued"

        # Down three hops, the delivery back up: every hop on the way sees it delivered, with the street's due time.
        wait_for(lambda: _settled(tree, directive_id, "delivered"), what="delivery seen at every hop")
        at_street = get_directive(tree[STREET], directive_id)
        assert at_street.role == "received" and at_street.received_from == "gd.a.x"
        assert get_directive(tree["gd.a"], directive_id).role == "relayed"
        assert at_street.due_at is not None
        assert get_directive(tree["gd"], directive_id).due_at == at_street.due_at

        acknowledge(tree[STREET], directive_id, by="街道 李某")
        tree.senders[STREET].wake()
        wait_for(lambda: _settled(tree, directive_id, "acknowledged"), what="acknowledgement at every hop")
        respond(tree[STREET], directive_id, "已督促窗口办结，办结时间 3 月 25 日。", by="街道 李某")
        tree.senders[STREET].wake()
        wait_for(lambda: _settled(tree, directive_id, "responded"), what="response at the province")

        reopen(tree["gd"], directive_id, "请附办结材料。")
        tree.senders["gd"].wake()
        wait_for(lambda: _status(tree, STREET, directive_id) == "reopened", what="reopening at the street")
        respond(tree[STREET], directive_id, "材料已上传，附件见系统。")
        tree.senders[STREET].wake()
        wait_for(lambda: _status(tree, "gd", directive_id) == "responded", what="second response at the province")
        close(tree["gd"], directive_id)
        tree.senders["gd"].wake()
        wait_for(lambda: _settled(tree, directive_id, "closed"), what="closing at every hop")

        # Both ends (and the relays) keep the same full signed history, every step verified here.
        histories = {node_id: directive_history(tree[node_id], directive_id) for node_id in PATH}
        kinds = ["issued", "delivered", "acknowledged", "responded", "reopened", "responded", "closed"]
        for node_id, history in histories.items():
            assert history.verified, (node_id, [e.problem for e in history.entries])
            assert sorted(e.kind for e in history.entries) == sorted(kinds), node_id
        assert {e.digest for e in histories["gd"].entries} == {e.digest for e in histories[STREET].entries}
        assert all(item.status == "acked" for item in histories["gd"].deliveries)

        # The figures the target owns: received, acknowledged, responded on time (once), closed — by kind.
        with tree[STREET].engine.connect() as conn:
            totals = activity_totals(conn)
        assert totals == {
            ("directives_received", "supervise"): 1,
            ("directives_acknowledged", "supervise"): 1,
            ("directives_responded_on_time", "supervise"): 1,
            ("directives_closed", "supervise"): 1,
        }
        with tree["gd"].engine.connect() as conn:
            assert activity_totals(conn) == {}  # counted where the directive is received, not where it is issued
            responded_notices = conn.execute(
                select(Notification.subject).where(Notification.subject.like("%已答复%"))  # type: ignore[attr-defined]
            ).all()
        assert len(responded_notices) == 2  # the province's operators hear of both responses

        # Every hop audited what passed, the actor being the caller its certificate names.
        with tree["gd.a.x"].engine.connect() as conn:
            entries = conn.execute(
                select(AuditLogEntry.actor, AuditLogEntry.action).where(
                    AuditLogEntry.target == f"directive:{directive_id}"  # type: ignore[arg-type]
                )
            ).all()
        assert ("gd.a", "directive.relayed") in entries
        assert ("gd.a.x.s1", "directive.event_relayed") in entries
        assert all(actor in ("gd.a", "gd.a.x.s1") for actor, _action in entries)
    finally:
        tree.close()


def test_a_street_that_is_down_gets_its_directive_after_restarting(directive_tree: DirectiveTree) -> None:
    tree = directive_tree
    port = tree.nodes[STREET].port
    tree.stop_server(STREET)
    issued = issue(
        tree["gd"],
        IssueRequest(
            target_id=STREET,
            kind="rectify",
            text="专项检查发现的问题，限期整改。",
            findings=[FindingDraft("一次性告知未落实", "市场监管所"), FindingDraft("收费公示缺失", "财政所", "窗口")],
        ),
    )
    tree.senders["gd"].wake()
    # It waits at the district, the hop above the street, retried at the backoff.
    wait_for(lambda: tree.pending("gd.a.x") == 1, what="the directive waiting at gd.a.x")
    assert _status(tree, "gd.a.x", issued.id) == "issued"
    # The relay restarts too (server and sender anew, from its database): nothing is lost.
    relay_port = tree.nodes["gd.a.x"].port
    tree.senders.pop("gd.a.x").stop()
    tree.stop_server("gd.a.x")
    tree.start_server("gd.a.x", relay_port)
    tree.senders["gd.a.x"].start()
    assert tree.pending("gd.a.x") == 1

    tree.start_server(STREET, port)
    wait_for(lambda: _settled(tree, issued.id, "delivered"), what="delivery after the restart")
    respond(tree[STREET], issued.id, "两项均已整改。", done=[(1, "已制作告知单"), (2, "已公示")])
    tree.senders[STREET].wake()
    wait_for(lambda: _status(tree, "gd", issued.id) == "responded", what="the response at the province")
    response = next(e for e in directive_history(tree["gd"], issued.id).entries if e.kind == "responded")
    assert response.detail["findings"] == [
        {"index": 1, "done": True, "note": "已制作告知单"},
        {"index": 2, "done": True, "note": "已公示"},
    ]


def test_a_bulletin_to_a_whole_subtree_reaches_every_node_of_it(directive_tree: DirectiveTree) -> None:
    tree = directive_tree
    subtree = [node_id for node_id in IDS if node_id == "gd.a" or node_id.startswith("gd.a.")]
    issued = issue(
        tree["gd"],
        IssueRequest(target_id="gd.a", kind="bulletin", text="三月效能考评排名通报。", whole_subtree=True),
    )
    tree.senders["gd"].wake()
    assert issued.respond_within_workdays == 0  # a bulletin asks for no response

    def deliveries_at_gd() -> set[str]:
        return {e.actor_id for e in directive_history(tree["gd"], issued.id).entries if e.kind == "delivered"}

    wait_for(lambda: deliveries_at_gd() == set(subtree), what="a delivery from every node of the subtree")
    for node_id in subtree:
        view = get_directive(tree[node_id], issued.id)
        assert (view.role, view.status, view.due_at) == ("received", "delivered", None), node_id
        with tree[node_id].engine.connect() as conn:
            assert activity_totals(conn) == {("directives_received", "bulletin"): 1}, node_id

    acknowledge(tree["gd.a.y"], issued.id)  # a node below the target acknowledges for itself
    tree.senders["gd.a.y"].wake()
    wait_for(
        lambda: any(e.kind == "acknowledged" for e in directive_history(tree["gd"], issued.id).entries),
        what="gd.a.y's acknowledgement at gd",
    )
    assert get_directive(tree["gd.a.y"], issued.id).status == "acknowledged"
    assert get_directive(tree["gd"], issued.id).status == "delivered"  # the issuer's view follows the named target
    assert directive_history(tree["gd"], issued.id).verified

    close(tree["gd"], issued.id)  # nothing to answer: the issuer may close it once delivered
    tree.senders["gd"].wake()
    wait_for(lambda: get_directive(tree["gd.a"], issued.id).status == "closed", what="closing at the target")
