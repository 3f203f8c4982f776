"""Who is told about a warning: recipients chosen by department and post from ``config.notifications.recipients``.

A recipient's ``department`` and ``post`` are shell-style patterns (``*`` matches anything, ``市场*`` a prefix), matched
case-sensitively against the alert's responsible department and post; an alert with no post matches only ``*``.
For every enabled channel:

- ``log``: one route per alert (recipient = the responsible ``department/post``), whatever the recipient list says;
- ``webhook``: the node-wide ``webhook_url`` if set, plus each matching recipient's own ``webhook``;
- ``smtp``: each matching recipient's ``email``;
- ``sms``: each matching recipient's ``phone`` (only when ``sms_url_template`` is set).

When nothing matches at all, the alert still gets a ``log`` route to ``unrouted:department/post`` so that no warning
disappears silently; the dispatcher logs it at WARNING.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from node.config import NotificationsConfig, Recipient

__all__ = ["UNROUTED_PREFIX", "Route", "matching_recipients", "route_alert"]

UNROUTED_PREFIX = "unrouted:"


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
    recipients = matching_recipients(config, department, post)
    routes: list[Route] = []
    seen: set[tuple[str, str]] = set()

    def add(channel: str, address: str, name: str = "") -> None:
        address = address.strip()
        if address and (channel, address) not in seen:
            seen.add((channel, address))
            routes.append(Route(channel, address, name))

    for channel in config.channels:
        if channel == "log":
            add("log", _label(department, post))
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
    if not routes:
        add("log", UNROUTED_PREFIX + _label(department, post))
    return routes
