"""Hosted nodes (node.server.hosting): one ``supnet serve`` process serving several nodes, each its own node.

A real host process over mutual TLS (each node on its own port with its own certificate), the shared pool and
scheduler in process, and the refusals (a node listed twice, ``--listen`` with several nodes, a bad host file,
a node that cannot listen).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from typer.testing import CliRunner

from federation.proto.v1 import drilldown_pb2 as dd
from federation.proto.v1.node_service_pb2 import NodeInfoRequest
from federation.proto.v1.node_service_pb2_grpc import NodeServiceStub
from node.app import open_node
from node.bootstrap import init_node
from node.cli import app
from node.cli.main import _register_commands
from node.config import load_config, load_host_config, save_config
from node.errors import ConfigError, UnavailableError
from node.localtree import serves
from node.server import (
    HEALTH_INTERVAL_SECONDS,
    HOST_HEALTH_JOB_ID,
    START_STAGGER_SECONDS,
    NodeHost,
    probe_health,
)
from node.trust import pki_directory
from tests.harness.pki import channel_as, provision
from tests.harness.tree import DRILLDOWN_FROM, DRILLDOWN_TO, Tree, TreeClock

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
CITIES = ("gd.gz", "gd.sz")


def _health(channel: grpc.Channel) -> int:
    return int(health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status)


def _eventually_status(channel: grpc.Channel, status: int) -> None:
    """Within two runs of the host's health job (every HEALTH_INTERVAL_SECONDS)."""
    deadline = time.monotonic() + 2 * HEALTH_INTERVAL_SECONDS + 2
    while _health(channel) != status:
        assert time.monotonic() < deadline, "the host's health job did not change the status in time"
        time.sleep(0.1)


def _cities(tmp_path: Path) -> list[Path]:
    """Two enrolled cities of one province, each listening on any free port."""
    dirs = []
    for node_id in CITIES:
        data_dir = tmp_path / node_id
        init_node(data_dir, node_id, level="city")
        dirs.append(data_dir)
    provision(tmp_path, ["gd", *CITIES])
    for data_dir in dirs:
        config = load_config(data_dir)
        config.federation.listen = "127.0.0.1:0"
        save_config(data_dir, config)
    return dirs


def _wait_for_states(
    dirs: list[Path], process: subprocess.Popen[bytes], timeout: float = 60
) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    while not all((folder / "serve.json").exists() for folder in dirs):
        if process.poll() is not None:
            raise AssertionError(f"host exited early: {process.stdout.read().decode() if process.stdout else ''}")
        assert time.monotonic() < deadline, "the host did not write every serve.json"
        time.sleep(0.05)
    return [json.loads((folder / "serve.json").read_text()) for folder in dirs]


