"""Spot checks over a real district store: an honest node passes, three kinds of dishonest district are caught
with the probability the check prints (measured over seeded runs, within the binomial interval)."""

from __future__ import annotations

import math
import random
from datetime import date

import pytest
from sqlalchemy import delete, update

from federation.proto.v1.common_pb2 import Counters
from federation.proto.v1.report_pb2 import Bucket, ReportBody
from federation.proto.v1.spotcheck_pb2 import BucketCommitment, SpotCheckRequest
from node.app import Node
from node.reporting import build_reports
from node.spotcheck import (
    Leaf,
    SpotCheckResult,
    bucket_leaves,
    detection_probability,
    judge_answer,
    leaf_tree,
    openings,
    plan_check,
    run_spot_check,
    salt_key,
)
from node.store import Alert, Case, Completion, MetricBucket, Step
from node.supervision import rebuild_buckets
from node.trust import signing_identity
from tests.spotcheck.conftest import ACCEPT_DAY, COMPLETE_DAY, NODE_ID, LocalAsker

RUNS = 200
BASIC = "0000123401"
ITEM_TYPE = "01"


def _within_binomial(hits: int, runs: int, p: float, tail: float = 0.0005) -> bool:
    """True unless ``hits`` lies in either 0.05% tail of Binomial(runs, p) (a 99.9% two-sided interval)."""
    below = sum(math.comb(runs, i) * p**i * (1 - p) ** (runs - i) for i in range(hits + 1))
    above = sum(math.comb(runs, i) * p**i * (1 - p) ** (runs - i) for i in range(hits, runs + 1))
    return below > tail and above > tail


def _check(node: Node, seed: int, day: date | None, *, samples: int = 30, pairs: int = 0) -> SpotCheckResult:
    result = run_spot_check(
        LocalAsker(node),
        NODE_ID,
        node.calendar,
        random.Random(seed),
        samples=samples,
        pairs=pairs,
        day_from=day,
        day_to=day,
    )
    assert result is not None
    return result


def test_report_commits_to_own_buckets_with_small_fixed_size(district: Node) -> None:
    [built] = build_reports(district, "incremental")
    body = ReportBody()
    body.ParseFromString(built.envelope.body)
    keyed = {(c.day, c.basic_code, c.item_type_code): c for c in body.commitments}
    buckets = {(b.day, b.basic_code, b.item_type_code): b for b in body.buckets}
    assert set(keyed) <= set(buckets) and len(keyed) >= 2
    accept = keyed[(ACCEPT_DAY.isoformat(), BASIC, ITEM_TYPE)]
    complete = keyed[(COMPLETE_DAY.isoformat(), BASIC, ITEM_TYPE)]
    assert accept.leaf_count == 200  # the 200 cases accepted that day
    assert complete.leaf_count == 201  # the 200 February cases completed that day, and case 70 of 2 March
    assert all(len(c.SerializeToString()) < 80 for c in body.commitments)  # root + count + key, whatever n


@pytest.mark.slow
def test_honest_district_passes_a_thousand_seeded_checks(sqlite_district: Node) -> None:
    district = sqlite_district
    build_reports(district, "incremental")
    days = [None, ACCEPT_DAY, COMPLETE_DAY]
    buckets = set()
    for seed in range(1000):
        result = _check(district, seed, days[seed % 3], samples=30, pairs=10)
        assert result.findings == [], (seed, result.findings[:3])
        assert result.opened >= min(30, result.leaf_count)
        buckets.add(result.plan.key)
    assert len(buckets) > 3  # the undirected checks drew many buckets


