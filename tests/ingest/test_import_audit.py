"""Imports are audited: ``supnet import`` (files, their SHA-256, counts, the OS user) and each gRPC ingest stream
(the verified TLS identity of the business system, counts, how the stream ended), on real nodes and a real server."""

from __future__ import annotations

import getpass
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from federation.proto.v1.ingest_pb2 import IngestRecord
from federation.proto.v1.ingest_pb2_grpc import IngestServiceStub
from node.app import open_node
from node.audit_log import AuditFilter, AuditLog
from node.bootstrap import init_node
from node.cli import audit_cmd, import_cmd, init_cmd
from node.errors import StoreError
from node.ingest import Importer
from node.server import NodeServer
from tests.harness.ingest_records import ITEM, acceptance
from tests.harness.pki import INGEST_SYSTEM, ingest_client, provision

ITEMS = """实施编码,基本编码,事项名称,事项类型代码,行使层级代码,实施主体,实施主体代码,法定办结时限,承诺办结时限,是否收费
I1,B0001,餐饮服务许可,01,4,番禺区市场监督管理局,11440113MB2C12345X,20,10,0
"""
ACCEPTANCES = """case_no,implementation_code,department,accepted_at
C1,I1,市场局,20260105T093000
C2,I1,市场局,20260106T093000
C3,NOSUCH,市场局,20260106T093000
"""


@pytest.fixture(scope="module")
def cli() -> typer.Typer:
    app = typer.Typer()
    for module in (init_cmd, import_cmd, audit_cmd):
        module.register(app)
    return app


def run(cli: typer.Typer, *args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, [str(arg) for arg in args])
    return result.exit_code, result.stdout, result.stderr


def imports(cli: typer.Typer, data_dir: Path, action: str = "records.imported") -> list[dict[str, Any]]:
    code, out, err = run(cli, "audit", "--data-dir", data_dir, "--action", action, "--json")
    assert code == 0, err
    return list(json.loads(out)["entries"])


def test_every_cli_import_is_audited_with_its_files_hashes_counts_and_user(
    cli: typer.Typer, tmp_path: Path, db_url: str
) -> None:
    data_dir = tmp_path / "py"
    assert run(cli, "init", "--data-dir", data_dir, "--id", "gd.gz.py", "--db", db_url)[0] == 0
    items, acceptances = tmp_path / "items.csv", tmp_path / "事项受理.csv"
    items.write_text(ITEMS, encoding="utf-8")
    acceptances.write_text(ACCEPTANCES, encoding="utf-8")
    code, out, _ = run(cli, "import", "--data-dir", data_dir, acceptances, items, "--json")
    assert code == 1  # C3 names an unknown item
    summary = json.loads(out)
    code, _, _ = run(cli, "import", "--data-dir", data_dir, items)  # again: a duplicate
    assert code == 0

    second, first = imports(cli, data_dir)
    assert first["actor"] == f"{getpass.getuser()}@gd.gz.py" and first["result"] == "ok"
    assert first["target"] == "items.csv, 事项受理.csv"  # in the order imported: items first
    detail = first["detail"]
    assert [(f["path"], f["sha256"], f["bytes"]) for f in detail["files"]] == [
        (str(path), hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_size) for path in (items, acceptances)
    ]
    assert (detail["accepted"], detail["duplicates"], detail["rejected"]) == (3, 0, 1)
    assert detail["records"] == 4 and detail["rejected_by_reason"] == summary["rejected_by_reason"]
    assert detail["by_kind"]["acceptance"] == {"accepted": 2, "rejected": 1}
    assert {f["sha256"] for f in summary["files"]} == {f["sha256"] for f in detail["files"]}
    assert (second["detail"]["accepted"], second["detail"]["duplicates"], second["target"]) == (0, 1, "items.csv")
    code, out, _ = run(cli, "audit", "--data-dir", data_dir, "--verify", "--json")
    assert json.loads(out)["ok"] is True


