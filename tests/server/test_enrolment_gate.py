"""The enrolment gate (node.server.enrolment_gate): a serving node's enrolment listener is open only while a token
is live, for a standalone node and for hosted ones, with real servers, real token files and the real enrolment flow.

``supnet serve`` as a real process (token, enrol, close, reopen on the same port) is in tests/trust/test_pki_cli.py.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from node.app import open_node
from node.bootstrap import init_node
from node.config import load_config, save_config
from node.server import ENROL_JOB_ID, NodeHost, ServingNode
from node.trust import enroll_node, init_root, issue_token, pki_directory
from tests.harness.pki import provision


def _eventually(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _listen_anywhere(data_dir: Path) -> None:
    config = load_config(data_dir)
    config.federation.listen = "127.0.0.1:0"
    save_config(data_dir, config)


def test_an_expired_token_closes_the_listener_at_the_periodic_recheck(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "gd"
    init_node(data_dir, "gd", level="province")
    init_root(data_dir)
    _listen_anywhere(data_dir)
    enrol_json = data_dir / "enrol.json"
    node = open_node(data_dir)
    serving = ServingNode(node, enrol_recheck_seconds=1.0)
    caplog.set_level(logging.INFO, logger="node.server.enrolment_gate")
    serving.start()
    try:
        assert serving.enrolment is not None and serving.enrolment.listener is None and not enrol_json.exists()
        assert ENROL_JOB_ID in serving.scheduler.job_ids()
        issue_token(data_dir, "gd.gz", ttl=dt.timedelta(seconds=3), wait_for_listener=0)
        _eventually(enrol_json.exists, "a live token did not open the listener")
        tokens = pki_directory(data_dir).file("tokens.json")
        written = tokens.stat().st_mtime_ns
        # Expiry changes no file: only the periodic recheck (every second here) can see it.
        _eventually(lambda: not enrol_json.exists(), "the listener stayed open after its token expired")
        assert serving.enrolment.listener is None and tokens.stat().st_mtime_ns == written
        assert "closed: no live enrolment token (0 redeemed, 1 expired) (periodic recheck)" in caplog.text
    finally:
        serving.stop(1.0)
        node.close()
    assert not enrol_json.exists()


def test_hosted_nodes_open_only_the_listener_of_the_node_holding_a_live_token(tmp_path: Path) -> None:
    cities = ("gd.gz", "gd.sz")
    for node_id in cities:
        init_node(tmp_path / node_id, node_id, level="city")
    provision(tmp_path, ["gd", *cities])  # every city holds a CA
    for node_id in cities:
        _listen_anywhere(tmp_path / node_id)
    nodes = [open_node(tmp_path / node_id) for node_id in cities]
    host = NodeHost(nodes, rpc_workers=4, job_workers=2)
    host.start()
    city, other = (tmp_path / node_id / "enrol.json" for node_id in cities)
    try:
        assert not city.exists() and not other.exists()
        assert all(ENROL_JOB_ID in member.scheduler.job_ids() for member in host.members.values())
        token = issue_token(tmp_path / "gd.gz", "gd.gz.py", wait_for_listener=0).token
        _eventually(city.exists, "the hosted city did not open its listener for its token")
        assert not other.exists()  # the other city holds no token: no listener
        address = json.loads(city.read_text(encoding="utf-8"))["address"]
        # The real child side: keys, CSRs, HMAC proof, checked up to the root, through the host's shared pool.
        district = tmp_path / "gd.gz.py"
        init_node(district, "gd.gz.py", level="district")
        enroll_node(district, address, token, timeout=5)
        assert (district / "pki" / "tls.pem").is_file()
        # Redeemed, and no other live token: the listener closes.
        _eventually(lambda: not city.exists(), "the listener stayed open after its only token was redeemed")
        gate = host.members["gd.gz"].enrolment
        assert gate is not None and gate.listener is None
    finally:
        host.stop(1.0)
        for node in nodes:
            node.close()
