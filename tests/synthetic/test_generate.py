"""`supnet generate` and `supnet demo`: determinism, zero-rejection import, distributions, network-wide codes."""

from __future__ import annotations

import csv
import filecmp
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import typer
from sqlalchemy import func, select, text
from typer.testing import CliRunner, Result

from node.app import Node, open_node
from node.bootstrap import init_node
from node.cli import demo_cmd, generate_cmd
from node.domain import RECORD_FIELDS, library_calendar_years, load_calendar, parse_datetime
from node.errors import CalendarError, ValidationError
from node.ingest import Importer
from node.store import Case, Complaint, Completion, Evaluation, Item, Payment, SpecialProcedure, Step
from node.synthetic import (
    FILE_NAMES,
    JSONL_FILE_NAME,
    GenerateSummary,
    generate,
    is_valid_credit_code,
    is_valid_resident_id,
    national_catalogue,
    node_profile,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
END_OF_PERIOD = datetime(2026, 10, 30, 23, 59, 59)
DISTRIBUTION_CASES = 4000


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _import(node_dir: Path, summary: GenerateSummary, node_id: str, db_url: str = "") -> Node:
    init_node(node_dir, node_id, db_url=db_url)
    node = open_node(node_dir, clock=lambda: END_OF_PERIOD)
    result = Importer(node).import_files(summary.paths)
    assert result.rejected == 0, [str(error) for error in result.errors[:5]]
    assert result.accepted == sum(summary.records.values())
    return node


@dataclass
class Imported:
    """A generated data set and the node it was imported into."""

    summary: GenerateSummary
    node: Node


@pytest.fixture(scope="module")
def district(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Imported]:
    """4,000 cases of gd.gz.py imported into a real SQLite node, shared by the distribution tests."""
    base = tmp_path_factory.mktemp("district")
    summary = generate("gd.gz.py", DISTRIBUTION_CASES, 11, base / "data")
    node = _import(base / "node", summary, "gd.gz.py")
    yield Imported(summary, node)
    node.close()


def _scalar(node: Node, statement: object) -> int:
    with node.engine.connect() as conn:
        return int(conn.execute(statement).scalar_one())  # type: ignore[call-overload]


# --- determinism --------------------------------------------------------------------------------------------------
def test_same_arguments_give_byte_identical_files_whatever_the_chunking(tmp_path: Path) -> None:
    one = generate("gd.gz.py.sq", 900, 5, tmp_path / "one", chunk_cases=900, workers=1)
    two = generate("gd.gz.py.sq", 900, 5, tmp_path / "two", chunk_cases=900, workers=1)
    names = list(FILE_NAMES.values())
    match, mismatch, errors = filecmp.cmpfiles(tmp_path / "one", tmp_path / "two", names, shallow=False)
    assert (mismatch, errors) == ([], []) and len(match) == len(names)
    assert one.records == two.records

    # Chunks are seeded on their own: 3 chunks in 2 processes equal 3 chunks in 1 process, byte for byte.
    serial = generate("gd.gz.py.sq", 900, 5, tmp_path / "serial", chunk_cases=300, workers=1)
    parallel = generate("gd.gz.py.sq", 900, 5, tmp_path / "parallel", chunk_cases=300, workers=2)
    match, mismatch, errors = filecmp.cmpfiles(tmp_path / "serial", tmp_path / "parallel", names, shallow=False)
    assert (mismatch, errors) == ([], [])
    assert serial.records == parallel.records
    assert not (tmp_path / "parallel" / ".supnet-generate-parts").exists()

    other = generate("gd.gz.py.sq", 900, 6, tmp_path / "other", chunk_cases=900)
    assert (tmp_path / "other" / "acceptances.csv").read_bytes() != (tmp_path / "one" / "acceptances.csv").read_bytes()
    # Items depend on the node only, never on the seed: a node re-generated with another seed imports cleanly.
    assert (tmp_path / "other" / "items.csv").read_bytes() == (tmp_path / "one" / "items.csv").read_bytes()
    assert other.records["item"] == one.records["item"]


def test_csv_files_use_the_standard_chinese_headers(district: Imported) -> None:
    for kind, name in FILE_NAMES.items():
        with (district.summary.out_dir / name).open(encoding="utf-8", newline="") as handle:
            header = next(csv.reader(handle))
        chinese = {spec.cn for spec in RECORD_FIELDS[kind]}
        assert header and set(header) <= chinese, (kind, header)
        required = {spec.cn for spec in RECORD_FIELDS[kind] if spec.required}
        assert required <= set(header), kind
    sample = _read_csv(district.summary.out_dir / "acceptances.csv")[0]
    assert len(sample["受理时间"]) == 15 and sample["受理时间"][8] == "T"  # YYYYMMDDThhmmss


# --- the import accepts everything --------------------------------------------------------------------------------
def test_csv_import_has_zero_rejections_and_the_importer_agrees_on_every_due_date(tmp_path: Path, db_url: str) -> None:
    summary = generate("gd.gz.th", 1200, 3, tmp_path / "data")
    node = _import(tmp_path / "node", summary, "gd.gz.th", db_url)
    try:
        with node.engine.connect() as conn:
            cases = conn.execute(
                select(Case.declared_promised_at, Case.promised_due_at, Case.clock_stop_workdays)
            ).all()
            items = conn.execute(select(func.count()).select_from(Item)).scalar_one()
        assert len(cases) == 1200 and items == summary.records["item"]
        # The generator counted working days on the same calendar as the importer: the due date it declared at
        # acceptance is the one the importer computed, except where a finished clock stop moved it on since.
        unmoved = [(declared, due) for declared, due, stop in cases if stop == 0]
        assert len(unmoved) > 1100 and all(declared == due for declared, due in unmoved)
        assert all(declared is not None and declared < due for declared, due, stop in cases if stop > 0)
        # Importing the same files again changes nothing.
        again = Importer(node).import_files(summary.paths)
        assert (again.accepted, again.rejected, again.duplicates) == (0, 0, sum(summary.records.values()))
    finally:
        node.close()


def test_jsonl_import_has_zero_rejections(tmp_path: Path) -> None:
    summary = generate("gd.gz.py", 800, 4, tmp_path / "data", file_format="jsonl")
    assert list(summary.files) == [JSONL_FILE_NAME]
    lines = (tmp_path / "data" / JSONL_FILE_NAME).read_text(encoding="utf-8").splitlines()
    assert len(lines) == summary.files[JSONL_FILE_NAME]
    kinds = [json.loads(line)["kind"] for line in lines]
    assert kinds[0] == "item" and kinds.index("acceptance") < kinds.index("step") < kinds.index("completion")
    node = _import(tmp_path / "node", summary, "gd.gz.py")
    node.close()


# --- distributions ------------------------------------------------------------------------------------------------
def test_case_outcomes_echo_the_source_reports(district: Imported) -> None:
    node = district.node
    with node.engine.connect() as conn:
        rows = conn.execute(
            select(Case.completed_at, Case.promised_due_at, Case.legal_due_at).where(Case.status == "completed")
        ).all()
        open_cases = conn.execute(
            select(Case.promised_due_at, Case.legal_due_at, Case.clock_stopped).where(Case.status == "open")
        ).all()
    completed = [(done, promised, legal) for done, promised, legal in rows if done is not None]
    early = sum(done.date() < promised.date() for done, promised, _ in completed)
    past_promised = sum(done > promised for done, promised, _ in completed)
    past_legal = sum(done > legal for done, _, legal in completed)
    assert 0.70 <= early / len(completed) <= 0.88  # Guangzhou 2007: 78.8%
    assert 0.01 <= past_promised / len(completed) <= 0.08
    assert 0 < past_legal < past_promised
    assert 0.07 <= len(open_cases) / DISTRIBUTION_CASES <= 0.13
    overdue_promised = sum(promised < END_OF_PERIOD for promised, _, _ in open_cases)
    overdue_legal = sum(legal < END_OF_PERIOD for _, legal, _ in open_cases)
    assert 0 < overdue_legal < overdue_promised < len(open_cases) / 2  # the scan has something to find
    assert any(stopped for _, _, stopped in open_cases)  # a clock stop still running at --to


def test_steps_supplements_returns_and_refusals(district: Imported) -> None:
    node = district.node
    with node.engine.connect() as conn:
        supplements = dict(
            conn.execute(select(Case.supplement_count, func.count()).group_by(Case.supplement_count)).all()
        )
        returned = conn.execute(select(func.count()).where(Case.return_count > 0)).scalar_one()
        results = conn.execute(select(Completion.result_code, Completion.reason)).all()
        silent_returns = conn.execute(
            select(func.count()).where(Step.action == "return", Step.opinion == "")
        ).scalar_one()
        pending = conn.execute(select(func.count()).where(Step.status_code == "1")).scalar_one()
        open_count = conn.execute(select(func.count()).where(Case.status == "open")).scalar_one()
    one_supplement = supplements.get(1, 0) / DISTRIBUTION_CASES
    second_supplement = sum(count for times, count in supplements.items() if times >= 2) / DISTRIBUTION_CASES
    assert 0.05 <= one_supplement <= 0.11
    assert 0.003 <= second_supplement <= 0.02
    assert 0.025 <= returned / DISTRIBUTION_CASES <= 0.065
    refusals = [reason for code, reason in results if code in ("2", "3")]
    assert 0.02 <= len(refusals) / len(results) <= 0.08
    assert any(reason == "" for reason in refusals) or silent_returns > 0  # the refusal-without-reason rule
    assert pending == open_count  # every open case shows the step it is waiting in


def test_late_entries_and_steps_over_their_own_limit(district: Imported) -> None:
    node = district.node
    calendar = load_calendar()
    with node.engine.connect() as conn:
        steps = conn.execute(
            select(
                Step.started_at,
                Step.ended_at,
                Step.entered_at,
                Step.step_limit,
                Case.completed_at,
                Case.promised_due_at,
            )
            .join(Case, Case.case_no == Step.case_no)
            .where(Step.status_code == "2")
        ).all()
    late_entries = [step for step in steps if step.entered_at - step.ended_at > timedelta(days=3)]
    assert 0.002 <= len(late_entries) / len(steps) <= 0.02
    on_time_overruns = [
        step
        for step in steps
        if step.completed_at is not None
        and step.completed_at <= step.promised_due_at
        and calendar.workdays_between(step.started_at.date(), step.ended_at.date()) > step.step_limit
    ]
    assert on_time_overruns  # a step over its own limit even though the case kept its promise
    assert all(step.started_at <= step.ended_at <= END_OF_PERIOD for step in steps)


def test_special_procedures_some_spanning_holidays(district: Imported) -> None:
    calendar = load_calendar()
    with district.node.engine.connect() as conn:
        procedures = conn.execute(select(SpecialProcedure.started_at, SpecialProcedure.ended_at)).all()
    assert 0.015 <= len(procedures) / DISTRIBUTION_CASES <= 0.05
    closed = [(start, end) for start, end in procedures if end is not None]

    def spans_holiday(start: datetime, end: datetime) -> bool:
        day = start.date()
        while day <= end.date():
            if day.weekday() < 5 and not calendar.is_workday(day):
                return True
            day += timedelta(days=1)
        return False

    assert any(spans_holiday(start, end) for start, end in closed)


def test_fees_evaluations_and_complaints(district: Imported) -> None:
    with district.node.engine.connect() as conn:
        payments = conn.execute(
            select(Payment.amount, Item.fee_flag, Item.fee_standard)
            .join(Case, Case.case_no == Payment.case_no)
            .join(Item, Item.implementation_code == Case.implementation_code)
        ).all()
        ratings = dict(
            conn.execute(
                select(Evaluation.satisfaction_code, func.count()).group_by(Evaluation.satisfaction_code)
            ).all()
        )
        completed = conn.execute(select(func.count()).where(Case.status == "completed")).scalar_one()
        complaints = conn.execute(select(Complaint.case_no)).all()
    on_fee_items = [(amount, standard) for amount, flag, standard in payments if flag and standard is not None]
    above = [amount for amount, standard in on_fee_items if amount > standard]
    assert on_fee_items and 0 < len(above) / len(on_fee_items) <= 0.06
    assert all(amount == standard for amount, standard in on_fee_items if amount <= standard)
    charged_anyway = [amount for amount, flag, _ in payments if not flag]
    assert charged_anyway and all(amount > Decimal(0) for amount in charged_anyway)
    evaluations = sum(ratings.values())
    assert 0.50 <= evaluations / completed <= 0.70
    assert (ratings.get(1, 0) + ratings.get(2, 0)) / evaluations >= 0.8
    assert ratings.get(4, 0) + ratings.get(5, 0) > 0
    assert 0 < len(complaints) <= DISTRIBUTION_CASES * 0.006
    assert any(case_no for (case_no,) in complaints)


def test_personal_data_looks_real(district: Imported) -> None:
    rows = _read_csv(district.summary.out_dir / "acceptances.csv")
    residents = [row for row in rows if row["申请者证件类型代码"] == "111"]
    enterprises = [row for row in rows if row["申请者证件类型代码"] == "001"]
    assert residents and enterprises
    assert all(is_valid_resident_id(row["申请者证件号码"]) for row in residents)
    assert all(is_valid_credit_code(row["申请者证件号码"]) for row in enterprises)
    births = [date(int(row["申请者证件号码"][6:10]), 1, 1) for row in residents]
    assert all(date(1940, 1, 1) <= born <= date(2009, 1, 1) for born in births)  # adults
    assert all(2 <= len(row["申请者名称"]) <= 4 for row in residents)
    items = _read_csv(district.summary.out_dir / "items.csv")
    assert all(is_valid_credit_code(row["实施主体代码"]) for row in items)
    weekend = [
        row for row in rows if not load_calendar().is_workday(parse_datetime(row["受理时间"], district.node.tz).date())
    ]
    assert weekend and all(row["申报来源代码"] in ("2", "3") for row in weekend)  # weekend cases came in online


# --- the network --------------------------------------------------------------------------------------------------
def test_nodes_share_basic_codes_but_not_implementation_codes_or_case_numbers(tmp_path: Path) -> None:
    first = generate("gd.gz.py", 300, 1, tmp_path / "py")
    second = generate("gd.gz.th", 300, 1, tmp_path / "th")
    street = generate("gd.gz.py.sq", 300, 1, tmp_path / "sq")
    items = {
        name: _read_csv(summary.out_dir / "items.csv")
        for name, summary in (("py", first), ("th", second), ("sq", street))
    }
    basic = {name: {row["基本编码"] for row in rows} for name, rows in items.items()}
    implementation = {name: {row["实施编码"] for row in rows} for name, rows in items.items()}
    assert len(basic["py"] & basic["th"]) >= 0.7 * min(len(basic["py"]), len(basic["th"]))
    assert basic["py"] != basic["th"]  # each node implements its own subset
    assert not implementation["py"] & implementation["th"]
    assert not implementation["py"] & implementation["sq"]
    assert all(len(code) <= 24 for codes in implementation.values() for code in codes)
    assert len(items["sq"]) < len(items["py"]) / 3  # a street implements far fewer items
    assert {row["行使层级代码"] for row in items["sq"]} == {"5"} and {row["行使层级代码"] for row in items["py"]} == {
        "4"
    }
    cases = {
        name: {row["办件编号"] for row in _read_csv(summary.out_dir / "acceptances.csv")}
        for name, summary in (("py", first), ("th", second), ("sq", street))
    }
    assert not cases["py"] & cases["th"] and not cases["py"] & cases["sq"]
    areas = {
        name: {row["行政区划代码"] for row in _read_csv(summary.out_dir / "acceptances.csv")}
        for name, summary in (("py", first), ("th", second), ("sq", street))
    }
    assert areas == {"py": {"440113000"}, "th": {"440106000"}, "sq": {"440113001"}}


def test_catalogue_is_national_and_realistic() -> None:
    catalogue = national_catalogue()
    assert 120 <= len(catalogue) <= 220
    assert len({item.basic_code for item in catalogue}) == len(catalogue)
    assert all(len(item.basic_code) <= 10 for item in catalogue)
    types = [item.type_code for item in catalogue]
    assert types.count("01") > len(types) / 2 and {"07", "10", "20"} <= set(types)
    for item in catalogue:
        assert item.legal_limit == 0 or 5 <= item.legal_limit <= 30, item
        assert item.promised_limit <= item.legal_limit / 2 or item.legal_limit == 0, item  # Panyu: >= 50% shorter
    assert any(item.instant for item in catalogue)
    fee_share = sum(item.charges_fee for item in catalogue) / len(catalogue)
    assert 0.10 <= fee_share <= 0.20
    profile = node_profile("gd")
    assert profile.level == "province" and all(body.startswith("广东省") for body in profile.departments)
    assert any(body.endswith("厅") for body in profile.departments)


# --- errors -------------------------------------------------------------------------------------------------------
def test_bad_arguments_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="node id 'GD/GZ'"):
        generate("GD/GZ", 10, 1, tmp_path)
    with pytest.raises(ValidationError, match="--to 2026-01-01 is before --from 2026-02-01"):
        generate("gd.gz.py", 10, 1, tmp_path, date_from=date(2026, 2, 1), date_to=date(2026, 1, 1))
    with pytest.raises(ValidationError, match="--cases must be >= 0"):
        generate("gd.gz.py", -1, 1, tmp_path)
    uncovered = library_calendar_years()[-1] + 1
    with pytest.raises(CalendarError, match=f"in {uncovered}, which the working-day calendar does not cover"):
        generate("gd.gz.py", 10, 1, tmp_path, date_from=date(2026, 6, 1), date_to=date(2026, 12, 20))
    # The fix the message names works: an operator holiday file for that year (test data, not an official notice).
    holidays = tmp_path / "holidays.toml"
    holidays.write_text(f'[{uncovered}]\nholidays = ["{uncovered}-01-01", "{uncovered}-02-08..{uncovered}-02-12"]\n')
    summary = generate(
        "gd.gz.py",
        50,
        1,
        tmp_path / "out",
        date_from=date(2026, 6, 1),
        date_to=date(2026, 12, 20),
        holidays_file=holidays,
    )
    assert summary.records["acceptance"] == 50


