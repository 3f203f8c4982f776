"""SMTP with STARTTLS / implicit TLS and login, and the DingTalk / WeCom group robots, against REAL local servers.

The mail server is aiosmtpd with a certificate from a test CA (tests.harness.robots.make_server_tls), requiring
STARTTLS and AUTH; the robots are HTTP servers that check DingTalk's signature or WeCom's key and answer errcodes.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from datetime import timedelta
from email import message_from_bytes
from email.header import decode_header, make_header
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from node.config import NodeConfig, NotificationsConfig, Operator, Recipient, Robot, StoreConfig, parse_config
from node.errors import ConfigError
from node.notify import NoticeKind, NotificationDispatcher, dingtalk_sign, notify_operators
from tests.harness.local_servers import PortZeroController
from tests.harness.robots import FakeRobot, ServerTls, make_server_tls
from tests.notify.test_notify import T0, make_node, notification_rows, raise_alert

USER = "supnet@gz.example"
PASSWORD = "口令-s3cret"  # non-ASCII on purpose: smtplib sends it UTF-8 encoded


class RecordingMailHandler:
    """aiosmtpd handler keeping each mail with the session's TLS and login state."""

    def __init__(self) -> None:
        self.mails: list[dict[str, Any]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd hook
        self.mails.append(
            {
                "envelope": envelope,
                # STARTTLS sets session.ssl; on an implicit-TLS port the transport itself is the TLS one.
                "tls": session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None,
                "login": session.auth_data.login.decode() if session.authenticated else None,
            }
        )
        return "250 OK"


def check_login(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        USER.encode(),
        PASSWORD.encode(),
    )
    return AuthResult(success=ok, handled=False, auth_data=auth_data)


def server_context(tls: ServerTls) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.cert_file, tls.key_file)
    return context


@pytest.fixture
def tls(tmp_path: Path) -> ServerTls:
    return make_server_tls(tmp_path / "server-tls")


@pytest.fixture
def starttls_server(tls: ServerTls) -> Iterator[tuple[Controller, RecordingMailHandler]]:
    """A mail server that takes mail only after STARTTLS and a successful login."""
    handler = RecordingMailHandler()
    controller = PortZeroController(
        handler,
        hostname="127.0.0.1",
        port=0,
        tls_context=server_context(tls),
        require_starttls=True,
        authenticator=check_login,
        auth_required=True,
        auth_require_tls=True,
    )
    controller.start()
    yield controller, handler
    controller.stop()


def smtp_node(tmp_path: Path, port: int, **smtp: Any) -> Any:
    return make_node(
        tmp_path,
        f"sqlite:///{tmp_path}/node.db",
        channels=["smtp"],
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_sender=USER,
        recipients=[Recipient(department="*", name="监察室", email="jcs@jw.example")],
        **smtp,
    )


# -- SMTP ----------------------------------------------------------------------------------------------------------
def test_starttls_and_login_with_password_file_delivers(
    tmp_path: Path, tls: ServerTls, starttls_server: tuple[Controller, RecordingMailHandler]
) -> None:
    controller, handler = starttls_server
    (tmp_path / "smtp-password").write_text(PASSWORD + "\n", encoding="utf-8")
    node = smtp_node(
        tmp_path,
        controller.port,
        smtp_security="starttls",
        smtp_username=USER,
        smtp_password_file="smtp-password",  # relative: to the data directory
        smtp_ca_file=str(tls.ca_file),
    )
    raise_alert(node, case_no="GZ-2025-0100")
    result = NotificationDispatcher(node).run_once(T0)
    assert (result.delivered, result.pending) == (1, 0)
    [mail] = handler.mails
    assert mail["tls"] is True and mail["login"] == USER
    message = message_from_bytes(mail["envelope"].content)
    assert "黄牌" in str(make_header(decode_header(message["Subject"])))
    node.close()


def test_a_secret_file_readable_by_others_is_used_with_one_warning(
    tmp_path: Path, tls: ServerTls, starttls_server: tuple[Controller, RecordingMailHandler], caplog: Any
) -> None:
    controller, handler = starttls_server
    secret = tmp_path / "open-password"
    secret.write_text(PASSWORD, encoding="utf-8")
    secret.chmod(0o644)
    node = smtp_node(
        tmp_path,
        controller.port,
        smtp_security="starttls",
        smtp_username=USER,
        smtp_password_file=str(secret),
        smtp_ca_file=str(tls.ca_file),
    )
    raise_alert(node, case_no="C-1")
    raise_alert(node, case_no="C-2")
    with caplog.at_level("WARNING", logger="supnet.notify"):
        assert NotificationDispatcher(node).run_once(T0).delivered == 2
    warnings = [record for record in caplog.records if "chmod 600" in record.getMessage()]
    assert len(warnings) == 1 and str(secret) in warnings[0].getMessage()
    assert len(handler.mails) == 2
    node.close()


