"""Delivery channels: log, webhook (HTTP POST of JSON), SMTP mail and an SMS HTTP gateway.

Each channel sends one already-formatted message to one recipient and raises ``UnavailableError`` when the far end
does not take it (connection refused, timeout, HTTP status >= 400, SMTP refusal), so the dispatcher can retry.
Every network call has a timeout: a hung server must never stall the dispatcher.
"""

from __future__ import annotations

import json
import logging
import smtplib
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Literal, Protocol

from node.config import NotificationsConfig
from node.errors import UnavailableError

__all__ = [
    "Channel",
    "LogChannel",
    "OutgoingMessage",
    "SmsGatewayChannel",
    "SmtpChannel",
    "WebhookChannel",
    "build_channels",
]

log = logging.getLogger("supnet.notify")

# Error texts stored in notifications.last_error are cut to this size; the full detail goes to the log.
_MAX_ERROR_TEXT = 500


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One message as stored in a notification row: what is sent, to whom, and its id for receivers' de-duplication."""

    notification_id: int
    recipient: str
    subject: str
    body: str


class Channel(Protocol):
    """Something that delivers a message to a recipient or raises UnavailableError."""

    name: str

    def send(self, message: OutgoingMessage) -> None: ...


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text[:_MAX_ERROR_TEXT]


class LogChannel:
    """Delivers by writing the message to the ``supnet.notify`` logger (the default channel)."""

    name = "log"

    def send(self, message: OutgoingMessage) -> None:
        log.warning(
            "notification %s to %s: %s | %s",
            message.notification_id,
            message.recipient,
            message.subject,
            message.body.replace("\n", " | "),
        )


def _http_request(request: urllib.request.Request, timeout: float) -> None:
    """Perform an HTTP request; any failure (refused, timeout, status >= 400) becomes UnavailableError."""
    try:
        # The URL comes from the operator's config (webhook / gateway), never from imported data.
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            response.read()
    except urllib.error.HTTPError as exc:
        raise UnavailableError(f"HTTP {exc.code} {exc.reason} from {request.full_url}") from exc
    except (TimeoutError, urllib.error.URLError, OSError) as exc:
        raise UnavailableError(f"{request.full_url}: {_error_text(exc)}") from exc


class WebhookChannel:
    """POSTs the stored JSON body to the recipient URL; the notification id rides in a header for de-duplication."""

    name = "webhook"

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout

    def send(self, message: OutgoingMessage) -> None:
        request = urllib.request.Request(  # noqa: S310 - operator-configured URL
            message.recipient,
            data=message.body.encode("utf-8"),
            method="POST",
            headers={
                "Content-Type": "application/json; charset=utf-8",
                "X-Supnet-Notification-Id": str(message.notification_id),
            },
        )
        _http_request(request, self.timeout)


class SmtpChannel:
    """Sends a plain-text UTF-8 mail through an SMTP server (smtplib, with a timeout)."""

    name = "smtp"

    def __init__(self, host: str, port: int, sender: str, timeout: float) -> None:
        self.host = host
        self.port = port
        self.sender = sender
        self.timeout = timeout

    def send(self, message: OutgoingMessage) -> None:
        mail = EmailMessage()
        mail["From"] = self.sender
        mail["To"] = message.recipient
        mail["Subject"] = message.subject
        # A stable Message-ID per notification lets mail systems drop the duplicate of a retried send.
        mail["Message-ID"] = make_msgid(idstring=f"supnet-notification-{message.notification_id}")
        mail.set_content(message.body)
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                smtp.send_message(mail)
        except (smtplib.SMTPException, OSError) as exc:
            raise UnavailableError(f"SMTP {self.host}:{self.port}: {_error_text(exc)}") from exc


class SmsGatewayChannel:
    """Sends a text through an HTTP SMS gateway whose URL template holds ``{phone}`` and ``{text}``."""

    name = "sms"

    def __init__(self, url_template: str, timeout: float, method: Literal["GET", "POST"] = "GET") -> None:
        self.url_template = url_template
        self.timeout = timeout
        self.method = method

    def url_for(self, phone: str, text: str) -> str:
        """The gateway URL with the phone number and text URL-encoded into the template."""
        return self.url_template.format(
            phone=urllib.parse.quote(phone, safe=""), text=urllib.parse.quote(text, safe="")
        )

    def send(self, message: OutgoingMessage) -> None:
        if not self.url_template:
            raise UnavailableError("SMS gateway not configured (notifications.sms_url_template is empty)")
        url = self.url_for(message.recipient, message.body)
        data: bytes | None = None
        headers = {"X-Supnet-Notification-Id": str(message.notification_id)}
        if self.method == "POST":
            data = json.dumps({"phone": message.recipient, "text": message.body}, ensure_ascii=False).encode("utf-8")
            headers["Content-Type"] = "application/json; charset=utf-8"
        request = urllib.request.Request(url, data=data, method=self.method, headers=headers)  # noqa: S310
        _http_request(request, self.timeout)


def build_channels(config: NotificationsConfig) -> dict[str, Channel]:
    """Every channel the node can deliver through, built from config (rows may outlive a config change)."""
    channels: dict[str, Channel] = {
        "log": LogChannel(),
        "webhook": WebhookChannel(config.timeout_seconds),
        "smtp": SmtpChannel(config.smtp_host, config.smtp_port, config.smtp_sender, config.timeout_seconds),
        "sms": SmsGatewayChannel(config.sms_url_template, config.timeout_seconds, config.sms_method),
    }
    return channels
