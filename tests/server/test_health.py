"""Health follows what the node needs, re-evaluated while it serves: a full outbox (``supnet.reports`` only), an
expired or broken revocation list, a database that went away (PostgreSQL behind a TCP proxy that resets every
connection); ``supnet health`` probes it as the node itself and exits by state."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from zoneinfo import ZoneInfo

import grpc
import pytest
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.engine import make_url

from federation import INGEST_SERVICE_NAME, NODE_SERVICE_NAME
from node.app import open_node
from node.bootstrap import init_node
from node.errors import ExitCode
from node.observability import MetricsServer
from node.reporting import node_outbox
from node.server import REPORTS_SERVICE, NodeServer
from tests.faults.proxy import FaultProxy
from tests.harness.pki import channel_as, provision
from tests.harness.postgres import fresh_schema_url
from tests.harness.tree import Tree

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
QUICK = 0.2  # seconds between health evaluations in these tests


def _status(channel: grpc.Channel, service: str = "") -> int:
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return int(reply.status)


def _eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "health did not change in time"
        time.sleep(0.05)


def _supnet_health(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real ``supnet health`` program."""
    return subprocess.run(
        [sys.executable, "-m", "node", "health", "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "SUPNET_LOG_LEVEL": "WARNING"},
    )


def test_a_full_outbox_takes_only_upward_reporting_out_of_service(tmp_path: Path) -> None:
    tree = Tree(tmp_path, ["gd", "gd.a"], federation={"outbox_max_reports": 1})
    child = tree.nodes["gd.a"]
    server = NodeServer(child.node, address="127.0.0.1:0", health_interval=QUICK)
    server.start()
    try:
        address = server.bound_address
        with channel_as(child.data_dir, address, "gd.a") as channel:
            assert _status(channel, REPORTS_SERVICE) == SERVING
            assert _supnet_health(child.data_dir, "--address", address, "--service", REPORTS_SERVICE).returncode == 0

            parent_port = tree.nodes["gd"].port
            tree.stop_server("gd")
            tree.import_synthetic("gd.a", cases=10, seed=1)
            assert tree.sender("gd.a").report_now().failed  # one report waits: the outbox (1) is full
            _eventually(lambda: _status(channel, REPORTS_SERVICE) == NOT_SERVING)
            for service in ("", NODE_SERVICE_NAME, INGEST_SERVICE_NAME):
                assert _status(channel, service) == SERVING, service  # children, queries, ingest still work
            serving = server.metrics.registry.get_sample_value("supnet_health_serving", {"service": REPORTS_SERVICE})
            assert serving == 0

            probe = _supnet_health(child.data_dir, "--address", address, "--service", REPORTS_SERVICE)
            assert probe.returncode == ExitCode.NOT_SERVING == 1, probe.stderr
            assert "NOT_SERVING" in probe.stderr
            assert _supnet_health(child.data_dir, "--address", address).returncode == 0

            tree.start_server("gd", port=parent_port)
            with child.node.engine.begin() as conn:
                node_outbox(child.node).retry_now(conn, child.node.now())
            assert tree.sender("gd.a").send_pending().acked == 1
            _eventually(lambda: _status(channel, REPORTS_SERVICE) == SERVING)
    finally:
        server.stop(0)
        tree.close()
    # Stopped: nothing answers at the address any more.
    gone = _supnet_health(child.data_dir, "--address", address, "--timeout", "1")
    assert gone.returncode == ExitCode.UNREACHABLE == 3, gone.stderr
    assert "UNREACHABLE" in gone.stderr
    # Not told where, and no live serve.json: nothing to reach either.
    assert _supnet_health(child.data_dir).returncode == ExitCode.UNREACHABLE


def test_an_expired_or_broken_revocation_list_takes_the_node_out_of_service(tmp_path: Path) -> None:
    data_dir = tmp_path / "gd"
    init_node(data_dir, "gd", level="province")
    provision(tmp_path, ["gd"])
    zone = ZoneInfo("Asia/Shanghai")
    offset = [dt.timedelta()]
    node = open_node(data_dir, clock=lambda: dt.datetime.now(zone).replace(tzinfo=None) + offset[0])
    crl = data_dir / "pki" / "crl.pem"
    next_update = x509.load_pem_x509_crl(crl.read_bytes()).next_update_utc
    assert next_update is not None
    server = NodeServer(node, address="127.0.0.1:0", health_interval=QUICK)
    server.start()
    try:
        with channel_as(data_dir, server.bound_address, "gd") as channel:
            assert _status(channel) == SERVING
            # The node's clock passes the list's next update (its renewal job did not run): not serving.
            offset[0] = next_update - dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
            _eventually(lambda: _status(channel) == NOT_SERVING)
            assert _status(channel, NODE_SERVICE_NAME) == NOT_SERVING
            assert _status(channel, INGEST_SERVICE_NAME) == NOT_SERVING
            assert server.health.state is not None and "expired" in server.health.state.crl
            offset[0] = dt.timedelta()
            _eventually(lambda: _status(channel) == SERVING)

            good = crl.read_bytes()
            crl.write_bytes(b"-----BEGIN X509 CRL-----\nbroken\n-----END X509 CRL-----\n")
            _eventually(lambda: _status(channel) == NOT_SERVING)
            crl.write_bytes(good)
            _eventually(lambda: _status(channel) == SERVING)
    finally:
        server.stop(0)
        node.close()


@pytest.mark.postgres
def test_a_database_gone_away_takes_the_node_out_of_service_and_back(tmp_path: Path) -> None:
    with fresh_schema_url() as url:
        database = make_url(url)
        proxy = FaultProxy(f"{database.host}:{database.port}", name="postgres")
        host, port = proxy.address.split(":")
        proxied = database.set(host=host, port=int(port)).render_as_string(hide_password=False)
        data_dir = tmp_path / "gd"
        init_node(data_dir, "gd", level="province", db_url=proxied)
        provision(tmp_path, ["gd"])
        node = open_node(data_dir)
        server = NodeServer(node, address="127.0.0.1:0", health_interval=QUICK)
        server.start()
        endpoint = MetricsServer(server.metrics.registry, "127.0.0.1:0")
        endpoint.start()
        try:
            with channel_as(data_dir, server.bound_address, "gd") as channel:
                assert _status(channel) == SERVING
                proxy.set_mode("reset")
                _eventually(lambda: _status(channel) == NOT_SERVING)
                assert _status(channel, NODE_SERVICE_NAME) == NOT_SERVING
                assert _status(channel, REPORTS_SERVICE) == NOT_SERVING
                assert server.health.state is not None and "database" in server.health.state.database
                with urllib.request.urlopen(f"http://{endpoint.bound_address}/metrics", timeout=10) as reply:
                    scraped = reply.read().decode()
                assert "supnet_database_up 0.0" in scraped  # the scrape itself still answers
                proxy.set_mode("pass")
                _eventually(lambda: _status(channel) == SERVING, timeout=20)
                assert _status(channel, REPORTS_SERVICE) == SERVING
        finally:
            endpoint.stop()
            server.stop(0)
            node.close()
            proxy.close()