def test_wrong_password_is_a_retried_failure_and_a_fixed_file_is_read_at_the_next_try(
    tmp_path: Path, tls: ServerTls, starttls_server: tuple[Controller, RecordingMailHandler]
) -> None:
    controller, handler = starttls_server
    secret = tmp_path / "smtp-password"
    secret.write_text("wrong", encoding="utf-8")
    node = smtp_node(
        tmp_path,
        controller.port,
        smtp_security="starttls",
        smtp_username=USER,
        smtp_password_file=str(secret),
        smtp_ca_file=str(tls.ca_file),
    )
    raise_alert(node)
    dispatcher = NotificationDispatcher(node)
    first = dispatcher.run_once(T0)
    assert (first.delivered, first.retry_scheduled) == (0, 1)
    [row] = notification_rows(node)
    assert row["status"] == "pending" and row["attempts"] == 1
    assert "登录失败" in row["last_error"] and "535" in row["last_error"]
    assert "wrong" not in row["last_error"]
    assert handler.mails == []

    secret.write_text(PASSWORD, encoding="utf-8")  # rotated without a restart
    second = dispatcher.run_once(T0 + timedelta(hours=1))
    assert second.delivered == 1
    assert [mail["login"] for mail in handler.mails] == [USER]
    node.close()


def test_untrusted_server_certificate_is_refused_before_the_password_is_sent(
    tmp_path: Path, starttls_server: tuple[Controller, RecordingMailHandler]
) -> None:
    controller, handler = starttls_server
    other_ca = make_server_tls(tmp_path / "other", name="other")  # a CA that did not sign the server's certificate
    (tmp_path / "pw").write_text(PASSWORD, encoding="utf-8")
    node = smtp_node(
        tmp_path,
        controller.port,
        smtp_security="starttls",
        smtp_username=USER,
        smtp_password_file="pw",
        smtp_ca_file=str(other_ca.ca_file),
    )
    raise_alert(node)
    result = NotificationDispatcher(node).run_once(T0)
    assert result.retry_scheduled == 1
    [row] = notification_rows(node)
    assert "证书验证失败" in row["last_error"]
    assert handler.mails == []
    node.close()


def test_starttls_required_but_not_offered_never_falls_back_to_clear_text(tmp_path: Path) -> None:
    handler = RecordingMailHandler()
    controller = PortZeroController(handler, hostname="127.0.0.1", port=0)  # no TLS at all
    controller.start()
    try:
        node = smtp_node(tmp_path, controller.port, smtp_security="starttls")
        raise_alert(node)
        result = NotificationDispatcher(node).run_once(T0)
        assert result.retry_scheduled == 1
        [row] = notification_rows(node)
        assert "不支持 STARTTLS" in row["last_error"]
        assert handler.mails == []
        node.close()
    finally:
        controller.stop()


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_implicit_tls_with_password_from_the_environment(
    tmp_path: Path, tls: ServerTls, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler = RecordingMailHandler()
    controller = PortZeroController(
        handler,
        hostname="127.0.0.1",
        port=0,
        ssl_context=server_context(tls),
        authenticator=check_login,
        auth_required=True,
        auth_require_tls=False,  # aiosmtpd cannot tell an implicit-TLS connection; it is one (asserted below)
    )
    controller.start()
    try:
        monkeypatch.setenv("SUPNET_TEST_SMTP_PASSWORD", PASSWORD)
        node = smtp_node(
            tmp_path,
            controller.port,
            smtp_security="tls",
            smtp_username=USER,
            smtp_password_env="SUPNET_TEST_SMTP_PASSWORD",
            smtp_ca_file=str(tls.ca_file),
        )
        raise_alert(node)
        assert NotificationDispatcher(node).run_once(T0).delivered == 1
        [mail] = handler.mails
        assert mail["tls"] is True and mail["login"] == USER

        monkeypatch.delenv("SUPNET_TEST_SMTP_PASSWORD")
        raise_alert(node, case_no="C-2")
        NotificationDispatcher(node).run_once(T0)
        last = notification_rows(node)[-1]
        assert last["status"] == "pending" and "SUPNET_TEST_SMTP_PASSWORD" in last["last_error"]
        node.close()
    finally:
        controller.stop()


@pytest.mark.parametrize(
    ("keys", "named"),
    [
        ({"smtp_username": "u", "smtp_security": "starttls"}, "smtp_password_file or smtp_password_env"),
        ({"smtp_password_env": "X", "smtp_security": "starttls"}, "smtp_username is empty"),
        (
            {"smtp_username": "u", "smtp_password_env": "X", "smtp_host": "mail.gz.gov.cn"},
            "smtp_security = 'starttls' or 'tls'",
        ),
        ({"smtp_username": "u", "smtp_password_env": "X", "smtp_password_file": "f"}, "not both"),
        ({"smtp_security": "ssl"}, "notifications.smtp_security"),
    ],
)
def test_smtp_config_errors_name_the_key(keys: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"id": "gd.gz.py", "notifications": keys})
    assert named in caught.value.message


