"""Roll-up over real multi-node trees: province totals equal the sum of every node's own data."""

from __future__ import annotations

import itertools
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from federation import COUNTER_FIELDS, outbox_table, parse_body, received_reports, validate_report_body, verify_history
from federation.proto.v1.common_pb2 import SignedEnvelope
from federation.proto.v1.node_service_pb2 import NodeInfoRequest
from federation.proto.v1.report_pb2 import ReportBody, ReportKind
from node.reporting import node_outbox, subtree_view
from node.store import ChildBucket
from tests.harness.reports import add_totals, nonzero, own_totals, received_by_key, subtree_of
from tests.harness.tree import Tree

PROVINCE_TREE = ["gd", "gd.gz", "gd.gz.py", "gd.gz.th", "gd.sz"]
RECEIVED = COUNTER_FIELDS.index("received")


@pytest.fixture
def tree_ids() -> list[str]:
    return PROVINCE_TREE


def _sent_bodies(tree: Tree, node_id: str) -> list[ReportBody]:
    with tree[node_id].engine.connect() as conn:
        envelopes = conn.execute(select(outbox_table.c.envelope).order_by(outbox_table.c.sequence)).scalars().all()
    return [parse_body(SignedEnvelope.FromString(raw), ReportBody) for raw in envelopes]


def test_province_totals_equal_the_sum_of_all_nodes_data(tree: Tree) -> None:
    # Leaves and the city itself hold data; the province holds none of its own.
    for seed, node_id in enumerate(["gd.gz.py", "gd.gz.th", "gd.sz", "gd.gz"], start=1):
        tree.import_synthetic(node_id, cases=120, seed=seed)
    tree.report_up()

    expected = add_totals(*(own_totals(tree[node_id]) for node_id in PROVINCE_TREE))
    assert sum(values[RECEIVED] for values in expected.values()) == 480
    assert nonzero(subtree_of(tree["gd"])) == nonzero(expected)
    # Cross-check "received" against the raw cases tables, independent of every bucket.
    raw_received: dict[tuple[object, ...], int] = {}
    for node_id in PROVINCE_TREE:
        for key, count in received_by_key(tree[node_id]).items():
            raw_received[key] = raw_received.get(key, 0) + count
    province = subtree_of(tree["gd"])
    assert {key: values[RECEIVED] for key, values in province.items() if values[RECEIVED]} == raw_received
    # The city's subtree is its own data plus its two districts, not the province's other city.
    city_expected = add_totals(*(own_totals(tree[n]) for n in ["gd.gz", "gd.gz.py", "gd.gz.th"]))
    assert nonzero(subtree_of(tree["gd.gz"])) == nonzero(city_expected)

    view = subtree_view(tree["gd"], group_by=())
    assert view.rows[0]["received"] == 480
    assert (view.completeness.nodes_in_subtree, view.completeness.nodes_reported_in_window) == (5, 5)
    assert [(child.child_id, child.state) for child in view.children] == [("gd.gz", "fresh"), ("gd.sz", "fresh")]


