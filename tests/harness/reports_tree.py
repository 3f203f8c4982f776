"""Test harness for report exchange: a real tree of nodes (data dir, database, key, gRPC server on port 0 each).

Nodes are created with the real ``supnet init`` code, get the tree's PKI through the real enrolment flow
(node.trust.provisioning), are registered with their children through the real config file, filled by the real
synthetic generator and importer, and served by the real NodeServer over mutual TLS (``plaintext=True``: the
insecure plaintext mode with the children's public keys in the config). The expected totals of a test are read
straight from the nodes' own databases, never from the roll-up under test.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from sqlalchemy import func, select

from federation import COUNTER_FIELDS, public_key_b64
from federation.proto.v1.node_service_pb2_grpc import NodeServiceStub
from node.app import Node, open_node
from node.bootstrap import init_node
from node.config import ChildConfig, load_config, save_config
from node.ingest import Importer, IngestListener
from node.reporting import ReportSender, subtree_buckets
from node.server import NodeServer
from node.store import Case, Item, MetricBucket, make_engine, migrate
from node.supervision import default_listeners
from node.synthetic import generate
from node.trust import node_channel, pki_directory, provision_tree, signing_identity

DATA_FROM = date(2025, 3, 3)
DATA_TO = date(2025, 3, 21)
START = datetime(2025, 3, 24, 9, 0, 0)

Key = tuple[date, str, str]
Totals = dict[Key, tuple[int, ...]]


_TEMPLATE: list[Path] = []


def _migrated_template() -> Path:
    """One migrated SQLite file per test session, copied into every new node's data directory."""
    if not _TEMPLATE:
        folder = Path(tempfile.mkdtemp(prefix="supnet-reports-template-"))
        engine = make_engine(f"sqlite:///{folder / 'node.db'}")
        migrate(engine)
        engine.dispose()
        _TEMPLATE.append(folder / "node.db")
    return _TEMPLATE[0]


class Clock:
    """Node time: START plus the real time elapsed, plus whatever a test skips ahead (staleness)."""

    def __init__(self, start: datetime = START) -> None:
        self._start = start
        self._started = time.monotonic()
        self._skipped = timedelta()
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._start + timedelta(seconds=time.monotonic() - self._started) + self._skipped

    def advance(self, seconds: float) -> None:
        """Jump ahead (a parent that has not heard from a child for a while)."""
        with self._lock:
            self._skipped += timedelta(seconds=seconds)


def import_listeners(node: Node) -> list[IngestListener]:
    """The node's default ingest listeners (metrics, rules, deadlines), as every real import uses."""
    return default_listeners(node)


@dataclass
class TreeNode:
    """One node of the test tree."""

    node_id: str
    data_dir: Path
    node: Node
    public_key_b64: str
    server: NodeServer | None = None
    sender: ReportSender | None = None
    port: int = 0

    @property
    def parent_id(self) -> str:
        return self.node_id.rpartition(".")[0]