def _dishonest_on_time(node: Node, rng: random.Random) -> tuple[ReportBody, list[Leaf], int]:
    """(a) A district that rewrites completed_on_time on 5% of the completion day's cases, counts and leaves alike."""
    key = (COMPLETE_DAY, BASIC, ITEM_TYPE)
    leaves = bucket_leaves_of(node, key)
    lies = rng.sample(range(len(leaves)), len(leaves) // 20)
    for index in lies:
        leaves[index].record.counted_on_time = not leaves[index].record.counted_on_time
    return _signed_view(key, leaves), leaves, len(lies)


def bucket_leaves_of(node: Node, key: tuple[date, str, str]) -> list[Leaf]:
    with node.engine.connect() as conn:
        return bucket_leaves(conn, [key], salt_key(signing_identity(node)))[key]


def _signed_view(key: tuple[date, str, str], leaves: list[Leaf]) -> ReportBody:
    """The report body the dishonest district signs: counters that match its (falsified) leaves."""
    tree = leaf_tree(leaves)
    day = key[0].isoformat()
    counters = Counters(
        **dict(
            zip(
                (
                    "received",
                    "completed",
                    "completed_early",
                    "completed_on_time",
                    "completed_within_legal",
                    "refused",
                    "cases_returned",
                ),
                tree.sums[1:],
                strict=True,
            )
        )
    )
    return ReportBody(
        node_id=NODE_ID,
        sequence=1,
        buckets=[Bucket(day=day, basic_code=key[1], item_type_code=key[2], counters=counters)],
        commitments=[
            BucketCommitment(
                day=day, basic_code=key[1], item_type_code=key[2], leaf_count=tree.leaf_count, root=tree.root
            )
        ],
    )


@pytest.mark.slow
def test_a_rewritten_on_time_flags_caught_with_the_printed_probability(sqlite_district: Node) -> None:
    district = sqlite_district
    report, leaves, lies = _dishonest_on_time(district, random.Random(7))
    tree = leaf_tree(leaves)
    caught = 0
    printed = 0.0
    for seed in range(RUNS):
        plan = plan_check(report, random.Random(seed), samples=30)
        assert plan is not None
        result = judge_answer(plan, openings(tree, leaves, plan.indices), district.calendar)
        printed = result.probability(lies)
        assert {f.field for f in result.findings} <= {"completed_on_time"}
        caught += bool(result.findings)
    assert lies == 10 and printed == detection_probability(201, 10, 30)
    assert 0.5 < printed < 0.9
    assert _within_binomial(caught, RUNS, printed), (caught, printed)


@pytest.mark.slow
def test_b_count_above_the_committed_leaves_caught_every_run(sqlite_district: Node) -> None:
    district = sqlite_district
    # The district inflates the received counter of the acceptance day in its buckets, then reports.
    with district.engine.begin() as conn:
        conn.execute(
            update(MetricBucket)
            .where(MetricBucket.day == ACCEPT_DAY)
            .values(received=MetricBucket.received + 5, revision=MetricBucket.revision + 1000)
        )
    build_reports(district, "incremental")
    for seed in range(RUNS):
        result = _check(district, seed, ACCEPT_DAY)
        assert [(f.kind, f.field, f.reported) for f in result.findings] == [("count", "received", "205")]


@pytest.mark.slow
def test_c_removed_overdue_cases_found_as_gaps_with_the_printed_probability(sqlite_district: Node) -> None:
    district = sqlite_district
    removed = ["PY-20260302-00051", "PY-20260302-00123", "PY-20260302-00177"]  # open and overdue at NOW
    with district.engine.begin() as conn:
        for table in (Alert, Step, Completion):
            conn.execute(delete(table).where(table.case_no.in_(removed)))  # type: ignore[attr-defined]
        assert conn.execute(delete(Case).where(Case.case_no.in_(removed), Case.status == "open")).rowcount == 3
    rebuild_buckets(district)  # counts made to agree with the shortened records: a consistent lie
    build_reports(district, "incremental")
    caught, printed = 0, 0.0
    for seed in range(RUNS):
        result = _check(district, seed, ACCEPT_DAY, samples=5, pairs=30)
        assert result.leaf_count == 197
        assert {f.kind for f in result.findings} <= {"gap"}
        printed = result.gap_probability(3)
        caught += bool(result.findings)
    assert printed == detection_probability(196, 3, 30)
    assert _within_binomial(caught, RUNS, printed), (caught, printed)


def test_forged_openings_and_paths_are_findings(sqlite_district: Node) -> None:
    district = sqlite_district
    key = (COMPLETE_DAY, BASIC, ITEM_TYPE)
    leaves = bucket_leaves_of(district, key)
    report = _signed_view(key, leaves)
    tree = leaf_tree(leaves)
    plan = plan_check(report, random.Random(1), samples=3)
    assert plan is not None
    answer = openings(tree, leaves, plan.indices)
    answer.openings[0].record.completed_at = "2026-03-09T15:00:00"  # a date changed after committing
    answer.openings[1].path[0].sums[0] = 2  # a sibling claiming more leaves than the shape gives it
    del answer.openings[2]  # a leaf not opened
    kinds = sorted((f.kind, f.field) for f in judge_answer(plan, answer, district.calendar).findings)
    assert kinds == [("proof", "leaf"), ("proof", "path"), ("proof", "path")]


def test_target_refuses_to_open_another_root_or_outside_leaves(district: Node) -> None:
    from node.errors import InvalidArgumentError, InvalidStateError

    build_reports(district, "incremental")
    asker = LocalAsker(district)
    report = next(asker.reports(NODE_ID))
    commitment = next(c for c in report.commitments if c.day == ACCEPT_DAY.isoformat())
    request = SpotCheckRequest(
        report_sequence=report.sequence,
        day=commitment.day,
        basic_code=BASIC,
        item_type_code=ITEM_TYPE,
        root=commitment.root,
        leaf_indices=[0, 199],
    )
    with district.engine.begin() as conn:  # the bucket's records change after the report was signed
        conn.execute(update(Case).where(Case.case_no == "PY-20260302-00002").values(promised_limit=9))
    with pytest.raises(InvalidStateError, match="changed after"):
        asker.open(NODE_ID, request)
    with district.engine.begin() as conn:  # put back: the committed tree opens, and stays openable once opened
        conn.execute(update(Case).where(Case.case_no == "PY-20260302-00002").values(promised_limit=5))
    assert [o.index for o in asker.open(NODE_ID, request).openings] == [0, 199]
    with district.engine.begin() as conn:
        conn.execute(update(Case).where(Case.case_no == "PY-20260302-00002").values(promised_limit=9))
    assert [o.index for o in asker.open(NODE_ID, request).openings] == [0, 199]
    with pytest.raises(InvalidArgumentError, match="outside"):
        asker.open(NODE_ID, SpotCheckRequest(**{**_fields(request), "leaf_indices": [200]}))
    with pytest.raises(InvalidStateError, match="never this node's"):
        asker.open(NODE_ID, SpotCheckRequest(**{**_fields(request), "root": bytes(32)}))
    with pytest.raises(InvalidArgumentError, match="names the signed root"):
        asker.open(NODE_ID, SpotCheckRequest(**{**_fields(request), "root": b""}))


def _fields(request: SpotCheckRequest) -> dict[str, object]:
    return {
        "report_sequence": request.report_sequence,
        "day": request.day,
        "basic_code": request.basic_code,
        "item_type_code": request.item_type_code,
        "root": request.root,
        "leaf_indices": list(request.leaf_indices),
    }
