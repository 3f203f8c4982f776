"""Delivery channels: log, webhook (HTTP POST of JSON), SMTP mail and an SMS HTTP gateway (group robots: robots.py).

Each channel sends one already-formatted message to one recipient and raises ``UnavailableError`` when the far end
does not take it (connection refused, timeout, HTTP status >= 400, SMTP refusal, TLS or login failure), so the
dispatcher can retry. Every network call has a timeout: a hung server must never stall the dispatcher.

Secrets (the SMTP password, robot secrets) are not kept in the config file: they are read from a file or an
environment variable at each send (``read_secret``), so a rotated secret needs no restart and a missing one is a
recorded, retried failure naming where it was looked for.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import smtplib
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
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
    "read_secret",
    "tls_context",
]

log = logging.getLogger("supnet.notify")

# Error texts stored in notifications.last_error are cut to this size; the full detail goes to the log.
_MAX_ERROR_TEXT = 500
# Secret files already warned about for being readable by others (warned once per process, not at every send).
_WARNED_OPEN_SECRETS: set[Path] = set()


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


def read_secret(file: str, env: str, base_dir: Path | None, what: str) -> str:
    """The secret in ``file`` (relative: to ``base_dir``, the data directory) or environment variable ``env``.

    Surrounding white space (a trailing newline) is dropped. UnavailableError when it cannot be had.
    """
    if env:
        value = os.environ.get(env, "").strip()
        if not value:
            raise UnavailableError(f"{what}：环境变量 {env} 未设置或为空 (environment variable {env} is not set)")
        return value
    if file:
        path = Path(file)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        try:
            value = path.read_text(encoding="utf-8").strip()
            mode = path.stat().st_mode
        except (OSError, UnicodeDecodeError) as exc:
            raise UnavailableError(f"{what}：无法读取文件 {path} (cannot read {path}: {exc})") from exc
        if mode & 0o077 and path not in _WARNED_OPEN_SECRETS:
            _WARNED_OPEN_SECRETS.add(path)
            log.warning(
                "%s：文件 %s 可被其他用户读取，请执行 chmod 600 (the file is readable by other users: chmod 600 it)",
                what,
                path,
            )
        if not value:
            raise UnavailableError(f"{what}：文件 {path} 为空 (file {path} is empty)")
        return value
    return ""


def tls_context(ca_file: str, base_dir: Path | None) -> ssl.SSLContext:
    """A client TLS context that verifies the server's certificate and name: against ``ca_file``, else the system's."""
    if not ca_file:
        return ssl.create_default_context()
    path = Path(ca_file)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    try:
        return ssl.create_default_context(cafile=str(path))
    except (OSError, ssl.SSLError) as exc:
        raise UnavailableError(f"CA 证书文件 {path} 无法使用 (CA file {path} unusable: {exc})") from exc


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
    """Sends a plain-text UTF-8 mail through an SMTP server: plain, STARTTLS or implicit TLS, with optional login.

    With TLS the server's certificate and host name are verified (``smtp_ca_file``, else the system's CAs); a server
    that does not offer STARTTLS when it is configured is a failure, never a silent fall-back to clear text.
    """

    name = "smtp"

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        timeout: float,
        *,
        security: Literal["none", "starttls", "tls"] = "none",
        username: str = "",
        password_file: str = "",
        password_env: str = "",
        ca_file: str = "",
        base_dir: Path | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.sender = sender
        self.timeout = timeout
        self.security = security
        self.username = username
        self.password_file = password_file
        self.password_env = password_env
        self.ca_file = ca_file
        self.base_dir = base_dir

    @classmethod
    def from_config(cls, config: NotificationsConfig, base_dir: Path | None = None) -> SmtpChannel:
        """The channel the ``smtp_*`` keys describe."""
        return cls(
            config.smtp_host,
            config.smtp_port,
            config.smtp_sender,
            config.timeout_seconds,
            security=config.smtp_security,
            username=config.smtp_username,
            password_file=config.smtp_password_file,
            password_env=config.smtp_password_env,
            ca_file=config.smtp_ca_file,
            base_dir=base_dir,
        )

    def _connect(self) -> smtplib.SMTP:
        if self.security == "tls":
            return smtplib.SMTP_SSL(
                self.host, self.port, timeout=self.timeout, context=tls_context(self.ca_file, self.base_dir)
            )
        smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        if self.security == "starttls":
            try:
                smtp.ehlo()
                if not smtp.has_extn("starttls"):
                    raise UnavailableError(
                        f"SMTP {self.host}:{self.port} 不支持 STARTTLS (the server does not offer STARTTLS)"
                    )
                smtp.starttls(context=tls_context(self.ca_file, self.base_dir))
                smtp.ehlo()
            except BaseException:
                smtp.close()
                raise
        return smtp

    def _login(self, smtp: smtplib.SMTP, password: str) -> None:
        """AUTH as ``username``; a non-ASCII name or password goes UTF-8 encoded by AUTH PLAIN (RFC 4616).

        smtplib encodes AUTH data as ASCII only, which would fail such a password with a UnicodeEncodeError.
        """
        if (self.username + password).isascii():
            smtp.login(self.username, password)
            return
        smtp.ehlo_or_helo_if_needed()
        if "PLAIN" not in smtp.esmtp_features.get("auth", "").upper().split():
            raise UnavailableError(
                f"SMTP {self.host}:{self.port} 不支持 AUTH PLAIN，无法使用非 ASCII 口令 "
                "(a non-ASCII user name or password needs AUTH PLAIN, which the server does not offer)"
            )
        token = base64.b64encode(b"\0" + self.username.encode() + b"\0" + password.encode()).decode("ascii")
        code, answer = smtp.docmd("AUTH", f"PLAIN {token}")
        if code != 235:
            raise smtplib.SMTPAuthenticationError(code, answer)

    def send(self, message: OutgoingMessage) -> None:
        mail = EmailMessage()
        mail["From"] = self.sender
        mail["To"] = message.recipient
        mail["Subject"] = message.subject
        # A stable Message-ID per notification lets mail systems drop the duplicate of a retried send.
        mail["Message-ID"] = make_msgid(idstring=f"supnet-notification-{message.notification_id}")
        mail.set_content(message.body)
        password = read_secret(self.password_file, self.password_env, self.base_dir, "SMTP 密码 (password)")
        try:
            with self._connect() as smtp:
                if self.username:
                    self._login(smtp, password)
                smtp.send_message(mail)
        except smtplib.SMTPAuthenticationError as exc:
            raise UnavailableError(
                f"SMTP {self.host}:{self.port} 登录失败 (login as {self.username!r} refused): {_error_text(exc)}"
            ) from exc
        except ssl.SSLCertVerificationError as exc:
            raise UnavailableError(
                f"SMTP {self.host}:{self.port} 证书验证失败 (certificate not trusted): {_error_text(exc)}"
            ) from exc
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


def build_channels(config: NotificationsConfig, base_dir: Path | None = None) -> dict[str, Channel]:
    """Every channel the node can deliver through, built from config (rows may outlive a config change).

    ``base_dir`` (the data directory) anchors relative secret and CA file names.
    """
    # Imported here: the robots module builds on this one's helpers.
    from node.notify.robots import DingTalkChannel, WeComChannel

    channels: dict[str, Channel] = {
        "log": LogChannel(),
        "webhook": WebhookChannel(config.timeout_seconds),
        "smtp": SmtpChannel.from_config(config, base_dir),
        "sms": SmsGatewayChannel(config.sms_url_template, config.timeout_seconds, config.sms_method),
        "dingtalk": DingTalkChannel(config, base_dir),
        "wecom": WeComChannel(config, base_dir),
    }
    return channels