def test_reports_are_keyed_by_item_not_node_and_name_their_children(tree: Tree) -> None:
    for seed, node_id in enumerate(["gd.gz.py", "gd.gz.th"], start=1):
        tree.import_synthetic(node_id, cases=80, seed=seed)
    tree.report_up()
    city_report = _sent_bodies(tree, "gd.gz")[-1]
    district_reports = {node_id: _sent_bodies(tree, node_id)[-1] for node_id in ["gd.gz.py", "gd.gz.th"]}
    for body in [city_report, *district_reports.values()]:
        validate_report_body(body)  # canonical: sorted, each key once
    city_keys = {(b.day, b.basic_code, b.item_type_code) for b in city_report.buckets}
    district_keys = [
        {(b.day, b.basic_code, b.item_type_code) for b in body.buckets} for body in district_reports.values()
    ]
    # Same keys in two districts merge into one bucket: the city report is the union, not the concatenation.
    assert city_keys == district_keys[0] | district_keys[1]
    assert len(city_report.buckets) < sum(len(keys) for keys in district_keys)
    # The city's report names the exact district reports it rolled up, and its completeness adds theirs.
    with tree["gd.gz"].engine.connect() as conn:
        stored = {
            row.child_id: (row.sequence, bytes(row.digest))
            for row in conn.execute(
                select(received_reports.c.child_id, received_reports.c.sequence, received_reports.c.digest)
            )
        }
    assert {ref.child_id: (ref.sequence, ref.digest) for ref in city_report.child_reports} == stored
    assert (city_report.completeness.nodes_in_subtree, city_report.completeness.nodes_reported_in_window) == (3, 3)
    # Every node's sent history is one unbroken hash chain.
    for node_id in ["gd.gz", "gd.gz.py", "gd.gz.th"]:
        with tree[node_id].engine.connect() as conn:
            raws = conn.execute(select(outbox_table.c.envelope).order_by(outbox_table.c.sequence)).scalars().all()
        head = verify_history(SignedEnvelope.FromString(raw) for raw in raws)
        assert head is not None and head.sequence == len(raws)


def test_incremental_report_carries_only_changed_keys_and_totals_stay_exact(tree: Tree) -> None:
    tree.import_synthetic("gd.gz.py", cases=100, seed=1, date_to=date(2025, 3, 14))
    tree.import_synthetic("gd.sz", cases=100, seed=2)
    tree.report_up()
    first = _sent_bodies(tree, "gd.gz.py")[-1]
    # New data at one district only, in a later week (case numbers carry the day, so they are new cases).
    tree.import_synthetic("gd.gz.py", cases=40, seed=3, date_from=date(2025, 3, 17), date_to=date(2025, 3, 21))
    tree.report_up()
    second = _sent_bodies(tree, "gd.gz.py")[-1]
    assert second.kind == ReportKind.REPORT_KIND_INCREMENTAL
    assert second.sequence == first.sequence + 1 and second.base_revision == first.up_to_revision
    assert 0 < len(second.buckets) < len(first.buckets) + 40
    # The other city's report of this round is a heartbeat: nothing changed there.
    assert len(_sent_bodies(tree, "gd.sz")[-1].buckets) == 0
    expected = add_totals(*(own_totals(tree[node_id]) for node_id in PROVINCE_TREE))
    assert nonzero(subtree_of(tree["gd"])) == nonzero(expected)
    assert sum(values[RECEIVED] for values in subtree_of(tree["gd"]).values()) == 240


def test_full_report_heals_drift_and_zeroes_vanished_keys(tree: Tree) -> None:
    tree.import_synthetic("gd.sz", cases=100, seed=5)
    tree.report_up()
    expected = nonzero(add_totals(own_totals(tree["gd.sz"])))
    child_buckets = ChildBucket.__table__
    # Drift at the province: one of the city's buckets altered, and a bogus key the city never had.
    with tree["gd"].engine.begin() as conn:
        some = conn.execute(select(child_buckets.c.day, child_buckets.c.basic_code).limit(1)).one()
        conn.execute(
            child_buckets.update()
            .where(child_buckets.c.day == some.day, child_buckets.c.basic_code == some.basic_code)
            .values(received=child_buckets.c.received + 1000)
        )
        conn.execute(
            child_buckets.insert().values(
                child_id="gd.sz",
                day=some.day,
                basic_code="BOGUS00001",
                item_type_code="01",
                received=7,
                revision=0,
                **{name: 0 for name in COUNTER_FIELDS if name != "received"},
            )
        )
    assert nonzero(subtree_of(tree["gd"])) != expected
    result = tree.sender("gd.sz").report_now("full")
    assert not result.failed and result.acked == 1
    assert nonzero(subtree_of(tree["gd"])) == expected
    # The bogus key is zeroed (kept, with a new revision), so the province's next report carries the drop upward.
    with tree["gd"].engine.connect() as conn:
        bogus = conn.execute(select(child_buckets.c.received).where(child_buckets.c.basic_code == "BOGUS00001")).one()
    assert bogus.received == 0
    full = _sent_bodies(tree, "gd.sz")[-1]
    assert full.kind == ReportKind.REPORT_KIND_FULL and full.window_start_day <= full.window_end_day


