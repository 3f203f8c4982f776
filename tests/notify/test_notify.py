"""Notification dispatch against REAL local servers: HTTP (webhook, SMS gateway) and aiosmtpd (mail)."""

from __future__ import annotations

import logging
import threading
import time
import urllib.parse
from datetime import datetime, timedelta
from email import message_from_bytes
from email.header import decode_header, make_header
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select, update

from node.app import Node, open_node
from node.config import NodeConfig, NotificationsConfig, Recipient, StoreConfig, save_config
from node.notify import NotificationDispatcher, list_notifications, notification_counts, requeue_failed
from node.server import NodeScheduler
from node.store import Alert, Notification
from node.supervision import AlertDraft, acknowledge_alert, raise_alerts
from tests.harness.local_servers import HttpCapture, MailSink, PortZeroController, closed_port

T0 = datetime(2025, 3, 3, 9, 0, 0)


# -- node helpers ------------------------------------------------------------------------------------------------------
def make_node(data_dir: Path, db_url: str, **notifications: Any) -> Node:
    config = NodeConfig(
        id="gd.gz.py", store=StoreConfig(url=db_url), notifications=NotificationsConfig(**notifications)
    )
    save_config(data_dir, config)
    return open_node(data_dir)


def raise_alert(node: Node, **fields: Any) -> int:
    """Raise a warning through the rule engine's own API (node.supervision.alerts.raise_alerts)."""
    case_no = fields.pop("case_no", "C-1")
    values: dict[str, Any] = {
        "rule_id": "R02",
        "subject": f"case:{case_no}",
        "case_no": case_no,
        "department": "市场监管局",
        "post": "窗口受理",
        "implementation_code": "440112001",
        "message": "超承诺时限 promised limit passed",
        "raised_at": T0 - timedelta(hours=1),
        "correct_by": T0 + timedelta(days=3),
    }
    values.update(fields)
    with node.engine.begin() as conn:
        [raised] = raise_alerts(conn, [AlertDraft(**values)])
    return raised.id


def alert_row(node: Node, alert_id: int) -> Any:
    with node.engine.connect() as conn:
        return conn.execute(select(Alert.status, Alert.notified_at).where(Alert.id == alert_id)).one()


def notification_rows(node: Node) -> list[Any]:
    with node.engine.connect() as conn:
        return list(conn.execute(select(Notification).order_by(Notification.id)).mappings().all())


# -- tests -------------------------------------------------------------------------------------------------------------
def test_webhook_retried_with_backoff_until_delivered(tmp_path: Path, db_url: str, http_capture: HttpCapture) -> None:
    http_capture.fail_first = 2
    node = make_node(
        tmp_path, db_url, channels=["webhook"], webhook_url=http_capture.url + "/hook", backoff_seconds=2.0
    )
    alert_id = raise_alert(node)
    dispatcher = NotificationDispatcher(node)

    first = dispatcher.run_once(T0)
    assert (first.enqueued, first.attempted, first.delivered, first.retry_scheduled) == (1, 1, 0, 1)
    [row] = notification_rows(node)
    assert row["status"] == "pending" and row["attempts"] == 1 and "HTTP 500" in row["last_error"]
    # First retry after backoff * 2**0 = 2 s, plus at most 10% jitter.
    assert T0 + timedelta(seconds=2) <= row["next_attempt_at"] <= T0 + timedelta(seconds=2.2)

    not_due = dispatcher.run_once(T0 + timedelta(seconds=1))
    assert not_due.attempted == 0 and len(http_capture.requests) == 1

    t1 = T0 + timedelta(seconds=3)
    dispatcher.run_once(t1)
    [row] = notification_rows(node)
    assert row["attempts"] == 2
    # Second retry after backoff * 2**1 = 4 s.
    assert t1 + timedelta(seconds=4) <= row["next_attempt_at"] <= t1 + timedelta(seconds=4.4)
    assert alert_row(node, alert_id).status == "raised"

    t2 = t1 + timedelta(seconds=5)
    done = dispatcher.run_once(t2)
    assert (done.delivered, done.alerts_notified, done.pending, done.failed) == (1, 1, 0, 0)
    [row] = notification_rows(node)
    assert (row["status"], row["attempts"], row["delivered_at"]) == ("delivered", 3, t2)
    assert tuple(alert_row(node, alert_id)) == ("notified", t2)

    assert len(http_capture.requests) == 3
    last = http_capture.requests[-1]
    assert last.method == "POST" and last.path == "/hook"
    assert last.headers["X-Supnet-Notification-Id"] == str(row["id"])
    payload = last.json()
    assert payload["alert"]["id"] == alert_id
    assert payload["alert"]["case_no"] == "C-1"
    assert payload["alert"]["department"] == "市场监管局"
    assert payload["alert"]["correct_by"] == "2025-03-06T09:00:00+08:00"
    assert "规则 Rule: R02" in payload["text"] and "纠正期限 Correct by: 2025-03-06 09:00" in payload["text"]
    # Nothing more to do: a further run sends nothing.
    assert dispatcher.run_once(t2 + timedelta(minutes=5)).attempted == 0
    node.close()


