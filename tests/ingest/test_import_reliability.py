"""What the import refuses (issue 16): undecodable lines, deep JSON, over-long fields and implausible dates.

Each bad record is one rejection naming its line, field and why; the good records of the same file still land.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from node.app import Node, open_node
from node.bootstrap import init_node
from node.config import config_path, load_config, parse_config, save_config
from node.domain import FREE_TEXT_MAX_LENGTH, RECORD_FIELDS
from node.errors import ConfigError, ValidationError
from node.ingest import FileReader, Importer, ImportSummary, RecordError, detect_encoding
from node.store import Case, Evaluation, Payment, Step

NOW = datetime(2026, 3, 2, 12, 0)
ITEMS = """\
实施编码,基本编码,事项名称,事项类型代码,行使层级代码,实施主体,实施主体代码,法定办结时限,承诺办结时限,是否收费,收费标准
I1,B0001,餐饮服务许可,01,4,番禺区市场监督管理局,11440113MB2C12345X,20,10,1,50.00
"""
ACCEPTANCE_HEADER = "办件编号,实施编码,受理单位,受理时间,申请者名称\n"


def write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def jsonl(records: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)


def errors_of(summary: ImportSummary) -> set[tuple[int, str | None, str]]:
    return {(e.line, e.field, e.reason) for e in summary.errors}


@pytest.fixture
def node(db_url: str, tmp_path: Path) -> Iterator[Node]:
    init_node(tmp_path / "node", "gd.gz.py", db_url=db_url)
    opened = open_node(tmp_path / "node", clock=lambda: NOW)
    yield opened
    opened.close()


@pytest.fixture
def sqlite_node(tmp_path: Path) -> Iterator[Node]:
    init_node(tmp_path / "node", "gd.gz.py")
    opened = open_node(tmp_path / "node", clock=lambda: NOW)
    yield opened
    opened.close()


def with_items(node: Node, tmp_path: Path) -> None:
    summary = Importer(node).import_files([write(tmp_path / "items.csv", ITEMS)])
    assert summary.accepted == 1, summary.errors


# -- 3. encodings --------------------------------------------------------------------------------------------------
BROKEN_UTF8 = (
    ACCEPTANCE_HEADER.encode()
    + "E1,I1,番禺区市场监督管理局,20260105T093000,张三\n".encode()
    # One Latin-1 byte (é) in an otherwise UTF-8 file: this line does not decode as UTF-8.
    + "E2,I1,番禺区城市管理局,20260105T093000,Jos".encode()
    + b"\xe9\n"
    + "E3,I1,番禺区民政局,20260106T093000,李四\n".encode()
)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_one_bad_byte_rejects_its_line_and_the_file_stays_utf8(sqlite_node: Node, tmp_path: Path, suffix: str) -> None:
    with_items(sqlite_node, tmp_path)
    content = BROKEN_UTF8
    if suffix == ".jsonl":
        rows = [line.split(b",") for line in BROKEN_UTF8.splitlines()[1:]]
        content = b"".join(
            b'{"kind": "acceptance", "case_no": "%s", "implementation_code": "%s", "department": "%s", '
            b'"accepted_at": "%s", "applicant_name": "%s"}\n' % tuple(row)
            for row in rows
        )
    path = write(tmp_path / f"acceptances{suffix}", content)
    assert detect_encoding(path) == "utf-8"
    summary = Importer(sqlite_node).import_files([path])
    assert (summary.accepted, summary.rejected) == (2, 1)
    (error,) = summary.errors
    assert (error.line, error.reason) == (3 if suffix == ".csv" else 2, "bad_encoding")
    offset = content.index(b"Jos\xe9") + 3
    assert f"not valid UTF-8 (bytes e9 at byte offset {offset} of the file)" in error.message
    with Session(sqlite_node.engine) as session:
        stored = {case_no: department for case_no, department in session.execute(select(Case.case_no, Case.department))}
    assert stored == {"E1": "番禺区市场监督管理局", "E3": "番禺区民政局"}
    # The corrected file: the fixed line lands, the others are duplicates, nothing conflicts.
    fixed = write(tmp_path / f"fixed-acceptances{suffix}", content.replace(b"Jos\xe9", "José".encode()))
    again = Importer(sqlite_node).import_files([fixed])
    assert (again.accepted, again.duplicates, again.rejected) == (1, 2, 0), again.errors


def test_auto_picks_gb18030_only_for_a_whole_gb18030_file(tmp_path: Path) -> None:
    text = ACCEPTANCE_HEADER + "G1,I1,番禺区市场监督管理局,20260105T093000,张三\n"
    clean = write(tmp_path / "acceptances-a.csv", text.encode("gb18030"))
    assert detect_encoding(clean) == "gb18030"
    assert FileReader(clean).prepare().warnings == []
    # A GB18030 file with a broken byte is valid as neither: read as UTF-8, its Chinese lines are rejected, never
    # guessed at; ASCII lines are read, and the operator is told to use --encoding.
    rows = "G1,I1,番禺区市场监督管理局,20260105T093000,张三\n".encode("gb18030")
    rows += b"G2,I1,\x81\x20,20260105T093000,x\nG3,I1,d,20260105T093000,y\n"
    broken = write(tmp_path / "acceptances-b.csv", b"case_no,implementation_code,department,accepted_at,x\n" + rows)
    assert detect_encoding(broken) == "utf-8"
    reader = FileReader(broken).prepare()
    assert reader.warnings and "--encoding gb18030" in reader.warnings[0]
    records = list(reader)
    assert [(line, fields.reason if isinstance(fields, RecordError) else "ok") for _, line, fields in records] == [
        (2, "bad_encoding"),
        (3, "bad_encoding"),
        (4, "ok"),
    ]
    forced = list(FileReader(broken, encoding="gb18030").prepare())
    assert forced[0][2]["department"] == "番禺区市场监督管理局"  # type: ignore[index]
    # With a Chinese header the file cannot even be read: one clear file error, nothing imported.
    chinese = write(tmp_path / "acceptances-c.csv", ACCEPTANCE_HEADER.encode("gb18030") + rows)
    with pytest.raises(ValidationError, match=r"header line: line is not valid UTF-8 .* use --encoding"):
        FileReader(chinese).prepare()


# -- 4. deeply nested JSON -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("depth", [3000, 100_000, sys.getrecursionlimit() - 40])
@pytest.mark.parametrize(("where", "shallow_reason"), [("case_no", "bad_code"), ("kind", "unknown_kind")])
def test_a_deeply_nested_json_line_is_one_rejected_record(
    sqlite_node: Node, tmp_path: Path, depth: int, where: str, shallow_reason: str
) -> None:
    with_items(sqlite_node, tmp_path)
    nested = "[" * depth + "]" * depth
    good = '{"case_no": "J%s", "implementation_code": "I1", "department": "d", "accepted_at": "20260105T093000"}\n'
    bad = f'{{"case_no": "J9", "implementation_code": "I1", "department": "d", "{where}": {nested}}}\n'
    path = write(tmp_path / "acceptances.jsonl", good % 1 + bad + good % 2)
    summary = Importer(sqlite_node).import_files([path])
    assert (summary.accepted, summary.rejected) == (2, 1)
    (error,) = summary.errors
    assert error.line == 2
    if error.reason == "bad_json":
        assert "nested too deeply" in error.message
    else:  # shallow enough for the parser: a value that is no text, shown short
        assert (error.field, error.reason) == (where, shallow_reason) and len(error.message) < 200


# -- 5. one length limit per field, on every path ------------------------------------------------------------------
def step(opinion: str, started: str) -> dict[str, Any]:
    return {"case_no": "L1", "step_name": "审查", "action": "通过", "started_at": started, "opinion": opinion}


def test_free_text_limit_is_the_same_for_csv_jsonl_and_records(sqlite_node: Node, tmp_path: Path) -> None:
    assert FREE_TEXT_MAX_LENGTH == 131_072
    assert {spec.name: spec.length_limit for spec in RECORD_FIELDS["step"]}["opinion"] == FREE_TEXT_MAX_LENGTH
    with_items(sqlite_node, tmp_path)
    case = "case_no,implementation_code,department,accepted_at\nL1,I1,d,20260105T093000\n"
    Importer(sqlite_node).import_files([write(tmp_path / "acceptances.csv", case)])
    fits, over, huge = "意" * FREE_TEXT_MAX_LENGTH, "见" * (FREE_TEXT_MAX_LENGTH + 1), "长" * 3_000_000
    records = [
        step(fits, "20260106T090000"),
        step(over, "20260106T100000"),
        step(huge, "20260106T110000"),
        {**step("ok", "20260106T120000"), "handler": "张" * 101},  # the standard's own length (100)
        step("ok", "20260106T130000"),
    ]
    jsonl_path = write(tmp_path / "steps.jsonl", jsonl(records))
    header = "case_no,step_name,action,started_at,opinion,handler\n"
    csv_lines = [
        f'{r["case_no"]},{r["step_name"]},{r["action"]},{r["started_at"]},"{r["opinion"]}",{r.get("handler", "")}\n'
        for r in records
    ]
    # The over-long opinion once more, across lines (a quoted field with newlines).
    long_lines = "\n".join(["行" * 1000] * 200)
    csv_lines.insert(2, f'L1,审查,通过,20260107T090000,"{long_lines}",\n')
    csv_path = write(tmp_path / "steps.csv", header + "".join(csv_lines))
    # JSON Lines: one record a line; CSV: the header first, the multi-line record takes lines 4-203.
    in_jsonl = {(2, "opinion", "too_long"), (3, "opinion", "too_long"), (4, "handler", "too_long")}
    in_csv = {(3, "opinion", "too_long"), (4, "opinion", "too_long"), (204, "opinion", "too_long")}
    for path, expected in ((jsonl_path, in_jsonl), (csv_path, {*in_csv, (205, "handler", "too_long")})):
        summary = Importer(sqlite_node).import_files([path])
        assert errors_of(summary) == expected, (path, summary.errors)
        assert summary.accepted == (2 if path == jsonl_path else 0)
        by_line = {e.line: e for e in summary.errors}
        for line, field, _ in expected:
            limit = 100 if field == "handler" else FREE_TEXT_MAX_LENGTH
            assert f"at most {limit} allowed" in by_line[line].message
            assert by_line[line].message.startswith(f"field {field} (")
    assert "(the record runs to line 203)" in by_line[4].message
    with Session(sqlite_node.engine) as session:
        opinions = session.scalars(select(Step.opinion).order_by(Step.started_at)).all()
    assert [len(opinion) for opinion in opinions] == [FREE_TEXT_MAX_LENGTH, 2]
    # The Python / gRPC path (import_records) applies the same limit.
    summary = Importer(sqlite_node).import_records([("step", 1, step(over, "20260108T090000"))])
    assert errors_of(summary) == {(1, "opinion", "too_long")}


# -- 6. implausible dates ------------------------------------------------------------------------------------------
def test_implausible_dates_are_rejected_with_field_and_why(node: Node, tmp_path: Path) -> None:
    with_items(node, tmp_path)
    soon = NOW + timedelta(minutes=5)  # within the default 10 minutes of clock skew
    late = NOW + timedelta(minutes=11)
    acceptances = write(
        tmp_path / "acceptances.csv",
        "case_no,implementation_code,department,accepted_at,applied_at\n"
        "D1,I1,d,20260105T093000,20260105T090000\n"  # 2: good
        f"D2,I1,d,{late:%Y%m%dT%H%M%S},\n"  # 3: accepted in the future
        f"D3,I1,d,{soon:%Y%m%dT%H%M%S},\n"  # 4: good (clock skew)
        "D4,I1,d,20260105T093000,20260105T100000\n"  # 5: applied after accepted
        "D5,I1,d,20260105T093000,\n",  # 6: good, stays open
    )
    events = write(
        tmp_path / "events.jsonl",
        jsonl(
            [
                {"kind": "step", **step("", "20260105T080000"), "case_no": "D1"},  # 1: before acceptance
                {"kind": "step", **step("", "20260105T100000"), "case_no": "D1"},  # 2: good
                {"kind": "payment", "case_no": "D1", "amount": "50", "paid_at": "20260104T100000"},  # 3: before
                {"kind": "payment", "case_no": "D1", "amount": "50", "paid_at": "20260106T100000"},  # 4: good
                {"kind": "completion", "case_no": "D1", "completed_at": "20260107T100000"},  # 5: good
                {"kind": "completion", "case_no": "D3", "completed_at": f"{late:%Y%m%dT%H%M%S}"},  # 6: future
                {"kind": "evaluation", "case_no": "D1", "evaluated_at": "20260101T100000", "satisfaction_code": 1},
                {"kind": "evaluation", "case_no": "D1", "evaluated_at": "20260108T100000", "satisfaction_code": 1},
                {"kind": "evaluation", "case_no": "D5", "evaluated_at": "20260108T100000", "satisfaction_code": 2},
            ]
        ),
    )
    summary = Importer(node).import_files([acceptances, events])
    assert {(Path(e.file).suffix, e.line, e.field, e.reason) for e in summary.errors} == {
        (".csv", 3, "accepted_at", "in_future"),
        (".csv", 5, "applied_at", "inconsistent"),
        (".jsonl", 1, "started_at", "before_acceptance"),
        (".jsonl", 3, "paid_at", "before_acceptance"),
        (".jsonl", 6, "completed_at", "in_future"),
        (".jsonl", 7, "evaluated_at", "before_acceptance"),
        (".jsonl", 9, "case_no", "invalid_state"),
    }
    assert summary.accepted == 3 + 4  # D1 D3 D5; a step, payment, completion and evaluation of D1
    messages = {(Path(e.file).suffix, e.line): e.message for e in summary.errors}
    assert "is in the future (node time 2026-03-02 12:00:00, 600 s of clock skew allowed)" in messages[(".csv", 3)]
    assert "before the case was accepted (2026-01-05 09:30:00)" in messages[(".jsonl", 1)]
    assert "still open" in messages[(".jsonl", 9)]
    with Session(node.engine) as session:
        assert session.scalars(select(Case.case_no).order_by(Case.case_no)).all() == ["D1", "D3", "D5"]
        assert session.scalars(select(Payment.paid_at)).all() == [datetime(2026, 1, 6, 10)]
        assert session.scalars(select(Evaluation.evaluated_at)).all() == [datetime(2026, 1, 8, 10)]
        d3 = session.get(Case, "D3")
        assert d3 is not None and d3.status == "open"


def test_clock_skew_is_configured_and_validated(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"key 'ingest\.clock_skew_seconds'"):
        parse_config({"id": "gd.gz.py", "ingest": {"clock_skew_seconds": -1}})
    init_node(tmp_path / "node", "gd.gz.py")
    config = load_config(tmp_path / "node")
    assert config.ingest.clock_skew_seconds == 600
    config.ingest.clock_skew_seconds = 0
    save_config(tmp_path / "node", config)
    assert "clock_skew_seconds = 0" in config_path(tmp_path / "node").read_text(encoding="utf-8")
    node = open_node(tmp_path / "node", clock=lambda: NOW)
    try:
        with_items(node, tmp_path)
        second = NOW + timedelta(seconds=1)
        path = write(
            tmp_path / "acceptances.csv",
            f"case_no,implementation_code,department,accepted_at\nK1,I1,d,{NOW:%Y%m%dT%H%M%S}\n"
            f"K2,I1,d,{second:%Y%m%dT%H%M%S}\n",
        )
        summary = Importer(node).import_files([path])
    finally:
        node.close()
    assert errors_of(summary) == {(3, "accepted_at", "in_future")}