# -- group robots --------------------------------------------------------------------------------------------------
@pytest.fixture
def dingtalk() -> Iterator[FakeRobot]:
    robot = FakeRobot("dingtalk", token="dt-token-1", secret="SECabc+/=123").start()
    yield robot
    robot.stop()


@pytest.fixture
def wecom() -> Iterator[FakeRobot]:
    robot = FakeRobot("wecom", token="693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa").start()
    yield robot
    robot.stop()


def robot_node(tmp_path: Path, robots: list[Robot], **more: Any) -> Any:
    names = [robot.name for robot in robots]
    return make_node(
        tmp_path,
        f"sqlite:///{tmp_path}/node.db",
        channels=["dingtalk", "wecom"],
        robots=robots,
        recipients=[Recipient(department="市场监管局", name="市场监管群", robots=names)],
        **more,
    )


def test_dingtalk_signed_markdown_chinese_first(tmp_path: Path, dingtalk: FakeRobot) -> None:
    (tmp_path / "dingtalk.secret").write_text(dingtalk.secret + "\n", encoding="utf-8")
    node = robot_node(
        tmp_path,
        [
            Robot(
                name="scj-group",
                kind="dingtalk",
                url=f"{dingtalk.base_url}/robot/send?access_token={dingtalk.token}",
                secret_file="dingtalk.secret",
            )
        ],
    )
    raise_alert(node, case_no="GZ-2025-0007")
    result = NotificationDispatcher(node).run_once(T0)
    assert (result.delivered, result.alerts_notified) == (1, 1)
    [message] = dingtalk.accepted
    assert message.document["msgtype"] == "markdown"
    markdown = message.document["markdown"]
    assert "黄牌" in markdown["title"] and "GZ-2025-0007" in markdown["title"]
    lines = markdown["text"].split("\n\n")
    assert lines[0].startswith("#### [supnet 黄牌")
    assert lines[1].startswith("监察预警")  # Chinese first
    assert "责任部门 Department: 市场监管局" in lines
    assert message.headers["X-Supnet-Notification-Id"] == str(notification_rows(node)[0]["id"])
    # The row names the robot, never its address or secret.
    [row] = notification_rows(node)
    assert (row["channel"], row["recipient"]) == ("dingtalk", "scj-group")
    node.close()


def test_dingtalk_bad_signature_errcode_is_recorded_retried_and_hides_the_token(
    tmp_path: Path, dingtalk: FakeRobot
) -> None:
    secret = tmp_path / "dingtalk.secret"
    secret.write_text("SECnot-the-one", encoding="utf-8")
    node = robot_node(
        tmp_path,
        [
            Robot(
                name="scj-group",
                kind="dingtalk",
                url=f"{dingtalk.base_url}/robot/send?access_token={dingtalk.token}",
                secret_file=str(secret),
            )
        ],
        max_attempts=3,
    )
    raise_alert(node)
    dispatcher = NotificationDispatcher(node)
    assert dispatcher.run_once(T0).retry_scheduled == 1
    [row] = notification_rows(node)
    assert row["status"] == "pending" and "errcode 310000" in row["last_error"] and "拒收" in row["last_error"]
    assert dingtalk.token not in row["last_error"] and "sign=" not in row["last_error"]
    assert dingtalk.received[0].errcode == 310000

    secret.write_text(dingtalk.secret, encoding="utf-8")
    assert dispatcher.run_once(T0 + timedelta(hours=1)).delivered == 1
    assert len(dingtalk.accepted) == 1
    node.close()


