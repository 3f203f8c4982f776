"""Topologies of a local tree: reading and validating a topology TOML file, and the per-node plan built from it.

A topology names the nodes (ids, levels, names, cases to generate) and the config overrides every node gets;
``build_plan`` turns it into what ``supnet federation setup-node`` needs to prepare each node.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from federation import InvalidArgumentError, NotFoundError
from node.trust import validate_node_id

LEVELS = ("province", "city", "district", "street")


@dataclass(frozen=True)
class TopologyNode:
    """One node of a topology."""

    id: str
    level: str
    name: str = ""
    cases: int = 0
    seed: int = 1

    @property
    def parent_id(self) -> str:
        """The parent's id ('' for the root)."""
        return self.id.rpartition(".")[0]

    @property
    def depth(self) -> int:
        """0 for the root, 1 for its children, ..."""
        return self.id.count(".")


@dataclass(frozen=True)
class Topology:
    """A tree of nodes plus the data to generate and the config every node gets."""

    name: str
    nodes: tuple[TopologyNode, ...]
    date_from: str = ""
    date_to: str = ""
    config: Mapping[str, Any] = field(default_factory=dict)

    @property
    def root(self) -> TopologyNode:
        """The one node without a parent."""
        return next(node for node in self.nodes if not node.parent_id)

    def children_of(self, node_id: str) -> list[TopologyNode]:
        """Direct children of a node, sorted by id."""
        return sorted((node for node in self.nodes if node.parent_id == node_id), key=lambda n: n.id)

    def tiers(self) -> list[list[TopologyNode]]:
        """Nodes grouped by depth, root first."""
        depth = max(node.depth for node in self.nodes)
        return [[node for node in self.nodes if node.depth == level] for level in range(depth + 1)]


def _expect(value: Any, kind: type, where: str) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidArgumentError(f"{where} must be a {kind.__name__}, got {value!r}")
    return value


def parse_topology(data: Mapping[str, Any], source: str = "topology") -> Topology:
    """Validate a topology mapping; errors name the file and the bad key or node."""
    generate = data.get("generate", {})
    _expect(generate, dict, f"{source}: [generate]")
    default_cases = int(_expect(generate.get("cases", 0), int, f"{source}: generate.cases"))
    default_seed = int(_expect(generate.get("seed", 1), int, f"{source}: generate.seed"))
    raw_nodes = data.get("nodes")
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise InvalidArgumentError(f"{source}: needs at least one [[nodes]] entry")
    nodes: list[TopologyNode] = []
    for index, raw in enumerate(raw_nodes):
        where = f"{source}: nodes[{index}]"
        _expect(raw, dict, where)
        unknown = set(raw) - {"id", "level", "name", "cases", "seed"}
        if unknown:
            raise InvalidArgumentError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        node_id = str(raw.get("id", ""))
        try:
            validate_node_id(node_id)
        except InvalidArgumentError as error:
            raise InvalidArgumentError(f"{where}: {error.message}") from error
        level = str(raw.get("level", ""))
        if level not in LEVELS:
            raise InvalidArgumentError(f"{where} ({node_id}): level must be one of {', '.join(LEVELS)}")
        cases = int(_expect(raw.get("cases", default_cases), int, f"{where} ({node_id}): cases"))
        if cases < 0:
            raise InvalidArgumentError(f"{where} ({node_id}): cases must not be negative")
        seed = int(_expect(raw.get("seed", default_seed), int, f"{where} ({node_id}): seed"))
        nodes.append(TopologyNode(node_id, level, str(raw.get("name", "")), cases, seed))
    ids = [node.id for node in nodes]
    duplicates = sorted({node_id for node_id in ids if ids.count(node_id) > 1})
    if duplicates:
        raise InvalidArgumentError(f"{source}: node id(s) listed twice: {', '.join(duplicates)}")
    roots = [node.id for node in nodes if not node.parent_id]
    if len(roots) != 1:
        raise InvalidArgumentError(f"{source}: needs exactly one root node (an id without a dot), found {roots}")
    for node in nodes:
        if node.parent_id and node.parent_id not in ids:
            raise InvalidArgumentError(f"{source}: node {node.id} has no parent {node.parent_id} in the topology")
    config = data.get("config", {})
    _expect(config, dict, f"{source}: [config]")
    return Topology(
        name=str(data.get("name", "")) or Path(source).stem,
        nodes=tuple(sorted(nodes, key=lambda n: (n.depth, n.id))),
        date_from=str(generate.get("from", "")),
        date_to=str(generate.get("to", "")),
        config=config,
    )


def load_topology(path: Path) -> Topology:
    """Read and validate a topology TOML file."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise NotFoundError(f"topology file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise InvalidArgumentError(f"{path}: not valid TOML: {exc}") from exc
    return parse_topology(data, str(path))


def build_plan(
    topology: Topology,
    base_dir: Path,
    addresses: Mapping[str, str],
    keys: Mapping[str, str],
    *,
    insecure_plaintext: bool = False,
) -> dict[str, Any]:
    """Per-node setup instructions: data dir, level, data to generate, and the federation section of its config.

    ``keys`` (node id -> base64 public key) are written only in the insecure plaintext mode; with the PKI the
    keys travel in certificate chains and the configs name ids and addresses only.
    """
    plan_nodes = []
    for node in topology.nodes:
        federation: dict[str, Any] = dict(topology.config.get("federation", {}))
        federation["listen"] = addresses[node.id]
        federation["insecure_plaintext"] = insecure_plaintext
        if node.parent_id:
            federation.update(
                parent_id=node.parent_id,
                parent_address=addresses[node.parent_id],
                parent_public_key=keys.get(node.parent_id, "") if insecure_plaintext else "",
            )
        federation["children"] = [
            {
                "id": child.id,
                "public_key": keys.get(child.id, "") if insecure_plaintext else "",
                "address": addresses[child.id],
            }
            for child in topology.children_of(node.id)
        ]
        config = {section: dict(values) for section, values in topology.config.items() if isinstance(values, dict)}
        config["federation"] = federation
        plan_nodes.append(
            {
                "id": node.id,
                "level": node.level,
                "name": node.name,
                "data_dir": str(base_dir / node.id),
                "cases": node.cases,
                "seed": node.seed,
                "date_from": topology.date_from,
                "date_to": topology.date_to,
                "config": config,
            }
        )
    return {"topology": topology.name, "nodes": plan_nodes}
