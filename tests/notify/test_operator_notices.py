"""Operator notices: outbox overflow, silent children and expiring certificates reach the node's operators."""

from __future__ import annotations

import datetime as dt
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from federation import BackPressureError
from node.app import Node, open_node
from node.bootstrap import init_node
from node.config import ChildConfig, Operator, load_config, save_config
from node.notify import NoticeKind, NotificationDispatcher, notify_operators
from node.reporting import build_reports, check_children_staleness
from node.server import EnrolmentServer, NodeScheduler
from node.store import Notification, OperatorNotice
from node.trust import enroll_node, init_root, issue_token
from tests.harness.local_servers import HttpCapture, closed_port
from tests.harness.tree import Tree

T0 = datetime(2026, 3, 2, 9, 0, 0)
OPERATORS = [{"name": "值班员", "email": "ops@gz.example", "phone": "13800000000", "webhook": ""}]


def _node(data_dir: Path, db_url: str, node_id: str = "gd.gz", **federation: Any) -> Node:
    init_node(data_dir, node_id, level="city", db_url=db_url)
    config = load_config(data_dir)
    notifications = config.notifications.model_copy(
        update={
            "channels": ["log", "webhook", "smtp", "sms"],
            "sms_url_template": "http://127.0.0.1:1/sms?to={phone}&text={text}",
            "operators": [Operator(**operator) for operator in OPERATORS],
        }
    )
    config = config.model_copy(
        update={"notifications": notifications, "federation": config.federation.model_copy(update=federation)}
    )
    save_config(data_dir, config)
    return open_node(data_dir)


def _operator_rows(node: Node) -> list[Any]:
    with node.engine.connect() as conn:
        return list(
            conn.execute(select(Notification).where(Notification.alert_id.is_(None)).order_by(Notification.id))
            .mappings()
            .all()
        )


def test_a_notice_goes_to_every_operator_route_once_per_cooldown(tmp_path: Path, db_url: str) -> None:
    node = _node(tmp_path / "n", db_url)
    try:
        assert notify_operators(node, NoticeKind.CHILD_SILENT, "gd.gz.py", "child gd.gz.py is silent", "text", now=T0)
        rows = _operator_rows(node)
        assert {(row["channel"], row["recipient"]) for row in rows} == {
            ("log", "operators"),
            ("smtp", "ops@gz.example"),
            ("sms", "13800000000"),
        }  # no webhook: neither a node-wide URL nor one of the operator's
        assert all(row["subject"] == "[supnet gd.gz] child gd.gz.py is silent" for row in rows)
        # The same problem again within the hour: counted, not re-sent; another child is another problem.
        for minutes in (1, 30, 59):
            assert not notify_operators(
                node, NoticeKind.CHILD_SILENT, "gd.gz.py", "s", "t", now=T0 + timedelta(minutes=minutes)
            )
        assert notify_operators(node, NoticeKind.CHILD_SILENT, "gd.gz.sz", "s", "t", now=T0 + timedelta(minutes=1))
        with node.engine.connect() as conn:
            suppressed = conn.execute(
                select(OperatorNotice.suppressed).where(OperatorNotice.about == "gd.gz.py")
            ).scalar_one()
        assert suppressed == 3
        assert len(_operator_rows(node)) == 6
        assert notify_operators(node, NoticeKind.CHILD_SILENT, "gd.gz.py", "s", "later", now=T0 + timedelta(hours=1))
        latest = [row for row in _operator_rows(node) if row["channel"] == "smtp"][-1]
        assert latest["body"].startswith(
            "later\n(it happened 3 more time(s) since the last notice at 2026-03-02 09:00:00)"
        )
    finally:
        node.close()


