"""Report exchange benchmark: build + sign at a node holding 1,000,000 cases, and province fan-in.

1. Build + sign. A district node is filled with 1,000,000 cases (bulk-loaded with stdlib sqlite3 as set-up, with
   the metric buckets those cases produce), its first report is built and acknowledged, then each round imports
   ~10,000 new records through the real importer (metrics kept at write time) and times ``build_reports`` (read
   changed buckets, sum own + children, build protobuf, sign, chain, write to the outbox). Target < 200 ms.
   Same-run baseline (the floor): stdlib sqlite3 fetching the changed rows by revision + one Ed25519 signature.
   Spot-check commitments (node.spotcheck) are on in the odd rounds and off in the even ones: the figures give the
   build time and the report bytes per bucket with and without them (the headline build figure is with them).
2. Fan-in. A province "gd" with CHILDREN registered children receives pre-signed reports (REPORTS_PER_CHILD
   each, a hash chain per child, BUCKETS buckets each) through its real NodeServer; a client process runs one
   thread per child sending that child's chain in order. Target >= 1,000 reports/s verified and stored, measured
   over MUTUAL TLS as deployed: the PKI of the province and every child is provisioned with
   ``provision_tree`` (as ``supnet federation up`` does), each child signs with its own report key and attaches
   its certificate chain, and sends on its own mTLS channel presenting its own TLS certificate.
   Same-run baselines: a bare gRPC unary echo of the same bytes over the same mTLS credentials and threads.
   For reference: the same fan-in in the insecure plaintext mode (children's keys from the config, one shared
   channel) with a plaintext echo, in process through ``ReportReceiver.receive`` (one report after the other, so
   each is its own transaction), and the floor it is compared with: Ed25519 verify + a stdlib sqlite3 insert of
   the report's row into a table of the receiver's log schema (federation_received_reports), one commit per report.

    .venv/bin/python -m bench.federation_reports             # full size
    .venv/bin/python -m bench.federation_reports --quick     # 100,000 cases, smaller fan-in
    .venv/bin/python -m bench.federation_reports --quick --build-only   # part 1 only
    .venv/bin/python -m bench.federation_reports --fan-in-only          # part 2 only, full size
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import random
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent import futures
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Connection, event, select
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.schema import CreateIndex, CreateTable

# Run as a script, bench/ comes first on sys.path, where bench/federation.py would shadow the federation package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from federation import (
    COUNTER_FIELDS,
    REPORT_BODY_TYPE,
    ReportReceiver,
    generate_keypair,
    public_key_b64,
    received_reports,
    report_digest,
    serialize,
    sign_envelope,
)
from federation.proto.v1.common_pb2 import Counters, SignedEnvelope
from federation.proto.v1.report_pb2 import Bucket, ReportBody, ReportKind
from node.app import Node, open_node
from node.bootstrap import init_node
from node.config import ChildConfig, load_config, save_config
from node.ingest import Importer
from node.reporting import apply_child_reports, build_reports, node_outbox
from node.server import NodeServer, child_key_resolver
from node.supervision import add_to_buckets, default_listeners, record_deltas
from node.synthetic import generate, iter_item_records
from node.trust import (
    PKI_DIR_NAME,
    PkiDirectory,
    chain_der,
    node_channel,
    pki_directory,
    provision_tree,
    server_credentials,
)

NODE_ID = "gd.gz.py"
BULK_FROM = date(2024, 1, 2)
BULK_DAYS = 600
ROUND_WEEKS = (
    date(2025, 9, 1),
    date(2025, 9, 8),
    date(2025, 9, 15),
    date(2025, 9, 22),
    date(2025, 10, 6),
    date(2025, 10, 13),
)
SQLA_DATETIME = "%Y-%m-%d %H:%M:%S.%f"


# -- part 1: build + sign ----------------------------------------------------------------------------------------
class _Metrics:
    """Metric buckets at import time through the metrics' own rules (used when the composition wires none)."""

    def __init__(self, node: Node) -> None:
        self._calendar = node.calendar

    def on_records(self, conn: Connection, kind: str, records: Sequence[Any], now: datetime) -> None:
        add_to_buckets(conn, record_deltas(kind, records, self._calendar))


