"""Per-record validation: a raw record (strings or JSON values) becomes a typed row or one clear error.

The row is its kind's TypedDict of node.ingest.records (ItemRow, AcceptanceRow ...), keyed by model column names.

Only checks that need no database live here (types, lengths, codes, ranges, cross-field order); the checks that
need stored data (unknown item, unknown case, conflicts, case state) are the importer's.
"""

from __future__ import annotations

import re
import reprlib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from functools import cache
from types import CodeType
from typing import Any, cast
from zoneinfo import ZoneInfo

from node.domain import RECORD_FIELDS, STEP_ACTIONS, FieldSpec, header_map, parse_datetime
from node.ingest.records import AcceptanceRow, EvaluationRow, ItemRow, StepRow, ValidatedRow
from node.store import Base

# Stable short reason codes; summaries count rejections by these, clients may match on them.
MISSING_FIELD = "missing_field"
BAD_DATETIME = "bad_datetime"
BAD_NUMBER = "bad_number"
BAD_BOOL = "bad_bool"
TOO_LONG = "too_long"
BAD_CODE = "bad_code"
NEGATIVE_FEE = "negative_fee"
INCONSISTENT = "inconsistent"
UNKNOWN_ITEM = "unknown_item"
UNKNOWN_CASE = "unknown_case"
UNKNOWN_KIND = "unknown_kind"
CONFLICT = "conflict"
CALENDAR = "calendar"
INVALID_STATE = "invalid_state"
BEFORE_ACCEPTANCE = "before_acceptance"
IN_FUTURE = "in_future"
BAD_JSON = "bad_json"
BAD_ROW = "bad_row"
BAD_ENCODING = "bad_encoding"
BAD_TEXT = "bad_text"

# The table each record kind is stored in.
KIND_TABLES: dict[str, str] = {
    "item": "items",
    "acceptance": "cases",
    "step": "steps",
    "procedure_start": "special_procedures",
    "procedure_end": "special_procedures",
    "completion": "completions",
    "payment": "payments",
    "evaluation": "evaluations",
    "complaint": "complaints",
}

# The natural key of each kind: re-sending it with the same content is a duplicate, with other content a conflict.
NATURAL_KEYS: dict[str, tuple[str, ...]] = {
    "item": ("implementation_code",),
    "acceptance": ("case_no",),
    "step": ("case_no", "step_name", "started_at"),
    "procedure_start": ("case_no", "started_at"),
    "procedure_end": ("case_no", "ended_at"),
    "completion": ("case_no",),
    "payment": ("case_no", "paid_at"),
    "evaluation": ("case_no", "evaluated_at"),
    "complaint": ("complaint_no",),
}

_ALL_HEADERS: dict[str, str] = {}
for _kind in RECORD_FIELDS:
    _ALL_HEADERS.update(header_map(_kind))
# The same English name can carry different Chinese names in different kinds (承诺办结时限 vs 承诺时限).
_CN_BY_KIND: dict[str, dict[str, str]] = {
    kind: {spec.name: spec.cn for spec in specs} for kind, specs in RECORD_FIELDS.items()
}
_CN_ANY: dict[str, str] = {name: cn for names in _CN_BY_KIND.values() for name, cn in names.items()}

_TRUE = frozenset({"1", "true", "t", "yes", "y", "是"})
_FALSE = frozenset({"0", "false", "f", "no", "n", "否"})
_MAX_FEE_DIGITS = 16  # GB/T 39046 收费金额 n..16,2
_CODE_SETS: dict[tuple[str, str], frozenset[str]] = {
    ("item", "level_code"): frozenset("123456"),
    ("item", "legal_limit_unit"): frozenset("12"),
    ("item", "promised_limit_unit"): frozenset("12"),
    ("item", "channel_code"): frozenset("12349"),
    ("acceptance", "case_type_code"): frozenset("129"),
    ("step", "status_code"): frozenset("12"),
    ("procedure_start", "kind_code"): frozenset("12"),
    ("completion", "result_code"): frozenset("1239"),
}


def field_label(name: str | None, kind: str | None = None) -> str:
    """A field as people read it: our name and the standard's Chinese name, e.g. 'accepted_at (受理时间)'."""
    if name is None:
        return "(record)"
    cn = _CN_BY_KIND.get(kind or "", _CN_ANY).get(name)
    return f"{name} ({cn})" if cn else name


