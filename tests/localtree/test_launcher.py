"""The launcher: topology validation, and a real tree of ``supnet serve`` processes brought up, queried, taken down."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from federation import InvalidArgumentError
from node.cli import app
from node.cli.main import _register_commands
from node.localtree import (
    FederationState,
    down,
    host_groups,
    is_our_server,
    load_topology,
    parse_topology,
    status,
    up,
)

REPO = Path(__file__).resolve().parents[2]


def test_shipped_topologies_are_valid() -> None:
    demo = load_topology(REPO / "config" / "topologies" / "demo-15.toml")
    levels = [node.level for node in demo.nodes]
    assert (levels.count("province"), levels.count("city"), levels.count("district"), levels.count("street")) == (
        1,
        2,
        4,
        8,
    )
    assert all(node.cases > 0 for node in demo.nodes)
    assert [len(tier) for tier in demo.tiers()] == [1, 2, 4, 8]
    small = load_topology(REPO / "config" / "topologies" / "small-3.toml")
    assert [node.id for node in small.nodes] == ["gd", "gd.gz", "gd.gz.py"]


@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        ([{"id": "gd", "level": "province"}, {"id": "gd.gz.py", "level": "district"}], "no parent gd.gz"),
        ([{"id": "gd", "level": "province"}, {"id": "sz", "level": "city"}], "exactly one root"),
        ([{"id": "gd", "level": "province"}, {"id": "gd", "level": "province"}], "listed twice"),
        ([{"id": "GD", "level": "province"}], "lowercase letters"),
        ([{"id": "gd", "level": "province"}, {"id": "gd.g_z", "level": "city"}], "segment 'g_z'"),
        ([{"id": "gd", "level": "county"}], "level must be one of"),
        ([{"id": "gd", "level": "province", "cases": -1}], "must not be negative"),
        ([{"id": "gd", "level": "province", "colour": "red"}], "unknown key"),
    ],
)
def test_bad_topologies_are_refused_with_the_reason(nodes: list[dict[str, object]], message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        parse_topology({"nodes": nodes}, "t.toml")


@pytest.mark.parametrize("mode", ["standalone", "hosted"])
def test_up_query_status_down_with_real_processes(tmp_path: Path, mode: str) -> None:
    # hosted: the province alone, the city hosting its district in one `supnet serve` process (parent and child
    # in one process, talking over loopback TLS like any two nodes).
    topology = parse_topology(
        {
            "name": "t3",
            "generate": {"cases": 40, "seed": 5, "from": "2026-02-02", "to": "2026-03-31"},
            "config": {"federation": {"report_on_change": True, "report_debounce_seconds": 0.1}},
            "nodes": [
                {"id": "gd", "level": "province", "cases": 0},
                {"id": "gd.gz", "level": "city"},
                {"id": "gd.gz.py", "level": "district"},
            ],
        },
        "t3",
    )
    base = tmp_path / "tree"
    messages: list[str] = []
    hosts = host_groups(topology, 1) if mode == "hosted" else None
    state = up(topology, base, workers=2, ready_timeout=60, progress=messages.append, hosts=hosts)
    try:
        assert [node.id for node in state.nodes] == ["gd", "gd.gz", "gd.gz.py"]
        assert all(is_our_server(node) for node in state.nodes)
        pids = [node.pid for node in state.nodes]
        if mode == "hosted":
            assert hosts == [["gd"], ["gd.gz", "gd.gz.py"]]
            assert pids[1] == pids[2] != pids[0]
        else:
            assert len(set(pids)) == 3
        assert any("serving" in message for message in messages)
        assert [s.health for s in status(base)] == ["SERVING"] * 3
        saved = FederationState.load(base)
        assert [node.pid for node in saved.nodes] == [node.pid for node in state.nodes]
        # The configs the launcher wrote wire the tree: the city knows its parent and its child; no keys in
        # them, every node holds its enrolled certificates and runs over mutual TLS.
        config = (base / "gd.gz" / "supnet.toml").read_text(encoding="utf-8")
        assert state.node("gd").address in config and state.node("gd.gz.py").address in config
        assert 'public_key = ""' in config and "insecure_plaintext = false" in config
        assert not state.insecure_plaintext and any("mutual TLS" in message for message in messages)
        for node in state.nodes:
            assert (Path(node.data_dir) / "pki" / "tls.pem").is_file()
            assert (Path(node.data_dir) / "pki" / "ingest" / "local-ingest.pem").is_file()
            assert _serve_json(Path(node.data_dir))["pid"] == node.pid  # a hosted node's names its host process

        _register_commands()
        result = CliRunner().invoke(
            app, ["query", "gd.gz.py", "cases", "--data-dir", str(base / "gd"), "--page-size", "5", "--json"]
        )
        assert result.exit_code == 0, result.output
        answer = json.loads(result.output)
        assert answer["signed_by"] == "gd.gz.py" and len(answer["cases"]["cases"]) == 5
        # Reports roll up: the province's signed totals reach the cases stored at the city and the district.
        stored = sum(_stored_cases(base / node_id) for node_id in ("gd.gz", "gd.gz.py"))
        assert stored > 0
        assert _province_received(base) == stored

        # Enrolment: a new street enrols with the running district (hosted or not) through the real token + CSR
        # flow, on the listener that district's enrol.json names.
        runner = CliRunner()
        issued = runner.invoke(app, ["pki", "token", "gd.gz.py.xc", "--data-dir", str(base / "gd.gz.py"), "--json"])
        assert issued.exit_code == 0, issued.output
        token = json.loads(issued.output)
        # The district opened its enrolment listener for the token before `pki token` printed its address.
        enrol_json = json.loads((base / "gd.gz.py" / "enrol.json").read_text(encoding="utf-8"))
        assert (
            token["enrol_address"] == enrol_json["address"]
            and enrol_json["pid"] == _serve_json(base / "gd.gz.py")["pid"]
        )
        newcomer = tmp_path / "xc"
        init = runner.invoke(app, ["init", "--data-dir", str(newcomer), "--id", "gd.gz.py.xc", "--level", "street"])
        assert init.exit_code == 0, init.output
        enrolled = runner.invoke(
            app,
            ["enroll", "--data-dir", str(newcomer), "--parent", token["enrol_address"], "--token", token["token"]],
        )
        assert enrolled.exit_code == 0, enrolled.output
        assert (newcomer / "pki" / "tls.pem").is_file()
    finally:
        stopped = down(base, timeout=10)
    assert stopped == ["gd", "gd.gz", "gd.gz.py"]
    assert [s.health for s in status(base)] == ["STOPPED"] * 3
    for node in state.nodes:
        assert not _running(node.pid), f"{node.id} (pid {node.pid}) still running after down"
        # Read once every process has exited: a node answers its health check before it prints its banner.
        log = Path(node.log_file).read_text(encoding="utf-8")
        assert f"node {node.id} serving on" in log and "over mutual TLS" in log
        assert "stopped cleanly" in log


def _serve_json(data_dir: Path, timeout: float = 15.0) -> dict[str, object]:
    """A node's serve.json, once written (a node answers its health check a moment before it writes it)."""
    path = data_dir / "serve.json"
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never written"
        time.sleep(0.05)
    return dict(json.loads(path.read_text(encoding="utf-8")))


