"""The generated fast path of Validator must agree with the general path on every input it accepts."""

from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.domain import RECORD_FIELDS, FieldSpec
from node.ingest import RecordInvalid, Validator

VALIDATOR = Validator(ZoneInfo("Asia/Shanghai"))

_texts = st.one_of(
    st.sampled_from(["", " ", "1", "2", "9", "01", "是", "否", "true", "0", " x ", "\u3000a", "A" * 60]),
    st.text(max_size=30),
)
_numbers = st.one_of(
    st.integers(min_value=-5, max_value=2**32),
    st.sampled_from(["0", "12", "-3", "007", "1_000", "²", "12.5", "99999999999", " 5"]),
)
_datetimes = st.one_of(
    st.sampled_from(
        [
            "20260105T093000",
            "20260105093000",
            "2026-01-05 09:30:00",
            "2026-01-05T09:30:00+00:00",
            "20261305T093000",
            "2026010XT093000",
            "20260105T0930",
            "",
            "now",
        ]
    ),
    st.text(alphabet="0123456789T-: ", min_size=10, max_size=20),
)
_decimals = st.one_of(st.sampled_from(["12.50", "-1", "0.001", "abc", "1e3", "3"]), st.floats(allow_nan=True))
_booleans = st.one_of(st.booleans(), st.sampled_from(["1", "0", "TRUE", "是", "否", "maybe", 2]))
_BY_TYPE = {"str": _texts, "int": _numbers, "datetime": _datetimes, "decimal": _decimals, "bool": _booleans}


def _value(spec: FieldSpec) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), _BY_TYPE[spec.type])


@st.composite
def records(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    kind = draw(st.sampled_from(sorted(RECORD_FIELDS)))
    fields = {spec.name: draw(_value(spec)) for spec in RECORD_FIELDS[kind]}
    return kind, {name: value for name, value in fields.items() if value is not None}


def _outcome(function: Any, kind: str, fields: dict[str, Any]) -> tuple[str, Any]:
    try:
        return "ok", function(kind, fields)
    except RecordInvalid as invalid:
        return "invalid", (invalid.field, invalid.reason)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records())
def test_fast_path_agrees_with_general_path(record: tuple[str, dict[str, Any]]) -> None:
    kind, fields = record
    assert _outcome(VALIDATOR.validate, kind, fields) == _outcome(VALIDATOR.validate_general, kind, fields)


def test_fast_path_takes_a_clean_record() -> None:
    fast = VALIDATOR._fast["acceptance"]
    row = fast({"case_no": "C1", "implementation_code": "I1", "department": "D", "accepted_at": "20260105T093000"})
    assert row is not None and row["case_type_code"] == "2"
    # A value needing cleanup is left to the general path.
    assert (
        fast({"case_no": " C1", "implementation_code": "I1", "department": "D", "accepted_at": "20260105T093000"})
        is None
    )