class Tree:
    """A tree of real nodes; parents serve gRPC on 127.0.0.1:0, children report to them."""

    def __init__(
        self,
        root_dir: Path,
        node_ids: Iterable[str],
        *,
        clock: Clock | None = None,
        db_urls: dict[str, str] | None = None,
        federation: dict[str, Any] | None = None,
        plaintext: bool = False,
    ) -> None:
        self.root_dir = root_dir
        self.clock = clock or Clock()
        self.ids = list(node_ids)
        self.plaintext = plaintext
        self.nodes: dict[str, TreeNode] = {}
        db_urls = db_urls or {}
        keys = {}
        for node_id in self.ids:
            if node_id not in db_urls:
                # A copy of an already migrated file: init_node's own migration then only confirms the head.
                (root_dir / node_id).mkdir(parents=True)
                shutil.copyfile(_migrated_template(), root_dir / node_id / "node.db")
            result = init_node(root_dir / node_id, node_id, db_url=db_urls.get(node_id, ""))
            keys[node_id] = result.public_key_b64
        if not plaintext:
            provision_tree({node_id: root_dir / node_id / "pki" for node_id in self.ids})
        self._federation = {
            "report_interval_seconds": 60.0,
            "stale_after_intervals": 3,
            "rpc_timeout_seconds": 5.0,
            "retry_base_seconds": 0.2,
            "retry_max_seconds": 1.0,
            "insecure_plaintext": plaintext,
            **(federation or {}),
        }
        for node_id in self.ids:
            config = load_config(root_dir / node_id)
            config.federation = config.federation.model_copy(
                update={
                    **self._federation,
                    # With the PKI the children's keys come from their certificate chains, not the config.
                    "children": [
                        ChildConfig(id=child, public_key=keys[child] if plaintext else "")
                        for child in self.children_of(node_id)
                    ],
                }
            )
            save_config(root_dir / node_id, config)
        for node_id in self.ids:
            node = open_node(root_dir / node_id, clock=self.clock)
            # The key the node signs with: its PKI report key, or the plaintext-mode key of ``supnet init``.
            signing_key = public_key_b64(signing_identity(node).private_key.public_key())
            self.nodes[node_id] = TreeNode(node_id, root_dir / node_id, node, signing_key)
        # Top-down: a node's sender needs its parent's port, and its own server hands children's reports
        # to that sender (report-on-change upward).
        for node_id in sorted(self.ids, key=lambda node_id: node_id.count(".")):
            if self.nodes[node_id].parent_id in self.nodes:
                self._point_at_parent(node_id)
            if self.children_of(node_id):
                self.start_server(node_id)

    # -- topology -----------------------------------------------------------------------------------------------
    def children_of(self, node_id: str) -> list[str]:
        return [other for other in self.ids if other.rpartition(".")[0] == node_id]

    def leaves(self) -> list[str]:
        return [node_id for node_id in self.ids if not self.children_of(node_id)]

    def bottom_up(self) -> list[str]:
        """Deepest nodes first, so each parent reports after its children."""
        return sorted(self.ids, key=lambda node_id: -node_id.count("."))

    def __getitem__(self, node_id: str) -> Node:
        return self.nodes[node_id].node

    # -- servers and senders ------------------------------------------------------------------------------------
    def start_server(self, node_id: str, port: int = 0) -> int:
        entry = self.nodes[node_id]
        sender = entry.sender if entry.sender is not None and entry.node.config.federation.parent_address else None
        entry.server = NodeServer(entry.node, address=f"127.0.0.1:{port}", sender=sender, max_workers=8)
        entry.port = entry.server.start()
        return entry.port

    def stop_server(self, node_id: str) -> None:
        entry = self.nodes[node_id]
        if entry.server is not None:
            entry.server.stop(0)
            entry.server = None

    def _point_at_parent(self, node_id: str) -> None:
        entry = self.nodes[node_id]
        parent = self.nodes[entry.parent_id]
        config = load_config(entry.data_dir)
        config.federation.parent_address = f"127.0.0.1:{parent.port}"
        save_config(entry.data_dir, config)
        entry.node.config = config
        if entry.sender is not None:
            entry.sender.stop()
        entry.sender = ReportSender(entry.node)

    def sender(self, node_id: str) -> ReportSender:
        sender = self.nodes[node_id].sender
        assert sender is not None, f"{node_id} has no parent"
        return sender

    def stub(self, node_id: str, as_node: str | None = None) -> tuple[NodeServiceStub, grpc.Channel]:
        """A client stub to node_id's server, connected with as_node's TLS certificate (the caller closes it).

        ``as_node`` defaults to node_id's first child (the usual caller of SubmitReport).
        """
        caller = as_node or self.children_of(node_id)[0]
        pki = None if self.plaintext else pki_directory(self.root_dir / caller)
        channel = node_channel(pki, f"127.0.0.1:{self.nodes[node_id].port}", node_id)
        return NodeServiceStub(channel), channel

    def report_up(self, kind: str = "incremental") -> None:
        """Every node with a parent builds a report and delivers its outbox, deepest first."""
        for node_id in self.bottom_up():
            if self.nodes[node_id].sender is not None:
                result = self.sender(node_id).report_now(kind)  # type: ignore[arg-type]
                assert not result.failed, f"{node_id}: {result.error}"

    def close(self) -> None:
        for entry in self.nodes.values():
            if entry.sender is not None:
                entry.sender.stop()
            if entry.server is not None:
                entry.server.stop(0)
            entry.node.close()

    # -- data ---------------------------------------------------------------------------------------------------
    def import_synthetic(
        self, node_id: str, cases: int, seed: int, *, date_from: date = DATA_FROM, date_to: date = DATA_TO
    ) -> int:
        """Generate a node's synthetic files and import them with the real importer; returns records accepted."""
        node = self[node_id]
        out_dir = self.root_dir / f"data-{node_id}-{seed}"
        summary = generate(node_id, cases, seed, out_dir, date_from=date_from, date_to=date_to)
        imported = Importer(node, listeners=import_listeners(node)).import_files(summary.paths)
        assert imported.rejected == 0, imported.to_dict()
        return imported.accepted


def own_totals(node: Node) -> Totals:
    """A node's own metric buckets summed per upward key, read directly from its database."""
    table = MetricBucket.__table__
    keys = [table.c.day, table.c.basic_code, table.c.item_type_code]
    query = select(*keys, *(func.sum(table.c[name]) for name in COUNTER_FIELDS)).group_by(*keys)
    with node.engine.connect() as conn:
        return {(row[0], row[1], row[2]): tuple(int(v) for v in row[3:]) for row in conn.execute(query)}


def received_by_key(node: Node) -> dict[Key, int]:
    """Cases accepted per upward key, counted from the raw cases table (independent of any bucket)."""
    cases, items = Case.__table__, Item.__table__
    with node.engine.connect() as conn:
        rows = conn.execute(
            select(cases.c.accepted_at, items.c.basic_code, items.c.type_code).join(
                items, items.c.implementation_code == cases.c.implementation_code
            )
        ).all()
    counts: dict[Key, int] = defaultdict(int)
    for accepted_at, basic_code, type_code in rows:
        counts[(accepted_at.date(), basic_code, type_code)] += 1
    return dict(counts)


def add_totals(*parts: Totals) -> Totals:
    """Key-wise sum of several totals."""
    result: dict[Key, list[int]] = {}
    for part in parts:
        for key, values in part.items():
            into = result.setdefault(key, [0] * len(COUNTER_FIELDS))
            for index, value in enumerate(values):
                into[index] += value
    return {key: tuple(values) for key, values in result.items()}


def nonzero(totals: Totals) -> Totals:
    """Drop all-zero keys (a zeroed key and an absent key mean the same)."""
    return {key: values for key, values in totals.items() if any(values)}


def subtree_of(node: Node) -> Totals:
    """The node's roll-up under test: own + children's latest, per key."""
    with node.engine.connect() as conn:
        return {(b.day, b.basic_code, b.item_type_code): b.counters for b in subtree_buckets(conn)}
