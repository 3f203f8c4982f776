"""Record kinds and their fields: our English names and the GB/T 39046-2020 Chinese names.

This is the one contract shared by import, gRPC ingest and the synthetic data generator.
Field types: ``str``, ``int``, ``datetime``, ``decimal``, ``bool`` (1/0, true/false, 是/否).
Every text field has a length limit (``FieldSpec.length_limit``): the standard's length where it gives one
(``max_length``), else FREE_TEXT_MAX_LENGTH for free text (opinions, reasons, comments, complaint texts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FieldType = Literal["str", "int", "datetime", "decimal", "bool"]

# The most characters a free-text field without a length in the standard may hold, on every import path (CSV,
# JSON Lines, gRPC): 128 Ki characters, the csv module's default field limit that CSV import had always stopped at.
FREE_TEXT_MAX_LENGTH = 131_072


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field of a record kind."""

    name: str
    cn: str
    type: FieldType = "str"
    required: bool = False
    max_length: int | None = None

    @property
    def length_limit(self) -> int | None:
        """The most characters a value may have: ``max_length``, FREE_TEXT_MAX_LENGTH for other text, else None."""
        if self.max_length is not None:
            return self.max_length
        return FREE_TEXT_MAX_LENGTH if self.type == "str" else None


def _f(
    name: str, cn: str, type_: FieldType = "str", required: bool = False, max_length: int | None = None
) -> FieldSpec:
    return FieldSpec(name, cn, type_, required, max_length)


RECORD_FIELDS: dict[str, tuple[FieldSpec, ...]] = {
    "item": (
        _f("implementation_code", "实施编码", required=True, max_length=24),
        _f("basic_code", "基本编码", required=True, max_length=10),
        _f("name", "事项名称", required=True, max_length=200),
        _f("type_code", "事项类型代码", required=True, max_length=2),
        _f("level_code", "行使层级代码", required=True, max_length=1),
        _f("body_name", "实施主体", required=True, max_length=200),
        _f("body_code", "实施主体代码", required=True, max_length=18),
        _f("department", "责任部门", max_length=200),
        _f("legal_limit", "法定办结时限", "int", required=True),
        _f("legal_limit_unit", "法定办结时限单位", max_length=1),
        _f("promised_limit", "承诺办结时限", "int", required=True),
        _f("promised_limit_unit", "承诺办结时限单位", max_length=1),
        _f("fee_flag", "是否收费", "bool", required=True),
        _f("fee_standard", "收费标准", "decimal"),
        _f("channel_code", "办理形式代码", max_length=1),
        # Not a GB/T 39046 field: when this version of the item takes effect (docs/domain.md §9; absent: a new
        # item from the beginning, a changed one from the import).
        _f("effective_from", "生效时间", "datetime"),
    ),
    "acceptance": (
        _f("case_no", "办件编号", required=True, max_length=50),
        _f("implementation_code", "实施编码", required=True, max_length=24),
        _f("department", "受理单位", required=True, max_length=200),
        _f("department_code", "受理单位代码", max_length=18),
        _f("acceptor", "受理人员", max_length=100),
        _f("accepted_at", "受理时间", "datetime", required=True),
        _f("declared_promised_at", "承诺办结时间", "datetime"),
        _f("case_type_code", "办件类型代码", max_length=1),
        _f("area_code", "行政区划代码", max_length=9),
        _f("applicant_name", "申请者名称", max_length=200),
        _f("applicant_id_type", "申请者证件类型代码", max_length=3),
        _f("applicant_id_no", "申请者证件号码", max_length=50),
        _f("apply_source_code", "申报来源代码", max_length=2),
        _f("applied_at", "申请时间", "datetime"),
    ),
    "step": (
        _f("case_no", "办件编号", required=True, max_length=50),
        _f("step_name", "环节名称", required=True, max_length=100),
        _f("action", "业务动作", required=True, max_length=10),
        _f("handler", "环节处理人", max_length=100),
        _f("post", "岗位", max_length=100),
        _f("opinion", "环节处理意见"),
        _f("started_at", "环节开始时间", "datetime", required=True),
        _f("ended_at", "环节结束时间", "datetime"),
        _f("status_code", "环节办理状态代码", max_length=1),
        _f("step_limit", "环节时限", "int"),
        _f("entered_at", "数据录入时间", "datetime"),
    ),
    "procedure_start": (
        _f("case_no", "办件编号", required=True, max_length=50),
        _f("kind_code", "特别程序种类代码", required=True, max_length=1),
        _f("started_at", "特别程序开始时间", "datetime", required=True),
        _f("reason", "特别程序启动理由"),
    ),
    "procedure_end": (
        _f("case_no", "办件编号", required=True, max_length=50),
        _f("ended_at", "特别程序结束时间", "datetime", required=True),
        _f("result", "特别程序结果"),
    ),
    "completion": (
        _f("case_no", "办件编号", required=True, max_length=50),
        _f("handler_name", "办理人姓名", max_length=100),
        _f("completed_at", "办结时间", "datetime", required=True),
        _f("result_code", "办理结果", max_length=1),
        _f("reason", "办理结果说明"),
        _f("certificate_name", "结果证照名称", max_length=200),
        _f("certificate_no", "结果证照编号", max_length=100),
        _f("fee_flag", "是否收费", "bool"),
    ),
    "payment": (
        _f("case_no", "办件编号", required=True, max_length=50),
        _f("amount", "收费金额", "decimal", required=True),
        _f("paid_at", "收费时间", "datetime", required=True),
    ),
    "evaluation": (
        _f("case_no", "办件编号", required=True, max_length=50),
        _f("channel", "评价渠道", max_length=20),
        _f("evaluated_at", "评价时间", "datetime", required=True),
        _f("satisfaction_code", "满意度代码", "int", required=True),
        _f("comment", "评价内容"),
    ),
    "complaint": (
        _f("complaint_no", "投诉编号", required=True, max_length=50),
        _f("title", "投诉标题", required=True, max_length=200),
        _f("complainant", "投诉人", max_length=100),
        _f("respondent_unit", "被投诉单位", required=True, max_length=200),
        _f("respondent_person", "被投诉人", max_length=100),
        _f("content", "投诉内容"),
        _f("source_code", "投诉来源", max_length=2),
        _f("received_at", "投诉时间", "datetime", required=True),
        _f("handling_unit", "处理单位", max_length=200),
        _f("handler", "处理人", max_length=100),
        _f("feedback", "反馈意见"),
        _f("promised_limit", "承诺时限", "int"),
        _f("extension_workdays", "延期", "int"),
        _f("overdue_days", "超期天数", "int"),
        _f("area_code", "行政区划代码", max_length=9),
        _f("case_no", "办件编号", max_length=50),
    ),
}