def _listeners(node: Node) -> list[Any]:
    listeners = list(default_listeners(node))
    if not any("etric" in type(listener).__name__ for listener in listeners):
        listeners.append(_Metrics(node))
    return listeners


def _bulk_cases(node: Node, cases: int, rng: random.Random) -> int:
    """Load ``cases`` cases and the metric buckets they produce straight into the node's SQLite file (set-up)."""
    items = [row for row in iter_item_records(NODE_ID)]
    database = str(node.data_dir / "node.db")
    conn = sqlite3.connect(database)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    buckets: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0] * len(COUNTER_FIELDS))
    meta: dict[str, tuple[str, str, str]] = {
        item["implementation_code"]: (
            item["basic_code"],
            item["type_code"],
            item.get("department") or item["body_name"],
        )
        for item in items
    }
    index = {name: position for position, name in enumerate(COUNTER_FIELDS)}
    columns = (
        "case_no, implementation_code, basic_code, item_type_code, department, department_code, acceptor, accepted_at,"
        " case_type_code, area_code, applicant_name, applicant_id_type, applicant_id_no, apply_source_code,"
        " promised_limit, legal_limit, promised_due_at, legal_due_at, clock_stop_workdays, clock_stopped, status,"
        " completed_at, supplement_count, return_count, recorded_at"
    )
    sql = f"INSERT INTO cases ({columns}) VALUES ({', '.join('?' * 25)})"
    batch = []
    codes = list(meta)
    for number in range(cases):
        code = rng.choice(codes)
        basic, type_code, department = meta[code]
        day = BULK_FROM + timedelta(days=rng.randrange(BULK_DAYS))
        accepted = datetime.combine(day, datetime.min.time()) + timedelta(hours=9, minutes=rng.randrange(480))
        completed = accepted + timedelta(days=rng.randrange(1, 15)) if rng.random() < 0.9 else None
        due = accepted + timedelta(days=14)
        stamp = accepted.strftime(SQLA_DATETIME)
        batch.append(
            (
                f"BULK-{number:09d}",
                code,
                basic,
                type_code,
                department,
                "",
                "",
                stamp,
                "2",
                "",
                "",
                "",
                "",
                "",
                10,
                20,
                due.strftime(SQLA_DATETIME),
                (due + timedelta(days=14)).strftime(SQLA_DATETIME),
                0,
                0,
                "completed" if completed else "open",
                completed.strftime(SQLA_DATETIME) if completed else None,
                0,
                0,
                stamp,
            )
        )
        key = (accepted.date().isoformat(), department, code)
        buckets[key][index["received"]] += 1
        if completed is None:
            buckets[key][index["open_cases"]] += 1
        else:
            done = buckets[(completed.date().isoformat(), department, code)]
            done[index["completed"]] += 1
            done[index["completed_on_time"]] += 1
            done[index["completed_within_legal"]] += 1
        if len(batch) == 50_000:
            conn.executemany(sql, batch)
            conn.commit()
            batch.clear()
    conn.executemany(sql, batch)
    bucket_sql = (
        f"INSERT INTO metric_buckets (day, department, implementation_code, basic_code, item_type_code, "
        f"{', '.join(COUNTER_FIELDS)}, revision) VALUES ({', '.join('?' * (len(COUNTER_FIELDS) + 6))})"
    )
    conn.executemany(
        bucket_sql,
        [(day, dep, code, meta[code][0], meta[code][1], *values, 1) for (day, dep, code), values in buckets.items()],
    )
    conn.execute("INSERT OR REPLACE INTO node_counters (name, value) VALUES ('metric_revision', 1)")
    conn.commit()
    conn.close()
    return len(buckets)