def canonical_field(name: str) -> str | None:
    """Our English field name for an English or GB/T Chinese field name, or None when unknown."""
    return _ALL_HEADERS.get(name.strip())


@dataclass(frozen=True, slots=True)
class RecordError:
    """Why one input record was rejected: where it came from, which field, a stable reason code and a message."""

    file: str
    line: int
    kind: str
    field: str | None
    reason: str
    message: str
    key: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every attribute."""
        return asdict(self)

    def __str__(self) -> str:
        key = f" {self.key}" if self.key else ""
        return f"{self.file}:{self.line}: {self.kind}{key}: {self.message}"


class RecordInvalid(Exception):  # noqa: N818 - a control-flow signal, not an error class of the hierarchy
    """Raised by validation: the first problem's field and reason, and a message listing every problem."""

    def __init__(self, field: str | None, reason: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.reason = reason
        self.message = message


class _Problem(Exception):  # noqa: N818 - internal signal from a converter
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def problem_message(field: str | None, detail: str, kind: str | None = None) -> str:
    """The message of one field problem: 'field accepted_at (受理时间): month 13 out of range'."""
    if field is None:
        return detail
    return f"field {field_label(field, kind)}: {detail}"


# Nested JSON values are shown only a few levels deep: a plain repr of a value nested hundreds deep would recurse
# as deep as the JSON parser did (up to the interpreter's limit) and cost a message of its whole size.
_NESTED_REPR = reprlib.Repr()
_NESTED_REPR.maxlevel, _NESTED_REPR.maxdict, _NESTED_REPR.maxlist = 3, 4, 4


def shown_value(value: Any) -> str:
    """A received value as a message shows it: its repr, cut to 60 characters (nested JSON only a few levels deep)."""
    text = _NESTED_REPR.repr(value) if isinstance(value, dict | list) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# NUL cannot be stored in PostgreSQL text, a lone surrogate (what a JSON \ud800 escape decodes to) in no UTF-8 database:
# either would fail the whole batch's transaction, so each is one rejected record instead.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _to_str(value: Any) -> str:
    if isinstance(value, str):
        bad = _UNSTORABLE.search(value)
        if bad is not None:
            what = "a NUL character" if bad.group() == "\x00" else "a lone surrogate (not valid Unicode)"
            raise _Problem(BAD_TEXT, f"text contains {what} at position {bad.start()}")
        return value.strip()
    if isinstance(value, bool | dict | list):
        raise _Problem(BAD_CODE, f"expected text, got {shown_value(value)}")
    return str(value)


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise _Problem(BAD_NUMBER, f"expected a whole number, got {shown_value(value)}")
    if isinstance(value, int):
        number = value
    else:
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise _Problem(BAD_NUMBER, f"expected a whole number, got {shown_value(value)}") from None
    if number < 0:
        raise _Problem(BAD_NUMBER, f"must not be negative, got {number}")
    if number > 2**31 - 1:
        raise _Problem(BAD_NUMBER, f"too large: {number}")
    return number


def _to_decimal(value: Any) -> Decimal:
    if isinstance(value, bool | dict | list):
        raise _Problem(BAD_NUMBER, f"expected an amount in yuan, got {shown_value(value)}")
    try:
        # str() first so a JSON float 12.5 becomes Decimal('12.5'), not its binary expansion.
        number = Decimal(value.strip() if isinstance(value, str) else str(value))
    except (InvalidOperation, ValueError, TypeError):
        raise _Problem(BAD_NUMBER, f"expected an amount in yuan, got {shown_value(value)}") from None
    if not number.is_finite():
        raise _Problem(BAD_NUMBER, f"expected a finite amount, got {shown_value(value)}")
    exponent = number.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -2 and number != number.quantize(Decimal("0.01")):
        raise _Problem(BAD_NUMBER, f"at most 2 decimal places, got {shown_value(value)}")
    if number < 0:
        raise _Problem(NEGATIVE_FEE, f"must not be negative, got {number}")
    if abs(number) >= Decimal(10) ** (_MAX_FEE_DIGITS - 2):
        raise _Problem(BAD_NUMBER, f"too large for n..{_MAX_FEE_DIGITS},2: {number}")
    return number.quantize(Decimal("0.01"))


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, dict | list):
        raise _Problem(BAD_BOOL, f"expected 1/0, true/false or 是/否, got {shown_value(value)}")
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise _Problem(BAD_BOOL, f"expected 1/0, true/false or 是/否, got {shown_value(value)}")


