"""What a node implements, whatever the seed: place, codes, items and their workflows, departments, staff.

Items come from the national catalogue (``catalogue.py``): basic codes are shared by every node so roll-ups line up;
implementation codes are the basic code plus a suffix derived from the node id; each node implements a subset
suited to its level (a street far fewer than a district), through its own departments.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from random import Random

from node.config import NODE_ID_PATTERN
from node.errors import ValidationError
from node.synthetic import names
from node.synthetic.catalogue import TYPE_CONFIRMATION, TYPE_LICENCE, CatalogueItem, national_catalogue
from node.synthetic.rates import ITEM_SUBSET_SHARE

_LEVEL_CODES = {1: "2", 2: "3", 3: "4"}  # A.2 by node depth; 4 and deeper: street (5)
_LEVEL_NAMES = {"2": "province", "3": "city", "4": "district", "5": "street"}


@dataclass(frozen=True, slots=True)
class StepTemplate:
    """One step (环节) of an item's workflow: name, responsible post, own limit in working days."""

    name: str
    post: str
    limit: int


@dataclass(frozen=True, slots=True)
class NodeItem:
    """A catalogue item as one node implements it."""

    implementation_code: str
    item: CatalogueItem
    body_name: str
    body_code: str
    channel_code: str
    weight: float
    steps: tuple[StepTemplate, ...]

    def record(self, level_code: str) -> dict[str, str]:
        """The item record (English field names, text values) as written to items.csv."""
        item = self.item
        return {
            "implementation_code": self.implementation_code,
            "basic_code": item.basic_code,
            "name": item.name,
            "type_code": item.type_code,
            "level_code": level_code,
            "body_name": self.body_name,
            "body_code": self.body_code,
            "department": self.body_name,
            "legal_limit": str(item.legal_limit),
            "legal_limit_unit": "1",
            "promised_limit": str(item.promised_limit),
            "promised_limit_unit": "1",
            "fee_flag": "1" if item.charges_fee else "0",
            "fee_standard": f"{item.fee_standard:.2f}" if item.fee_standard is not None else "",
            "channel_code": self.channel_code,
        }


@dataclass(frozen=True, slots=True)
class NodeProfile:
    """Everything about a node that does not depend on the seed: place, codes, items, departments, staff."""

    node_id: str
    level_code: str
    place: str
    area_code: str
    case_prefix: str
    code_suffix: str
    supervision_unit: str
    items: tuple[NodeItem, ...]
    staff: dict[str, dict[str, tuple[str, ...]]] = field(repr=False)

    @property
    def level(self) -> str:
        """The node's level name (province, city, district, street)."""
        return _LEVEL_NAMES[self.level_code]

    @property
    def departments(self) -> tuple[str, ...]:
        """The node's departments (implementing bodies), in item order."""
        return tuple(dict.fromkeys(item.body_name for item in self.items))


def _check_node_id(node_id: str) -> None:
    if not NODE_ID_PATTERN.match(node_id):
        raise ValidationError(
            f"node id {node_id!r}: expected dotted lowercase segments, e.g. gd.gz.py", field="id", reason="bad_code"
        )


def area_code_of(node_id: str) -> str:
    """The 9-digit administrative division code (行政区划) of a node, derived from its id (real codes for the demo)."""
    segments = node_id.split(".")
    parts = [names.area_code_part(".".join(segments[: depth + 1])) for depth in range(min(len(segments), 4))]
    code = "".join(parts)
    if len(segments) > 4:
        # Below street level the 9 digits are used up: keep the district and derive the last three from the id.
        code = code[:6] + f"{names.stable_int('area', node_id) % 1000:03d}"
    return code.ljust(9, "0")


def _display_place(node_id: str) -> str:
    """How bodies of a node are named: 广州市 / 广州市番禺区 / 番禺区市桥街道."""
    segments = node_id.split(".")
    own = names.place_name(node_id)
    if len(segments) <= 2:
        return own
    return names.place_name(".".join(segments[:-1])) + own


def case_prefix_of(node_id: str) -> str:
    """Prefix of the node's case and complaint numbers: the node id itself, unique in the network."""
    prefix = node_id.upper()
    if len(prefix) > 24:
        # Keep numbers within 办件编号 an..50: a long id is replaced by a stable digest of it.
        prefix = f"N{names.stable_int('prefix', node_id) % 10**15:015d}"
    return prefix