def _baseline_build(database: Path, base_revision: int, key: Ed25519PrivateKey) -> float:
    """Stdlib sqlite3 floor: fetch the changed bucket rows by revision, pack them, one Ed25519 signature."""
    started = time.perf_counter()
    conn = sqlite3.connect(str(database))
    rows = conn.execute(
        f"SELECT day, basic_code, item_type_code, {', '.join(COUNTER_FIELDS)} FROM metric_buckets WHERE revision > ?",
        (base_revision,),
    ).fetchall()
    conn.close()
    key.sign(json.dumps(rows).encode())
    return time.perf_counter() - started


def bench_build(work: Path, cases: int) -> dict[str, Any]:
    data_dir = work / NODE_ID
    init_node(data_dir, NODE_ID)
    config = load_config(data_dir)
    # Never contacted: building needs a parent, sending is not timed.
    config.federation.parent_id = NODE_ID.rpartition(".")[0]
    config.federation.parent_address = "127.0.0.1:9"
    config.federation.outbox_max_reports = 100_000
    save_config(data_dir, config)
    clock_now = datetime(2025, 10, 24, 18, 0)
    node = open_node(data_dir, clock=lambda: clock_now)
    Importer(node, listeners=_listeners(node)).import_records(
        ("item", number, record) for number, record in enumerate(iter_item_records(NODE_ID), start=1)
    )
    started = time.perf_counter()
    bucket_rows = _bulk_cases(node, cases, random.Random(7))
    print(f"set-up: {cases:,} cases and {bucket_rows:,} metric buckets loaded in {time.perf_counter() - started:.1f} s")

    started = time.perf_counter()
    first = build_reports(node)
    initial_seconds = time.perf_counter() - started
    with node.engine.begin() as conn:
        node_outbox(node).mark_acked(conn, first[-1].sequence, first[-1].digest, clock_now)
    print(
        f"initial report: {sum(r.bucket_count for r in first):,} buckets in {len(first)} chained reports, "
        f"{initial_seconds * 1000:.0f} ms"
    )
    first_bytes = sum(len(report.envelope.SerializeToString()) for report in first)
    key = Ed25519PrivateKey.generate()
    build_ms: list[float] = []
    baseline_ms, records, buckets = [], [], []
    # Spot-check commitments (node.spotcheck) on in odd rounds, off in even ones: the same kind of week each time.
    plain_ms: list[float] = []
    # CPU time of the build too (this process only): on a shared, loaded machine wall time swings far more.
    build_cpu_ms: list[float] = []
    plain_cpu_ms: list[float] = []
    statements: list[int] = []
    plain_statements: list[int] = []
    executed = [0]
    event.listen(node.engine, "before_cursor_execute", lambda *_args: executed.__setitem__(0, executed[0] + 1))
    committed_bytes: list[float] = []
    plain_bytes: list[float] = []
    for round_number, week in enumerate(ROUND_WEEKS, start=1):
        commitments = round_number % 2 == 1
        node.config.spotcheck.commitments = commitments
        out = work / f"round-{round_number}"
        summary = generate(
            NODE_ID, 1950, round_number, out, date_from=week, date_to=week + timedelta(days=4), workers=1
        )
        imported = Importer(node, listeners=_listeners(node)).import_files(summary.paths)
        with node.engine.connect() as conn:
            head = node_outbox(node).head(conn)
        base = head.up_to_revision if head else 0
        baseline_ms.append(_baseline_build(data_dir / "node.db", base, key) * 1000)
        executed[0] = 0
        started, started_cpu = time.perf_counter(), time.process_time()
        built = build_reports(node)
        elapsed_ms = (time.perf_counter() - started) * 1000
        (build_cpu_ms if commitments else plain_cpu_ms).append((time.process_time() - started_cpu) * 1000)
        (statements if commitments else plain_statements).append(executed[0])
        size = sum(len(report.envelope.SerializeToString()) for report in built)
        per_bucket = size / max(sum(report.bucket_count for report in built), 1)
        (build_ms if commitments else plain_ms).append(elapsed_ms)
        (committed_bytes if commitments else plain_bytes).append(per_bucket)
        records.append(imported.accepted)
        buckets.append(sum(report.bucket_count for report in built))
        with node.engine.begin() as conn:
            node_outbox(node).mark_acked(conn, built[-1].sequence, built[-1].digest, clock_now)
        print(
            f"round {round_number}: {imported.accepted:,} new records -> report of {buckets[-1]} buckets: "
            f"build+sign {elapsed_ms:.1f} ms, {size:,} bytes ({per_bucket:.0f} per bucket), spot-check commitments "
            f"{'on' if commitments else 'off'} (baseline {baseline_ms[-1]:.1f} ms; CPU "
            f"{(build_cpu_ms if commitments else plain_cpu_ms)[-1]:.1f} ms, {executed[0]} SQL statements)"
        )
    node.close()
    build = statistics.median(build_ms)
    baseline = statistics.median(baseline_ms)
    print(
        f"build + sign after ~10,000 new records: median {build:.1f} ms (target < 200 ms); "
        f"baseline {baseline:.1f} ms; ratio {build / baseline:.1f}x"
    )
    plain = statistics.median(plain_ms)
    print(
        f"spot-check commitments: build + sign median {build:.1f} ms with, {plain:.1f} ms without "
        f"(+{build - plain:.1f} ms); report bytes per bucket {statistics.median(committed_bytes):.0f} with, "
        f"{statistics.median(plain_bytes):.0f} without; initial report with commitments {first_bytes:,} bytes"
    )
    return {
        "cases": cases,
        "build_sign_ms_median_without_commitments": round(plain, 1),
        "commitments_build_ms_added": round(build - plain, 1),
        "build_sign_cpu_ms_median": round(statistics.median(build_cpu_ms), 1),
        "build_sign_cpu_ms_median_without_commitments": round(statistics.median(plain_cpu_ms), 1),
        "commitments_build_cpu_ms_added": round(statistics.median(build_cpu_ms) - statistics.median(plain_cpu_ms), 1),
        "commitments_sql_statements_added": statistics.median(statements) - statistics.median(plain_statements),
        "report_bytes_per_bucket_with_commitments": round(statistics.median(committed_bytes), 1),
        "report_bytes_per_bucket_without_commitments": round(statistics.median(plain_bytes), 1),
        "initial_report_bytes": first_bytes,
        "metric_buckets": bucket_rows,
        "initial_report_ms": round(initial_seconds * 1000, 1),
        "new_records_per_round": round(statistics.median(records)),
        "report_buckets_per_round": round(statistics.median(buckets)),
        "build_sign_ms_median": round(build, 1),
        "build_baseline_ms_median": round(baseline, 1),
        "build_ratio": round(build / baseline, 2),
    }


