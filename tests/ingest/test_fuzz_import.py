"""Property-based fuzzing of import records (hypothesis): no crash, a clear error per bad record, no partial write.

Random records of every kind (and of no kind) — fields present or missing, English or GB/T Chinese names, valid
values, garbage, wrong types, huge strings, impossible and out-of-calendar dates — go through the Python import
API, and random CSV / JSON Lines files (UTF-8 or GB18030, with undecodable bytes and broken lines) through the
file import, into a real node on a real SQLite file (and a smaller run on PostgreSQL). After each example:

* nothing but a SupnetError ever escapes (and then nothing was written);
* every record has exactly one outcome; a rejected one has an error naming its line, a known reason, the field
  when the reason is about a field, and a message;
* no partial write: each table grew by exactly the records accepted into it, a rejected record's key row is
  exactly as it was, an accepted record's row is there, and the maintained metric buckets still equal the
  buckets recomputed from the raw records (``supnet metrics check``), so no rejected record left an effect.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from node.app import Node, open_node
from node.bootstrap import init_node
from node.domain import KIND_ORDER, RECORD_FIELDS, FieldSpec
from node.errors import ValidationError
from node.ingest import (
    BAD_BOOL,
    BAD_CODE,
    BAD_DATETIME,
    BAD_NUMBER,
    BAD_TEXT,
    KIND_TABLES,
    MISSING_FIELD,
    NATURAL_KEYS,
    NEGATIVE_FEE,
    TOO_LONG,
    Importer,
    ImportSummary,
    RecordOutcome,
    kind_from_alias,
)
from node.store import Base
from node.supervision import check_buckets, default_listeners
from node.synthetic import FILE_NAMES
from tests.harness.postgres import fresh_schema_url

NOW = datetime(2026, 3, 2, 12, 0)
EXAMPLES = {"sqlite": 150, "postgresql": 30}
# The draws differ between runs of the whole suite (seen: 2 to 10 accepted records in the PostgreSQL file run at 20
# examples), so the smaller run has enough examples for its floor of three accepted records to be a real check.
FILE_EXAMPLES = {"sqlite": 80, "postgresql": 40}
FIELD_REASONS = frozenset(
    {MISSING_FIELD, BAD_DATETIME, BAD_NUMBER, BAD_BOOL, TOO_LONG, BAD_CODE, NEGATIVE_FEE, BAD_TEXT}
)
# Kinds that add one row to their table when accepted (procedure_end closes an existing row).
INSERTING = {kind: KIND_TABLES[kind] for kind in KIND_ORDER if kind != "procedure_end"}
# Single-column text keys: a rejected record's key row must be exactly as before.
TEXT_KEYS = {kind: NATURAL_KEYS[kind][0] for kind in ("item", "acceptance", "completion", "complaint")}
TABLES = sorted(set(KIND_TABLES.values()))
# What the runs reached, per test: so a property that held only because nothing got through would show.
SEEN: dict[str, Counter[str]] = {}
_run_ids = itertools.count(1)

# -- strategies ---------------------------------------------------------------------------------------------------
GARBAGE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.text(min_size=300, max_size=3000),  # huge strings
    st.sampled_from(["", " ", "\x00", "NULL", "null", "'; DROP TABLE cases; --", "𠀀𠀁", "\ufeff", "\r\n"]),
    # Text no database stores: NUL, lone surrogates (what a JSON "\\ud800" escape decodes to).
    st.text(alphabet=st.characters(codec=None, categories=["Cs", "Cc", "Lo"]), min_size=1, max_size=6),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
DATETIMES = st.datetimes(min_value=datetime(2025, 6, 1), max_value=datetime(2025, 12, 31))
DATETIME_TEXT = st.one_of(
    DATETIMES.map(lambda moment: moment.strftime("%Y%m%dT%H%M%S")),
    DATETIMES.map(lambda moment: moment.strftime("%Y%m%d%H%M%S")),
    DATETIMES.map(lambda moment: moment.isoformat(sep=" ", timespec="seconds")),
)
BAD_DATETIMES = st.one_of(
    # Years the holiday calendar does not cover, impossible days and times, other formats.
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)).map(
        lambda moment: moment.strftime("%Y%m%dT%H%M%S")
    ),
    st.sampled_from(["20250230T090000", "20251301T000000", "20250101T250000", "2025-02-29", "0", "2025/03/01"]),
)
BAD_NUMBERS = st.sampled_from(["-1", "1.5", "1e3", "9" * 40, " 7 ", "七", "NaN", "Infinity", "-5.00", "1e400", "¥10"])
BAD_BOOLS = st.sampled_from(["maybe", "2", "-1", "真", 2])
CODES = st.sampled_from(["1", "2", "3", "4", "9"])


@dataclass(frozen=True)
class KeyRef:
    """A key drawn from a small pool, made unique per example (``local``) or shared by all examples."""

    pool: str
    index: int
    shared: bool


def _key(pool: str) -> st.SearchStrategy[KeyRef]:
    # Mostly this example's own keys (records of one example refer to each other), sometimes keys all share.
    return st.builds(KeyRef, st.just(pool), st.integers(0, 1), st.sampled_from([False, False, False, True]))


KEY_POOLS = {"implementation_code": "I", "case_no": "C", "complaint_no": "T"}
# Plausible values per field (as a business system sends them); anything not listed is short text.
VALID: dict[str, st.SearchStrategy[Any]] = {
    "basic_code": st.from_regex(r"\A[0-9]{10}\Z"),
    "type_code": st.sampled_from(["01", "02", "07", "10"]),
    "level_code": st.sampled_from(list("123456")),
    "body_code": st.from_regex(r"\A11440113[0-9A-Z]{10}\Z"),
    "legal_limit": st.integers(5, 30),
    "promised_limit": st.integers(0, 5),
    "legal_limit_unit": st.sampled_from(["1", "2"]),
    "promised_limit_unit": st.sampled_from(["1", "2"]),
    "fee_flag": st.sampled_from(["1", "0", "是", "否", "true"]),
    "fee_standard": st.sampled_from(["", "0", "0.00"]),
    "channel_code": st.sampled_from(list("12349")),
    "case_type_code": st.sampled_from(list("129")),
    "applicant_id_type": st.sampled_from(["111", "414", "001"]),
    "applicant_id_no": st.from_regex(r"\A44011319[0-9]{10}\Z"),
    "action": st.sampled_from(["通过", "退回", "补正", "其他", "pass", "return"]),
    "status_code": st.sampled_from(["1", "2"]),
    "step_limit": st.integers(0, 5),
    "kind_code": st.sampled_from(["1", "2"]),
    "result_code": st.sampled_from(list("1239")),
    "amount": st.decimals(min_value=0, max_value=500, places=2).map(str),
    "satisfaction_code": st.integers(1, 5),
    "promised_limit_complaint": st.integers(1, 10),
}


def _valid(spec: FieldSpec) -> st.SearchStrategy[Any]:
    if spec.name in KEY_POOLS:
        return _key(KEY_POOLS[spec.name])
    if spec.name in VALID:
        return VALID[spec.name]
    if spec.type == "datetime":
        return DATETIME_TEXT
    if spec.type == "int":
        return st.integers(0, 10)
    if spec.type == "bool":
        return st.sampled_from(["1", "0"])
    return st.text(alphabet="番禺区市场监督管理局审查办理张王李", min_size=1, max_size=min(spec.max_length or 20, 20))


def _bad(spec: FieldSpec) -> st.SearchStrategy[Any]:
    if spec.type == "datetime":
        return st.one_of(BAD_DATETIMES, GARBAGE)
    if spec.type in ("int", "decimal"):
        return st.one_of(BAD_NUMBERS, GARBAGE)
    if spec.type == "bool":
        return st.one_of(BAD_BOOLS, GARBAGE)
    if spec.max_length is not None:
        return st.one_of(st.text(min_size=spec.max_length + 1, max_size=spec.max_length + 400), CODES, GARBAGE)
    return GARBAGE


@st.composite
def _record(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    """A plausible record of ``kind``, then a third of the time one to three mutations."""
    specs = RECORD_FIELDS[kind]
    chosen = [spec for spec in specs if spec.required or draw(st.booleans())]
    fields: dict[str, Any] = {spec.name: draw(_valid(spec)) for spec in chosen}
    if draw(st.integers(0, 2)) == 0:
        for _ in range(draw(st.integers(1, 3))):
            spec = draw(st.sampled_from(specs))
            action = draw(st.sampled_from(["drop", "garbage", "garbage", "extra"]))
            if action == "drop":
                fields.pop(spec.name, None)
            elif action == "garbage":
                fields[spec.name] = draw(_bad(spec))
            else:
                fields[draw(st.text(min_size=1, max_size=8))] = draw(GARBAGE)
    cn = {spec.name: spec.cn for spec in specs}
    chinese = draw(st.booleans())
    return {cn.get(name, name) if chinese and name in cn else name: value for name, value in fields.items()}


# Kind names as sent: mostly the kinds themselves, some aliases, and some that are no kind at all.
_ALIASES = {"item": ["item", "item", "items", "事项"], "acceptance": ["acceptance", "acceptance", "CASE", "事项受理"]}
_NOT_KINDS = st.sampled_from(["", "bogus", "受 理", "acceptances.csv"])


def _of_kind(kind: str) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    name = st.sampled_from(_ALIASES.get(kind, [kind]))
    return st.tuples(name, _record(kind))


_EVENTS = st.sampled_from([kind for kind in KIND_ORDER if kind not in ("item", "acceptance", "complaint")])


@st.composite
def _scenario(draw: st.DrawFn) -> list[tuple[str, dict[str, Any]]]:
    """Items, cases that use them, events of those cases, complaints and a stray record, in a random order."""
    records = [
        *draw(st.lists(_of_kind("item"), max_size=2)),
        *draw(st.lists(_of_kind("acceptance"), max_size=3)),
        *draw(st.lists(_EVENTS.flatmap(_of_kind), max_size=7)),
        *draw(st.lists(_of_kind("complaint"), max_size=2)),
        *draw(st.lists(st.tuples(_NOT_KINDS, _record("acceptance")), max_size=1)),
    ]
    if not records:
        records = [draw(_of_kind("acceptance"))]
    return draw(st.permutations(records))


RECORDS = _scenario()


def _materialize(value: Any, run: int) -> Any:
    if isinstance(value, KeyRef):
        return f"FZ-{value.pool}{value.index}" if value.shared else f"FZ{run}-{value.pool}{value.index}"
    return value


# -- the node -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def node(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    folder = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    with fresh_schema_url() if request.param == "postgresql" else nullcontext("") as db_url:
        init_node(folder / "node", "gd.gz.py", db_url=db_url)
        opened = open_node(folder / "node", clock=lambda: NOW)
        try:
            yield opened
        finally:
            opened.close()


@dataclass
class Checker:
    """Database state before an import, and the checks after it."""

    node: Node
    counts: dict[str, int] = field(default_factory=dict)
    rows: dict[tuple[str, str], tuple[Any, ...] | None] = field(default_factory=dict)

    def table_counts(self) -> dict[str, int]:
        with self.node.engine.connect() as conn:
            return {
                name: int(conn.execute(select(func.count()).select_from(Base.metadata.tables[name])).scalar_one())
                for name in TABLES
            }

    def key_row(self, kind: str, key: str) -> tuple[Any, ...] | None:
        if "\x00" in key and self.node.engine.dialect.name == "postgresql":
            return None  # PostgreSQL text cannot hold NUL: such a key can never be stored (nor looked up)
        table = Base.metadata.tables[KIND_TABLES[kind]]
        with self.node.engine.connect() as conn:
            row = conn.execute(select(table).where(table.c[TEXT_KEYS[kind]] == key)).first()
        return None if row is None else tuple(row)

    def before(self, keyed: list[tuple[str, str]]) -> None:
        self.counts = self.table_counts()
        self.rows = {(kind, key): self.key_row(kind, key) for kind, key in keyed}

    def unchanged(self, what: str) -> None:
        assert self.table_counts() == self.counts, f"{what}: rows were written"

    def after(
        self, summary: ImportSummary, outcomes: list[RecordOutcome], records: int, label: str, seen: Counter[str]
    ) -> None:
        assert summary.accepted + summary.duplicates + summary.rejected == records == len(outcomes), (
            f"{label}: {records} records, outcomes {len(outcomes)}, summary {summary.to_dict()}"
        )
        assert summary.rejected == len(summary.errors) + summary.errors_omitted
        accepted: dict[str, int] = {}
        for outcome in outcomes:
            seen[outcome.status] += 1
            if outcome.status == "accepted":
                seen[f"accepted {outcome.kind}"] += 1
                accepted[outcome.kind] = accepted.get(outcome.kind, 0) + 1
            if outcome.status != "rejected":
                assert outcome.error is None
                continue
            error = outcome.error
            assert error is not None, f"{label} line {outcome.line}: rejected without an error"
            assert error.line == outcome.line and error.reason and error.message.strip(), error
            seen[f"reason {error.reason}"] += 1
            if error.reason in FIELD_REASONS:
                assert error.field, f"{label} line {error.line}: {error.reason} names no field: {error.message}"
                assert error.field in error.message, error
        expected = dict(self.counts)
        for kind, count in accepted.items():
            if kind in INSERTING:
                expected[INSERTING[kind]] += count
        assert self.table_counts() == expected, f"{label}: tables grew by other than the accepted records"
        differences = check_buckets(self.node)
        assert differences == [], f"{label}: metric buckets differ from the records: {differences[:3]}"


def _text_key(kind: str, fields: Mapping[str, Any]) -> str | None:
    if kind not in TEXT_KEYS:
        return None
    name = TEXT_KEYS[kind]
    spec = next(spec for spec in RECORD_FIELDS[kind] if spec.name == name)
    value = fields.get(name, fields.get(spec.cn))
    return value.strip() if isinstance(value, str) and value.strip() else None


# -- the Python API -------------------------------------------------------------------------------------------------
def _api_property(node: Node, drawn: list[tuple[str, dict[str, Any]]], seen: Counter[str]) -> None:
    run = next(_run_ids)
    records = [
        (kind, line, {name: _materialize(value, run) for name, value in fields.items()})
        for line, (kind, fields) in enumerate(drawn, start=1)
    ]
    # By canonical kind: an alias ("items") names the same stored record as its kind ("item").
    keyed = [
        (canonical, key)
        for kind, _, fields in records
        if (canonical := kind_from_alias(kind) or kind) and (key := _text_key(canonical, fields)) is not None
    ]
    checker = Checker(node)
    checker.before(keyed)
    outcomes: list[RecordOutcome] = []
    # Nothing may escape, not even a SupnetError: bad content is a per-record error, never a failed batch
    # (which would lose the good records sent with it).
    summary = Importer(node, listeners=default_listeners(node)).import_records(
        records, source="fuzz", on_outcome=outcomes.append
    )
    checker.after(summary, outcomes, len(records), "records", seen)
    accepted_keys = set()
    for outcome in outcomes:
        _, _, fields = records[outcome.line - 1]
        kind = outcome.kind
        key = _text_key(kind, fields)
        if key is not None and outcome.status == "accepted":
            accepted_keys.add((kind, key))
            assert checker.key_row(kind, key) is not None, f"accepted {kind} {key} is not stored"
    for outcome in outcomes:
        _, _, fields = records[outcome.line - 1]
        kind = outcome.kind
        key = _text_key(kind, fields)
        if key is not None and outcome.status != "accepted" and (kind, key) not in accepted_keys:
            assert checker.key_row(kind, key) == checker.rows[(kind, key)], (
                f"line {outcome.line}: {outcome.status} {kind} {key} changed its stored row"
            )


def test_random_records_through_the_import_api(node: Node) -> None:
    dialect = node.engine.dialect.name

    @settings(
        max_examples=EXAMPLES[dialect],
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        derandomize=True,
        database=None,
    )
    @given(RECORDS)
    def run(drawn: list[tuple[str, dict[str, Any]]]) -> None:
        _api_property(node, drawn, seen)

    seen = SEEN.setdefault(f"api-{dialect}", Counter())
    run()
    print(f"\nimport API fuzz ({dialect}): {dict(sorted(seen.items()))}")
    _assert_reached(seen, dialect)


def _assert_reached(seen: Counter[str], dialect: str) -> None:
    """The examples got records past validation into the database, and were refused for many reasons."""
    full = dialect == "sqlite"  # the PostgreSQL run is the smaller one
    assert seen["accepted"] >= (10 if full else 3) and seen["rejected"] >= 20, seen
    # At least two kinds got through. Three was asked of the SQLite run once, but how many of its 80 file examples
    # a header refusal ends (the same field named twice) varies between runs (seen: 14 to 43), and with it the kinds.
    assert sum(1 for name in seen if name.startswith("accepted ")) >= 2, seen
    assert sum(1 for name in seen if name.startswith("reason ")) >= 5, seen


# -- files ----------------------------------------------------------------------------------------------------------
def _cell(value: Any) -> str:
    if isinstance(value, KeyRef):
        return str(value)
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


BAD_BYTES = st.sampled_from([b"\xff", b"\xe4\xb8", b"\x80\x80", b"\xfe\xfe\xfe", b"\x00", b"\xc3", b"\r", b'"'])
Splice = tuple[int, int, bytes]  # (file index, line index, bytes inserted in the middle of that line)


@st.composite
def files(draw: st.DrawFn) -> tuple[str, str, list[tuple[str, dict[str, Any]]], list[Splice]]:
    """(file format, encoding, a scenario's records, bytes to splice into lines)."""
    fmt = draw(st.sampled_from(["csv", "jsonl"]))
    encoding = draw(st.sampled_from(["utf-8", "gb18030", "utf-8-sig"]))
    splices = draw(st.lists(st.tuples(st.integers(0, 8), st.integers(0, 12), BAD_BYTES), max_size=3))
    return fmt, encoding, draw(_scenario()), splices


def _csv_lines(records: list[dict[str, Any]], run: int) -> list[str]:
    header: list[str] = []
    for fields in records:
        header += [name for name in fields if name not in header]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header or ["case_no"])
    for fields in records:
        writer.writerow([_cell(_materialize(fields.get(name), run)) for name in header])
    return buffer.getvalue().splitlines(keepends=True)


