"""The ancestor's half: pick a committed bucket and leaves after the report was signed, then judge the opening.

``plan_check`` draws the bucket and the leaves with the caller's random source (the operating system's, except in
seeded tests), so the target cannot know beforehand which leaves it must open. ``judge_answer`` checks every path
against the signed root, that the root's sums are the bucket's counters, re-judges every opened record
(node.spotcheck.records.rejudge) and, for the requested adjacent pairs, that neighbouring case numbers leave no gap.
``detection_probability`` is what a clean check is worth: 1 − C(n−k, N) / C(n, N).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Protocol

from federation.proto.v1.common_pb2 import Counters
from federation.proto.v1.report_pb2 import ReportBody
from federation.proto.v1.spotcheck_pb2 import BucketCommitment, SpotCheckAnswer, SpotCheckRequest
from node.domain import WorkCalendar
from node.errors import CalendarError
from node.spotcheck.records import ROLE_RECEIVED, BucketKey, leaf_sums, rejudge
from node.spotcheck.tree import SUM_FIELDS, PathNode, root_from_path
from node.spotcheck.tree import leaf_digest as digest_of_leaf

__all__ = [
    "Asker",
    "Finding",
    "SpotCheckPlan",
    "SpotCheckResult",
    "detection_probability",
    "judge_answer",
    "plan_check",
    "run_spot_check",
]

COMMITTED_COUNTERS: tuple[str, ...] = SUM_FIELDS[1:]
_NUMBERED = re.compile(r"^(.*?)(\d+)$")


def detection_probability(leaves: int, falsified: int, samples: int) -> float:
    """Probability that ``samples`` leaves drawn without replacement from ``leaves`` hit one of ``falsified``."""
    if leaves <= 0 or falsified <= 0 or samples <= 0:
        return 0.0
    samples = min(samples, leaves)
    falsified = min(falsified, leaves)
    return 1.0 - math.comb(leaves - falsified, samples) / math.comb(leaves, samples)


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing the check found wrong: which record (or the bucket), which field, what was reported, what is true."""

    kind: str  # record | count | proof | gap | uncommitted
    field: str
    reported: str
    rejudged: str
    case_no: str = ""
    leaf_index: int = -1

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (audit detail, --json)."""
        return {
            "kind": self.kind,
            "case_no": self.case_no,
            "leaf_index": self.leaf_index,
            "field": self.field,
            "reported": self.reported,
            "rejudged": self.rejudged,
        }


@dataclass(frozen=True, slots=True)
class SpotCheckPlan:
    """What one check asks: the bucket of a signed report, its commitment and the leaves drawn."""

    target: str
    report_sequence: int
    key: BucketKey
    counters: dict[str, int]
    has_children: bool
    commitment: BucketCommitment | None
    samples: tuple[int, ...] = ()
    pair_starts: tuple[int, ...] = ()

    @property
    def indices(self) -> list[int]:
        """Every leaf to open: the samples and both leaves of each adjacent pair."""
        wanted = set(self.samples)
        for start in self.pair_starts:
            wanted.update((start, start + 1))
        return sorted(wanted)

    def request(self) -> SpotCheckRequest:
        """The drill-down request opening the leaves."""
        day, basic_code, item_type_code = self.key
        return SpotCheckRequest(
            report_sequence=self.report_sequence,
            day=day.isoformat(),
            basic_code=basic_code,
            item_type_code=item_type_code,
            root=self.commitment.root if self.commitment is not None else b"",
            leaf_indices=self.indices,
        )


@dataclass(slots=True)
class SpotCheckResult:
    """The outcome: findings (empty when clean) and what a clean result is worth."""

    plan: SpotCheckPlan
    findings: list[Finding] = field(default_factory=list)
    opened: int = 0

    @property
    def leaf_count(self) -> int:
        """Leaves committed for the bucket."""
        return int(self.plan.commitment.leaf_count) if self.plan.commitment is not None else 0

    def probability(self, falsified: int) -> float:
        """Detection probability of the sample drawn, if ``falsified`` leaves were lies (at least: pairs open more)."""
        return detection_probability(self.leaf_count, falsified, len(self.plan.samples))

    def gap_probability(self, gaps: int) -> float:
        """Probability that the adjacent pairs drawn cross one of ``gaps`` missing-number gaps."""
        return detection_probability(max(self.leaf_count - 1, 0), gaps, len(self.plan.pair_starts))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (audit detail, --json)."""
        day, basic_code, item_type_code = self.plan.key
        n = self.leaf_count
        return {
            "target": self.plan.target,
            "report_sequence": self.plan.report_sequence,
            "day": day.isoformat(),
            "basic_code": basic_code,
            "item_type_code": item_type_code,
            "leaf_count": n,
            "samples": len(self.plan.samples),
            "pairs": len(self.plan.pair_starts),
            "opened": self.opened,
            "clean": not self.findings,
            "detection_probability": {
                "k=1": round(self.probability(1), 4),
                "k=1%": round(self.probability(max(1, math.ceil(n * 0.01))), 4),
                "k=5%": round(self.probability(max(1, math.ceil(n * 0.05))), 4),
            },
            "gap_probability": {"g=1": round(self.gap_probability(1), 4), "g=3": round(self.gap_probability(3), 4)},
            "findings": [finding.to_dict() for finding in self.findings],
        }


