"""The ``[notifications]`` section: channels, SMTP and SMS settings, recipients, operators and group robots.

Secrets (SMTP password, robot secrets) are never keys here: the config names the file or environment variable
that holds them, one or the other. Recipients and operators name robots, checked against ``robots`` here.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from typing import Literal

from pydantic import Field, field_validator, model_validator

from node.config.base import Section


class Recipient(Section):
    """Who is told about a warning for a department (and optionally a post)."""

    department: str = "*"
    post: str = "*"
    name: str = ""
    email: str = ""
    phone: str = ""
    webhook: str = ""
    robots: list[str] = Field(default_factory=list, description="names of [[notifications.robots]] group robots")


class Operator(Section):
    """Who runs the node: told about its own problems (outbox full, silent children, expiring certificates)."""

    name: str = ""
    email: str = ""
    phone: str = ""
    webhook: str = ""
    robots: list[str] = Field(default_factory=list, description="names of [[notifications.robots]] group robots")


ChannelName = Literal["log", "webhook", "smtp", "sms", "dingtalk", "wecom"]
RobotKind = Literal["dingtalk", "wecom"]
_ROBOT_NAME = re.compile(r"^[\w.-]{1,64}$")


def _secret_source(file: str, env: str, what: str) -> None:
    if file and env:
        raise ValueError(f"{what}: set either the _file or the _env key, not both")


class Robot(Section):
    """A DingTalk (钉钉) or WeCom (企业微信) group robot: a webhook address and, kept out of the config, its secret.

    DingTalk: ``url`` holds the ``access_token``; the 加签 secret (``SEC…``) comes from ``secret_file`` or
    ``secret_env`` and signs every message (leave both empty for a robot secured by keyword or IP only).
    WeCom: the webhook key is either the ``key=`` of ``url`` or, better, read from ``secret_file`` / ``secret_env``.
    """

    name: str = Field(description='how recipients and operators refer to the robot (robots = ["…"])')
    kind: RobotKind
    url: str
    secret_file: str = Field(default="", description="file holding the secret (relative: to the data directory)")
    secret_env: str = Field(default="", description="environment variable holding the secret")
    msgtype: Literal["markdown", "text"] = "markdown"
    ca_file: str = Field(default="", description="CA certificate(s) (PEM) of an HTTPS url; empty: the system's")

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _ROBOT_NAME.match(value):
            raise ValueError(f"{value!r}: 1–64 letters, digits, '_', '-' or '.'")
        return value

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http:// or https:// address")
        return value

    @model_validator(mode="after")
    def _check_secret(self) -> Robot:
        _secret_source(self.secret_file, self.secret_env, f"robot {self.name!r} secret")
        if self.kind == "wecom" and not (self.secret_file or self.secret_env or "key=" in self.url):
            raise ValueError(
                f"robot {self.name!r} (wecom): no webhook key: set secret_file or secret_env (or key=… in url)"
            )
        return self


def _default_channels() -> list[ChannelName]:
    return ["log"]


class NotificationsConfig(Section):
    """Notification channels and routing."""

    channels: list[ChannelName] = Field(default_factory=_default_channels)
    webhook_url: str = ""
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_sender: str = "supnet@localhost"
    smtp_security: Literal["none", "starttls", "tls"] = Field(
        default="none", description="starttls: STARTTLS on a plain port (587/25); tls: implicit TLS (465)"
    )
    smtp_username: str = Field(default="", description="login (AUTH) name; empty: no login")
    smtp_password_file: str = Field(default="", description="file holding the password (relative: to the data dir)")
    smtp_password_env: str = Field(default="", description="environment variable holding the password")
    smtp_ca_file: str = Field(default="", description="CA certificate(s) (PEM) of the mail server; empty: the system's")
    sms_url_template: str = Field(default="", description="HTTP gateway URL; {phone} and {text} are filled in")
    sms_method: Literal["GET", "POST"] = Field(default="GET", description="POST also sends {phone, text} as JSON")
    dispatch_interval_seconds: float = Field(default=5.0, gt=0, description="how often `supnet serve` dispatches")
    max_attempts: int = Field(default=8, ge=1, le=100)
    backoff_seconds: float = Field(default=2.0, gt=0)
    max_backoff_seconds: float = Field(default=600.0, gt=0)
    timeout_seconds: float = Field(default=5.0, gt=0)
    recipients: list[Recipient] = Field(default_factory=list)
    operators: list[Operator] = Field(default_factory=list)
    operator_notice_cooldown_seconds: float = Field(
        default=3600.0, gt=0, description="a lasting problem of the node is re-sent to its operators at most this often"
    )
    robots: list[Robot] = Field(default_factory=list, description="DingTalk / WeCom group robots")

    @model_validator(mode="after")
    def _check_smtp_login(self) -> NotificationsConfig:
        _secret_source(self.smtp_password_file, self.smtp_password_env, "smtp_password")
        has_password = bool(self.smtp_password_file or self.smtp_password_env)
        if self.smtp_username and not has_password:
            raise ValueError("smtp_username is set: give the password by smtp_password_file or smtp_password_env")
        if has_password and not self.smtp_username:
            raise ValueError("an SMTP password is set but smtp_username is empty")
        if self.smtp_username and self.smtp_security == "none" and not _is_loopback_host(self.smtp_host):
            raise ValueError(
                "smtp_username with smtp_security = 'none' would send the password in clear: "
                "use smtp_security = 'starttls' or 'tls'"
            )
        return self

    @model_validator(mode="after")
    def _check_robot_names(self) -> NotificationsConfig:
        names = [robot.name for robot in self.robots]
        duplicated = sorted({name for name in names if names.count(name) > 1})
        if duplicated:
            raise ValueError(f"robots: name(s) used twice: {', '.join(duplicated)}")
        sections: tuple[tuple[str, Sequence[Recipient | Operator]], ...] = (
            ("recipients", self.recipients),
            ("operators", self.operators),
        )
        for section, entries in sections:
            for index, entry in enumerate(entries):
                unknown = [name for name in entry.robots if name not in names]
                if unknown:
                    raise ValueError(
                        f"{section}[{index}].robots: no [[notifications.robots]] named {', '.join(unknown)}"
                    )
        return self

    def robot(self, name: str) -> Robot | None:
        """The robot called ``name``, or None."""
        return next((robot for robot in self.robots if robot.name == name), None)


def _is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
