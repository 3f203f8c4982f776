"""Who is told about a warning: recipients chosen by department and post from ``config.notifications.recipients``.

A recipient's ``department`` and ``post`` are shell-style patterns (``*`` matches anything, ``市场*`` a prefix), matched
case-sensitively against the alert's responsible department and post; an alert with no post matches only ``*``.
For every enabled channel:

- ``log``: one route per alert (recipient = the responsible ``department/post``), whatever the recipient list says;
- ``webhook``: the node-wide ``webhook_url`` if set, plus each matching recipient's own ``webhook``;
- ``smtp``: each matching recipient's ``email``;
- ``sms``: each matching recipient's ``phone`` (only when ``sms_url_template`` is set);
- ``dingtalk`` / ``wecom``: each group robot a matching recipient names in ``robots`` (the route's recipient is the
  robot's name: its address and secret stay in the config).

When nothing matches at all, the alert still gets a ``log`` route to ``unrouted:department/post`` so that no warning
disappears silently; the dispatcher logs it at WARNING.

Operator notices (the node's own problems) go the same way to ``notifications.operators`` (``route_operators``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from node.config import NotificationsConfig, Operator, Recipient

__all__ = [
    "OPERATORS_LABEL",
    "UNROUTED_PREFIX",
    "Route",
    "matching_recipients",
    "route_alert",
    "route_everyone",
    "route_operators",
]

UNROUTED_PREFIX = "unrouted:"
OPERATORS_LABEL = "operators"


@dataclass(frozen=True, slots=True, order=True)
class Route:
    """One delivery target: a channel and the address on it (URL, mail address, phone, or a log label)."""

    channel: str
    recipient: str
    name: str = ""


def _matches(pattern: str, value: str) -> bool:
    if pattern in {"", "*"}:
        return True
    return fnmatchcase(value, pattern)


def matching_recipients(config: NotificationsConfig, department: str, post: str) -> list[Recipient]:
    """The configured recipients whose department and post patterns match, in config order."""
    return [r for r in config.recipients if _matches(r.department, department) and _matches(r.post, post)]


def _label(department: str, post: str) -> str:
    return f"{department or '-'}/{post or '*'}"


def route_alert(config: NotificationsConfig, department: str, post: str) -> list[Route]:
    """The routes for one alert, without duplicates, in channel order of the config."""
    label = _label(department, post)
    return _routes(config, matching_recipients(config, department, post), label, UNROUTED_PREFIX + label)


def route_operators(config: NotificationsConfig) -> list[Route]:
    """The routes for an operator notice: every channel to every configured operator (the log always)."""
    return _routes(config, config.operators, OPERATORS_LABEL, OPERATORS_LABEL)


def route_everyone(config: NotificationsConfig) -> list[Route]:
    """Every route of every recipient and operator, each once (for a test message over the whole set-up)."""
    return _routes(config, [*config.recipients, *config.operators], "test", "test")


def _routes(
    config: NotificationsConfig, recipients: Sequence[Recipient | Operator], log_label: str, fallback_label: str
) -> list[Route]:
    routes: list[Route] = []
    seen: set[tuple[str, str]] = set()

    def add(channel: str, address: str, name: str = "") -> None:
        address = address.strip()
        if address and (channel, address) not in seen:
            seen.add((channel, address))
            routes.append(Route(channel, address, name))

    for channel in config.channels:
        if channel == "log":
            add("log", log_label)
        elif channel == "webhook":
            add("webhook", config.webhook_url, "webhook")
            for r in recipients:
                add("webhook", r.webhook, r.name)
        elif channel == "smtp":
            for r in recipients:
                add("smtp", r.email, r.name)
        elif channel == "sms" and config.sms_url_template:
            for r in recipients:
                add("sms", r.phone, r.name)
        elif channel in {"dingtalk", "wecom"}:
            for r in recipients:
                for robot_name in r.robots:
                    robot = config.robot(robot_name)
                    if robot is not None and robot.kind == channel:
                        add(channel, robot.name, robot.name)
    if not routes:
        add("log", fallback_label)
    return routes