def test_wecom_key_from_env_text_message_rate_limit_then_delivered(
    tmp_path: Path, wecom: FakeRobot, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUPNET_TEST_WECOM_KEY", wecom.token)
    wecom.answer_next = [45009]  # "send too fast": the real robot's limit is 20 messages a minute
    node = robot_node(
        tmp_path,
        [
            Robot(
                name="zj-group",
                kind="wecom",
                url=f"{wecom.base_url}/cgi-bin/webhook/send",
                secret_env="SUPNET_TEST_WECOM_KEY",
                msgtype="text",
            )
        ],
    )
    raise_alert(node, case_no="GZ-2025-0042")
    dispatcher = NotificationDispatcher(node)
    assert dispatcher.run_once(T0).retry_scheduled == 1
    [row] = notification_rows(node)
    assert "errcode 45009" in row["last_error"] and wecom.token not in row["last_error"]
    assert dispatcher.run_once(T0 + timedelta(hours=1)).delivered == 1
    [message] = wecom.accepted
    assert message.query["key"] == wecom.token
    content = message.document["text"]["content"]
    assert message.document["msgtype"] == "text"
    assert content.splitlines()[1].startswith("监察预警") and "GZ-2025-0042" in content
    node.close()


def test_wecom_markdown_cut_to_its_limit_and_wrong_key_fails_after_max_attempts(
    tmp_path: Path, wecom: FakeRobot
) -> None:
    node = robot_node(
        tmp_path,
        [
            Robot(name="right", kind="wecom", url=f"{wecom.base_url}/cgi-bin/webhook/send?key={wecom.token}"),
            Robot(name="wrong", kind="wecom", url=f"{wecom.base_url}/cgi-bin/webhook/send?key=not-it"),
        ],
        max_attempts=1,
    )
    raise_alert(node, message="说明" * 3000)  # far over WeCom's 4,096 bytes of markdown
    result = NotificationDispatcher(node).run_once(T0)
    assert (result.delivered, result.failed_now) == (1, 1)
    [message] = wecom.accepted
    content = message.document["markdown"]["content"]
    assert len(content.encode("utf-8")) <= 4096 and content.endswith("…")
    failed = {row["recipient"]: row for row in notification_rows(node)}["wrong"]
    assert failed["status"] == "failed" and "errcode 93000" in failed["last_error"]
    assert "not-it" not in failed["last_error"]
    node.close()


def test_operator_notice_reaches_the_operators_robot(tmp_path: Path, dingtalk: FakeRobot) -> None:
    robots = [Robot(name="ops", kind="dingtalk", url=f"{dingtalk.base_url}/robot/send?access_token={dingtalk.token}")]
    dingtalk.secret = ""  # a robot secured by keyword / IP only: no signature
    node = make_node(
        tmp_path,
        f"sqlite:///{tmp_path}/node.db",
        channels=["log", "dingtalk"],
        robots=robots,
        operators=[Operator(name="值班", robots=["ops"])],
    )
    assert notify_operators(node, NoticeKind.OUTBOX_OVERFLOW, "parent", "发件箱已满 outbox full", "上级不可达", now=T0)
    assert NotificationDispatcher(node).run_once(T0).delivered == 2
    [message] = dingtalk.accepted
    assert "发件箱已满" in message.document["markdown"]["title"]
    assert "上级不可达" in message.document["markdown"]["text"]
    node.close()


def test_dingtalk_sign_matches_an_independent_implementation() -> None:
    # printf '1577262236757\nSEC000' | openssl dgst -sha256 -hmac SEC000 -binary | base64
    assert dingtalk_sign("SEC000", 1577262236757) == "0mUoy51oaZiRp9zSbtu3Gh7pbwvH33YBGob4MsxeXA4="


@pytest.mark.parametrize(
    ("notifications", "named"),
    [
        ({"robots": [{"name": "a", "kind": "wecom", "url": "https://qyapi.weixin.qq.com/x"}]}, "no webhook key"),
        ({"robots": [{"name": "a", "kind": "dingtalk", "url": "ftp://x"}]}, "notifications.robots.0.url"),
        ({"robots": [{"name": "a b", "kind": "dingtalk", "url": "https://x"}]}, "notifications.robots.0.name"),
        ({"robots": [{"name": "a", "kind": "feishu", "url": "https://x"}]}, "notifications.robots.0.kind"),
        (
            {
                "robots": [
                    {"name": "a", "kind": "dingtalk", "url": "https://x"},
                    {"name": "a", "kind": "dingtalk", "url": "https://y"},
                ]
            },
            "used twice: a",
        ),
        (
            {"recipients": [{"department": "*", "robots": ["nope"]}]},
            "recipients[0].robots: no [[notifications.robots]]",
        ),
    ],
)
def test_robot_config_errors_name_the_key(notifications: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"id": "gd.gz.py", "notifications": notifications})
    assert named in caught.value.message


