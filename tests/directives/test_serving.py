"""``supnet serve`` (ServingNode) serves DirectiveService, reflected and healthy, and runs the directive sender: a
directive delivered to it is answered by its own loop, and stopping it stops the loop."""

from __future__ import annotations

from pathlib import Path

from grpc_health.v1 import health_pb2, health_pb2_grpc

from node.directives import IssueRequest, issue
from node.server import ServingNode
from tests.directives.conftest import DirectiveTree, status_of, wait_for

DIRECTIVE_SERVICE = "federation.proto.v1.DirectiveService"


def test_serving_node_takes_directives_and_sends_their_events(tmp_path: Path) -> None:
    tree = DirectiveTree(tmp_path / "tree", ["gd", "gd.a"])
    serving: ServingNode | None = None
    try:
        tree.start_loops()
        port = tree.nodes["gd.a"].port
        tree.senders.pop("gd.a").stop()
        tree.stop_server("gd.a")
        serving = ServingNode(tree["gd.a"], listen=f"127.0.0.1:{port}")
        serving.start()
        channel = tree.channel("gd", "gd.a")
        try:
            check = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=DIRECTIVE_SERVICE), timeout=5
            )
        finally:
            channel.close()
        assert check.status == health_pb2.HealthCheckResponse.SERVING

        issued = issue(tree["gd"], IssueRequest(target_id="gd.a", kind="warning", text="效能告诫", department="窗口"))
        tree.senders["gd"].wake()
        # gd.a's delivered event reaches gd only through the ServingNode's own directive sender.
        wait_for(lambda: status_of(tree, "gd", issued.id) == "delivered", what="the delivery sent by supnet serve")
        assert serving.directives.running
        serving.stop(0)
        assert not serving.directives.running
        serving = None
    finally:
        if serving is not None:
            serving.stop(0)
        tree.close()
