"""Records a business system streams into a node over gRPC (IngestService): one item, under its Chinese
headers, and acceptances of it."""

from __future__ import annotations

ITEM = {
    "实施编码": "11440113MB2C1234501",
    "基本编码": "0000123401",
    "事项名称": "食品经营许可",
    "事项类型代码": "01",
    "行使层级代码": "4",
    "实施主体": "番禺区市场监督管理局",
    "实施主体代码": "11440113MB2C12345X",
    "法定办结时限": "20",
    "承诺办结时限": "10",
    "是否收费": "0",
}


def acceptance(number: int, **overrides: str) -> dict[str, str]:
    """The fields of case ``PY-2026-<number>`` accepted for ITEM, with ``overrides`` applied."""
    fields = {
        "case_no": f"PY-2026-{number:06d}",
        "implementation_code": ITEM["实施编码"],
        "department": "番禺区市场监督管理局",
        "accepted_at": "20260302T093000",
        "applicant_name": "张三",
    }
    fields.update(overrides)
    return fields
