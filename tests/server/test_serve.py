"""``supnet serve`` as a real process over mutual TLS, clean shutdown, health and reflection, the scheduler's jobs."""

from __future__ import annotations

import queue
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from federation import INGEST_SERVICE_NAME, NODE_SERVICE_NAME
from federation.proto.v1.ingest_pb2 import IngestOutcome, IngestRecord
from federation.proto.v1.ingest_pb2_grpc import IngestServiceStub
from federation.proto.v1.node_service_pb2 import NodeInfoRequest
from federation.proto.v1.node_service_pb2_grpc import NodeServiceStub
from node.app import open_node
from node.bootstrap import init_node
from node.config import ChildConfig, load_config, save_config
from node.server import NodeScheduler, NodeServer
from tests.harness.ingest_records import ITEM, acceptance
from tests.harness.pki import channel_as, ingest_client, provision
from tests.harness.serve_process import start_serve, wait_for_state

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def test_serve_process_answers_health_reflection_info_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    data_dir = tmp_path / "gd.gz"
    init_node(data_dir, "gd.gz", level="city", name="广州市")
    provision(tmp_path, ["gd", "gd.gz"])
    config = load_config(data_dir)
    config.federation.listen = "127.0.0.1:0"
    config.federation.children = [ChildConfig(id="gd.gz.py")]
    save_config(data_dir, config)
    process = start_serve(data_dir)
    try:
        state = wait_for_state(data_dir, process)
        address = str(state["address"])
        assert state["pid"] == process.pid
        # The province (gd.gz's parent) calls over mutual TLS, expecting gd.gz's certificate.
        with channel_as(tmp_path / "gd", address, "gd.gz") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            assert health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status == SERVING
            assert health.Check(health_pb2.HealthCheckRequest(service=NODE_SERVICE_NAME), timeout=5).status == SERVING
            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            reply = next(iter(reflection.ServerReflectionInfo(iter([request]), timeout=5)))
            services = {service.name for service in reply.list_services_response.service}
            assert {NODE_SERVICE_NAME, INGEST_SERVICE_NAME, "grpc.health.v1.Health"} <= services
            info = NodeServiceStub(channel).GetNodeInfo(NodeInfoRequest(), timeout=5)
            assert (info.node_id, info.level, list(info.children_ids)) == ("gd.gz", "city", ["gd.gz.py"])
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, output.decode()
    assert "stopped cleanly" in output.decode()
    assert "over mutual TLS" in output.decode()
    assert not (data_dir / "serve.json").exists()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NodeServer]:
    init_node(tmp_path / "gd.gz.py", "gd.gz.py")
    provision(tmp_path, ["gd.gz.py"])
    node = open_node(tmp_path / "gd.gz.py")
    node_server = NodeServer(node, address="127.0.0.1:0")
    node_server.start()
    try:
        yield node_server
    finally:
        node_server.stop(0)
        node.close()


def test_stop_goes_not_serving_first_and_lets_in_flight_calls_finish(server: NodeServer) -> None:
    address = server.bound_address
    statuses: queue.Queue[int] = queue.Queue()
    outgoing: queue.Queue[IngestRecord | None] = queue.Queue()

    def requests() -> Iterator[IngestRecord]:
        while (record := outgoing.get()) is not None:
            yield record

    data_dir = server.node.data_dir
    with channel_as(data_dir, address, "gd.gz.py") as channel, ingest_client(data_dir, "gd.gz.py", address) as ingest:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=20)

        def follow() -> None:
            try:
                for reply in watch:
                    statuses.put(reply.status)
            except grpc.RpcError:
                pass  # cancelled below, once NOT_SERVING was seen

        threading.Thread(target=follow, daemon=True).start()
        assert statuses.get(timeout=5) == SERVING
        replies = IngestServiceStub(ingest).Ingest(requests(), timeout=20)
        outgoing.put(IngestRecord(seq=1, kind="item", fields=ITEM))
        assert next(replies).outcome == IngestOutcome.INGEST_OUTCOME_ACCEPTED

        stopper = threading.Thread(target=server.stop, args=(10.0,))
        stopper.start()
        assert statuses.get(timeout=5) == NOT_SERVING
        watch.cancel()  # a watcher is an in-flight call too; it would hold the shutdown for the whole grace
        # The stream opened before the shutdown is still served until it ends.
        outgoing.put(IngestRecord(seq=2, kind="acceptance", fields=acceptance(1)))
        assert next(replies).outcome == IngestOutcome.INGEST_OUTCOME_ACCEPTED
        outgoing.put(None)
        assert list(replies) == []
        started = time.monotonic()
        stopper.join(15)
        assert not stopper.is_alive()
        assert time.monotonic() - started < 5, "the server waited for calls that had ended"
        with pytest.raises(grpc.RpcError):
            NodeServiceStub(channel).GetNodeInfo(NodeInfoRequest(), timeout=1)


def test_scheduler_runs_jobs_from_config_and_stops(tmp_path: Path) -> None:
    init_node(tmp_path / "gz", "gd.gz", level="city")
    config = load_config(tmp_path / "gz")
    config.supervision.scan_interval_seconds = 1
    config.notifications.dispatch_interval_seconds = 0.2
    config.federation.children = [ChildConfig(id="gd.gz.py")]
    save_config(tmp_path / "gz", config)
    node = open_node(tmp_path / "gz")
    scans: list[float] = []
    scheduler = NodeScheduler(node, scan=lambda: scans.append(time.monotonic()))
    ids = [spec.job_id for spec in scheduler.job_specs()]
    # No parent configured: no report jobs; a child configured: the staleness check.
    assert ids == ["staleness_check", "rule_scan", "notification_dispatch"]
    scheduler.start()
    try:
        assert scheduler.job_ids() == sorted(ids)
        deadline = time.monotonic() + 5
        while len(scans) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(scans) >= 2
        # Every second (a loaded machine may delay a run a little, never run it early).
        assert 0.8 < scans[1] - scans[0] < 3.0
    finally:
        scheduler.stop()
        node.close()
    count = len(scans)
    time.sleep(1.2)
    assert len(scans) == count