# --- the commands -------------------------------------------------------------------------------------------------
@pytest.fixture
def app() -> typer.Typer:
    application = typer.Typer()
    generate_cmd.register(application)
    demo_cmd.register(application)
    return application


def _run(app: typer.Typer, *args: str) -> Result:
    return CliRunner(env={"COLUMNS": "400", "SUPNET_DATA_DIR": None}).invoke(app, list(args))


def test_generate_command_json_summary_counts_the_rows(app: typer.Typer, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = _run(app, "generate", "--id", "gd.gz.py.sq", "--cases", "200", "--seed", "9", "--out", str(out), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["cases"] == 200 and summary["node_id"] == "gd.gz.py.sq"
    for name, rows in summary["files"].items():
        assert len(_read_csv(out / name)) == rows
    assert summary["files"]["acceptances.csv"] == 200


def test_generate_command_errors_exit_2_with_the_reason(app: typer.Typer, tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    bad_format = _run(app, "generate", "--id", "gd.gz.py", "--out", out, "--format", "xml")
    assert bad_format.exit_code == 2 and "--format 'xml': expected csv or jsonl" in bad_format.output
    bad_date = _run(app, "generate", "--id", "gd.gz.py", "--out", out, "--from", "2026-13-01")
    assert bad_date.exit_code == 2 and "--from '2026-13-01': expected a date YYYY-MM-DD" in bad_date.output


def test_single_node_demo_creates_a_node_imports_and_prints_stats(app: typer.Typer, tmp_path: Path) -> None:
    result = _run(app, "demo", "--single", "--dir", str(tmp_path), "--cases", "300")
    assert result.exit_code == 0, result.output
    for heading in ("1. the node", "2. generated data", "3. import", "4. statistics", "early-completion rate"):
        assert heading in result.output
    assert "0 rejected" in result.output
    again = _run(app, "demo", "--single", "--dir", str(tmp_path), "--cases", "300", "--json")
    assert again.exit_code == 0, again.output
    report = json.loads(again.stdout)
    assert report["imported"]["accepted"] == 0 and report["imported"]["rejected"] == 0  # re-running changes nothing
    assert report["stats"]["counts"]["cases_received"] == 300
    node = open_node(tmp_path / "node")
    try:
        assert _scalar(node, text("select count(*) from cases")) == 300
    finally:
        node.close()


def test_supnet_generate_is_registered_in_the_real_cli(tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "node.cli.main",
        "generate",
        "--id",
        "gd",
        "--cases",
        "20",
        "--out",
        str(tmp_path),
        "--json",
    ]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["files"]["acceptances.csv"] == 20