def test_outbox_overflow_is_noticed_and_delivered_to_the_operators_webhook(
    tmp_path: Path, sqlite_url: str, http_capture: HttpCapture
) -> None:
    node = _node(
        tmp_path / "n",
        sqlite_url,
        node_id="gd.gz.py",
        parent_id="gd.gz",
        parent_address=f"127.0.0.1:{closed_port()}",
        outbox_max_reports=1,
    )
    node.config.notifications.webhook_url = http_capture.url
    node.config.notifications.channels = ["log", "webhook"]
    try:
        build_reports(node)  # queued: the parent never acknowledges it
        for _ in range(3):
            with pytest.raises(BackPressureError):
                build_reports(node)
        rows = _operator_rows(node)
        assert [row["channel"] for row in rows] == ["log", "webhook"], "three overflows, one notice"
        assert "outbox is full" in rows[0]["subject"] and "Nothing is lost" in rows[0]["body"]
        result = NotificationDispatcher(node).run_once()
        assert result.delivered == 2
        [request] = http_capture.requests
        payload = request.json()
        assert (payload["type"], payload["node_id"], payload["kind"], payload["about"]) == (
            "supnet.operator_notice",
            "gd.gz.py",
            "outbox_overflow",
            "gd.gz",
        )
    finally:
        node.close()


def test_a_child_that_never_reported_is_noticed(tmp_path: Path, sqlite_url: str) -> None:
    node = _node(tmp_path / "n", sqlite_url, children=[ChildConfig(id="gd.gz.py")])
    try:
        statuses = check_children_staleness(node)
        assert [(status.child_id, status.state) for status in statuses] == [("gd.gz.py", "missing")]
        bodies = [row["body"] for row in _operator_rows(node) if row["channel"] == "smtp"]
        assert bodies and "Child gd.gz.py of node gd.gz has never reported" in bodies[0]
        check_children_staleness(node)  # still silent, within the cooldown: no second notice
        assert len([row for row in _operator_rows(node) if row["channel"] == "smtp"]) == 1
    finally:
        node.close()


def test_a_ca_certificate_this_node_cannot_renew_is_noticed(tmp_path: Path, sqlite_url: str) -> None:
    # A tree set up 1810 days ago: the city's CA certificate (1825 days) ends in 15 days, only the parent renews it.
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=1810)
    init_node(tmp_path / "gd", "gd", level="province")
    init_root(tmp_path / "gd", now=past)
    token = issue_token(tmp_path / "gd", "gd.gz", now=past).token
    city = _node(tmp_path / "gz", sqlite_url)
    listener = EnrolmentServer(tmp_path / "gd", clock=lambda: past)
    listener.start()
    try:
        enroll_node(tmp_path / "gz", listener.bound_address, token, now=past)
    finally:
        listener.stop(0)
    try:
        [renewal] = [spec for spec in NodeScheduler(city).job_specs() if spec.job_id == "certificate_renewal"]
        renewal.func()
        [mail] = [row for row in _operator_rows(city) if row["channel"] == "smtp"]
        assert "cannot renew them itself" in mail["subject"]
        assert "ACTION NEEDED" in mail["body"] and "only the parent can renew it" in mail["body"]
    finally:
        city.close()


def test_a_child_that_reports_again_is_told_resolved_and_a_new_silence_is_told_at_once(tmp_path: Path) -> None:
    tree = Tree(tmp_path, ["gd", "gd.sz"])
    try:
        province = tree["gd"]
        check_children_staleness(province)  # gd.sz has never reported
        assert not tree.sender("gd.sz").report_now().failed
        check_children_staleness(province)  # fresh now: the operators hear it is over
        check_children_staleness(province)  # still fresh: nothing more
        tree.clock.advance(3 * 60.0 + 1)  # stale_after_intervals x report_interval_seconds of the test tree
        check_children_staleness(province)  # silent again, within the hour: told at once all the same
        subjects = [row["subject"] for row in _operator_rows(province) if row["channel"] == "log"]
        assert subjects == [
            "[supnet gd] child gd.sz is silent",
            "[supnet gd] child gd.sz reports again",
            "[supnet gd] child gd.sz is silent",
        ]
        assert "has not reported since" in [row["body"] for row in _operator_rows(province)][-1]
    finally:
        tree.close()
