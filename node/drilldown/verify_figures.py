"""The arithmetic of ``supnet verify``: signed states grouped by day and by item, and the differences it reports.

Counters travel here as lists in COUNTER_FIELDS order (one list per key), not as dicts: a verification of a
province adds up every bucket of every node's signed state, and list arithmetic is what keeps that cheap.
A node's state is grouped once (``SignedFigures.of``); its parent sums the children's groups, not their buckets.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import add

from federation import COUNTER_FIELDS, replay_report_vectors, replay_reports
from federation.proto.v1.report_pb2 import ReportBody

GAUGES = frozenset({"open_cases", "open_overdue_promised", "open_overdue_legal"})

BucketKey = tuple[str, str, str]
CounterDict = dict[str, int]
Vector = list[int]

_ZERO: tuple[int, ...] = (0,) * len(COUNTER_FIELDS)


def vector(values: Mapping[str, int]) -> Vector:
    """Counters by name as a list in COUNTER_FIELDS order (missing counters are 0)."""
    return [int(values.get(name, 0)) for name in COUNTER_FIELDS]


def add_into(into: dict[str, Vector], key: str, values: Sequence[int]) -> None:
    """Add values to into[key], counter by counter."""
    current = into.get(key)
    into[key] = list(values) if current is None else list(map(add, current, values))


def add_groups(into: dict[str, Vector], groups: Mapping[str, Sequence[int]]) -> None:
    """Add every group to into, key by key."""
    for key, values in groups.items():
        add_into(into, key, values)


def replay(history: Iterable[ReportBody]) -> dict[BucketKey, CounterDict]:
    """A node's signed state from its reports in order (federation.replay_reports)."""
    return replay_reports(history)


def replay_vectors(history: Iterable[ReportBody]) -> dict[BucketKey, Vector]:
    """``replay`` with each bucket's counters as a list (federation.replay_report_vectors)."""
    return replay_report_vectors(history)


def grouped(state: Mapping[BucketKey, Mapping[str, int]], position: int) -> dict[str, Vector]:
    """Σ of a signed state's buckets by day (position 0) or by item basic code (position 1)."""
    groups: dict[str, Vector] = {}
    for key, values in state.items():
        add_into(groups, key[position], vector(values))
    return groups


@dataclass(frozen=True)
class SignedFigures:
    """A node's signed state as its parent checks it: by day, by item basic code, and its total."""

    by_day: dict[str, Vector]
    by_item: dict[str, Vector]
    total: Vector

    @classmethod
    def of(cls, state: Mapping[BucketKey, Mapping[str, int]]) -> SignedFigures:
        """Group a replayed state (``replay``) once."""
        return cls.of_vectors({key: vector(values) for key, values in state.items()})

    @classmethod
    def of_vectors(cls, state: Mapping[BucketKey, Sequence[int]]) -> SignedFigures:
        """Group a replayed state (``replay_vectors``) once."""
        by_day: dict[str, Vector] = {}
        by_item: dict[str, Vector] = {}
        for (day, basic_code, _), values in state.items():
            add_into(by_day, day, values)
            add_into(by_item, basic_code, values)
        total = list(_ZERO)
        for values in by_day.values():
            total = list(map(add, total, values))
        return cls(by_day=by_day, by_item=by_item, total=total)


def _differences(
    signed: Mapping[str, Sequence[int]], expected: Mapping[str, Sequence[int]]
) -> tuple[list[str], list[str]]:
    """(hard differences, gauge differences) as 'key counter: signed X, data Y' lines."""
    hard: list[str] = []
    gauges: list[str] = []
    for key in sorted(set(signed) | set(expected)):
        left, right = signed.get(key, _ZERO), expected.get(key, _ZERO)
        if tuple(left) == tuple(right):
            continue
        for name, a, b in zip(COUNTER_FIELDS, left, right, strict=True):
            if a != b:
                line = f"{key} {name}: signed {a}, data {b}"
                (gauges if name in GAUGES else hard).append(line)
    return hard, gauges


def grouped_differences(
    signed: SignedFigures,
    own_by_day: Mapping[str, Sequence[int]],
    own_by_item: Mapping[str, Sequence[int]],
    children_by_day: Mapping[str, Sequence[int]],
    children_by_item: Mapping[str, Sequence[int]],
) -> tuple[list[str], list[str]]:
    """Signed totals against own records + the children's signed totals, each already grouped by day and item.

    Returns (hard differences, gauge differences) as 'day|item key counter: signed X, data Y' lines.
    """
    hard: list[str] = []
    gauges: list[str] = []
    sides = (
        ("day", signed.by_day, own_by_day, children_by_day),
        ("item", signed.by_item, own_by_item, children_by_item),
    )
    for label, signed_groups, own, children in sides:
        expected = {key: list(values) for key, values in own.items()}
        add_groups(expected, children)
        found_hard, found_gauges = _differences(signed_groups, expected)
        hard += [f"{label} {line}" for line in found_hard]
        gauges += [f"{label} {line}" for line in found_gauges]
    return hard, gauges


def totals_differences(
    signed: Mapping[BucketKey, CounterDict],
    own_by_day: Mapping[str, CounterDict],
    own_by_item: Mapping[str, CounterDict],
    children_state: Mapping[BucketKey, CounterDict],
) -> tuple[list[str], list[str]]:
    """Check 4: a node's signed totals against its own records + its children's signed totals.

    ``own_by_day`` / ``own_by_item`` are the node's own counters recomputed from its raw records, keyed by
    ``YYYY-MM-DD`` day and by item basic code. Returns (hard differences, gauge differences) as
    'day|item key counter: signed X, data Y' lines; any hard difference fails the verification.
    """
    return grouped_differences(
        SignedFigures.of(signed),
        {key: vector(values) for key, values in own_by_day.items()},
        {key: vector(values) for key, values in own_by_item.items()},
        grouped(children_state, 0),
        grouped(children_state, 1),
    )
