"""Shared builder for drill-down, verify and ingest tests: a real tree of nodes, each with its own SQLite file,
real synthetic data imported through the real importer, and a real gRPC NodeServer on a loopback port.

By default the tree gets its PKI through the real enrolment flow (node.trust.provisioning) and every call runs
over mutual TLS; ``plaintext=True`` builds the insecure plaintext mode (children's keys in the config).

(No tests here; the module name keeps it next to the tests that use it.)
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from node.app import Node, open_node
from node.bootstrap import init_node
from node.config import ChildConfig, load_config, save_config
from node.drilldown import DrilldownClient
from node.ingest import Importer, IngestListener
from node.localtree import free_ports
from node.reporting import ReportSender
from node.server import NodeServer
from node.supervision import default_listeners
from node.synthetic import generate
from node.trust import SigningIdentity, node_channel, pki_directory, provision_tree, signing_identity

LEVELS = ("province", "city", "district", "street")
DATE_FROM = date(2026, 1, 5)
DATE_TO = date(2026, 4, 30)


def supervision_listeners(node: Node) -> list[IngestListener]:
    """The node's default ingest listeners, as every real import uses."""
    return default_listeners(node)


@dataclass
class TreeNode:
    """One running node of a test tree."""

    id: str
    data_dir: Path
    node: Node
    server: NodeServer
    sender: ReportSender | None

    @property
    def address(self) -> str:
        return self.server.bound_address

    def db(self) -> sqlite3.Connection:
        """A plain sqlite3 connection to the node's file: an independent view of its data."""
        return sqlite3.connect(self.data_dir / "node.db")


@dataclass
class Tree:
    """A running tree; ``settle()`` pushes reports bottom-up until the root holds everything."""

    nodes: dict[str, TreeNode] = field(default_factory=dict)
    plaintext: bool = False

    def __getitem__(self, node_id: str) -> TreeNode:
        return self.nodes[node_id]

    def settle(self) -> None:
        """One synchronous report per node, deepest first: afterwards every ancestor holds its subtree."""
        for tree_node in sorted(self.nodes.values(), key=lambda n: -n.id.count(".")):
            if tree_node.sender is not None:
                result = tree_node.sender.report_now()
                assert not result.failed, f"{tree_node.id}: {result.error}"

    def client(self, node_id: str) -> DrilldownClient:
        """The local operator of node_id talking to its own server."""
        return DrilldownClient.for_node(self.nodes[node_id].node, self.nodes[node_id].address)

    def channel(self, as_node: str, to_node: str, *, expected: str | None = None) -> grpc.Channel:
        """A channel from as_node (its TLS certificate) to to_node's server, accepting only ``expected``'s."""
        pki = None if self.plaintext else pki_directory(self.nodes[as_node].data_dir)
        return node_channel(pki, self.nodes[to_node].address, expected or to_node)

    def case_count(self, node_ids: list[str]) -> int:
        total = 0
        for node_id in node_ids:
            with self.nodes[node_id].db() as conn:
                total += conn.execute("SELECT count(*) FROM cases").fetchone()[0]
        return total

    def close(self) -> None:
        for tree_node in self.nodes.values():
            if tree_node.sender is not None:
                tree_node.sender.stop()
            tree_node.server.stop(0.5)
            tree_node.node.close()


def build_tree(base: Path, cases: dict[str, int], *, seed: int = 3, plaintext: bool = False) -> Tree:
    """Init, enrol, configure, fill and serve every node of ``cases`` (node id -> synthetic cases to import)."""
    ids = sorted(cases, key=lambda node_id: (node_id.count("."), node_id))
    keys = {}
    for node_id in ids:
        result = init_node(base / node_id, node_id, level=LEVELS[min(node_id.count("."), 3)], name=node_id.upper())
        # Only the plaintext mode names keys in the config; with the PKI they travel in certificate chains.
        keys[node_id] = result.public_key_b64 if plaintext else ""
    if not plaintext:
        provision_tree({node_id: base / node_id / "pki" for node_id in ids})
    addresses = {node_id: f"127.0.0.1:{port}" for node_id, port in zip(ids, free_ports(len(ids)), strict=True)}
    for node_id in ids:
        config = load_config(base / node_id)
        federation = config.federation
        federation.listen = addresses[node_id]
        parent = node_id.rpartition(".")[0]
        if parent in cases:
            federation.parent_id = parent
            federation.parent_address = addresses[parent]
            federation.parent_public_key = keys[parent]
        federation.children = [
            ChildConfig(id=child, public_key=keys[child], address=addresses[child])
            for child in ids
            if child.rpartition(".")[0] == node_id
        ]
        federation.rpc_timeout_seconds = 5.0
        federation.insecure_plaintext = plaintext
        save_config(base / node_id, config)
    tree = Tree(plaintext=plaintext)
    try:
        for node_id in ids:
            node = open_node(base / node_id)
            if cases[node_id]:
                generated = generate(
                    node_id, cases[node_id], seed, base / node_id / "generated", date_from=DATE_FROM, date_to=DATE_TO
                )
                summary = Importer(node, listeners=supervision_listeners(node)).import_files(generated.paths)
                assert summary.rejected == 0, summary.errors[:3]
            sender = ReportSender(node) if node.config.federation.parent_address else None
            server = NodeServer(node, sender=sender)
            server.start()
            tree.nodes[node_id] = TreeNode(node_id, base / node_id, node, server, sender)
    except BaseException:
        tree.close()
        raise
    return tree


def node_key(tree: Tree, node_id: str) -> Ed25519PrivateKey:
    """The private signing key of a node (to forge or sign queries in tests)."""
    return signing_identity(tree[node_id].node).private_key


def node_identity(tree: Tree, node_id: str) -> SigningIdentity:
    """A node's signing key with its report certificate chain (empty in the plaintext mode)."""
    return signing_identity(tree[node_id].node)


def running_tree(base: Path, cases: dict[str, int], *, plaintext: bool = False) -> Iterator[Tree]:
    """Generator body for fixtures: build, settle, yield, close."""
    tree = build_tree(base, cases, plaintext=plaintext)
    try:
        tree.settle()
        yield tree
    finally:
        tree.close()
