r"""Group robot channels: DingTalk (钉钉) and WeCom (企业微信) webhooks, where Chinese offices receive their alerts.

A notification row for a robot names the robot (``[[notifications.robots]]`` ``name``), never its address: the
address and secret stay in the config and secret store, out of the database and the logs. At send time:

- DingTalk: POST JSON to the robot ``url`` (which holds the ``access_token``); with a 加签 secret, ``timestamp``
  (milliseconds) and ``sign`` = URL-encoded base64 of HMAC-SHA256(key = secret, message = "timestamp\nsecret") are
  added to the query.
- WeCom: POST JSON to ``url`` with ``key=<webhook key>`` in the query (from the secret file/env, or the url itself).

Both take ``{"msgtype": "markdown" | "text", ...}`` and answer HTTP 200 with ``{"errcode": 0, "errmsg": "ok"}``; any
other errcode (bad signature 310000, rate limit 130101 / 45009, bad key 93000 …), an HTTP error or an unreadable
answer is an UnavailableError: the dispatcher records it and retries like any failed channel.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from node.config import NotificationsConfig, Robot
from node.errors import UnavailableError
from node.notify.channels import OutgoingMessage, read_secret, tls_context

__all__ = ["DingTalkChannel", "WeComChannel", "dingtalk_sign", "robot_payload"]

# Content limits of the robots' message types, in UTF-8 bytes (their documentation): longer text is cut.
_LIMITS = {
    ("dingtalk", "markdown"): 20_000,
    ("dingtalk", "text"): 20_000,
    ("wecom", "markdown"): 4_096,
    ("wecom", "text"): 2_048,
}
_KIND_LABEL = {"dingtalk": "钉钉机器人 DingTalk robot", "wecom": "企业微信机器人 WeCom robot"}
_MAX_ERROR_TEXT = 300


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    r"""DingTalk's ``sign``: base64 of HMAC-SHA256 of "timestamp\nsecret" keyed by the secret (not yet URL-encoded)."""
    to_sign = f"{timestamp_ms}\n{secret}".encode()
    digest = hmac.new(secret.encode("utf-8"), to_sign, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def _cut(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes (on a character boundary), marked with … when cut."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[: limit - 3].decode("utf-8", errors="ignore") + "…"


def _markdown(subject: str, body: str) -> str:
    """The message as robot markdown: the subject as a heading, each line its own paragraph (line breaks kept)."""
    lines = [line.strip() for line in body.splitlines() if line.strip()]
    return "\n\n".join([f"#### {subject}", *lines])


def robot_payload(kind: str, msgtype: str, subject: str, body: str) -> dict[str, Any]:
    """The JSON document a DingTalk or WeCom robot takes for one message."""
    limit = _LIMITS[(kind, msgtype)]
    if msgtype == "markdown":
        text = _cut(_markdown(subject, body), limit)
        if kind == "dingtalk":
            return {"msgtype": "markdown", "markdown": {"title": subject[:100], "text": text}}
        return {"msgtype": "markdown", "markdown": {"content": text}}
    return {"msgtype": "text", "text": {"content": _cut(f"{subject}\n{body}", limit)}}


def _with_query(url: str, params: dict[str, str]) -> str:
    parts = urllib.parse.urlsplit(url)
    extra = urllib.parse.urlencode(params, quote_via=urllib.parse.quote)
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urllib.parse.urlunsplit(parts._replace(query=query))


def _shown(url: str) -> str:
    """The address without its query: the token, key and signature stay out of errors and logs."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(query="", fragment=""))


class _RobotChannel:
    """What both robots share: find the robot by name, POST its JSON, check ``errcode``."""

    name = ""

    def __init__(self, config: NotificationsConfig, base_dir: Path | None = None) -> None:
        self.config = config
        self.base_dir = base_dir
        self.timeout = config.timeout_seconds

    def _robot(self, name: str) -> Robot:
        robot = self.config.robot(name)
        if robot is None or robot.kind != self.name:
            raise UnavailableError(
                f"配置中没有名为 {name!r} 的{_KIND_LABEL[self.name]} (no [[notifications.robots]] {name!r} of kind "
                f"{self.name} in the config)"
            )
        return robot

    def _secret(self, robot: Robot) -> str:
        what = f"{_KIND_LABEL[self.name]} {robot.name} 密钥 (secret)"
        return read_secret(robot.secret_file, robot.secret_env, self.base_dir, what)

    def address(self, robot: Robot) -> str:
        raise NotImplementedError

    def send(self, message: OutgoingMessage) -> None:
        robot = self._robot(message.recipient)
        url = self.address(robot)
        payload = robot_payload(self.name, robot.msgtype, message.subject, message.body)
        request = urllib.request.Request(  # noqa: S310 - operator-configured URL
            url,
            data=json.dumps(payload, ensure_ascii=False).encode("utf-8"),
            method="POST",
            headers={
                "Content-Type": "application/json; charset=utf-8",
                "X-Supnet-Notification-Id": str(message.notification_id),
            },
        )
        label = f"{_KIND_LABEL[self.name]} {robot.name} ({_shown(url)})"
        context = tls_context(robot.ca_file, self.base_dir) if url.startswith("https://") else None
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=context) as response:  # noqa: S310
                raw = response.read(65_536)
        except urllib.error.HTTPError as exc:
            raise UnavailableError(f"{label}: HTTP {exc.code} {exc.reason}") from exc
        except (TimeoutError, urllib.error.URLError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise UnavailableError(f"{label}: 无法连接 (cannot reach it): {type(exc).__name__}: {reason}") from exc
        try:
            answer = json.loads(raw.decode("utf-8"))
            errcode = int(answer["errcode"])
            errmsg = str(answer.get("errmsg", ""))
        except (ValueError, KeyError, TypeError) as exc:
            shown = raw[:100].decode("utf-8", errors="replace")
            raise UnavailableError(f"{label}: 应答无法识别 (unreadable answer {shown!r})") from exc
        if errcode != 0:
            raise UnavailableError(f"{label} 拒收 (refused): errcode {errcode}: {errmsg}"[:_MAX_ERROR_TEXT])


class DingTalkChannel(_RobotChannel):
    """A DingTalk (钉钉) custom group robot; signs each message when the robot has a 加签 secret."""

    name = "dingtalk"

    def address(self, robot: Robot) -> str:
        secret = self._secret(robot)
        if not secret:
            return robot.url
        timestamp = round(time.time() * 1000)
        return _with_query(robot.url, {"timestamp": str(timestamp), "sign": dingtalk_sign(secret, timestamp)})


class WeComChannel(_RobotChannel):
    """A WeCom (企业微信) group robot; its webhook key rides in the URL's ``key`` parameter."""

    name = "wecom"

    def address(self, robot: Robot) -> str:
        key = self._secret(robot)
        return _with_query(robot.url, {"key": key}) if key else robot.url
