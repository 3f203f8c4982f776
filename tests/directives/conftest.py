"""Tests of node.directives: directives going down and their events coming back over real mutual TLS between real
nodes (tests.harness.tree), the authorization of DirectiveService.Deliver, delivery to a node that was down, late
responses under the tree's test clock, the ``supnet directive`` commands, SQLite and PostgreSQL.

Folder fixtures and helpers: ``DirectiveTree``, a Tree whose every node serves and runs a DirectiveSender wired
into its server as ``supnet serve`` wires them (ServingNode); ``wait_for``; ``directive_tree`` (gd ← gd.a ← gd.a.x ←
gd.a.x.s1, with the siblings gd.a.x.s2 and gd.a.y), closed after the test.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from node.app import Node, open_node
from node.directives import DirectiveSender, get_directive
from node.errors import NotFoundError
from node.server import NodeServer
from node.store import DirectiveOutboxEntry
from tests.harness.tree import SERVER_WORKERS, Tree

IDS = ["gd", "gd.a", "gd.a.x", "gd.a.x.s1", "gd.a.x.s2", "gd.a.y"]


class DirectiveTree(Tree):
    """A Tree whose servers wake a DirectiveSender per node; ``start_loops`` runs them as ``supnet serve`` does."""

    def __init__(self, root_dir: Path, node_ids: list[str], **kwargs: Any) -> None:
        self.senders: dict[str, DirectiveSender] = {}
        kwargs.setdefault("serve_leaves", True)
        super().__init__(root_dir, node_ids, **kwargs)

    def directive_sender(self, node_id: str) -> DirectiveSender:
        if node_id not in self.senders:
            self.senders[node_id] = DirectiveSender(self.nodes[node_id].node)
        return self.senders[node_id]

    def start_server(self, node_id: str, port: int = 0) -> int:
        entry = self.nodes[node_id]
        entry.server = NodeServer(
            entry.node,
            address=f"127.0.0.1:{port}",
            sender=entry.sender,
            directives=self.directive_sender(node_id),
            max_workers=SERVER_WORKERS,
        )
        entry.port = entry.server.start()
        return entry.port

    def start_loops(self) -> None:
        for sender in self.senders.values():
            sender.start()

    def pending(self, node_id: str) -> int:
        """Messages in a node's directive outbox still waiting for their next hop."""
        with self[node_id].engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).where(DirectiveOutboxEntry.status == "pending")  # type: ignore[arg-type]
                ).scalar_one()
            )

    def close(self) -> None:
        for sender in self.senders.values():
            sender.stop()
        super().close()


@contextmanager
def open_data_dir(data_dir: Path) -> Iterator[Node]:
    """A node's data directory opened in this process (e.g. one a ``supnet serve`` process ran on)."""
    node = open_node(data_dir)
    try:
        yield node
    finally:
        node.close()


def status_of(tree: Tree, node_id: str, directive_id: str) -> str | None:
    """The directive's status as ``node_id`` sees it; None while it does not hold it."""
    try:
        return get_directive(tree[node_id], directive_id).status
    except NotFoundError:
        return None


def wait_for(condition: Callable[[], Any], *, timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll until ``condition()`` is truthy (returned); AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def directive_tree(tmp_path: Path) -> Iterator[DirectiveTree]:
    built = DirectiveTree(tmp_path / "tree", IDS)
    built.start_loops()
    yield built
    built.close()
