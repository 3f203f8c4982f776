"""Metric definitions without a database: which record increments what, on which day; derived rates."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import pytest

from node.domain import load_calendar
from node.supervision import COUNTERS, AlertDraft, BucketKey, alert_deltas, derived_rates, fen, record_deltas

CASE = {
    "case_no": "C-1",
    "implementation_code": "440112001",
    "basic_code": "000101001",
    "item_type_code": "01",
    "department": "窗口",
    "accepted_at": datetime(2025, 3, 3, 10),
    "promised_due_at": datetime(2025, 3, 10, 23, 59, 59),
    "legal_due_at": datetime(2025, 3, 17, 23, 59, 59),
    "status": "completed",
    "completed_at": None,
    "clock_stop_workdays": 0,
    "supplement_count": 0,
    "return_count": 0,
}


def key(day: date, department: str = "窗口", code: str = "440112001") -> BucketKey:
    return BucketKey(day, department, code, "000101001" if code else "", "01" if code else "")


def test_counters_match_the_bucket_columns() -> None:
    from node.store import MetricBucket

    columns = [c.name for c in MetricBucket.__table__.columns]  # type: ignore[attr-defined]
    assert [c for c in columns if c in COUNTERS] == list(COUNTERS)
    assert set(columns) - set(COUNTERS) == {
        "day",
        "department",
        "implementation_code",
        "basic_code",
        "item_type_code",
        "revision",
    }


def test_acceptance_counts_received_and_the_open_cohort() -> None:
    deltas = record_deltas("acceptance", [{**CASE, "status": "open"}], load_calendar())
    assert deltas == {key(date(2025, 3, 3)): {"received": 1, "open_cases": 1, "records_reported": 1}}


def test_completion_counts_on_the_completed_day_and_closes_the_cohort() -> None:
    early = {"case_no": "C-1", "completed_at": datetime(2025, 3, 7, 9), "result_code": "2", "case": CASE}
    deltas = record_deltas("completion", [early], load_calendar())
    assert deltas == {
        key(date(2025, 3, 7)): {
            "completed": 1,
            "completed_early": 1,
            "completed_on_time": 1,
            "completed_within_legal": 1,
            "processing_workdays": 4,  # Tue 4 .. Fri 7
            "refused": 1,
            "records_reported": 1,
        },
        key(date(2025, 3, 3)): {"open_cases": -1},
    }


def test_completion_on_the_due_day_is_on_time_but_not_early() -> None:
    record = {"completed_at": datetime(2025, 3, 10, 18), "result_code": "1", "case": {**CASE, "clock_stop_workdays": 2}}
    values = record_deltas("completion", [record], load_calendar())[key(date(2025, 3, 10))]
    assert (values.get("completed_early", 0), values["completed_on_time"], values.get("refused", 0)) == (0, 1, 0)
    assert values["processing_workdays"] == 3  # 5 working days minus 2 stopped


def test_steps_procedures_fees_ratings() -> None:
    cal = load_calendar()
    steps = [
        {"action": "return", "started_at": datetime(2025, 3, 4, 9), "case": CASE},
        {"action": "supplement", "started_at": datetime(2025, 3, 4, 10), "case": CASE},
        {"action": "pass", "started_at": datetime(2025, 3, 4, 11), "case": CASE},
    ]
    # Every step is a record reported (上报数据); only returns and supplements have counters of their own.
    assert record_deltas("step", steps, cal) == {
        key(date(2025, 3, 4)): {"return_steps": 1, "supplements": 1, "records_reported": 3}
    }
    started = [{"started_at": datetime(2025, 3, 5, 9), "case": CASE}]
    assert record_deltas("procedure_start", started, cal) == {key(date(2025, 3, 5)): {"records_reported": 1}}
    ended = [{"ended_at": datetime(2025, 3, 6, 9), "procedure": {"workdays": 3}, "case": CASE}]
    assert record_deltas("procedure_end", ended, cal) == {
        key(date(2025, 3, 6)): {"clock_stops": 1, "clock_stop_workdays": 3, "records_reported": 1}
    }
    payments = [
        {"amount": Decimal("12.345"), "paid_at": datetime(2025, 3, 5), "case": CASE},
        {"amount": Decimal("0.10"), "paid_at": datetime(2025, 3, 5), "case": CASE},
    ]
    assert record_deltas("payment", payments, cal) == {
        key(date(2025, 3, 5)): {"fees_count": 2, "fees_fen": 1245, "records_reported": 2}
    }
    ratings = [{"satisfaction_code": 5, "evaluated_at": datetime(2025, 3, 8), "case": CASE}]
    assert record_deltas("evaluation", ratings, cal) == {key(date(2025, 3, 8)): {"ratings_5": 1, "records_reported": 1}}


def test_complaints_count_for_the_respondent_and_the_linked_item() -> None:
    complaints = [
        {"complaint_no": "T1", "respondent_unit": "某局", "received_at": datetime(2025, 3, 4, 9), "case_no": "C-1"},
        {"complaint_no": "T2", "respondent_unit": "某局", "received_at": datetime(2025, 3, 4, 9), "case_no": None},
    ]
    deltas = record_deltas("complaint", complaints, load_calendar(), {"C-1": CASE})
    assert deltas == {
        key(date(2025, 3, 4), "某局"): {"complaints_received": 1},
        key(date(2025, 3, 4), "某局", ""): {"complaints_received": 1},
    }


def test_a_case_counts_as_returned_once_on_its_acceptance_day() -> None:
    # Each step carries its case as it is AFTER the step: the first return makes return_count 1.
    steps = [
        {"action": "return", "started_at": datetime(2025, 3, 4, 9), "case": {**CASE, "return_count": 1}},
        {"action": "return", "started_at": datetime(2025, 3, 5, 9), "case": {**CASE, "return_count": 2}},
        {"action": "return", "started_at": datetime(2025, 3, 5, 10), "case": {**CASE, "return_count": 3}},
    ]
    assert record_deltas("step", steps, load_calendar()) == {
        key(date(2025, 3, 3)): {"cases_returned": 1},  # the cohort of the acceptance day
        key(date(2025, 3, 4)): {"return_steps": 1, "records_reported": 1},
        key(date(2025, 3, 5)): {"return_steps": 2, "records_reported": 2},
    }


def test_a_complaint_stored_accepted_counts_on_its_decision_day() -> None:
    complaints = [
        {
            "complaint_no": "T1",
            "respondent_unit": "某局",
            "received_at": datetime(2025, 3, 4, 9),
            "case_no": "C-1",
            "status": "concluded",
            "decided_at": datetime(2025, 3, 6, 9),
        },
        {
            "complaint_no": "T2",
            "respondent_unit": "某局",
            "received_at": datetime(2025, 3, 4, 9),
            "case_no": "C-1",
            "status": "declined",
            "decided_at": datetime(2025, 3, 6, 9),
        },
    ]
    assert record_deltas("complaint", complaints, load_calendar(), {"C-1": CASE}) == {
        key(date(2025, 3, 4), "某局"): {"complaints_received": 2},
        key(date(2025, 3, 6), "某局"): {"complaints_accepted": 1},
    }


def test_alert_deltas_count_severity_and_the_overdue_gauge_of_open_cases() -> None:
    common = {
        "department": "窗口",
        "implementation_code": "440112001",
        "message": "",
        "basic_code": "000101001",
        "item_type_code": "01",
        "raised_at": datetime(2025, 3, 11, 9),
    }
    drafts = [
        AlertDraft(rule_id="R02", subject="case:A", open_case_day=date(2025, 3, 3), **common),  # type: ignore[arg-type]
        AlertDraft(rule_id="R03", subject="case:B", **common),  # type: ignore[arg-type]  completed: no gauge
        AlertDraft(rule_id="R01", subject="case:C", open_case_day=date(2025, 3, 3), **common),  # type: ignore[arg-type]
    ]
    assert alert_deltas(drafts) == {
        key(date(2025, 3, 11)): {"yellow_cards": 1, "red_cards": 1, "reminders": 1},
        key(date(2025, 3, 3)): {"open_overdue_promised": 1},
    }


def test_fen_rounds_half_up() -> None:
    assert fen(Decimal("0.005")) == 1
    assert fen("12.34") == 1234
    assert fen(12.345) == 1235


def test_derived_rates_come_from_summed_counts() -> None:
    rates = derived_rates(
        {
            "received": 10,
            "return_steps": 14,  # several returns on one case: a count of its own, not in the rate
            "cases_returned": 2,
            "completed": 8,
            "completed_early": 6,
            "completed_on_time": 7,
            "completed_within_legal": 8,
            "processing_workdays": 20,
            "ratings_1": 3,
            "ratings_3": 1,
            "ratings_5": 1,
            "complaints_received": 4,
            "complaints_accepted": 2,  # the other two declined: not in the closure rate's denominator
            "complaints_concluded": 1,
        }
    )
    assert rates["early_rate"] == pytest.approx(0.75)
    assert rates["on_time_rate"] == pytest.approx(0.875)
    assert rates["overdue_rate"] == pytest.approx(0.125)
    assert rates["legal_overdue_rate"] == 0
    assert rates["return_rate"] == pytest.approx(0.2)
    assert rates["satisfaction_rate"] == pytest.approx(0.8)
    assert rates["complaint_acceptance_rate"] == pytest.approx(0.5)
    assert rates["complaint_closure_rate"] == pytest.approx(0.5)
    assert rates["avg_processing_workdays"] == pytest.approx(2.5)
    assert all(value is None for value in derived_rates({}).values())
