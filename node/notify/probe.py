"""A test message to every configured notification address, sent at once: checks a channel set-up end to end.

``supnet notifications test`` uses it after an operator configures mail or a group robot: each route of every
recipient and operator (optionally of one channel) gets one message, sent directly and not through the
``notifications`` table (nothing to retry, nothing left behind), and the outcome of each is returned, with the
far end's refusal (an SMTP login failure, a robot's errcode) as the channel reported it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from node.errors import InvalidArgumentError, UnavailableError
from node.notify.channels import OutgoingMessage, build_channels
from node.notify.routing import Route, route_everyone

if TYPE_CHECKING:
    from node.app import Node

__all__ = ["ProbeResult", "send_test_messages"]

_TEST_ID = 0  # no notification row: receivers de-duplicating on the id see 0


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One test message: where it went and the error, or None when the far end took it."""

    channel: str
    recipient: str
    name: str
    error: str | None

    @property
    def delivered(self) -> bool:
        """True when the far end took the message."""
        return self.error is None


def _message(node: Node, route: Route) -> OutgoingMessage:
    subject = f"[supnet {node.config.id}] 测试通知 test notification"
    text = (
        f"这是节点 {node.config.id} 发出的测试通知，收到即表示「{route.channel}」渠道配置正确。\n"
        f"This is a test notification from node {node.config.id}: the {route.channel} channel works."
    )
    if route.channel == "webhook":
        body = json.dumps(
            {"type": "supnet.test", "node_id": node.config.id, "subject": subject, "text": text},
            ensure_ascii=False,
            sort_keys=True,
        )
    elif route.channel == "sms":
        body = f"【supnet】节点 {node.config.id} 测试通知"
    else:
        body = text
    return OutgoingMessage(_TEST_ID, route.recipient, subject, body)


def send_test_messages(node: Node, channel: str | None = None) -> list[ProbeResult]:
    """Send one test message over every configured route (of ``channel`` only, if given); one result per route."""
    config = node.config.notifications
    channels = build_channels(config, node.data_dir)
    if channel is not None and channel not in channels:
        raise InvalidArgumentError(f"unknown channel {channel!r} (one of {', '.join(sorted(channels))})")
    results = []
    for route in route_everyone(config):
        if channel is not None and route.channel != channel:
            continue
        try:
            channels[route.channel].send(_message(node, route))
        except UnavailableError as exc:
            results.append(ProbeResult(route.channel, route.recipient, route.name, exc.message))
            continue
        results.append(ProbeResult(route.channel, route.recipient, route.name, None))
    return results