def _model_default(kind: str, spec: FieldSpec) -> Any:
    column = Base.metadata.tables[KIND_TABLES[kind]].c[spec.name]
    default = column.default
    if default is not None and getattr(default, "is_scalar", False):
        return default.arg  # type: ignore[attr-defined]
    return None


@dataclass(frozen=True, slots=True)
class _CompiledField:
    name: str
    required: bool
    converter_name: str
    convert: Callable[[Any], Any]
    max_length: int | None
    default: Any
    codes: frozenset[str] | None


@cache
def _compiled(source: str) -> CodeType:
    """The fast path's generated source, compiled once per process (a host opens a validator per hosted node)."""
    return compile(source, "<fast validator>", "exec")


class Validator:
    """Validates raw records of every kind into typed rows (model column names), in the node's time zone."""

    def __init__(self, tz: ZoneInfo) -> None:
        self.tz = tz
        self._fields: dict[str, tuple[_CompiledField, ...]] = {
            kind: tuple(self._compile(kind, spec) for spec in specs) for kind, specs in RECORD_FIELDS.items()
        }
        # Cross-field checks, each on its own kind's row.
        self._checks: dict[str, Callable[[Any], None]] = {
            "item": _check_item,
            "acceptance": _check_acceptance,
            "step": _check_step,
            "evaluation": _check_evaluation,
        }
        self._fast: dict[str, Callable[[Mapping[str, Any]], ValidatedRow | None]] = {
            kind: self._compile_fast(kind, fields) for kind, fields in self._fields.items()
        }

    def _compile(self, kind: str, spec: FieldSpec) -> _CompiledField:
        converters: dict[str, Callable[[Any], Any]] = {
            "str": _to_str,
            "int": _to_int,
            "decimal": _to_decimal,
            "bool": _to_bool,
            "datetime": self._to_datetime,
        }
        return _CompiledField(
            name=spec.name,
            required=spec.required,
            converter_name=spec.type,
            convert=converters[spec.type],
            # The standard's length, or the one free-text limit: the same on every path (CSV, JSON Lines, gRPC).
            max_length=spec.length_limit,
            default=_model_default(kind, spec),
            codes=_CODE_SETS.get((kind, spec.name)),
        )

    def _to_datetime(self, value: Any) -> datetime:
        if isinstance(value, datetime):
            return value if value.tzinfo is None else value.astimezone(self.tz).replace(tzinfo=None)
        if not isinstance(value, str):
            raise _Problem(BAD_DATETIME, f"expected a date-time text, got {shown_value(value)}")
        try:
            return parse_datetime(value, self.tz)
        except ValueError as exc:
            raise _Problem(BAD_DATETIME, f"bad date-time {shown_value(value)}: {exc}") from None

    def kinds(self) -> tuple[str, ...]:
        """The record kinds this validator knows."""
        return tuple(self._fields)

    def _compile_fast(
        self, kind: str, fields: tuple[_CompiledField, ...]
    ) -> Callable[[Mapping[str, Any]], ValidatedRow | None]:
        """Straight-line code for the common, clean record; it returns None at the first doubt.

        The import hot path spends most of its Python time here, and a loop over field descriptors costs about
        20 µs a record. The generated function accepts a value only when the general path would accept it
        unchanged (text already stripped and within length, a listed code, a compact date-time ...), so its result
        is identical; anything else (blank, whitespace, JSON numbers, bad values) goes the general way, which also
        words the errors. tests/ingest/test_validate_fast.py checks the two agree.
        """
        namespace: dict[str, Any] = {
            "fromiso": datetime.fromisoformat,
            "to_dt": self._to_datetime,
            "Problem": _Problem,
            "BOOLS": {"1": True, "0": False, "true": True, "false": False, "是": True, "否": False},
            "MAXINT": 2**31 - 1,
        }
        lines = ["def fast(fields):", "    get = fields.get", "    row = {}"]
        for index, spec in enumerate(fields):
            name = spec.name
            namespace[f"D{index}"] = spec.default
            namespace[f"C{index}"] = spec.convert
            lines.append(f"    v = get({name!r})")
            if spec.required:
                lines.append("    if v is None or v == '':")
                lines.append("        return None")
            else:
                lines.append("    if v is None or v == '':")
                lines.append(f"        row[{name!r}] = D{index}")
            lines.append("    else:")
            body = self._fast_body(spec, index, namespace)
            lines.extend(f"        {line}" for line in body)
        lines.append("    return row")
        exec(_compiled("\n".join(lines)), namespace)  # noqa: S102 - our own generated source, no input reaches it
        fast: Callable[[Mapping[str, Any]], ValidatedRow | None] = namespace["fast"]
        return fast

    @staticmethod
    def _fast_body(spec: _CompiledField, index: int, namespace: dict[str, Any]) -> list[str]:
        name = spec.name
        if spec.converter_name == "str":
            # No NUL, and other than ASCII only printable text (a lone surrogate is not): anything else goes the
            # general way, which rejects NUL and lone surrogates and accepts the rest (e.g. a newline).
            condition = "v.__class__ is str and v == v.strip()"
            condition += " and '\\x00' not in v and (v.isascii() or v.isprintable())"
            if spec.max_length is not None:
                condition += f" and len(v) <= {spec.max_length}"
            if spec.codes is not None:
                namespace[f"K{index}"] = spec.codes
                condition += f" and v in K{index}"
            return [f"if {condition}:", f"    row[{name!r}] = v", "else:", "    return None"]
        if spec.converter_name == "int":
            return [
                "if v.__class__ is str and len(v) < 10 and v.isascii() and v.isdigit():",
                f"    row[{name!r}] = int(v)",
                "elif v.__class__ is int and 0 <= v <= MAXINT:",
                f"    row[{name!r}] = v",
                "else:",
                "    return None",
            ]
        if spec.converter_name == "bool":
            return [
                "if v.__class__ is bool:",
                f"    row[{name!r}] = v",
                "elif v.__class__ is str and v in BOOLS:",
                f"    row[{name!r}] = BOOLS[v]",
                "else:",
                "    return None",
            ]
        if spec.converter_name == "datetime":
            # The standard's compact form straight to C; every other form through the general converter.
            return [
                "try:",
                "    if v.__class__ is str and len(v) == 15 and v[8] == 'T':",
                f"        row[{name!r}] = fromiso(v)",
                "    else:",
                f"        row[{name!r}] = to_dt(v)",
                "except (ValueError, Problem):",
                "    return None",
            ]
        return [
            "try:",
            f"    row[{name!r}] = C{index}(v)",
            "except Problem:",
            "    return None",
        ]

    def validate(self, kind: str, fields: Mapping[str, Any]) -> ValidatedRow:
        """The typed row of a record of ``kind`` with English field names; RecordInvalid lists every problem."""
        row = self._fast[kind](fields)
        if row is None:
            return self.validate_general(kind, fields)
        check = self._checks.get(kind)
        if check is not None:
            check(row)
        return row

    def validate_general(self, kind: str, fields: Mapping[str, Any]) -> ValidatedRow:
        """The general path of ``validate``: every conversion, every problem worded (slower)."""
        row: dict[str, Any] = {}
        problems: list[tuple[str | None, str, str]] | None = None
        for spec in self._fields[kind]:
            value = fields.get(spec.name)
            if value is None or value == "":
                if spec.required:
                    problems = problems or []
                    problems.append((spec.name, MISSING_FIELD, "missing"))
                else:
                    row[spec.name] = spec.default
                continue
            try:
                converted = spec.convert(value)
                if converted == "":
                    # A blank text (spaces only) is an absent value, not an empty code.
                    if spec.required:
                        raise _Problem(MISSING_FIELD, "missing (blank)")
                    row[spec.name] = spec.default
                    continue
                if spec.max_length is not None and len(converted) > spec.max_length:
                    raise _Problem(TOO_LONG, f"{len(converted)} characters, at most {spec.max_length} allowed")
                if spec.codes is not None and converted not in spec.codes:
                    allowed = "/".join(sorted(spec.codes))
                    raise _Problem(BAD_CODE, f"unknown code {shown_value(converted)} (expected {allowed})")
            except _Problem as problem:
                problems = problems or []
                problems.append((spec.name, problem.reason, problem.detail))
                continue
            row[spec.name] = converted
        if problems is None:
            check = self._checks.get(kind)
            if check is not None:
                check(row)
        else:
            first_field, first_reason, _ = problems[0]
            message = "; ".join(problem_message(field, detail, kind) for field, _, detail in problems)
            raise RecordInvalid(first_field, first_reason, message)
        # Every field of the kind is set above, converted to its FieldSpec type: the kind's row.
        return cast("ValidatedRow", row)