def test_server_down_keeps_notification_visible_until_delivered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = closed_port()
    node = make_node(
        tmp_path,
        f"sqlite:///{tmp_path}/node.db",
        channels=["webhook"],
        webhook_url=f"http://127.0.0.1:{port}/hook",
        max_attempts=3,
        backoff_seconds=1.0,
        timeout_seconds=1.0,
    )
    alert_id = raise_alert(node)
    dispatcher = NotificationDispatcher(node)
    now = T0
    with caplog.at_level(logging.WARNING, logger="supnet.notify"):
        for _ in range(3):
            dispatcher.run_once(now)
            now += timedelta(minutes=1)
    [row] = notification_rows(node)
    assert row["status"] == "failed" and row["attempts"] == 3
    assert "Connection refused" in row["last_error"] or "refused" in row["last_error"].lower()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "FAILED after 3 attempts" in errors[0].getMessage()
    # Given up, but not lost: listed as not delivered, counted, the alert still 'raised'.
    assert [v.id for v in list_notifications(node, pending_only=True)] == [row["id"]]
    assert notification_counts(node) == {"failed": 1}
    assert alert_row(node, alert_id).status == "raised"
    assert dispatcher.run_once(now).attempted == 0

    # The server comes back on that port; the operator requeues and the next run delivers.
    capture = HttpCapture(port=port).start()
    try:
        assert requeue_failed(node, now=now) == 1
        result = dispatcher.run_once(now)
        assert (result.delivered, result.alerts_notified, result.failed) == (1, 1, 0)
        assert len(capture.requests) == 1
    finally:
        capture.stop()
    assert alert_row(node, alert_id).status == "notified"
    node.close()


def test_smtp_mail_goes_to_recipients_routed_by_department_and_post(
    tmp_path: Path, smtp_server: tuple[PortZeroController, MailSink]
) -> None:
    controller, sink = smtp_server
    node = make_node(
        tmp_path,
        f"sqlite:///{tmp_path}/node.db",
        channels=["smtp"],
        smtp_host="127.0.0.1",
        smtp_port=controller.port,
        smtp_sender="supnet@gz.example",
        recipients=[
            Recipient(department="市场监管局", post="*", name="科长", email="head@scj.example"),
            Recipient(department="市场监管局", post="窗口*", name="窗口", email="window@scj.example"),
            Recipient(department="市场监管局", post="审核", name="审核岗", email="review@scj.example"),
            Recipient(department="住建局", name="住建", email="zj@zj.example"),
            Recipient(department="*", post="*", name="监察室", email="jcs@jw.example"),
        ],
    )
    alert_id = raise_alert(node, case_no="GZ-2025-0001")
    result = NotificationDispatcher(node).run_once(T0)
    assert (result.enqueued, result.delivered, result.alerts_notified) == (3, 3, 1)

    received = {tuple(e.rcpt_tos): message_from_bytes(e.content) for e in sink.envelopes}
    assert set(received) == {("head@scj.example",), ("window@scj.example",), ("jcs@jw.example",)}
    mail = received[("window@scj.example",)]
    assert mail["From"] == "supnet@gz.example"
    subject = str(make_header(decode_header(mail["Subject"])))
    assert "黄牌" in subject and "R02" in subject and "GZ-2025-0001" in subject
    payload = mail.get_payload(decode=True)
    assert isinstance(payload, bytes)
    body = payload.decode(mail.get_content_charset() or "utf-8")
    assert "办件编号 Case: GZ-2025-0001" in body
    assert "责任部门 Department: 市场监管局" in body and "岗位 Post: 窗口受理" in body
    assert alert_row(node, alert_id).status == "notified"
    node.close()