def _counters(counters: Counters) -> dict[str, int]:
    return {name: int(getattr(counters, name)) for name in COMMITTED_COUNTERS}


def _draw(rng: random.Random, population: int, count: int) -> tuple[int, ...]:
    return tuple(sorted(rng.sample(range(population), min(count, population)))) if population > 0 else ()


def plan_check(
    report: ReportBody,
    rng: random.Random,
    *,
    samples: int,
    pairs: int = 0,
    day_from: date | None = None,
    day_to: date | None = None,
) -> SpotCheckPlan | None:
    """Choose a bucket of ``report`` (in the days given) and the leaves to open; None when it has none to check.

    Only buckets a check can say something about are drawn: those with a commitment, and, at a node without
    children, any bucket whose committed counters are not zero (one without a commitment is itself a finding).
    """
    commitments = {(c.day, c.basic_code, c.item_type_code): c for c in report.commitments}
    has_children = len(report.child_reports) > 0
    candidates: list[tuple[BucketKey, dict[str, int], BucketCommitment | None]] = []
    buckets = {(b.day, b.basic_code, b.item_type_code): _counters(b.counters) for b in report.buckets}
    for text_key in sorted(set(buckets) | set(commitments)):
        day = date.fromisoformat(text_key[0])
        if (day_from is not None and day < day_from) or (day_to is not None and day > day_to):
            continue
        counters = buckets.get(text_key, dict.fromkeys(COMMITTED_COUNTERS, 0))
        commitment = commitments.get(text_key)
        if commitment is None and (has_children or not any(counters.values())):
            continue
        candidates.append(((day, text_key[1], text_key[2]), counters, commitment))
    if not candidates:
        return None
    key, counters, commitment = candidates[rng.randrange(len(candidates))]
    n = int(commitment.leaf_count) if commitment is not None else 0
    return SpotCheckPlan(
        target=report.node_id,
        report_sequence=int(report.sequence),
        key=key,
        counters=counters,
        has_children=has_children,
        commitment=commitment,
        samples=_draw(rng, n, samples),
        pair_starts=_draw(rng, n - 1, pairs),
    )


def _count_findings(plan: SpotCheckPlan, sums: Sequence[int]) -> list[Finding]:
    found = []
    for name, committed in zip(COMMITTED_COUNTERS, sums[1:], strict=True):
        reported = plan.counters.get(name, 0)
        wrong = committed > reported if plan.has_children else committed != reported
        if wrong:
            found.append(Finding("count", name, str(reported), f"{committed} (committed leaves)"))
    return found