def _write_files(
    folder: Path, fmt: str, encoding: str, records: list[tuple[str, dict[str, Any]]], splices: list[Splice], run: int
) -> dict[Path, int]:
    """One CSV per kind (the kind from its name) or one JSON Lines file; returns each file's line count."""
    texts: dict[str, list[str]] = {}
    if fmt == "csv":
        by_kind: dict[str, list[dict[str, Any]]] = {}
        for kind_name, fields in records:
            kind = kind_from_alias(kind_name)
            if kind is not None:  # a CSV file cannot carry a record of no kind
                by_kind.setdefault(kind, []).append(fields)
        for kind, rows in by_kind.items():
            texts[f"{run}-{FILE_NAMES[kind]}"] = _csv_lines(rows, run)
    else:
        texts[f"{run}-records.jsonl"] = [
            json.dumps(
                {"kind": kind, **{name: _materialize(value, run) for name, value in fields.items()}},
                ensure_ascii=False,
                default=str,
            )
            + "\n"
            for kind, fields in records
        ]
    encoded = {
        name: [
            line.encode("utf-8" if encoding == "utf-8-sig" and i else encoding, "replace")
            for i, line in enumerate(lines)
        ]
        for name, lines in texts.items()
    }
    names = sorted(encoded)
    for file_index, line_index, bad in splices:
        lines = encoded[names[file_index % len(names)]]
        index = line_index % len(lines)
        lines[index] = lines[index][: len(lines[index]) // 2] + bad + lines[index][len(lines[index]) // 2 :]
    counts: dict[Path, int] = {}
    for name, lines in encoded.items():
        data = b"".join(lines)
        (folder / name).write_bytes(data)
        counts[folder / name] = len(data.splitlines())  # a bare CR ends a line too (universal newlines)
    return counts


def test_random_files_in_every_encoding_with_bad_bytes(node: Node, tmp_path_factory: pytest.TempPathFactory) -> None:
    dialect = node.engine.dialect.name
    folder = tmp_path_factory.mktemp("fuzz-files")

    @settings(
        max_examples=FILE_EXAMPLES[dialect],
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        derandomize=True,
        database=None,
    )
    @given(files())
    def run(drawn: tuple[str, str, list[tuple[str, dict[str, Any]]], list[Splice]]) -> None:
        fmt, encoding, records, splices = drawn
        run_id = next(_run_ids)
        line_counts = _write_files(folder, fmt, encoding, records, splices, run_id)
        if not line_counts:
            return
        checker = Checker(node)
        checker.before([])
        outcomes: list[RecordOutcome] = []
        paths = sorted(line_counts)
        try:
            summary = Importer(node, listeners=default_listeners(node)).import_files(paths, on_outcome=outcomes.append)
        except ValidationError as error:
            # A file-level refusal (no usable header, no kind) names the file and comes before any import.
            assert error.field in ("header", "kind") and any(str(path) in error.message for path in paths), error
            checker.unchanged("files refused")
            seen["file refused"] += 1
            return
        for outcome in outcomes:
            # A line may hold several CSV records or none (a quoted newline); each record has one outcome.
            assert 1 <= outcome.line <= line_counts[Path(outcome.source)], outcome
        checker.after(summary, outcomes, len(outcomes), f"files {[path.name for path in paths]}", seen)

    seen = SEEN.setdefault(f"files-{dialect}", Counter())
    run()
    print(f"\nfile import fuzz ({dialect}): {dict(sorted(seen.items()))}")
    _assert_reached(seen, dialect)
