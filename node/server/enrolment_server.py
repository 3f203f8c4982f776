"""The enrolment listener: a small plaintext gRPC server with only EnrolmentService, beside the node's mTLS port.

A new child has no client certificate yet, so it cannot reach the node's main (mutual TLS) port; it enrols
here instead. Plaintext is safe because nothing on this wire is secret or trusted blindly: the request is
proved with an HMAC keyed by the token's hash and the child checks the answer against the root fingerprint
in its token (node/trust/enrolment.py). ``supnet serve`` runs it only when the node has a CA (``pki/ca.key``)
and only while the node holds a live enrolment token (node.server.enrolment_gate opens and closes it), on
``federation.enrol_listen``; while it is open its address is in ``DATA_DIR/enrol.json`` (next to serve.json).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from sqlalchemy import Engine

from federation import ErrorMappingInterceptor
from federation.proto.v1.enrolment_pb2_grpc import add_EnrolmentServiceServicer_to_server
from node.audit_log import Action, AuditLog
from node.errors import UnavailableError
from node.run_state import enrol_state_path, write_state_file
from node.server.servicers import EnrolmentServicer
from node.trust import IssuedCertificates, PassphraseError, enrolment_authority, has_ca, record_enrolment

if TYPE_CHECKING:
    from node.app import Node

log = logging.getLogger(__name__)

# Enrolment requests are a few CSRs (a few KB); nothing bigger needs to get in.
MAX_MESSAGE_BYTES = 256 * 1024
SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.so_reuseport", 0),
]


class EnrolmentServer:
    """The listener; ``start()`` returns the bound port and writes enrol.json, ``stop(grace)`` removes it."""

    def __init__(
        self,
        data_dir: Path,
        *,
        address: str = "127.0.0.1:0",
        clock: Callable[[], dt.datetime] | None = None,
        max_workers: int = 2,
        engine: Engine | None = None,
        executor: futures.ThreadPoolExecutor | None = None,
    ) -> None:
        self.data_dir = data_dir
        self._audit = AuditLog(engine) if engine is not None else None
        self.address = address
        authority = enrolment_authority(data_dir, clock=clock)
        self.node_id = authority.authority.node_id
        # A hosted node's listener runs on the host's shared pool (node.server.hosting); that pool is the host's.
        self._owns_executor = executor is None
        self._executor = executor or futures.ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix=f"enrol-{self.node_id}"
        )
        self._server = grpc.server(self._executor, interceptors=[ErrorMappingInterceptor()], options=SERVER_OPTIONS)
        add_EnrolmentServiceServicer_to_server(EnrolmentServicer(authority, self._record), self._server)
        self.port = 0
        self._stopped = False

    @classmethod
    def for_node(
        cls, node: Node, *, address: str | None = None, executor: futures.ThreadPoolExecutor | None = None
    ) -> EnrolmentServer | None:
        """The listener of a node that has a CA (on federation.enrol_listen), else None."""
        if not has_ca(node.data_dir):
            return None
        try:
            return cls(
                node.data_dir,
                address=address or node.config.federation.enrol_listen,
                engine=node.engine,
                executor=executor,
            )
        except PassphraseError as error:
            # The root key is encrypted and this process has no passphrase: serve the rest, say what is off.
            log.warning("node %s: enrolment listener off (children cannot enrol): %s", node.config.id, error.message)
            return None

    def _record(self, issued: IssuedCertificates) -> None:
        record_enrolment(self.data_dir, issued)
        if self._audit is not None:
            self._audit.record(
                actor=issued.child_id,
                action=Action.ENROLMENT_SERVED,
                target=issued.child_id,
                detail={"serials": [f"{serial:x}" for serial in issued.serials()]},
            )

    @property
    def bound_address(self) -> str:
        """host:port actually listened on (after start)."""
        host = self.address.rpartition(":")[0] or "127.0.0.1"
        return f"{host}:{self.port}"

    def start(self) -> int:
        """Bind, serve, and write the address file; returns the bound port."""
        try:
            self.port = self._server.add_insecure_port(self.address)
        except RuntimeError as exc:
            raise UnavailableError(
                f"enrolment listener of {self.node_id} cannot listen on {self.address}: {exc}"
            ) from exc
        if self.port == 0:
            raise UnavailableError(
                f"enrolment listener of {self.node_id} cannot listen on {self.address} (port in use?)"
            )
        self._server.start()
        state = {"node_id": self.node_id, "pid": os.getpid(), "address": self.bound_address, "port": self.port}
        write_state_file(enrol_state_path(self.data_dir), state)
        log.debug("node %s: enrolment listener on %s", self.node_id, self.bound_address)
        return self.port

    def stop(self, grace: float = 1.0, *, wait: bool = True) -> None:
        """Stop serving (in-flight enrolments get ``grace`` seconds) and remove the address file.

        ``wait=False`` returns at once (an in-flight enrolment still finishes within ``grace``): the enrolment gate
        closes the listener from the process's file watcher thread, which must not stall the other nodes' wake-ups.
        """
        if self._stopped:
            return
        self._stopped = True
        stopping = self._server.stop(grace)
        if wait:
            stopping.wait()
        if self._owns_executor:
            self._executor.shutdown(wait=False)
        enrol_state_path(self.data_dir).unlink(missing_ok=True)
        log.debug("node %s: enrolment listener stopped", self.node_id)