def _gap(first: str, second: str) -> Finding | None:
    a, b = _NUMBERED.match(first), _NUMBERED.match(second)
    if a is None or b is None or a.group(1) != b.group(1):
        return None  # numbers of different series: nothing to say about what lies between
    step = int(b.group(2)) - int(a.group(2))
    if step == 1:
        return None
    missing = f"缺少 {step - 1} 个编号 (missing {step - 1})" if step > 1 else "编号顺序错误 (out of order)"
    return Finding("gap", "case_no", f"{first} → {second}", missing, case_no=second)


def judge_answer(plan: SpotCheckPlan, answer: SpotCheckAnswer, cal: WorkCalendar) -> SpotCheckResult:
    """Check an opening against the plan's signed commitment and counters; every problem is a Finding."""
    result = SpotCheckResult(plan)
    commitment = plan.commitment
    if commitment is None:
        result.findings = [
            Finding("uncommitted", name, str(value), "0 (no commitment)")
            for name, value in plan.counters.items()
            if value
        ]
        return result
    opened = {opening.index: opening for opening in answer.openings}
    result.opened = len(opened)
    for index in plan.indices:
        if index not in opened:
            result.findings.append(Finding("proof", "leaf", "not opened", f"leaf {index} was asked", leaf_index=index))
    root_sums: tuple[int, ...] | None = None
    good: dict[int, Any] = {}
    for index, opening in sorted(opened.items()):
        if index not in plan.indices:
            result.findings.append(Finding("proof", "leaf", f"leaf {index} opened", "not asked", leaf_index=index))
            continue
        record = opening.record
        leaf = digest_of_leaf(bytes(opening.salt), record.SerializeToString(deterministic=True))
        path = [PathNode(bytes(node.digest), tuple(int(v) for v in node.sums)) for node in opening.path]
        walked = root_from_path(int(commitment.leaf_count), index, leaf, leaf_sums(record), path)
        if walked.problem or walked.root != commitment.root:
            why = walked.problem or "the path does not lead to the signed root"
            result.findings.append(Finding("proof", "path", why, "signed root", record.case_no, index))
            continue
        root_sums = walked.sums
        good[index] = opening
        try:
            mismatches = rejudge(record, plan.key, cal)
        except (CalendarError, ValueError) as exc:
            result.findings.append(Finding("record", "deadline", "cannot re-judge", str(exc), record.case_no, index))
            continue
        for mismatch in mismatches:
            result.findings.append(
                Finding("record", mismatch.field, mismatch.reported, mismatch.rejudged, record.case_no, index)
            )
    if root_sums is not None:
        result.findings.extend(_count_findings(plan, root_sums))
    for start in plan.pair_starts:
        first, second = good.get(start), good.get(start + 1)
        if first is None or second is None:
            continue
        if first.record.role == ROLE_RECEIVED and second.record.role == ROLE_RECEIVED:
            gap = _gap(first.record.case_no, second.record.case_no)
            if gap is not None:
                result.findings.append(gap)
    return result


class Asker(Protocol):
    """How the ancestor reaches the target (the signed drill-down path, or in-process in tests)."""

    def reports(self, target: str) -> Iterator[ReportBody]:
        """The target's own signed reports, newest first (verified by the asker)."""
        ...

    def open(self, target: str, request: SpotCheckRequest) -> SpotCheckAnswer:
        """Ask the target to open the leaves."""
        ...


def run_spot_check(
    asker: Asker,
    target: str,
    cal: WorkCalendar,
    rng: random.Random,
    *,
    samples: int,
    pairs: int = 0,
    day_from: date | None = None,
    day_to: date | None = None,
    max_reports: int = 50,
) -> SpotCheckResult | None:
    """One spot check of ``target``: the newest report with a bucket in the days, drawn, opened and judged."""
    for count, report in enumerate(asker.reports(target)):
        if count >= max_reports:
            break
        plan = plan_check(report, rng, samples=samples, pairs=pairs, day_from=day_from, day_to=day_to)
        if plan is None:
            continue
        if plan.commitment is None:
            return judge_answer(plan, SpotCheckAnswer(), cal)
        return judge_answer(plan, asker.open(target, plan.request()), cal)
    return None