def _invalid(field: str, reason: str, detail: str, kind: str) -> RecordInvalid:
    return RecordInvalid(field, reason, problem_message(field, detail, kind))


def _check_item(row: ItemRow) -> None:
    type_code = row["type_code"]
    if len(type_code) != 2 or not type_code.isdigit():
        raise _invalid("type_code", BAD_CODE, f"expected a two-digit code (A.1), got {shown_value(type_code)}", "item")
    if not row.get("department"):
        # 责任部门 is optional in exchange files; the implementing body is then the responsible department.
        row["department"] = row["body_name"]
    same_unit = row["promised_limit_unit"] == row["legal_limit_unit"]
    if same_unit and row["promised_limit"] > row["legal_limit"]:
        raise _invalid(
            "promised_limit",
            INCONSISTENT,
            f"promised limit {row['promised_limit']} exceeds the legal limit {row['legal_limit']}",
            "item",
        )
    fee = row.get("fee_standard")
    if fee is not None and fee > 0 and not row["fee_flag"]:
        raise _invalid(
            "fee_standard", INCONSISTENT, f"fee standard {fee} on an item marked free (是否收费 = 0)", "item"
        )


def _check_acceptance(row: AcceptanceRow) -> None:
    applied = row["applied_at"]
    if applied is not None and applied > row["accepted_at"]:
        raise _invalid(
            "applied_at",
            INCONSISTENT,
            f"applied {applied} after the case was accepted ({row['accepted_at']})",
            "acceptance",
        )