def _department_name(department: str, level_code: str, node_id: str) -> str:
    """The name a catalogue department goes by at the node's level (厅 in a province, street offices in a street)."""
    if level_code == "2":
        return names.PROVINCE_DEPARTMENT_NAMES.get(department, department)
    if level_code == "3":
        return names.CITY_DEPARTMENT_NAMES.get(department, department)
    if level_code == "5":
        office = names.STREET_OFFICES.get(department, names.DEFAULT_STREET_OFFICE)
        if office == names.GUANGZHOU_MIGRANT_OFFICE and not node_id.startswith("gd.gz."):
            office = names.MIGRANT_OFFICE  # 来穗 ("come to Guangzhou") names the office in Guangzhou only
        return office
    return department


def _split_limit(total: int, weights: tuple[float, ...]) -> list[int]:
    """Split a promised limit over steps by weight; the remainder goes to the heaviest step; sums to ``total``."""
    limits = [int(total * weight) for weight in weights]
    limits[weights.index(max(weights))] += total - sum(limits)
    return limits


def _step_templates(item: CatalogueItem) -> tuple[StepTemplate, ...]:
    """The workflow of an item: acceptance, review, (check, approval), conclusion, with per-post limits."""
    if item.instant:
        plan: tuple[tuple[str, str, float], ...] = (("受理", names.POST_WINDOW, 0.0), ("办结", names.POST_ISSUE, 1.0))
    elif item.type_code in (TYPE_LICENCE, TYPE_CONFIRMATION) and item.promised_limit >= 3:
        plan = (
            ("受理", names.POST_WINDOW, 0.0),
            ("审查", names.POST_REVIEW, 0.5),
            ("审核", names.POST_CHECK, 0.2),
            ("审批", names.POST_APPROVE, 0.15),
            ("办结", names.POST_ISSUE, 0.15),
        )
    else:
        plan = (("受理", names.POST_WINDOW, 0.0), ("审核", names.POST_CHECK, 0.7), ("办结", names.POST_ISSUE, 0.3))
    limits = _split_limit(item.promised_limit, tuple(weight for _, _, weight in plan))
    return tuple(StepTemplate(name, post, limit) for (name, post, _), limit in zip(plan, limits, strict=True))


def _staff_of(node_id: str, body_name: str) -> dict[str, tuple[str, ...]]:
    """The post holders of one department (stable per node, independent of the seed)."""
    rng = Random(names.stable_int("staff", node_id, body_name))
    sizes = {
        names.POST_WINDOW: 5,
        names.POST_REVIEW: 3,
        names.POST_CHECK: 2,
        names.POST_APPROVE: 1,
        names.POST_ISSUE: 2,
    }
    return {post: tuple(names.person_name(rng) for _ in range(size)) for post, size in sizes.items()}


@cache
def node_profile(node_id: str) -> NodeProfile:
    """The node's place, codes, items and staff: deterministic from the id alone (any seed gives the same items)."""
    _check_node_id(node_id)
    depth = node_id.count(".") + 1
    level_code = _LEVEL_CODES.get(depth, "5")
    area_code = area_code_of(node_id)
    place = _display_place(node_id)
    code_suffix = f"{names.stable_int('implementation', node_id) % 10**14:014d}"
    items: list[NodeItem] = []
    for item in national_catalogue():
        if level_code not in item.levels:
            continue
        if names.stable_fraction("subset", node_id, item.basic_code) >= ITEM_SUBSET_SHARE:
            continue
        body_name = place + _department_name(item.department, level_code, node_id)
        body_code = names.unified_credit_code("1", "1", area_code[:6], names.stable_int("body", node_id, body_name))
        online = names.stable_fraction("channel", node_id, item.basic_code) < 0.3
        weight = item.popularity * (0.5 + names.stable_fraction("weight", node_id, item.basic_code))
        items.append(
            NodeItem(
                # 实施编码 an..24: the shared basic code (10) + 14 digits derived from the node id.
                implementation_code=item.basic_code + code_suffix,
                item=item,
                body_name=body_name,
                body_code=body_code,
                channel_code="2" if online else "1",
                weight=weight,
                steps=_step_templates(item),
            )
        )
    staff = {body: _staff_of(node_id, body) for body in dict.fromkeys(i.body_name for i in items)}
    return NodeProfile(
        node_id=node_id,
        level_code=level_code,
        place=place,
        area_code=area_code,
        case_prefix=case_prefix_of(node_id),
        code_suffix=code_suffix,
        supervision_unit=f"{place}纪委监委",
        items=tuple(items),
        staff=staff,
    )


def iter_item_records(node_id: str) -> Iterator[dict[str, str]]:
    """The item records a node implements (English field names), e.g. to seed a node without any cases."""
    profile = node_profile(node_id)
    for node_item in profile.items:
        yield node_item.record(profile.level_code)
