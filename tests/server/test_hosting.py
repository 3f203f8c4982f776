"""Hosted nodes (node.server.hosting): one ``supnet serve`` process serving several nodes, each its own node.

A real host process over mutual TLS (each node on its own port with its own certificate), the shared pool and
scheduler in process, the host's one /metrics for all its nodes (scraped over real HTTP, each series labelled with
its node), and the refusals (a node listed twice, ``--listen`` with several nodes, a bad host file, a node that
cannot listen).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from federation.proto.v1 import drilldown_pb2 as dd
from federation.proto.v1.node_service_pb2 import NodeInfoRequest
from federation.proto.v1.node_service_pb2_grpc import NodeServiceStub
from node.app import open_node
from node.bootstrap import init_node
from node.cli import app
from node.cli.main import _register_commands
from node.config import HostConfig, load_config, load_host_config, save_config
from node.errors import ConfigError, UnavailableError
from node.localtree import serves
from node.observability import NODE_LABEL
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


def _scrape(address: str) -> dict[str, dict[str, list[tuple[dict[str, str], float]]]]:
    """GET http://address/metrics: family name -> node id -> (labels, value) of its samples.

    Fails on an invalid exposition (the parser raises) and on a family named twice (one HELP/TYPE per family).
    """
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as reply:
        assert reply.status == 200
        text = reply.read().decode()
    families: dict[str, dict[str, list[tuple[dict[str, str], float]]]] = {}
    for family in text_string_to_metric_families(text):
        assert family.name not in families, f"{family.name} appears twice in the exposition"
        by_node = families[family.name] = {}
        for sample in family.samples:
            assert NODE_LABEL in sample.labels, f"{sample.name} {sample.labels} carries no node label"
            by_node.setdefault(sample.labels[NODE_LABEL], []).append((sample.labels, sample.value))
    assert text.count("# TYPE supnet_build_info ") == 1
    return families


def _listening_ports(pid: int) -> set[int]:
    """The TCP ports process ``pid`` listens on (its sockets' inodes matched against /proc/net/tcp{,6})."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _check_hosted_scrape(address: str) -> None:
    """Both cities' series at one address, each labelled with its own node id and nothing mixed."""
    families = _scrape(address)
    build = families["supnet_build_info"]
    assert sorted(build) == list(CITIES)
    for node_id in CITIES:
        # supnet_build_info had a node label already: still one, the node's own id.
        assert [labels[NODE_LABEL] for labels, _ in build[node_id]] == [node_id]
        assert {labels["service"] for labels, _ in families["supnet_health_serving"][node_id]} >= {"overall"}
        assert families["supnet_database_up"][node_id] == [({NODE_LABEL: node_id}, 1.0)]
        # Counters keep their names and labels; each node's known label values start at 0, once per node.
        received = families["supnet_reports_received"][node_id]
        assert sorted(labels["outcome"] for labels, _ in received) == ["duplicate", "stored"]
        assert families["supnet_report_outbox_limit"][node_id][0][1] > 0


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
        # One /metrics for the host (the host file's metrics_listen, default 127.0.0.1:0), named in each serve.json.
        metrics = {state["metrics_address"] for state in states}
        assert len(metrics) == 1
        (address,) = metrics
        assert isinstance(address, str) and address.startswith("127.0.0.1:")
        _check_hosted_scrape(address)
        # No endpoint per node: the process listens on the nodes' gRPC and console ports and that one (no enrolment
        # listener: no node holds a live enrolment token).
        expected = {int(str(state["address"]).rsplit(":", 1)[1]) for state in states}
        expected |= {urlsplit(str(state["web_url"])).port or 0 for state in states if "web_url" in state}
        expected.add(int(address.rsplit(":", 1)[1]))
        assert _listening_ports(process.pid) == expected
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = output.decode()
    assert process.returncode == 0, text
    assert "hosting 2 nodes" in text and "2 hosted nodes stopped cleanly" in text
    assert f"metrics of all hosted nodes: http://{address}/metrics" in text
    assert not any((folder / "serve.json").exists() for folder in dirs)


def test_a_host_without_a_host_file_serves_metrics_on_the_first_nodes_metrics_listen(tmp_path: Path) -> None:
    dirs = _cities(tmp_path)
    # The first node says "no endpoint", the second asks for one: the first node's setting is the host's.
    for folder, listen in zip(dirs, ("", "127.0.0.1:0"), strict=True):
        config = load_config(folder)
        config.metrics.listen = listen
        save_config(folder, config)
    nodes = [open_node(folder) for folder in dirs]
    host = NodeHost(nodes)
    try:
        host.start()
        assert host.metrics_server is None and host.metrics_address == ""
        assert all(member.metrics_server is None for member in host.members.values())
    finally:
        host.stop(0.5)
    # The other order: the first node's 127.0.0.1:0 is where the host listens, for both nodes.
    host = NodeHost(nodes[::-1])
    try:
        host.start()
        assert host.metrics_address.startswith("127.0.0.1:")
        _check_hosted_scrape(host.metrics_address)
    finally:
        host.stop(0.5)
        for node in nodes:
            node.close()
    # Through the command line: serve -d gd.sz -d gd.gz, no host file; each serve.json names the host's endpoint.
    process = subprocess.Popen(
        [sys.executable, "-m", "node.cli.main", "serve", "-d", str(dirs[1]), "-d", str(dirs[0])],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        states = _wait_for_states(dirs, process)
        assert states[0]["metrics_address"] == states[1]["metrics_address"]
        _check_hosted_scrape(str(states[0]["metrics_address"]))
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0


def test_hosted_nodes_have_no_metrics_endpoint_of_their_own(tmp_path: Path) -> None:
    nodes = [open_node(folder) for folder in _cities(tmp_path)]
    before = set(threading.enumerate())
    host = NodeHost(nodes, metrics_listen="127.0.0.1:0")
    try:
        host.start()
        assert all(member.metrics_server is None for member in host.members.values())
        # start_http_server's thread runs serve_forever: one for the host, none per node.
        servers = [thread.name for thread in threading.enumerate() if thread not in before]
        assert len([name for name in servers if "serve_forever" in name]) == 1, servers
        # Events counted in one node's registry show under that node's label only.
        host.members["gd.sz"].metrics.report_refused("E_TEST")
        refused = _scrape(host.metrics_address)["supnet_reports_refused"]
        assert refused == {"gd.sz": [({"reason": "E_TEST", NODE_LABEL: "gd.sz"}, 1.0)]}
        _check_hosted_scrape(host.metrics_address)
        address = host.metrics_address
    finally:
        host.stop(0.5)
        for node in nodes:
            node.close()
    # Stopping the host closes its endpoint.
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://{address}/metrics", timeout=2)


def test_the_host_files_metrics_listen(tmp_path: Path) -> None:
    assert HostConfig(data_dirs=[tmp_path]).metrics_listen == "127.0.0.1:0"
    host_file = tmp_path / "host.toml"
    host_file.write_text('data_dirs = ["a"]\nmetrics_listen = ""\n', encoding="utf-8")
    assert load_host_config(host_file).metrics_listen == ""
    host_file.write_text('data_dirs = ["a"]\nmetrics_listen = "127.0.0.1:9464"\n', encoding="utf-8")
    assert load_host_config(host_file).metrics_listen == "127.0.0.1:9464"
    host_file.write_text('data_dirs = ["a"]\nmetrics_listen = "nowhere"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="metrics_listen"):
        load_host_config(host_file)


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