def test_an_import_refused_before_it_starts_writes_nothing_and_a_failed_one_is_audited_as_an_error(
    cli: typer.Typer, tmp_path: Path
) -> None:
    data_dir = tmp_path / "py"
    assert run(cli, "init", "--data-dir", data_dir, "--id", "gd.gz.py")[0] == 0
    code, _, err = run(cli, "import", "--data-dir", data_dir, tmp_path / "missing.csv")
    assert code != 0 and "no such file" in err
    assert imports(cli, data_dir) == []
    # A database that goes away under the import: the batches fail, the entry says so (in a fresh database).
    items = tmp_path / "items.csv"
    items.write_text(ITEMS, encoding="utf-8")
    node = open_node(data_dir)
    try:
        importer = Importer(node)
        with node.engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE items")
        with pytest.raises(StoreError, match="items"):
            importer.import_files([items], actor="operator@gd.gz.py")
        (entry,) = AuditLog(node.engine).entries(AuditFilter(action="records.imported"))
    finally:
        node.close()
    assert entry.result == "error" and entry.actor == "operator@gd.gz.py"
    assert "items" in json.loads(entry.detail_json)["error"]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    data_dir = tmp_path / "gd.gz.py"
    init_node(data_dir, "gd.gz.py", level="district")
    provision(tmp_path, ["gd.gz.py"])
    node = open_node(data_dir)
    server = NodeServer(node, address="127.0.0.1:0")
    server.start()
    try:
        yield server.bound_address, data_dir
    finally:
        server.stop(1)
        node.close()


def _ingested(data_dir: Path) -> list[Any]:
    node = open_node(data_dir)
    try:
        return AuditLog(node.engine).entries(AuditFilter(action="records.ingested"))
    finally:
        node.close()


def test_each_grpc_ingest_stream_is_audited_under_the_callers_tls_identity(served: tuple[str, Path]) -> None:
    address, data_dir = served
    records = [
        IngestRecord(seq=1, kind="item", fields=ITEM),
        IngestRecord(seq=2, kind="acceptance", fields=acceptance(1)),
        IngestRecord(seq=3, kind="acceptance", fields=acceptance(1)),
        IngestRecord(seq=4, kind="acceptance", fields=acceptance(2, implementation_code="NOSUCH")),
    ]
    with ingest_client(data_dir, "gd.gz.py", address) as channel:
        assert len(list(IngestServiceStub(channel).Ingest(iter(records), timeout=10))) == 4
        assert len(list(IngestServiceStub(channel).Ingest(iter(records[:2]), timeout=10))) == 2
    second, first = _ingested(data_dir)
    assert first.actor.startswith(f"gd.gz.py ingest {INGEST_SYSTEM} (serial ")  # what its certificate names
    assert first.target == "gd.gz.py" and first.result == "ok"
    detail = json.loads(first.detail_json)
    assert (detail["records"], detail["accepted"], detail["duplicates"], detail["rejected"]) == (4, 2, 1, 1)
    assert detail["ended"] == "completed" and detail["peer_address"].startswith("ipv")
    assert json.loads(second.detail_json)["duplicates"] == 2


def test_a_cancelled_ingest_stream_is_audited_with_what_it_stored(served: tuple[str, Path]) -> None:
    address, data_dir = served
    records = [IngestRecord(seq=0, kind="item", fields=ITEM)] + [
        IngestRecord(seq=n, kind="acceptance", fields=acceptance(n)) for n in range(1, 301)
    ]

    def stalling() -> Iterator[IngestRecord]:
        yield from records
        time.sleep(10)  # the client cancels before this ends

    answered = 0
    with ingest_client(data_dir, "gd.gz.py", address) as channel:
        call = IngestServiceStub(channel).Ingest(stalling(), timeout=20)
        for _ in call:
            answered += 1
            if answered == 100:
                call.cancel()
                break
    deadline = time.monotonic() + 10
    while not _ingested(data_dir) and time.monotonic() < deadline:
        time.sleep(0.1)
    (entry,) = _ingested(data_dir)
    detail = json.loads(entry.detail_json)
    assert entry.result == "error" and detail["ended"] != "completed"
    assert detail["accepted"] >= 100
