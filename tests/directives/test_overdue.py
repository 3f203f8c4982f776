"""A late response under the tree's test clock: the R15 alert and the overdue count at the target, the notice at the
issuer, then the escalation to the target's operators and to the issuer's parent — each exactly once, however often
the deadline check runs (by hand and in every node's sender loop at once); SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from datetime import date, datetime
from pathlib import Path

from sqlalchemy import select

from node.directives import IssueRequest, check_deadlines, get_directive, issue, respond
from node.store import Alert, Notification
from node.supervision import activity_totals
from tests.directives.conftest import IDS, DirectiveTree, wait_for
from tests.harness.postgres import fresh_schema_url
from tests.harness.tree import TreeClock

STREET = "gd.a.x.s1"
ISSUER = "gd.a"
MONDAY = datetime(2025, 3, 24, 9, 0)


def _notices(tree: DirectiveTree, node_id: str, marker: str) -> list[str]:
    with tree[node_id].engine.connect() as conn:
        rows = conn.execute(
            select(Notification.subject).where(Notification.subject.like(f"%{marker}%"))  # type: ignore[attr-defined]
        ).all()
    return [row.subject for row in rows]


def _r15(tree: DirectiveTree) -> list[tuple[str, datetime]]:
    with tree[STREET].engine.connect() as conn:
        rows = conn.execute(select(Alert.subject, Alert.breached_at).where(Alert.rule_id == "R15")).all()  # type: ignore[arg-type]
    return [(row.subject, row.breached_at) for row in rows]


def _advance_to(clock: TreeClock, moment: datetime) -> None:
    clock.advance((moment - clock()).total_seconds())


def _tree(tmp_path: Path, db_url: str, stack: ExitStack) -> DirectiveTree:
    db_urls = {STREET: db_url}
    if db_url.startswith("postgresql"):
        db_urls[ISSUER] = stack.enter_context(fresh_schema_url())
    return DirectiveTree(tmp_path / "tree", IDS, clock=TreeClock(MONDAY), db_urls=db_urls)


def _checks(tree: DirectiveTree) -> Iterator[None]:
    """The deadline check, by hand at the two ends (the loops run it too)."""
    for _ in range(3):
        check_deadlines(tree[STREET])
        check_deadlines(tree[ISSUER])
        yield


def test_a_late_response_is_alerted_noticed_and_escalated_once_each(tmp_path: Path, db_url: str) -> None:
    with ExitStack() as stack:
        tree = _tree(tmp_path, db_url, stack)
        stack.callback(tree.close)
        for node_id in IDS:
            tree[node_id].config.directives.check_interval_seconds = 0.1  # every loop checks too, concurrently
        tree.start_loops()
        clock = tree.clock
        issued = issue(
            tree[ISSUER],
            IssueRequest(
                target_id=STREET, kind="supervise", department="市场监管所", text="请核查", respond_within_workdays=2
            ),
        )
        tree.senders[ISSUER].wake()
        wait_for(lambda: get_directive(tree[ISSUER], issued.id).status == "delivered", what="delivery")
        due = get_directive(tree[STREET], issued.id).due_at
        assert due == datetime(2025, 3, 26, 23, 59, 59)  # two working days after Monday's delivery
        assert get_directive(tree[ISSUER], issued.id).due_at == due  # signed by the street, known at the issuer
        list(_checks(tree))
        assert _r15(tree) == [] and _notices(tree, ISSUER, "逾期未答复") == []

        # Thursday: the response is late.
        _advance_to(clock, datetime(2025, 3, 27, 10, 0))
        list(_checks(tree))
        wait_for(lambda: _notices(tree, ISSUER, "逾期未答复"), what="the notice at the issuer")
        list(_checks(tree))
        assert _r15(tree) == [(f"directive:{issued.id}", due)]  # the alert, breached at the due time
        assert len(_notices(tree, ISSUER, "逾期未答复")) == 1
        with tree[STREET].engine.connect() as conn:
            assert activity_totals(conn)[("directives_overdue", "supervise")] == 1
            assert activity_totals(conn, date(2025, 3, 26), date(2025, 3, 26)) == {
                ("directives_overdue", "supervise"): 1
            }
        assert get_directive(tree[STREET], issued.id).overdue
        assert _notices(tree, STREET, "逾期升级") == []

        # Escalation: three more working days (the default), at the end of Monday the 31st.
        _advance_to(clock, datetime(2025, 3, 31, 12, 0))
        list(_checks(tree))
        assert _notices(tree, STREET, "逾期升级") == [] and _notices(tree, "gd", "逾期上报") == []
        _advance_to(clock, datetime(2025, 4, 1, 9, 0))
        list(_checks(tree))
        wait_for(lambda: _notices(tree, "gd", "逾期上报"), what="the escalation at the issuer's parent")
        list(_checks(tree))
        assert len(_notices(tree, STREET, "逾期升级")) == 1  # the target's operators
        assert len(_notices(tree, "gd", "逾期上报")) == 1  # the issuer's parent's operators
        escalated = get_directive(tree["gd"], issued.id)
        assert escalated.role == "escalated" and escalated.issuer_id == ISSUER and escalated.target_id == STREET
        assert len(_r15(tree)) == 1

        # A late response counts no on-time response; the overdue count stays one.
        respond(tree[STREET], issued.id, "已处理")
        tree.senders[STREET].wake()
        wait_for(lambda: get_directive(tree[ISSUER], issued.id).status == "responded", what="the late response")
        with tree[STREET].engine.connect() as conn:
            totals = activity_totals(conn)
        assert ("directives_responded_on_time", "supervise") not in totals
        assert totals[("directives_overdue", "supervise")] == 1
        assert not get_directive(tree[ISSUER], issued.id).overdue


def test_without_calendar_data_for_the_year_no_due_time_is_guessed(tmp_path: Path) -> None:
    # Delivered on 28 December 2026: five working days reach into 2027, for which the built-in calendar has no data.
    tree = DirectiveTree(tmp_path / "tree", ["gd", "gd.a"], clock=TreeClock(datetime(2026, 12, 28, 9, 0)))
    try:
        tree.start_loops()
        issued = issue(
            tree["gd"], IssueRequest(target_id="gd.a", kind="supervise", text="请核查", respond_within_workdays=5)
        )
        tree.senders["gd"].wake()
        wait_for(lambda: get_directive(tree["gd"], issued.id).status == "delivered", what="delivery")
        assert get_directive(tree["gd.a"], issued.id).due_at is None
        assert get_directive(tree["gd"], issued.id).due_at is None
        with tree["gd.a"].engine.connect() as conn:
            bodies = conn.execute(select(Notification.body).where(Notification.subject.like("%收到督办%"))).all()  # type: ignore[attr-defined]
        assert any("2027" in row.body and "no due time" in row.body for row in bodies)
        _advance_to(tree.clock, datetime(2027, 3, 1, 9, 0))
        assert check_deadlines(tree["gd.a"]).overdue == [] and check_deadlines(tree["gd"]).overdue == []
    finally:
        tree.close()
