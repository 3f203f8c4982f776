"""gRPC health checking and server reflection, added to every node's server the same way."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from federation.proto.v1 import ingest_pb2, node_service_pb2

logger = logging.getLogger(__name__)

NODE_SERVICE_NAME: str = node_service_pb2.DESCRIPTOR.services_by_name["NodeService"].full_name
INGEST_SERVICE_NAME: str = ingest_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name
HEALTH_SERVICE_NAME: str = health.SERVICE_NAME
REFLECTION_SERVICE_NAME: str = reflection.SERVICE_NAME


def _reflected_names(service_names: Iterable[str]) -> tuple[str, ...]:
    names = dict.fromkeys([*service_names, HEALTH_SERVICE_NAME, REFLECTION_SERVICE_NAME])
    return tuple(names)


def add_health_and_reflection(server: grpc.Server, service_names: Iterable[str]) -> Any:
    """Register health (each service and the overall "" entry SERVING) and reflection on a sync server.

    Returns the grpc_health HealthServicer so the caller can flip statuses (e.g. NOT_SERVING on shutdown).
    """
    names = list(service_names)
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    for name in names:
        servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    servicer.set(health.OVERALL_HEALTH, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(_reflected_names(names), server)
    logger.debug("health and reflection enabled for %s", names)
    return servicer