def test_sms_gateway_get_template_and_post(tmp_path: Path, http_capture: HttpCapture) -> None:
    recipients = [Recipient(department="市场*", post="*", name="科长", phone="+8613800000001")]
    node = make_node(
        tmp_path,
        f"sqlite:///{tmp_path}/node.db",
        channels=["sms"],
        sms_url_template=http_capture.url + "/send?to={phone}&msg={text}",
        recipients=recipients,
    )
    raise_alert(node, rule_id="R03", case_no="GZ-9")
    assert NotificationDispatcher(node).run_once(T0).delivered == 1
    [request] = http_capture.requests
    assert request.method == "GET"
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(request.path).query)
    assert query["to"] == ["+8613800000001"]
    assert query["msg"][0].startswith("【supnet】红牌R03 办件GZ-9 市场监管局/窗口受理")
    node.close()

    post_dir = tmp_path / "post"
    post_dir.mkdir()
    node = make_node(
        post_dir,
        f"sqlite:///{post_dir}/node.db",
        channels=["sms"],
        sms_method="POST",
        sms_url_template=http_capture.url + "/sms/{phone}",
        recipients=recipients,
    )
    raise_alert(node, case_no="GZ-10")
    assert NotificationDispatcher(node).run_once(T0).delivered == 1
    request = http_capture.requests[-1]
    assert request.method == "POST" and urllib.parse.unquote(request.path) == "/sms/+8613800000001"
    assert request.json()["phone"] == "+8613800000001" and "GZ-10" in request.json()["text"]
    node.close()