def test_get_node_info_names_the_node_its_children_and_latest_report(tree: Tree) -> None:
    tree.import_synthetic("gd.gz.py", cases=30, seed=1)
    tree.report_up()
    stub, channel = tree.stub("gd.gz")
    try:
        info = stub.GetNodeInfo(NodeInfoRequest(), timeout=5)
    finally:
        channel.close()
    assert (info.node_id, info.parent_id) == ("gd.gz", "gd")
    assert list(info.children_ids) == ["gd.gz.py", "gd.gz.th"]
    with tree["gd.gz"].engine.connect() as conn:
        head = node_outbox(tree["gd.gz"]).head(conn)
    assert head is not None and (info.latest_report_sequence, info.latest_report_digest) == (head.sequence, head.digest)
    import base64

    assert base64.b64encode(info.public_key).decode() == tree.nodes["gd.gz"].public_key_b64


def test_parent_database_on_sqlite_and_postgresql(tmp_path: Path, db_url: str) -> None:
    """The parent's receive + roll-up path on both databases (the children keep SQLite files)."""
    small = Tree(tmp_path / "tree", ["gd", "gd.a", "gd.b"], db_urls={"gd": db_url})
    try:
        small.import_synthetic("gd.a", cases=60, seed=1)
        small.import_synthetic("gd.b", cases=60, seed=2)
        small.report_up()
        small.report_up()  # a second round of heartbeats changes nothing
        expected = add_totals(own_totals(small["gd.a"]), own_totals(small["gd.b"]))
        assert nonzero(subtree_of(small["gd"])) == nonzero(expected)
        small.report_up("full")  # replaces each child's window: same totals
        assert nonzero(subtree_of(small["gd"])) == nonzero(expected)
        stub, channel = small.stub("gd")
        try:  # a re-delivery is answered from the log on this database too
            with small["gd.a"].engine.connect() as conn:
                first = conn.execute(select(outbox_table.c.envelope).where(outbox_table.c.sequence == 1)).scalar_one()
            assert not stub.SubmitReport(SignedEnvelope.FromString(first), timeout=5).stored
        finally:
            channel.close()
        with small["gd"].engine.connect() as conn:
            stored = conn.execute(select(func.count()).select_from(received_reports)).scalar_one()
        assert stored == 6
    finally:
        small.close()


def test_big_reports_split_into_chained_parts_that_roll_up_exactly(tree: Tree, monkeypatch: pytest.MonkeyPatch) -> None:
    import node.reporting.reports

    tree.import_synthetic("gd.sz", cases=150, seed=4)
    monkeypatch.setattr(
        node.reporting.reports, "MAX_BUCKETS_PER_REPORT", 40
    )  # a small limit stands in for the 4 MB one
    for kind in ("incremental", "full"):
        result = tree.sender("gd.sz").report_now(kind)  # type: ignore[arg-type]
        assert not result.failed and result.pending == 0
    bodies = _sent_bodies(tree, "gd.sz")
    incremental_parts = [body for body in bodies if body.kind == ReportKind.REPORT_KIND_INCREMENTAL]
    full_parts = [body for body in bodies if body.kind == ReportKind.REPORT_KIND_FULL]
    assert len(incremental_parts) > 1 and all(len(body.buckets) <= 40 for body in incremental_parts)
    assert len(full_parts) > 1
    for body in full_parts:  # a FULL part may pass the limit only to finish its last day
        assert sum(1 for bucket in body.buckets if bucket.day != body.buckets[-1].day) < 40
    # The parts' windows tile the full window exactly, so each part replaces only its own days.
    for before, after in itertools.pairwise(full_parts):
        next_day = date.fromisoformat(before.window_end_day) + timedelta(days=1)
        assert next_day == date.fromisoformat(after.window_start_day)
    assert nonzero(subtree_of(tree["gd"])) == nonzero(own_totals(tree["gd.sz"]))