# -- part 2: fan-in ---------------------------------------------------------------------------------------------
SUBMIT_REPORT = "/federation.proto.v1.NodeService/SubmitReport"
ECHO = "/bench.Echo/Echo"


def _child_reports(
    child_id: str,
    key: Ed25519PrivateKey,
    count: int,
    buckets: int,
    rng: random.Random,
    certificate_chain: Sequence[bytes] = (),
) -> list[bytes]:
    """A hash chain of ``count`` signed incremental reports of one child (with its report certificate chain)."""
    reports, previous = [], b""
    for sequence in range(1, count + 1):
        body = ReportBody(
            node_id=child_id,
            sequence=sequence,
            previous_digest=previous,
            created_at_ms=1_760_000_000_000 + sequence,
            kind=ReportKind.REPORT_KIND_INCREMENTAL,
            buckets=[
                Bucket(
                    day=(date(2025, 10, 1) + timedelta(days=number // 10)).isoformat(),
                    basic_code=f"{1000000000 + number % 10 + (sequence % 5) * 10}",
                    item_type_code="01",
                    counters=Counters(received=rng.randrange(1, 50), completed=rng.randrange(50), open_cases=3),
                )
                for number in range(buckets)
            ],
        )
        # What node.trust.node_keys.SigningIdentity.sign does: the key plus the chain binding it (empty in plaintext).
        envelope = sign_envelope(key, child_id, REPORT_BODY_TYPE, serialize(body), certificate_chain)
        previous = report_digest(envelope)
        reports.append(envelope.SerializeToString())
    return reports


def _province(work: Path, name: str, keys: dict[str, Ed25519PrivateKey]) -> Node:
    data_dir = work / name
    init_node(data_dir, "gd", level="province")
    config = load_config(data_dir)
    config.federation.children = [
        ChildConfig(id=child, public_key=public_key_b64(key.public_key())) for child, key in keys.items()
    ]
    # One client process speaks for every child on one plaintext channel here: the reference figure of the
    # receiver without TLS, with the children's keys from the config.
    config.federation.insecure_plaintext = True
    save_config(data_dir, config)
    return open_node(data_dir)


def _mtls_tree(work: Path, children: Sequence[str]) -> tuple[Path, dict[str, PkiDirectory]]:
    """A province data dir whose config lists the children (no keys) and a PKI for it and every child.

    Provisioned as ``supnet federation up`` does (node.trust.provisioning.provision_tree); returns the
    province's data dir and each child's ``pki/`` directory.
    """
    data_dir = work / "province-mtls"
    init_node(data_dir, "gd", level="province")
    config = load_config(data_dir)
    config.federation.children = [ChildConfig(id=child) for child in children]
    save_config(data_dir, config)
    child_dirs = {child: work / "mtls-children" / child / PKI_DIR_NAME for child in children}
    provisioned = provision_tree({"gd": pki_directory(data_dir).path, **child_dirs})
    return data_dir, {child: provisioned[child].pki for child in children}


def _interleaved(per_child: dict[str, list[bytes]]) -> list[bytes]:
    rounds = max(len(reports) for reports in per_child.values())
    return [reports[i] for i in range(rounds) for reports in per_child.values() if i < len(reports)]


def _send_all(
    address: str, method: str, per_child: dict[str, list[bytes]], queue: Any, pki: dict[str, PkiDirectory] | None
) -> None:
    """Client process: one thread per child sends its reports in order; puts the elapsed seconds (or an error).

    Without ``pki`` every thread shares one plaintext channel; with it each child gets its own mutual-TLS
    channel presenting that child's TLS certificate and accepting only the province "gd" (as deployed).
    """
    if pki is None:
        shared = grpc.insecure_channel(address)
        channels = {child: shared for child in per_child}
    else:
        channels = {child: node_channel(pki[child], address, "gd") for child in per_child}
    errors: list[str] = []

    def worker(channel: grpc.Channel, reports: list[bytes]) -> None:
        call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        try:
            for raw in reports:
                call(raw, timeout=30)
        except grpc.RpcError as error:
            errors.append(str(error))

    threads = [threading.Thread(target=worker, args=(channels[child], per_child[child])) for child in per_child]
    # Connections (and TLS handshakes) are set up before the clock starts: a child keeps its channel open.
    for channel in set(channels.values()):
        grpc.channel_ready_future(channel).result(timeout=30)
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    for channel in set(channels.values()):
        channel.close()
    queue.put(errors[0] if errors else elapsed)


def _client_seconds(
    address: str, method: str, per_child: dict[str, list[bytes]], pki: dict[str, PkiDirectory] | None = None
) -> float:
    """Run the clients in their own process, so the server's process spends its CPU on serving only."""
    context = multiprocessing.get_context("spawn")  # grpc does not survive fork
    queue = context.Queue()
    process = context.Process(target=_send_all, args=(address, method, per_child, queue, pki))
    process.start()
    result = queue.get(timeout=600)
    process.join()
    if isinstance(result, str):
        raise RuntimeError(f"client failed: {result}")
    return float(result)


def _echo_server(credentials: grpc.ServerCredentials | None) -> tuple[grpc.Server, int]:
    """A bare gRPC server answering each request with its own bytes (the transport baseline)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(lambda request, context: request)}
            ),
        )
    )
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    return server, port


def _grpc_fan_in(data_dir: Path, per_child: dict[str, list[bytes]], pki: dict[str, PkiDirectory] | None) -> float:
    """Reports per second through the province's real NodeServer; checks every report was stored."""
    node = open_node(data_dir)
    server = NodeServer(node, address="127.0.0.1:0", max_workers=16)
    port = server.start()
    try:
        seconds = _client_seconds(f"127.0.0.1:{port}", SUBMIT_REPORT, per_child, pki)
        with node.engine.connect() as conn:
            stored = len(conn.execute(select(received_reports.c.sequence)).all())
    finally:
        server.stop(0)
        node.close()
    total = sum(len(reports) for reports in per_child.values())
    if stored != total:
        raise RuntimeError(f"{data_dir.name}: stored {stored} of {total} reports")
    return total / seconds


def bench_fan_in(work: Path, children: int, per_child: int, buckets: int) -> dict[str, Any]:
    rng = random.Random(11)
    keys = {f"gd.c{number:03d}": generate_keypair()[0] for number in range(children)}
    reports = {child: _child_reports(child, key, per_child, buckets, rng) for child, key in keys.items()}
    total = children * per_child
    size = statistics.median(len(raw) for batch in reports.values() for raw in batch)

    # Baseline: verify + the received log row + one sqlite3 commit per report, nothing else. The same log table as
    # the receiver's (federation_received_reports: its columns, primary key and index) and the node's pragmas.
    base_db = sqlite3.connect(str(work / "baseline.db"), isolation_level=None)
    base_db.execute("PRAGMA journal_mode=WAL")
    base_db.execute("PRAGMA synchronous=NORMAL")
    schema: list[CreateTable | CreateIndex] = [CreateTable(received_reports)]
    schema += [CreateIndex(index) for index in received_reports.indexes]
    for ddl in schema:
        base_db.execute(str(ddl.compile(dialect=sqlite_dialect.dialect())))
    insert_log = (
        f"INSERT INTO {received_reports.name} (child_id, sequence, digest, kind, envelope, bucket_count, received_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)"
    )
    publics = {child: key.public_key() for child, key in keys.items()}
    started, cpu_started = time.perf_counter(), time.process_time()
    for raw in _interleaved(reports):
        envelope = SignedEnvelope.FromString(raw)
        canonical = b"supnet/v1/" + envelope.body_type.encode() + b"\x00" + envelope.body
        publics[envelope.signer_id].verify(envelope.signature, canonical)
        body = ReportBody.FromString(envelope.body)
        row = (
            envelope.signer_id,
            body.sequence,
            hashlib.sha256(canonical).digest(),
            "incremental",
            raw,
            len(body.buckets),
            datetime.now().strftime(SQLA_DATETIME),
        )
        base_db.execute("BEGIN")
        base_db.execute(insert_log, row)
        base_db.execute("COMMIT")
    baseline_rate = total / (time.perf_counter() - started)
    baseline_cpu_rate = total / (time.process_time() - cpu_started)
    base_db.close()

    # In process: the real receiver (verify, registered child, chain, dedupe, store, apply) on SQLite.
    node = _province(work, "province-inproc", keys)
    receiver = ReportReceiver(
        node.engine,
        children=set(keys),
        key_resolver=child_key_resolver(node),
        apply=apply_child_reports,
        clock=node.now,
        node_id="gd",
    )
    started, cpu_started = time.perf_counter(), time.process_time()
    for raw in _interleaved(reports):
        receiver.receive(SignedEnvelope.FromString(raw))
    inproc_rate = total / (time.perf_counter() - started)
    inproc_cpu_rate = total / (time.process_time() - cpu_started)
    node.close()

    # Over gRPC in the insecure plaintext mode (reference): one client process, one channel, a thread per child.
    _province(work, "province-grpc", keys).close()
    grpc_rate = _grpc_fan_in(work / "province-grpc", reports, None)
    echo_server, echo_port = _echo_server(None)
    echo_rate = total / _client_seconds(f"127.0.0.1:{echo_port}", ECHO, reports)
    echo_server.stop(0)

    # Over mutual TLS, as deployed: each child signs with its own report key and attaches its certificate chain,
    # and sends its chain of reports on its own channel with its own TLS certificate.
    province_dir, child_pki = _mtls_tree(work, list(keys))
    mtls_rng = random.Random(11)  # the same bodies as above: only the signatures and the chains differ
    mtls_reports = {}
    for child, pki in child_pki.items():
        report_key, chain = pki.load_report()
        mtls_reports[child] = _child_reports(
            child, report_key, per_child, buckets, mtls_rng, chain_der(chain[0], chain[1:])
        )
    mtls_size = statistics.median(len(raw) for batch in mtls_reports.values() for raw in batch)
    mtls_rate = _grpc_fan_in(province_dir, mtls_reports, child_pki)
    # The same echo over the same mutual-TLS credentials: the province's server certificate, the children's.
    echo_server, echo_port = _echo_server(server_credentials(pki_directory(province_dir)))
    echo_mtls_rate = total / _client_seconds(f"127.0.0.1:{echo_port}", ECHO, mtls_reports, child_pki)
    echo_server.stop(0)

    print(
        f"fan-in of {total:,} reports ({children} children x {per_child}, {buckets} buckets, {size:.0f} bytes each, "
        f"{mtls_size:.0f} with the certificate chain): over mutual TLS {mtls_rate:,.0f}/s (target >= 1,000/s), "
        f"bare gRPC echo over the same mTLS {echo_mtls_rate:,.0f}/s, ratio {mtls_rate / echo_mtls_rate:.2f}"
    )
    print(
        f"  reference: over plaintext gRPC {grpc_rate:,.0f}/s, bare plaintext echo {echo_rate:,.0f}/s, "
        f"ratio {grpc_rate / echo_rate:.2f}; in process {inproc_rate:,.0f}/s ({inproc_cpu_rate:,.0f}/s of CPU time); "
        f"baseline verify+commit {baseline_rate:,.0f}/s ({baseline_cpu_rate:,.0f}/s of CPU), "
        f"ratio {inproc_rate / baseline_rate:.2f}"
    )
    return {
        "fan_in_reports": total,
        "fan_in_buckets_per_report": buckets,
        "fan_in_report_bytes": round(size),
        "fan_in_report_bytes_mtls": round(mtls_size),
        "fan_in_grpc_mtls_per_s": round(mtls_rate),
        "grpc_echo_mtls_per_s": round(echo_mtls_rate),
        "fan_in_grpc_mtls_ratio_to_echo": round(mtls_rate / echo_mtls_rate, 2),
        "fan_in_inprocess_per_s": round(inproc_rate),
        "fan_in_inprocess_cpu_per_s": round(inproc_cpu_rate),
        "fan_in_grpc_per_s": round(grpc_rate),
        "fan_in_baseline_verify_commit_per_s": round(baseline_rate),
        "fan_in_baseline_cpu_per_s": round(baseline_cpu_rate),
        "fan_in_inprocess_ratio": round(inproc_rate / baseline_rate, 2),
        "grpc_echo_per_s": round(echo_rate),
        "fan_in_grpc_ratio_to_echo": round(grpc_rate / echo_rate, 2),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cases", type=int, default=1_000_000)
    parser.add_argument("--children", type=int, default=20)
    parser.add_argument("--reports-per-child", type=int, default=100)
    parser.add_argument("--buckets", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="100,000 cases and a smaller fan-in")
    parser.add_argument("--build-only", action="store_true", help="part 1 only (build + sign), no fan-in")
    parser.add_argument("--fan-in-only", action="store_true", help="part 2 only (fan-in), no build + sign")
    args = parser.parse_args(argv)
    if args.quick:
        args.cases, args.reports_per_child = 100_000, 30
    figures: dict[str, Any] = {"benchmark": "federation_reports"}
    with tempfile.TemporaryDirectory(prefix="supnet-bench-reports-") as work:
        if not args.fan_in_only:
            figures.update(bench_build(Path(work), args.cases))
        if not args.build_only:
            figures.update(bench_fan_in(Path(work), args.children, args.reports_per_child, args.buckets))
    if not args.fan_in_only:
        figures["build_target_met"] = figures["build_sign_ms_median"] < 200
    if not args.build_only:
        # Nodes run over mutual TLS in production: the headline fan-in figure is the mTLS one.
        figures["fan_in_target_met"] = figures["fan_in_grpc_mtls_per_s"] >= 1000
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
