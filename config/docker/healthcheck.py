"""The node image's HEALTHCHECK: this node's gRPC health, asked over mutual TLS with its own certificate.

Where the server listens comes from ``DATA_DIR/serve.json`` (``SUPNET_DATA_DIR``, the image's data directory), so
a node on any port is probed; the client certificate is the node's own (``pki/tls.key``, ``pki/tls.pem``), the only
kind a mutual-TLS node accepts, and the server must prove it is that node. Exit 0 when SERVING, else 1 with the
reason on stderr (``docker inspect`` shows it). A stand-in until the CLI has ``supnet health``; it imports only
grpc, not the node, so a probe stays well inside its timeout on a busy host.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def probe(data_dir: Path, timeout: float = 10.0) -> str | None:
    """None when the node serves; otherwise why not."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        state = json.loads((data_dir / "serve.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"{data_dir}: no serve.json yet (supnet serve is not listening)"
    address, node_id = str(state.get("address", "")), str(state.get("node_id", ""))
    host, _, port = address.rpartition(":")
    # A wildcard listen address is reached on loopback from inside the container.
    host = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]", "": "127.0.0.1"}.get(host, host)
    pki = data_dir / "pki"
    if (pki / "tls.pem").exists():
        credentials = grpc.ssl_channel_credentials(
            root_certificates=(pki / "root.pem").read_bytes(),
            private_key=(pki / "tls.key").read_bytes(),
            certificate_chain=(pki / "tls.pem").read_bytes(),
        )
        # The node's DNS name, as node.trust.node_dns_name writes it into certificates: gd.gz.py -> py.gz.gd.supnet.
        dns_name = ".".join([*reversed(node_id.split(".")), "supnet"])
        channel = grpc.secure_channel(f"{host}:{port}", credentials, [("grpc.ssl_target_name_override", dns_name)])
    else:  # the insecure plaintext mode (no pki/)
        channel = grpc.insecure_channel(f"{host}:{port}")
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.RpcError as error:
            return f"node {node_id} at {address}: {error.code().name} {error.details()}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return None if status == "SERVING" else f"node {node_id} at {address}: {status}"


if __name__ == "__main__":
    problem = probe(Path(os.environ.get("SUPNET_DATA_DIR", "/var/lib/supnet")))
    if problem is not None:
        sys.exit(problem)