# Each kind's English field names, in RECORD_FIELDS order.
FIELD_NAMES: dict[str, tuple[str, ...]] = {
    kind: tuple(spec.name for spec in specs) for kind, specs in RECORD_FIELDS.items()
}

# Kinds in the order their dependencies require when several files are imported together.
KIND_ORDER: tuple[str, ...] = (
    "item",
    "acceptance",
    "procedure_start",
    "step",
    "procedure_end",
    "payment",
    "completion",
    "evaluation",
    "complaint",
)

# Names a kind may go by (file name stems, JSON "kind" values), English and Chinese.
KIND_ALIASES: dict[str, str] = {
    "item": "item",
    "items": "item",
    "事项": "item",
    "acceptance": "acceptance",
    "acceptances": "acceptance",
    "case": "acceptance",
    "cases": "acceptance",
    "事项受理": "acceptance",
    "受理": "acceptance",
    "step": "step",
    "steps": "step",
    "事项办理": "step",
    "办理": "step",
    "procedure_start": "procedure_start",
    "procedure_starts": "procedure_start",
    "特别程序开始": "procedure_start",
    "procedure_end": "procedure_end",
    "procedure_ends": "procedure_end",
    "特别程序结束": "procedure_end",
    "completion": "completion",
    "completions": "completion",
    "事项办结": "completion",
    "办结": "completion",
    "payment": "payment",
    "payments": "payment",
    "支付信息": "payment",
    "收费": "payment",
    "evaluation": "evaluation",
    "evaluations": "evaluation",
    "绩效评价": "evaluation",
    "评价": "evaluation",
    "complaint": "complaint",
    "complaints": "complaint",
    "投诉": "complaint",
}

# Step actions: the standard's 通过/退回/其他 plus 补正 (a request for supplementary materials).
STEP_ACTIONS: dict[str, str] = {
    "pass": "pass",
    "通过": "pass",
    "return": "return",
    "退回": "return",
    "supplement": "supplement",
    "补正": "supplement",
    "other": "other",
    "其他": "other",
}


def header_map(kind: str) -> dict[str, str]:
    """Map every accepted header (English or Chinese) of a kind to our English field name."""
    mapping: dict[str, str] = {}
    for spec in RECORD_FIELDS[kind]:
        mapping[spec.name] = spec.name
        mapping[spec.cn] = spec.name
    return mapping
