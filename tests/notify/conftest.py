"""Tests of node.notify: alert and operator notifications routed to their recipients and sent over real local
HTTP and SMTP servers, the notifications CLI, the operator notices (outbox overflow, silent children, expiring
certificates).

Folder fixtures: ``http_capture``, a recording HTTP server (webhook, SMS gateway); ``smtp_server``, an aiosmtpd
controller with the sink that keeps what it receives.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.local_servers import HttpCapture, MailSink, PortZeroController


@pytest.fixture
def http_capture() -> Iterator[HttpCapture]:
    capture = HttpCapture().start()
    yield capture
    capture.stop()


@pytest.fixture
def smtp_server() -> Iterator[tuple[PortZeroController, MailSink]]:
    sink = MailSink()
    controller = PortZeroController(sink, hostname="127.0.0.1", port=0)
    controller.start()
    yield controller, sink
    controller.stop()
