"""Notifications of warnings: channels (log, webhook, SMTP, SMS gateway, DingTalk/WeCom robots), routing, dispatcher."""

from node.notify.dispatcher import (
    NotificationDispatcher,
    NotificationView,
    backoff_delay,
    list_notifications,
    notification_counts,
    requeue_failed,
)
from node.notify.operator_notices import NoticeKind, notify_operators, notify_operators_in, notify_operators_resolved
from node.notify.probe import ProbeResult, send_test_messages
from node.notify.robots import DingTalkChannel, WeComChannel, dingtalk_sign, robot_payload
from node.notify.routing import Route, matching_recipients, route_alert

__all__ = [
    "DingTalkChannel",
    "NoticeKind",
    "NotificationDispatcher",
    "NotificationView",
    "ProbeResult",
    "Route",
    "WeComChannel",
    "backoff_delay",
    "dingtalk_sign",
    "list_notifications",
    "matching_recipients",
    "notification_counts",
    "notify_operators",
    "notify_operators_in",
    "notify_operators_resolved",
    "requeue_failed",
    "robot_payload",
    "route_alert",
    "send_test_messages",
]