def _stored_cases(data_dir: Path) -> int:
    with sqlite3.connect(data_dir / "node.db") as conn:
        return int(conn.execute("SELECT count(*) FROM cases").fetchone()[0])


def _province_received(base: Path, timeout: float = 60.0) -> int:
    """The province's signed total of received cases once it stops changing toward the stored count (polled)."""
    deadline = time.monotonic() + timeout
    total = -1
    while time.monotonic() < deadline:
        result = CliRunner().invoke(app, ["query", "gd", "summary", "--data-dir", str(base / "gd"), "--json"])
        assert result.exit_code == 0, result.output
        total = int(json.loads(result.output)["summary"]["total"].get("received", 0))
        expected = sum(_stored_cases(base / node_id) for node_id in ("gd.gz", "gd.gz.py"))
        if total == expected:
            return total
        time.sleep(0.5)
    return total


def _running(pid: int) -> bool:
    """True while the process exists and has not exited (an exited, not yet reaped zombie has stopped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_free_ports_avoid_the_ephemeral_range_that_port_zero_binds_use() -> None:
    # A port-0 bind by any other test can then never take a port the launcher picked but has not bound yet.
    from node.localtree import ephemeral_port_floor, free_ports

    ports = free_ports(30)
    assert len(set(ports)) == 30
    assert all(10_000 <= port < ephemeral_port_floor() for port in ports)


def test_status_and_down_follow_a_node_restarted_by_hand(tmp_path: Path) -> None:
    topology = parse_topology(
        {
            "name": "t2",
            "nodes": [{"id": "gd", "level": "province", "cases": 0}, {"id": "gd.gz", "level": "city", "cases": 0}],
        },
        "t2",
    )
    base = tmp_path / "tree"
    state = up(topology, base, workers=1, ready_timeout=60)
    restarted: subprocess.Popen[bytes] | None = None
    decoy = subprocess.Popen(["sleep", "60"])
    try:
        # An operator stops the city and starts it again by hand, from the tree's directory with a relative
        # --data-dir: a new pid that federation.json does not know.
        first = state.node("gd.gz").pid
        os.kill(first, signal.SIGTERM)
        assert os.waitpid(first, 0)[0] == first
        assert [s.health for s in status(base)] == ["SERVING", "STOPPED"]
        restarted = subprocess.Popen(
            [sys.executable, "-m", "node", "serve", "--data-dir", "gd.gz"],
            cwd=base,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        serve_json = base / "gd.gz" / "serve.json"
        deadline = time.monotonic() + 30
        while not (serve_json.exists() and json.loads(serve_json.read_text())["pid"] == restarted.pid):
            assert restarted.poll() is None and time.monotonic() < deadline, "the restarted node did not come up"
            time.sleep(0.05)
        city = status(base)[1]
        assert (city.id, city.pid, city.running, city.health) == ("gd.gz", restarted.pid, True, "SERVING")

        # A serve.json naming a pid that is not a serve of that data dir (stale, the pid reused) is never signalled.
        province_json = base / "gd" / "serve.json"
        real = json.loads(province_json.read_text())
        province_json.write_text(json.dumps({**real, "pid": decoy.pid}))
        assert status(base)[0].pid == state.node("gd").pid  # the one up started, found as before

        stopped = down(base, timeout=10)
        assert stopped == ["gd", "gd.gz"]
        assert restarted.wait(timeout=15) == 0
        assert b"stopped cleanly" in (restarted.stdout.read() if restarted.stdout else b"")
        assert decoy.poll() is None, "down signalled a process that is not a node's server"
        assert [s.health for s in status(base)] == ["STOPPED"] * 2
    finally:
        if restarted is not None and restarted.poll() is None:
            restarted.kill()
            restarted.wait()
        decoy.kill()
        decoy.wait()
        down(base, timeout=5)


def test_the_launcher_asks_a_node_for_its_health_only_once_serve_json_names_its_process(tmp_path: Path) -> None:
    # Before `supnet serve` writes serve.json its ports are not open: asking then only burns the launcher's CPU.
    import socket
    import threading

    from node.localtree import LaunchedNode, LaunchError, wait_until_serving
    from node.run_state import serve_state_path, write_state_file

    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    connections: list[int] = []
    done = threading.Event()

    def accept() -> None:
        while not done.is_set():
            try:
                conn, _peer = listener.accept()
            except TimeoutError:
                continue
            connections.append(1)
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    node = LaunchedNode("gd", "province", "", str(tmp_path), f"127.0.0.1:{listener.getsockname()[1]}")
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])  # alive, not a server
    try:
        for announced_pid in (None, process.pid + 100_000):  # no serve.json; one naming another process
            if announced_pid is not None:
                write_state_file(serve_state_path(tmp_path), {"pid": announced_pid})
            with pytest.raises(LaunchError, match="not serving after"):
                wait_until_serving([node], {"gd": process}, 0.5, insecure_plaintext=True)
            assert connections == []
        write_state_file(serve_state_path(tmp_path), {"pid": process.pid})
        with pytest.raises(LaunchError, match="not serving after"):  # asked now; a bare socket never answers
            wait_until_serving([node], {"gd": process}, 0.5, insecure_plaintext=True)
        assert connections
    finally:
        done.set()
        thread.join()
        listener.close()
        process.kill()
        process.wait()
