"""The simulated province's shape: a topology of cities, districts and streets, and how its nodes share processes.

Ids are ``gd`` / ``gd.c01`` / ``gd.c01.d1`` / ``gd.c01.d1.s01`` (every segment a DNS label). Only streets hold
records, as in a real province; the offices above them only supervise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from node.errors import InvalidArgumentError
from node.localtree import Topology, parse_topology

# The history every street starts with (the synthetic generator's window), and the "new day" imported later.
HISTORY_FROM = "2026-03-02"
HISTORY_TO = "2026-05-29"
NEW_DAY = "20260601T100000"


@dataclass(frozen=True)
class Shape:
    """How many of each level below the province, and the cases every street starts with."""

    cities: int = 21
    districts: int = 6
    streets: int = 13
    cases_per_street: int = 200

    def __post_init__(self) -> None:
        for name in ("cities", "districts", "streets"):
            value = getattr(self, name)
            if not 1 <= value <= 99:
                raise InvalidArgumentError(f"--{name} must be between 1 and 99, got {value}")
        if not 0 <= self.cases_per_street <= 100_000:
            raise InvalidArgumentError(f"--cases-per-street must be between 0 and 100000, got {self.cases_per_street}")

    @property
    def node_count(self) -> int:
        """1 + cities + districts + streets."""
        return 1 + self.cities * (1 + self.districts * (1 + self.streets))

    @property
    def street_count(self) -> int:
        """The leaves."""
        return self.cities * self.districts * self.streets

    def label(self) -> str:
        """``1+21+126+1638``."""
        districts = self.cities * self.districts
        return f"1+{self.cities}+{districts}+{districts * self.streets}"


def province_topology(shape: Shape, config: dict[str, Any], *, seed: int = 17) -> Topology:
    """The topology of the whole province (config: the overrides every node gets)."""
    nodes: list[dict[str, Any]] = [{"id": "gd", "level": "province", "name": "广东省", "cases": 0}]
    for c in range(1, shape.cities + 1):
        city = f"gd.c{c:02d}"
        nodes.append({"id": city, "level": "city", "name": f"第{c}市", "cases": 0})
        for d in range(1, shape.districts + 1):
            district = f"{city}.d{d}"
            nodes.append({"id": district, "level": "district", "name": f"第{c}市第{d}区", "cases": 0})
            for s in range(1, shape.streets + 1):
                nodes.append(
                    {
                        "id": f"{district}.s{s:02d}",
                        "level": "street",
                        "name": f"第{c}市第{d}区第{s}街道",
                        "cases": shape.cases_per_street,
                    }
                )
    data = {
        "name": f"province-{shape.label()}",
        "generate": {"seed": seed, "from": HISTORY_FROM, "to": HISTORY_TO},
        "config": config,
        "nodes": nodes,
    }
    return parse_topology(data, "simulate province")
