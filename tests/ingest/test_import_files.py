"""Reading import files: kinds from names and columns, encodings, bad lines (real files, no database)."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.errors import ValidationError
from node.ingest import FileReader, RecordError, detect_encoding, kind_from_file_name, open_files

HEADER = "办件编号,实施编码,受理单位,受理时间\n"


def write(path: Path, content: str | bytes, encoding: str = "utf-8") -> Path:
    path.write_bytes(content if isinstance(content, bytes) else content.encode(encoding))
    return path


def read_all(path: Path, **options: str) -> list[tuple[str, int, object]]:
    return list(FileReader(path, **options).prepare())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("acceptances.csv", "acceptance"),
        ("事项受理.csv", "acceptance"),
        ("acceptance-2026-03.csv", "acceptance"),
        ("procedure_start-2026.jsonl", "procedure_start"),
        ("事项办结2026.csv", "completion"),
        ("Items.CSV", "item"),
        ("gz-acceptances.csv", "acceptance"),
        ("2026-03-事项办结.csv", "completion"),
        ("procedure_end_2026.csv", "procedure_end"),
        ("to-items-and-cases.csv", None),
        ("export.csv", None),
    ],
)
def test_kind_from_file_name(name: str, kind: str | None) -> None:
    assert kind_from_file_name(Path(name)) == kind


def test_encoding_rule(tmp_path: Path) -> None:
    text = HEADER + "C1,I1,番禺区市场监督管理局,20260105T093000\n"
    assert detect_encoding(write(tmp_path / "a.csv", text)) == "utf-8"
    assert detect_encoding(write(tmp_path / "b.csv", b"\xef\xbb\xbf" + text.encode())) == "utf-8-sig"
    assert detect_encoding(write(tmp_path / "c.csv", text, "gb18030")) == "gb18030"
    assert detect_encoding(write(tmp_path / "d.csv", "case_no\nC1\n")) == "utf-8"


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gb18030"])
def test_chinese_headers_in_every_encoding(tmp_path: Path, encoding: str) -> None:
    path = write(tmp_path / "事项受理.csv", HEADER + "C1,I1,番禺区市场监督管理局,20260105T093000\n", encoding)
    [(kind, line, fields)] = read_all(path)
    assert (kind, line) == ("acceptance", 2)
    assert fields == {
        "case_no": "C1",
        "implementation_code": "I1",
        "department": "番禺区市场监督管理局",
        "accepted_at": "20260105T093000",
    }


def test_an_undecodable_line_is_one_error_and_the_rest_is_read(tmp_path: Path) -> None:
    good = "C1,I1,番禺区,20260105T093000\n".encode("gb18030")
    # 0x81 0x20 is not a valid GB18030 sequence.
    path = write(tmp_path / "acceptances.csv", HEADER.encode("gb18030") + b"C0,I1,\x81\x20,x\n" + good)
    records = read_all(path, encoding="gb18030")
    assert isinstance(records[0][2], RecordError)
    assert (records[0][1], records[0][2].reason) == (2, "bad_encoding")
    assert records[1][1:] == (
        3,
        {"case_no": "C1", "implementation_code": "I1", "department": "番禺区", "accepted_at": "20260105T093000"},
    )


def test_line_numbers_count_physical_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path / "steps.csv",
        'case_no,step_name,action,started_at,opinion\n\nC1,审查,通过,20260106T090000,"第一行\n第二行"\nC1,复审,通过,20260107T090000,\n',
    )
    records = read_all(path)
    assert [(line, fields["opinion"]) for _, line, fields in records] == [(3, "第一行\n第二行"), (5, "")]  # type: ignore[index]


def test_wrong_column_count_and_unknown_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "acceptances.csv", "case_no,accepted_at,备注\nC1,20260105T093000,x\nC2\n")
    reader = FileReader(path).prepare()
    records = list(reader)
    assert records[0][2] == {"case_no": "C1", "accepted_at": "20260105T093000", "\x00unknown2": "x"}
    error = records[1][2]
    assert isinstance(error, RecordError) and error.reason == "bad_row" and error.line == 3
    assert reader.warnings == [f"{path}: ignored unknown columns: 备注"]


def test_the_same_field_twice_is_a_file_error(tmp_path: Path) -> None:
    path = write(tmp_path / "acceptances.csv", "case_no,办件编号\nC1,C1\n")
    with pytest.raises(ValidationError, match="same field case_no"):
        FileReader(path).prepare()


def test_no_kind_is_a_clear_file_error_before_anything_is_imported(tmp_path: Path) -> None:
    good = write(tmp_path / "items.csv", "实施编码\nI1\n")
    unknown = write(tmp_path / "export.csv", HEADER)
    with pytest.raises(ValidationError, match="--kind"):
        open_files([good, unknown])
    assert [r.primary_kind for r in open_files([unknown], kind="受理")] == ["acceptance"]
    with pytest.raises(ValidationError, match="unknown record kind"):
        open_files([good], kind="nonsense")
    with pytest.raises(ValidationError, match="no such file"):
        open_files([tmp_path / "missing.csv"])


def test_a_kind_column_mixes_kinds(tmp_path: Path) -> None:
    path = write(
        tmp_path / "export.csv",
        "kind,办件编号,受理时间,办结时间\n受理,C1,20260105T093000,\n办结,C1,,20260106T093000\n审批,C1,,\n",
    )
    records = read_all(path)
    assert [(kind, line) for kind, line, _ in records] == [("acceptance", 2), ("completion", 3), ("acceptance", 4)]
    assert isinstance(records[2][2], RecordError) and records[2][2].reason == "unknown_kind"


def test_jsonl_kinds_and_bad_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path / "export.jsonl",
        '{"记录类型": "事项受理", "办件编号": "C1", "extra": 1}\n\n[1, 2]\n{"case_no": "C2"}\n'
        '{"kind": "completion", "case_no": "C1"}\n',
    )
    reader = FileReader(path).prepare()
    records = list(reader)
    assert records[0] == ("acceptance", 1, {"case_no": "C1"})
    assert isinstance(records[1][2], RecordError) and (records[1][1], records[1][2].reason) == (3, "bad_json")
    assert isinstance(records[2][2], RecordError) and records[2][2].field == "kind"
    assert records[3] == ("completion", 5, {"case_no": "C1"})
    assert reader.warnings == [f"{path}: ignored unknown fields: extra"]
    # Lines without a kind take --kind.
    assert [kind for kind, _, _ in read_all(path, kind="acceptance")][2] == "acceptance"