def test_enqueue_is_idempotent_and_only_for_raised_alerts(
    tmp_path: Path, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    node = make_node(tmp_path, db_url)  # default: the log channel only
    raised = raise_alert(node)
    acknowledged = raise_alert(node, rule_id="R01", correct_by=None)
    acknowledge_alert(node, acknowledged, by="值班员", now=T0)
    dispatcher = NotificationDispatcher(node)
    assert dispatcher.enqueue_pending_alerts(T0) == 1
    assert dispatcher.enqueue_pending_alerts(T0) == 0
    rows = notification_rows(node)
    assert [(r["alert_id"], r["channel"], r["recipient"]) for r in rows] == [(raised, "log", "市场监管局/窗口受理")]

    with caplog.at_level(logging.WARNING, logger="supnet.notify"):
        outcome = dispatcher.deliver_due(T0)
    assert (outcome.delivered, outcome.alerts_notified) == (1, 1)
    assert any("C-1" in r.getMessage() and "R02" in r.getMessage() for r in caplog.records if r.name == "supnet.notify")
    assert alert_row(node, raised).status == "notified"
    assert alert_row(node, acknowledged).status == "acknowledged"
    # A notified alert is not enqueued again.
    assert dispatcher.run_once(T0 + timedelta(minutes=1)).enqueued == 0
    assert len(notification_rows(node)) == 1
    node.close()


def test_alert_with_no_matching_recipient_is_logged_not_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    node = make_node(
        tmp_path,
        f"sqlite:///{tmp_path}/node.db",
        channels=["smtp"],
        recipients=[Recipient(department="住建局", email="zj@zj.example")],
    )
    alert_id = raise_alert(node)
    with caplog.at_level(logging.WARNING, logger="supnet.notify"):
        result = NotificationDispatcher(node).run_once(T0)
    [row] = notification_rows(node)
    assert (row["channel"], row["recipient"], row["status"]) == ("log", "unrouted:市场监管局/窗口受理", "delivered")
    assert result.alerts_notified == 1 and alert_row(node, alert_id).status == "notified"
    assert any("matches no notification recipient" in r.getMessage() for r in caplog.records)
    node.close()


def test_alert_notified_only_when_every_channel_delivered(
    tmp_path: Path, http_capture: HttpCapture, smtp_server: tuple[PortZeroController, MailSink]
) -> None:
    controller, sink = smtp_server
    http_capture.fail_first = 1
    node = make_node(
        tmp_path,
        f"sqlite:///{tmp_path}/node.db",
        channels=["log", "webhook", "smtp"],
        webhook_url=http_capture.url,
        smtp_port=controller.port,
        recipients=[Recipient(department="*", email="all@jw.example")],
    )
    alert_id = raise_alert(node)
    dispatcher = NotificationDispatcher(node)
    first = dispatcher.run_once(T0)
    assert (first.enqueued, first.delivered, first.retry_scheduled, first.alerts_notified) == (3, 2, 1, 0)
    assert alert_row(node, alert_id).status == "raised"
    assert len(sink.envelopes) == 1
    second = dispatcher.run_once(T0 + timedelta(minutes=1))
    assert (second.attempted, second.delivered, second.alerts_notified) == (1, 1, 1)
    assert alert_row(node, alert_id).status == "notified"
    assert len(sink.envelopes) == 1  # the mail already delivered is not sent again
    node.close()


def test_webhook_timeout_is_a_retryable_failure(tmp_path: Path, http_capture: HttpCapture) -> None:
    http_capture.delay_seconds = 1.0
    node = make_node(
        tmp_path,
        f"sqlite:///{tmp_path}/node.db",
        channels=["webhook"],
        webhook_url=http_capture.url,
        timeout_seconds=0.2,
    )
    raise_alert(node)
    started = time.monotonic()
    result = NotificationDispatcher(node).run_once(T0)
    assert time.monotonic() - started < 0.9
    assert result.retry_scheduled == 1
    [row] = notification_rows(node)
    assert row["status"] == "pending" and "timed out" in row["last_error"]
    node.close()


def test_background_dispatcher_delivers_and_stops(tmp_path: Path, http_capture: HttpCapture) -> None:
    node = make_node(tmp_path, f"sqlite:///{tmp_path}/node.db", channels=["webhook"], webhook_url=http_capture.url)
    dispatcher = NotificationDispatcher(node, interval_seconds=0.05)
    dispatcher.start()
    try:
        alert_id = raise_alert(node)
        dispatcher.wake()
        deadline = time.monotonic() + 5
        while alert_row(node, alert_id).status != "notified" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert alert_row(node, alert_id).status == "notified"
        assert dispatcher.running
    finally:
        dispatcher.stop()
    assert not dispatcher.running
    assert len(http_capture.requests) == 1
    node.close()


def test_two_dispatchers_never_send_the_same_notification_twice(
    tmp_path: Path, db_url: str, http_capture: HttpCapture
) -> None:
    http_capture.delay_seconds = 0.2  # slow receiver: both dispatchers see the same due rows at the same time
    node = make_node(tmp_path, db_url, channels=["webhook"], webhook_url=http_capture.url)
    alert_ids = [raise_alert(node, case_no=f"C-{n}") for n in range(3)]
    first, second = NotificationDispatcher(node), NotificationDispatcher(node)
    first.enqueue_pending_alerts(T0)
    results: list[Any] = []
    threads = [threading.Thread(target=lambda d=d: results.append(d.deliver_due(T0))) for d in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert sum(r.delivered for r in results) == 3
    assert sorted(r.headers["X-Supnet-Notification-Id"] for r in http_capture.requests) == sorted(
        str(row["id"]) for row in notification_rows(node)
    )
    assert all(alert_row(node, alert_id).status == "notified" for alert_id in alert_ids)
    node.close()


def test_backlog_of_many_chunks_is_delivered_in_one_run(tmp_path: Path, db_url: str) -> None:
    node = make_node(tmp_path, db_url)  # the log channel
    with node.engine.begin() as conn:
        raise_alerts(
            conn,
            [
                AlertDraft(
                    rule_id="R02",
                    subject=f"case:B-{n}",
                    case_no=f"B-{n}",
                    department=f"部门{n % 7}",
                    implementation_code="I1",
                    message="m",
                    raised_at=T0,
                )
                for n in range(130)  # more than five delivery chunks
            ],
        )
    result = NotificationDispatcher(node).run_once(T0)
    assert (result.enqueued, result.delivered, result.alerts_notified, result.pending) == (130, 130, 130, 0)
    with node.engine.connect() as conn:
        statuses = conn.execute(select(Alert.status).distinct()).scalars().all()
    assert statuses == ["notified"]
    node.close()


def test_settle_marks_alerts_whose_notifications_all_went_out(tmp_path: Path, db_url: str) -> None:
    node = make_node(tmp_path, db_url)
    stuck, waiting = raise_alert(node, case_no="S-1"), raise_alert(node, case_no="S-2")
    dispatcher = NotificationDispatcher(node)
    dispatcher.enqueue_pending_alerts(T0)
    dispatcher.deliver_due(T0)
    # The state a race between two dispatchers can leave: every notification delivered, the alert still 'raised'.
    with node.engine.begin() as conn:
        conn.execute(update(Alert).where(Alert.id == stuck).values(status="raised", notified_at=None))
        conn.execute(update(Notification).where(Notification.alert_id == waiting).values(status="pending"))
        conn.execute(update(Alert).where(Alert.id == waiting).values(status="raised", notified_at=None))
    later = T0 + timedelta(minutes=1)
    assert dispatcher.settle_alerts(later) == 1
    assert tuple(alert_row(node, stuck)) == ("notified", later)
    assert alert_row(node, waiting).status == "raised"  # one of its notifications is still pending
    node.close()


def test_the_dispatch_job_reads_the_database_after_a_write_or_while_notifications_wait(
    tmp_path: Path, http_capture: HttpCapture
) -> None:
    # supnet serve's notification_dispatch job (every 5 s per node; a host runs hundreds): an idle pass reads nothing.
    http_capture.fail_first = 1
    node = make_node(
        tmp_path,
        f"sqlite:///{tmp_path}/node.db",
        channels=["webhook"],
        webhook_url=http_capture.url + "/hook",
        backoff_seconds=0.3,
    )
    [dispatch] = [spec.func for spec in NodeScheduler(node).job_specs() if spec.job_id == "notification_dispatch"]
    statements: list[str] = []
    event.listen(node.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    dispatch()
    assert statements, "the first pass reads"
    del statements[:]
    dispatch()
    assert statements == [], "nothing written since: nothing read"
    alert_id = raise_alert(node)
    dispatch()
    assert len(http_capture.requests) == 1  # the write is seen; the first attempt fails (HTTP 500), a retry waits
    # The retry is due 0.3 s later: passes that find nothing due write nothing, yet the waiting notification keeps
    # the job reading until it is delivered.
    deadline = time.monotonic() + 10
    while alert_row(node, alert_id).status != "notified":
        assert time.monotonic() < deadline, "the retry was not delivered"
        dispatch()
        time.sleep(0.05)
    assert len(http_capture.requests) == 2
    dispatch()  # sees its own last write
    del statements[:]
    dispatch()
    assert statements == [], "delivered, nothing pending: idle again"
    node.close()
