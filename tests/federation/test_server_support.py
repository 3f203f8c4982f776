"""Health checking and reflection on a real gRPC server bound to an ephemeral port."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from federation import (
    HEALTH_SERVICE_NAME,
    INGEST_SERVICE_NAME,
    NODE_SERVICE_NAME,
    REFLECTION_SERVICE_NAME,
    add_health_and_reflection,
)

DEADLINE = 5.0


def _listed_services(channel: grpc.Channel) -> list[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    responses = list(stub.ServerReflectionInfo(iter([request]), timeout=DEADLINE))
    return sorted(service.name for service in responses[0].list_services_response.service)


def _file_containing(channel: grpc.Channel, symbol: str) -> list[bytes]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol)
    responses = list(stub.ServerReflectionInfo(iter([request]), timeout=DEADLINE))
    return list(responses[0].file_descriptor_response.file_descriptor_proto)


@pytest.fixture
def served() -> Iterator[tuple[grpc.Channel, Any]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = add_health_and_reflection(server, [NODE_SERVICE_NAME, INGEST_SERVICE_NAME])
    port = server.add_insecure_port("127.0.0.1:0")
    assert port > 0
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield channel, servicer
    finally:
        channel.close()
        server.stop(grace=None)


def test_health_reports_serving(served: tuple[grpc.Channel, Any]) -> None:
    channel, _ = served
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", NODE_SERVICE_NAME, INGEST_SERVICE_NAME):
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=DEADLINE)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
    with pytest.raises(grpc.RpcError) as caught:
        stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=DEADLINE)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_status_can_be_flipped(served: tuple[grpc.Channel, Any]) -> None:
    channel, servicer = served
    servicer.set(NODE_SERVICE_NAME, health_pb2.HealthCheckResponse.NOT_SERVING)
    reply = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=NODE_SERVICE_NAME), timeout=DEADLINE
    )
    assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING


def test_reflection_lists_and_describes_services(served: tuple[grpc.Channel, Any]) -> None:
    channel, _ = served
    assert _listed_services(channel) == sorted(
        [NODE_SERVICE_NAME, INGEST_SERVICE_NAME, HEALTH_SERVICE_NAME, REFLECTION_SERVICE_NAME]
    )
    assert NODE_SERVICE_NAME == "federation.proto.v1.NodeService"
    # A client can fetch the schema of our own messages, e.g. to call Query with grpcurl.
    files = _file_containing(channel, NODE_SERVICE_NAME)
    assert any(b"federation/proto/v1/node_service.proto" in blob for blob in files)
