"""Routing of warnings to recipients by department and post (wildcards), and the retry backoff schedule."""

from __future__ import annotations

import random

from node.config import NotificationsConfig, Recipient
from node.notify import Route, backoff_delay, matching_recipients, route_alert

RECIPIENTS = [
    Recipient(department="市场监管局", post="*", name="科长", email="head@scj", phone="138001"),
    Recipient(department="市场监管局", post="窗口*", name="窗口", email="window@scj", webhook="http://scj/hook"),
    Recipient(department="住建局", post="审核", name="住建审核", email="review@zj", phone="138002"),
    Recipient(department="*", post="*", name="监察室", email="jcs@jw"),
    Recipient(department="*局", post="", name="局长", phone="138003"),
]


def test_department_and_post_patterns() -> None:
    config = NotificationsConfig(recipients=RECIPIENTS)
    names = [r.name for r in matching_recipients(config, "市场监管局", "窗口受理")]
    assert names == ["科长", "窗口", "监察室", "局长"]
    assert [r.name for r in matching_recipients(config, "住建局", "审核")] == ["住建审核", "监察室", "局长"]
    # A case-level alert has no post: only recipients for any post ('*') match.
    assert [r.name for r in matching_recipients(config, "住建局", "")] == ["监察室", "局长"]
    assert [r.name for r in matching_recipients(config, "教育中心", "窗口受理")] == ["监察室"]


def test_routes_per_channel_without_duplicates() -> None:
    config = NotificationsConfig(
        channels=["log", "webhook", "smtp", "sms"],
        webhook_url="http://jw/hook",
        sms_url_template="http://gw/?p={phone}&t={text}",
        recipients=[*RECIPIENTS, Recipient(department="市场监管局", email="head@scj")],
    )
    routes = route_alert(config, "市场监管局", "窗口受理")
    assert routes == [
        Route("log", "市场监管局/窗口受理"),
        Route("webhook", "http://jw/hook", "webhook"),
        Route("webhook", "http://scj/hook", "窗口"),
        Route("smtp", "head@scj", "科长"),
        Route("smtp", "window@scj", "窗口"),
        Route("smtp", "jcs@jw", "监察室"),
        Route("sms", "138001", "科长"),
        Route("sms", "138003", "局长"),
    ]


def test_sms_needs_a_gateway_and_unmatched_alerts_fall_back_to_log() -> None:
    config = NotificationsConfig(channels=["sms"], recipients=RECIPIENTS)  # no sms_url_template
    assert route_alert(config, "市场监管局", "窗口受理") == [Route("log", "unrouted:市场监管局/窗口受理")]
    config = NotificationsConfig(channels=["smtp"], recipients=[Recipient(department="住建局", email="zj@zj")])
    assert route_alert(config, "市场监管局", "") == [Route("log", "unrouted:市场监管局/*")]


def test_backoff_doubles_up_to_the_cap_with_bounded_jitter() -> None:
    rng = random.Random(7)
    for attempts, base in [(0, 2.0), (1, 4.0), (2, 8.0), (5, 64.0), (9, 600.0), (200, 600.0)]:
        delay = backoff_delay(attempts, 2.0, 600.0, rng)
        assert base <= delay <= base * 1.1


def test_group_robots_routed_by_name_once_per_enabled_kind() -> None:
    from node.config import Robot

    robots = [
        Robot(name="scj", kind="dingtalk", url="https://oapi.dingtalk.com/robot/send?access_token=a"),
        Robot(name="jw", kind="wecom", url="https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k"),
        Robot(name="zj", kind="dingtalk", url="https://oapi.dingtalk.com/robot/send?access_token=b"),
    ]
    recipients = [
        Recipient(department="市场监管局", name="科长", robots=["scj", "jw"]),
        Recipient(department="*", name="监察室", robots=["jw"]),
        Recipient(department="住建局", name="住建", robots=["zj"]),
    ]
    config = NotificationsConfig(channels=["dingtalk", "wecom"], robots=robots, recipients=recipients)
    assert route_alert(config, "市场监管局", "窗口受理") == [
        Route("dingtalk", "scj", "scj"),
        Route("wecom", "jw", "jw"),
    ]
    # Only the enabled kinds: WeCom robots are not used when the channel list leaves them out.
    config = NotificationsConfig(channels=["dingtalk"], robots=robots, recipients=recipients)
    assert route_alert(config, "教育中心", "") == [Route("log", "unrouted:教育中心/*")]