def _check_step(row: StepRow) -> None:
    action = STEP_ACTIONS.get(row["action"].lower()) or STEP_ACTIONS.get(row["action"])
    if action is None:
        allowed = "/".join(sorted(STEP_ACTIONS))
        raise _invalid("action", BAD_CODE, f"unknown action {shown_value(row['action'])} (expected {allowed})", "step")
    row["action"] = action
    ended = row.get("ended_at")
    if ended is not None and ended < row["started_at"]:
        raise _invalid("ended_at", INCONSISTENT, f"step ends ({ended}) before it starts ({row['started_at']})", "step")


def _check_evaluation(row: EvaluationRow) -> None:
    code = row["satisfaction_code"]
    if not 1 <= code <= 5:
        raise _invalid("satisfaction_code", BAD_CODE, f"satisfaction must be 1-5 (A.8), got {code}", "evaluation")


_KEY_PART_SHOWN = 120


def _key_part(part: Any) -> str:
    if part is None:
        return ""
    if isinstance(part, datetime):
        return part.isoformat(timespec="seconds")
    if isinstance(part, dict | list):  # a bad JSON value, maybe nested deep: shown short
        return shown_value(part)
    text = str(part).strip()
    # A key far over its length (rejected as too long) is shown by its start, not copied whole into every message.
    return text if len(text) <= _KEY_PART_SHOWN else f"{text[:_KEY_PART_SHOWN]}…({len(text)} characters)"


def record_key(kind: str, fields: Mapping[str, Any]) -> str | None:
    """The natural key of a (possibly invalid) record as text, for messages: 'CASE-1' or 'CASE-1/审查/2026...'."""
    parts = [fields.get(name) for name in NATURAL_KEYS.get(kind, ())]
    shown = [text for text in map(_key_part, parts) if text]
    key = "/".join(shown)
    # Shown in messages and JSON output: a key with NUL or a lone surrogate is shown escaped.
    return (key.encode("unicode_escape").decode("ascii") if _UNSTORABLE.search(key) else key) or None