def test_robot_config_round_trips_through_the_toml_file(tmp_path: Path) -> None:
    from node.config import load_config, save_config

    config = NodeConfig(
        id="gd.gz.py",
        store=StoreConfig(url=f"sqlite:///{tmp_path}/node.db"),
        notifications=NotificationsConfig(
            channels=["dingtalk"],
            robots=[Robot(name="g", kind="dingtalk", url="https://oapi.dingtalk.com/robot/send?access_token=t")],
            recipients=[Recipient(robots=["g"])],
        ),
    )
    save_config(tmp_path, config)
    assert load_config(tmp_path).notifications == config.notifications


# -- supnet notifications test ---------------------------------------------------------------------------------------
def test_cli_test_command_reaches_every_address_and_reports_each_refusal(
    tmp_path: Path,
    tls: ServerTls,
    starttls_server: tuple[Controller, RecordingMailHandler],
    dingtalk: FakeRobot,
    wecom: FakeRobot,
) -> None:
    import json

    import typer
    from typer.testing import CliRunner

    from node.app import open_node
    from node.cli import notifications_cmd
    from node.config import save_config
    from node.errors import ExitCode

    controller, handler = starttls_server
    (tmp_path / "pw").write_text(PASSWORD, encoding="utf-8")
    (tmp_path / "dt").write_text(dingtalk.secret, encoding="utf-8")
    config = NodeConfig(
        id="gd.gz.py",
        notifications=NotificationsConfig(
            channels=["log", "smtp", "dingtalk", "wecom"],
            smtp_host="127.0.0.1",
            smtp_port=controller.port,
            smtp_security="starttls",
            smtp_username=USER,
            smtp_password_file="pw",
            smtp_ca_file=str(tls.ca_file),
            robots=[
                Robot(
                    name="dt",
                    kind="dingtalk",
                    url=f"{dingtalk.base_url}/robot/send?access_token={dingtalk.token}",
                    secret_file="dt",
                ),
                Robot(name="wx", kind="wecom", url=f"{wecom.base_url}/cgi-bin/webhook/send?key=wrong-key"),
            ],
            recipients=[Recipient(department="市场监管局", email="jcs@jw.example", robots=["dt"])],
            operators=[Operator(name="值班", robots=["wx"])],
        ),
    )
    save_config(tmp_path, config)
    open_node(tmp_path).close()  # a node made, its schema in place: the test command itself only reads
    app = typer.Typer()
    notifications_cmd.register(app)
    runner = CliRunner()

    result = runner.invoke(app, ["notifications", "test", "-d", str(tmp_path), "--json"])
    assert result.exit_code == ExitCode.UNAVAILABLE, result.output
    outcomes = {(r["channel"], r["recipient"]): r["error"] for r in json.loads(result.stdout)["results"]}
    assert outcomes.keys() == {("log", "test"), ("smtp", "jcs@jw.example"), ("dingtalk", "dt"), ("wecom", "wx")}
    assert outcomes[("smtp", "jcs@jw.example")] is None and outcomes[("dingtalk", "dt")] is None
    assert "errcode 93000" in outcomes[("wecom", "wx")] and "wrong-key" not in outcomes[("wecom", "wx")]
    assert "测试通知" in dingtalk.accepted[0].document["markdown"]["title"]
    assert [mail["login"] for mail in handler.mails] == [USER]

    only_robot = runner.invoke(app, ["notifications", "test", "-d", str(tmp_path), "--channel", "dingtalk"])
    assert only_robot.exit_code == 0, only_robot.output
    assert "dingtalk → dt: 成功" in only_robot.output
    assert len(dingtalk.accepted) == 2 and len(handler.mails) == 1
