"""Personal data: no generated applicant name or ID number is in any report's bytes; drill-down answers mask them.

A real three-level tree (``gd`` ← ``gd.a`` ← ``gd.a.x``) is filled by the real generator and importer, reports
(incremental and FULL) are built, signed and rolled up, and every stored or queued report envelope is scanned
byte by byte for every applicant name, ID number and complainant of the generated files, in UTF-8 and GB18030,
and for the middle of each ID number (what masking hides). Drill-down answers (case lists, every case's
detail, complaints, alerts) must carry them only masked like ``张*`` and ``440***********1234``.
"""

from __future__ import annotations

import csv
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from federation import parse_body
from federation.proto.v1 import drilldown_pb2 as dd
from federation.proto.v1.common_pb2 import SignedEnvelope
from federation.proto.v1.report_pb2 import ReportBody, ReportKind
from node.ingest import canonical_field
from node.synthetic import FILE_NAMES
from tests.harness.tree import Tree, build_tree

CASES = {"gd": 0, "gd.a": 80, "gd.a.x": 160}
ENCODINGS = ("utf-8", "gb18030")
MIDDLE_FROM, MIDDLE_TO = 3, -4  # what mask_id_number hides of an ID number of 10+ characters


@dataclass(frozen=True)
class Person:
    """One applicant or complainant of the generated files."""

    name: str
    id_no: str = ""


def _rows(path: Path) -> Iterator[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            yield {canonical_field(header) or header: value for header, value in row.items()}


def generated_people(tree: Tree, node_id: str) -> dict[str, Person]:
    """Applicants by case number, and complainants keyed by complaint number, read from the generated CSV files."""
    folder = tree[node_id].data_dir / "generated"
    people: dict[str, Person] = {}
    for row in _rows(folder / FILE_NAMES["acceptance"]):
        people[row["case_no"]] = Person(row["applicant_name"], row["applicant_id_no"])
    for row in _rows(folder / FILE_NAMES["complaint"]):
        if row.get("complainant"):
            people[row["complaint_no"]] = Person(row["complainant"])
    return people


def needles(people: Iterable[Person]) -> dict[bytes, str]:
    """Every byte string that must not appear, with what it is (for the failure message)."""
    found: dict[bytes, str] = {}
    for person in people:
        values = [("name", person.name), ("id number", person.id_no)]
        if len(person.id_no) >= 10:
            values.append(("hidden middle of id number", person.id_no[MIDDLE_FROM:MIDDLE_TO]))
        for what, value in values:
            if value:
                for encoding in ENCODINGS:
                    found[value.encode(encoding)] = f"{what} {value!r} ({encoding})"
    return found


def leaks(data: bytes, searched: dict[bytes, str]) -> list[str]:
    return [what for needle, what in searched.items() if needle in data]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tree]:
    built = build_tree(tmp_path_factory.mktemp("personal"), CASES)
    try:
        built.report_up()  # incremental reports, bottom-up
        for node_id in ("gd.a.x", "gd.a"):  # then FULL reports (every bucket of the window), bottom-up
            sender = built.nodes[node_id].sender
            assert sender is not None
            assert not sender.report_now("full").failed
        yield built
    finally:
        built.close()


def _stored_envelopes(tree: Tree) -> list[tuple[str, bytes]]:
    """Every report envelope in the tree: received by a parent, or in a child's outbox (as sent)."""
    found: list[tuple[str, bytes]] = []
    for node_id in CASES:
        with tree.nodes[node_id].db() as conn:
            for child, sequence, raw in conn.execute(
                "SELECT child_id, sequence, envelope FROM federation_received_reports"
            ):
                found.append((f"{child} #{sequence} as received by {node_id}", bytes(raw)))
            for sequence, raw in conn.execute("SELECT sequence, envelope FROM federation_outbox"):
                found.append((f"{node_id} #{sequence} in its outbox", bytes(raw)))
    return found