def test_a_host_process_serves_each_node_on_its_own_port_as_itself(tmp_path: Path) -> None:
    dirs = _cities(tmp_path)
    host_file = tmp_path / "host.toml"
    host_file.write_text('data_dirs = ["gd.gz", "gd.sz"]\nrpc_workers = 8\n', encoding="utf-8")
    process = subprocess.Popen(
        [sys.executable, "-m", "node.cli.main", "serve", "--host-config", str(host_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "SUPNET_LOG_LEVEL": "INFO"},
    )
    try:
        states = _wait_for_states(dirs, process)
        assert [state["node_id"] for state in states] == list(CITIES)
        assert {state["pid"] for state in states} == {process.pid}
        assert states[0]["port"] != states[1]["port"]
        # The launcher's check before it signals a pid: a host serves the data dirs its host file lists, no other.
        assert serves(process.pid, dirs[0]) and serves(process.pid, dirs[1])
        assert not serves(process.pid, tmp_path / "gd")
        for node_id, state in zip(CITIES, states, strict=True):
            # The province calls each hosted city over mutual TLS, expecting that city's own certificate.
            with channel_as(tmp_path / "gd", str(state["address"]), node_id) as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
                assert reply.status == SERVING
                info = NodeServiceStub(channel).GetNodeInfo(NodeInfoRequest(), timeout=5)
                assert (info.node_id, info.level) == (node_id, "city")
            # Each port presents its own node: expecting the other city there fails the TLS handshake.
            other = CITIES[1 - CITIES.index(node_id)]
            with channel_as(tmp_path / "gd", str(state["address"]), other) as channel:
                with pytest.raises(grpc.RpcError) as refused:
                    health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
                assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            # Health per node, as `supnet health` probes it with the node's own credentials.
            pki = pki_directory(tmp_path / node_id)
            assert probe_health(str(state["address"]), node_id, pki)[0] == "SERVING"
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = output.decode()
    assert process.returncode == 0, text
    assert "hosting 2 nodes" in text and "2 hosted nodes stopped cleanly" in text
    assert not any((folder / "serve.json").exists() for folder in dirs)


def test_hosted_nodes_share_the_call_pool_and_the_scheduler(tmp_path: Path) -> None:
    nodes = [open_node(folder) for folder in _cities(tmp_path)]
    before = set(threading.enumerate())  # threads of earlier tests in this process do not count
    host = NodeHost(nodes, rpc_workers=4, job_workers=2)
    try:
        ports = host.start()
        # The second node's jobs come a stagger after the first's (a job whose first run is an interval away).
        first, second = (host.scheduler.get_job(f"{node_id}/notification_dispatch") for node_id in CITIES)
        assert (second.next_run_time - first.next_run_time).total_seconds() >= START_STAGGER_SECONDS
        assert sorted(ports) == list(CITIES) and len(set(ports.values())) == 2
        for node_id, port in ports.items():
            with channel_as(tmp_path / "gd", f"127.0.0.1:{port}", node_id) as channel:
                assert NodeServiceStub(channel).GetNodeInfo(NodeInfoRequest(), timeout=5).node_id == node_id
        names = [thread.name for thread in threading.enumerate() if thread not in before]
        # The calls ran on the host's pool; no node has a pool or a health thread of its own.
        assert any(name.startswith("rpc-host") for name in names)
        assert not any(name.startswith(("rpc-gd", "health-gd")) for name in names), names
        # One scheduler holds every node's jobs under the node's id, and one health job for them all.
        jobs = {job.id: job for job in host.scheduler.get_jobs()}
        for node_id in CITIES:
            assert {f"{node_id}/rule_scan", f"{node_id}/certificate_renewal"} <= set(jobs)
            assert "health_check" not in host.members[node_id].scheduler.job_ids()
        assert HOST_HEALTH_JOB_ID in jobs
        # The host's health job watches every node: a broken revocation list takes that node (only) out of service.
        crl = tmp_path / "gd.sz" / "pki" / "crl.pem"
        good = crl.read_bytes()
        crl.write_bytes(b"-----BEGIN X509 CRL-----\nbroken\n-----END X509 CRL-----\n")
        with (
            channel_as(tmp_path / "gd", f"127.0.0.1:{ports['gd.sz']}", "gd.sz") as sz,
            channel_as(tmp_path / "gd", f"127.0.0.1:{ports['gd.gz']}", "gd.gz") as gz,
        ):
            _eventually_status(sz, NOT_SERVING)
            assert _health(gz) == SERVING
            crl.write_bytes(good)
            _eventually_status(sz, SERVING)
        # Each node keeps its own metrics registry.
        assert host.members["gd.gz"].metrics.registry is not host.members["gd.sz"].metrics.registry
    finally:
        host.stop(0.5)
        for node in nodes:
            node.close()
    assert not host.scheduler.running


def test_a_node_that_cannot_listen_stops_the_whole_host(tmp_path: Path) -> None:
    nodes = [open_node(folder) for folder in _cities(tmp_path)]
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    busy = f"127.0.0.1:{taken.getsockname()[1]}"
    host = NodeHost(nodes, listen={"gd.sz": busy})
    try:
        with pytest.raises(UnavailableError, match=r"gd\.sz cannot listen"):
            host.start()
        port = host.members["gd.gz"].server.port
        assert port and probe_health(f"127.0.0.1:{port}", "gd.gz", pki_directory(tmp_path / "gd.gz"), timeout=1)[0] == (
            "UNREACHABLE"
        )
        assert not host.scheduler.running
    finally:
        taken.close()
        for node in nodes:
            node.close()


def test_refusals_name_what_is_wrong(tmp_path: Path) -> None:
    dirs = _cities(tmp_path)
    _register_commands()
    runner = CliRunner()
    twice = runner.invoke(app, ["serve", "--data-dir", str(dirs[0]), "--data-dir", str(dirs[0])])
    assert twice.exit_code != 0 and "listed twice" in twice.output
    listen = runner.invoke(app, ["serve", "--data-dir", str(dirs[0]), "--data-dir", str(dirs[1]), "--listen", ":1"])
    assert listen.exit_code != 0 and "--listen names one address" in listen.output
    # Two data directories claiming one node id: each hosted node must be a node of its own.
    clone = tmp_path / "clone"
    init_node(clone, "gd.gz", level="city")
    same_id = [open_node(dirs[0]), open_node(clone)]
    try:
        with pytest.raises(ConfigError, match="claimed by both"):
            NodeHost(same_id)
    finally:
        for node in same_id:
            node.close()
    bad = tmp_path / "bad.toml"
    bad.write_text('data_dirs = ["gd.gz"]\nrpc_workerz = 3\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="rpc_workerz"):
        load_host_config(bad)
    bad.write_text("data_dirs = []\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="data_dirs"):
        load_host_config(bad)
    bad.write_text('data_dirs = ["gd.gz", "gd.sz"]\n', encoding="utf-8")
    assert load_host_config(bad).data_dirs == [dirs[0].resolve(), dirs[1].resolve()]


def test_the_test_tree_in_hosted_mode_reports_and_drills_down(tmp_path: Path) -> None:
    # The tree every report and drill-down suite builds, its servers on one shared pool and scheduler (what
    # SUPNET_TEST_HOSTING=hosted gives those suites).
    before = set(threading.enumerate())
    tree = Tree(
        tmp_path, ["gd", "gd.gz", "gd.gz.py"], clock=TreeClock.real(), timing={}, serve_leaves=True, hosting="hosted"
    )
    try:
        tree.import_synthetic("gd.gz.py", 30, 3, date_from=DRILLDOWN_FROM, date_to=DRILLDOWN_TO)
        tree.report_up()
        with tree.client("gd") as client:
            leaf = client.ask("gd.gz.py", summary=dd.SummaryRequest(group_by=dd.SUMMARY_GROUP_BY_DAY))
            assert leaf.envelope.signer_id == "gd.gz.py"
            province = client.ask("gd", summary=dd.SummaryRequest(group_by=dd.SUMMARY_GROUP_BY_CHILD))
        assert province.body.summary.total.received == tree.case_count(["gd.gz.py"]) > 0
        names = [thread.name for thread in threading.enumerate() if thread not in before]
        assert any(name.startswith("rpc-host") for name in names)
        assert not any(name.startswith(("rpc-gd", "health-gd")) for name in names), names
    finally:
        tree.close()
