"""The typed records of node.ingest match the field catalogue, the validator's output and the listener contract."""

from __future__ import annotations

from typing import Any

import pytest

import node.ingest as ingest
from node.domain import RECORD_FIELDS
from node.ingest import CASE_FIELDS

ROW_TYPES: dict[str, Any] = {
    "item": ingest.ItemRow,
    "acceptance": ingest.AcceptanceRow,
    "step": ingest.StepRow,
    "procedure_start": ingest.ProcedureStartRow,
    "procedure_end": ingest.ProcedureEndRow,
    "completion": ingest.CompletionRow,
    "payment": ingest.PaymentRow,
    "evaluation": ingest.EvaluationRow,
    "complaint": ingest.ComplaintRow,
}


def test_every_kind_has_a_row_type() -> None:
    assert set(ROW_TYPES) == set(RECORD_FIELDS)


@pytest.mark.parametrize("kind", sorted(RECORD_FIELDS))
def test_a_row_type_requires_exactly_the_fields_of_its_kind(kind: str) -> None:
    # Validation sets every field of the kind; the keys the importer adds when storing are the optional ones.
    assert ROW_TYPES[kind].__required_keys__ == {spec.name for spec in RECORD_FIELDS[kind]}


def test_case_state_has_the_case_fields_listeners_rely_on() -> None:
    state = ingest.CaseState
    assert set(CASE_FIELDS) | {"clock_stopped"} == state.__required_keys__ | state.__optional_keys__