def test_no_applicant_name_or_id_number_in_any_report_byte(tree: Tree) -> None:
    people = {**generated_people(tree, "gd.a"), **generated_people(tree, "gd.a.x")}
    ids = [person.id_no for person in people.values() if person.id_no]
    assert len(people) > 200 and len(ids) > 200  # the scan below has something to find
    with tree.nodes["gd.a.x"].db() as conn:  # and those people are really in the node's data
        stored = {row[0] for row in conn.execute("SELECT applicant_id_no FROM cases")}
    assert set(ids) & stored and {p.id_no for p in generated_people(tree, "gd.a.x").values() if p.id_no} <= stored
    searched = needles(people.values())
    # The scanner itself finds what it should: the leaf's generated file re-encoded in GB18030 holds its people.
    raw_gb = (tree["gd.a.x"].data_dir / "generated" / FILE_NAMES["acceptance"]).read_text("utf-8").encode("gb18030")
    for person in [p for p in generated_people(tree, "gd.a.x").values() if p.id_no][:20]:
        found = leaks(raw_gb, needles([person]))
        assert f"name {person.name!r} (gb18030)" in found and f"id number {person.id_no!r} (gb18030)" in found

    envelopes = _stored_envelopes(tree)
    labels = [label for label, _ in envelopes]
    assert any("as received by gd" in label for label in labels)  # the roll-up reached the root
    assert any("gd.a.x" in label and "gd.a" in label for label in labels)
    full_reports = 0
    for label, raw in envelopes:
        found = leaks(raw, searched)
        assert not found, f"report {label} carries personal data: {found[:5]}"
        envelope = SignedEnvelope.FromString(raw)
        found = leaks(envelope.body, searched)
        assert not found, f"report body {label} carries personal data: {found[:5]}"
        full_reports += parse_body(envelope, ReportBody).kind == ReportKind.REPORT_KIND_FULL
    assert full_reports >= 2
    print(
        f"\nscanned {len(envelopes)} report envelopes for {len(searched)} byte strings of {len(people)} people: 0 found"
    )


def _official_text(tree: Tree, node_id: str) -> str:
    """Names and words that legitimately appear in answers (officials, items, departments, units)."""
    queries = [
        "SELECT acceptor FROM cases",
        "SELECT department FROM cases",
        "SELECT handler FROM steps",
        "SELECT post FROM steps",
        "SELECT opinion FROM steps",
        "SELECT handler_name FROM completions",
        "SELECT name FROM items",
        "SELECT respondent_unit FROM complaints",
        "SELECT handling_unit FROM complaints",
        "SELECT title FROM complaints",
        "SELECT subject FROM alerts",
        "SELECT message FROM alerts",
    ]
    parts: list[str] = []
    with tree.nodes[node_id].db() as conn:
        for query in queries:
            try:
                parts += [str(row[0]) for row in conn.execute(query) if row[0]]
            except sqlite3.OperationalError:
                continue
    return "\n".join(parts)


def _masked_name(name: str) -> str:
    return "*" if len(name) == 1 else name[0] + "*" * (len(name) - 1)


def _masked_id(number: str) -> str:
    return number[:3] + "*" * (len(number) - 7) + number[-4:]


def test_drilldown_answers_mask_names_and_id_numbers(tree: Tree) -> None:
    people = generated_people(tree, "gd.a.x")
    official = _official_text(tree, "gd.a.x")
    # A person whose name is also an official's (or part of an item or unit name) cannot be told apart in
    # an answer: those few names are left out of the scan, their masked form is still checked below.
    coincident = {p.name for p in people.values() if p.name in official}
    assert len(coincident) < len(people) / 10, coincident
    searched = needles(Person(p.name if p.name not in coincident else "", p.id_no) for p in people.values())
    answers: list[tuple[str, bytes]] = []
    with tree.client("gd") as client:  # the province asks, two hops down
        cases: list[dd.CaseRow] = []
        for answer in client.ask_pages("gd.a.x", page_size=50, cases=dd.CasesRequest()):
            answers.append(("cases", answer.envelope.SerializeToString()))
            cases += answer.body.cases.cases
        assert len(cases) == CASES["gd.a.x"]
        details = 0
        for row in cases:
            person = people[row.case_no]
            assert row.applicant_masked == _masked_name(person.name), row.case_no
            answer = client.ask("gd.a.x", case_detail=dd.CaseDetailRequest(case_no=row.case_no))
            answers.append((f"case {row.case_no}", answer.envelope.SerializeToString()))
            detail = answer.body.case_detail
            assert detail.case.applicant_masked == _masked_name(person.name)
            if len(person.id_no) >= 10:
                assert detail.applicant_id_masked == _masked_id(person.id_no), row.case_no
                details += 1
        assert details > CASES["gd.a.x"] / 2
        complaints = 0
        for answer in client.ask_pages("gd.a.x", complaints=dd.ComplaintsRequest()):
            answers.append(("complaints", answer.envelope.SerializeToString()))
            for complaint in answer.body.complaints.complaints:
                if complaint.complaint_no in people:
                    assert complaint.complainant_masked == _masked_name(people[complaint.complaint_no].name)
                    complaints += 1
        assert complaints > 0
        for answer in client.ask_pages("gd.a.x", alerts=dd.AlertsRequest()):
            answers.append(("alerts", answer.envelope.SerializeToString()))
        answers.append(("summary", client.ask("gd.a", summary=dd.SummaryRequest()).envelope.SerializeToString()))
    for label, raw in answers:
        found = leaks(raw, searched)
        assert not found, f"drill-down answer {label} carries personal data: {found[:5]}"
    assert len(answers) > CASES["gd.a.x"]
    print(
        f"\nscanned {len(answers)} drill-down answers for {len(searched)} byte strings of {len(people)} people "
        f"({len(coincident)} names shared with officials or units left out): 0 found"
    )
