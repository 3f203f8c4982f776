"""Benchmark: drill-down latency over 1, 2 and 3 hops against a bare gRPC echo relay, and roll-up freshness.

Both sides run as separate processes on loopback, as a deployment does (one process per node):
* the tree: province → city → district → street started by the launcher (``supnet serve`` per node, its own
  SQLite file, synthetic data), every call over mutual TLS. A drill-down (one page of 10 cases) goes from the
  province's operator to a node 1, 2 or 3 hops down: each hop identifies its caller by certificate, verifies the
  requester's signature through its certificate chain and relays the query unchanged; the target answers from
  its database and signs; each hop checks the answer's chain and signature and relays it unchanged (the relay
  baseline below is plaintext);
* the baseline, measured in the same run: a chain of bare gRPC relay processes (same thread pool size)
  forwarding the same request bytes hop by hop, the last one echoing a reply as large as the real answer —
  the cost of the hops themselves;
* roll-up freshness: a record streamed into the street through the gRPC ingest service, with report-on-change
  at every tier (the street's ingest credential); the clock stops when the province's subtree total (read from
  its database) changes.

Targets: drill-down ≤ 3x the relay at each hop count; freshness < 2 s across the three tiers.
Usage: python bench/federation_drilldown.py [--iterations 300] [--cases 300] [--trials 5] [--debounce 0.2]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

# Run as a script, bench/ comes first on sys.path, where bench/federation.py would shadow the federation package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from federation.proto.v1 import drilldown_pb2 as dd
from federation.proto.v1.ingest_pb2 import IngestOutcome, IngestRecord
from federation.proto.v1.ingest_pb2_grpc import IngestServiceStub
from node.app import open_node
from node.drilldown import DrilldownClient, build_query
from node.localtree import FederationState, down, parse_topology, up
from node.server import DEFAULT_MAX_WORKERS
from node.trust import ingest_channel, node_channel, pki_directory, server_credentials, signing_identity

IDS = ["gd", "gd.gz", "gd.gz.py", "gd.gz.py.sq"]
LEVELS = ["province", "city", "district", "street"]
RELAY_METHOD = "/bench.Relay/Call"


# --- the baseline: bare relay processes -------------------------------------------------------------


def serve_relay(next_address: str, reply_size: int, data_dir: str = "", next_id: str = "") -> None:
    """Run one relay server (a subprocess of the benchmark): forward to next_address, or echo if it is empty.

    With data_dir, the relay speaks mutual TLS with that node's certificates (server and client side), as
    the real hops do: the same transport, minus everything supnet does on top of it.
    """
    pki = pki_directory(Path(data_dir)) if data_dir else None
    if pki is not None:
        channel = node_channel(pki, next_address, next_id) if next_address else None
    else:
        channel = grpc.insecure_channel(next_address) if next_address else None
    forward = channel.unary_unary(RELAY_METHOD, None, None) if channel else None
    reply = b"x" * reply_size

    def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
        if forward is None:
            return reply
        answer: bytes = forward(request, timeout=context.time_remaining())
        return answer

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=DEFAULT_MAX_WORKERS))
    handler = grpc.unary_unary_rpc_method_handler(handle)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Relay", {"Call": handler}),))
    if pki is not None:
        port = server.add_secure_port("127.0.0.1:0", server_credentials(pki))
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    sys.stdin.read()  # until the benchmark closes our stdin
    server.stop(0)


def start_relay_chain(
    hops: int, reply_size: int, state: FederationState | None = None
) -> tuple[str, list[subprocess.Popen[str]]]:
    """Hops + 1 relay processes (the operator's own node plus one per hop); returns the first's address.

    With ``state``, relay i uses node IDS[i]'s certificates (mutual TLS); else plaintext.
    """
    processes: list[subprocess.Popen[str]] = []
    next_address = ""
    for index in reversed(range(hops + 1)):
        tls_args: list[str] = []
        if state is not None:
            next_id = IDS[index + 1] if index < hops else ""
            tls_args = ["--relay-data-dir", str(state.node(IDS[index]).data_dir), "--relay-next-id", next_id]
        process = subprocess.Popen(
            [sys.executable, __file__, "--relay-server", next_address, "--reply-size", str(reply_size), *tls_args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        next_address = f"127.0.0.1:{process.stdout.readline().strip()}"
        processes.append(process)
    return next_address, processes


def stop_relays(processes: list[subprocess.Popen[str]]) -> None:
    for process in processes:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(10)


# --- measuring --------------------------------------------------------------------------------------


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 3),
    }


def _time(call: Callable[[], object], iterations: int) -> list[float]:
    for _ in range(min(30, iterations)):
        call()  # warm-up: channels connected, caches filled
    samples = []
    for _ in range(iterations):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


def _drill_call(client: DrilldownClient, target: str) -> Callable[[], object]:
    def run() -> object:
        return client.ask(target, page_size=10, cases=dd.CasesRequest())

    return run


def _relay_call(call: Any, payload: bytes) -> Callable[[], object]:
    def run() -> object:
        return call(payload, timeout=10)

    return run


def bench_latency(state: FederationState, iterations: int) -> dict[str, Any]:
    """p50/p99 of drill-down and of the relay chain for 1, 2 and 3 hops, interleaved per hop count."""
    root = open_node(Path(state.node("gd").data_dir), migrate_schema=False)
    identity = signing_identity(root)
    results: dict[str, Any] = {}
    with DrilldownClient.for_node(root, state.node("gd").address) as client:
        for hops in (1, 2, 3):
            target = IDS[hops]
            probe = client.ask(target, page_size=10, cases=dd.CasesRequest())
            request_size = len(
                build_query(
                    identity.private_key,
                    "gd",
                    target,
                    page_size=10,
                    certificate_chain=identity.certificate_chain,
                    cases=dd.CasesRequest(),
                ).SerializeToString()
            )
            answer_size = len(probe.envelope.SerializeToString())
            drill = _time(_drill_call(client, target), iterations)
            address, relays = start_relay_chain(hops, answer_size)
            try:
                with grpc.insecure_channel(address) as channel:
                    relay = _time(
                        _relay_call(channel.unary_unary(RELAY_METHOD, None, None), b"q" * request_size), iterations
                    )
            finally:
                stop_relays(relays)
            address, relays = start_relay_chain(hops, answer_size, state)
            try:
                with node_channel(pki_directory(Path(state.node("gd").data_dir)), address, "gd") as channel:
                    tls_relay = _time(
                        _relay_call(channel.unary_unary(RELAY_METHOD, None, None), b"q" * request_size), iterations
                    )
            finally:
                stop_relays(relays)
            drill_stats, relay_stats, tls_stats = _percentiles(drill), _percentiles(relay), _percentiles(tls_relay)
            results[f"{hops}_hop"] = {
                "drilldown": drill_stats,
                "relay": relay_stats,
                "relay_mtls": tls_stats,
                # The target's baseline: a bare relay over the same hops with the same transport (mutual TLS).
                "ratio_p50": round(drill_stats["p50_ms"] / tls_stats["p50_ms"], 2),
                "ratio_p99": round(drill_stats["p99_ms"] / tls_stats["p99_ms"], 2),
                "ratio_p50_vs_plaintext_relay": round(drill_stats["p50_ms"] / relay_stats["p50_ms"], 2),
                "answer_bytes": answer_size,
            }
    root.close()
    return results


def _province_received(database: Path) -> int:
    """The province's subtree total of received cases, read straight from its database."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10) as conn:
        row = conn.execute(
            "SELECT (SELECT coalesce(sum(received), 0) FROM metric_buckets)"
            " + (SELECT coalesce(sum(received), 0) FROM child_buckets)"
        ).fetchone()
    return int(row[0])


def bench_freshness(state: FederationState, trials: int) -> list[float]:
    """Seconds from a record accepted at the street (gRPC ingest) to the province's total changing."""
    province_db = Path(state.node("gd").data_dir) / "node.db"
    street = state.node("gd.gz.py.sq")
    with sqlite3.connect(Path(street.data_dir) / "node.db") as conn:
        implementation_code, department = conn.execute("SELECT implementation_code, department FROM items").fetchone()
    timings = []
    key, chain, root = state.ingest_credential("gd.gz.py.sq")
    with ingest_channel(key, chain, root, street.address, "gd.gz.py.sq") as channel:
        stub = IngestServiceStub(channel)
        for trial in range(trials):
            time.sleep(1.0)  # let the previous trial's reports settle
            before = _province_received(province_db)
            record = IngestRecord(
                seq=trial,
                kind="acceptance",
                fields={
                    "case_no": f"BENCH-FRESH-{time.time_ns()}",
                    "implementation_code": implementation_code,
                    "department": department,
                    "accepted_at": "20260602T100000",
                },
            )
            started = time.perf_counter()
            replies = list(stub.Ingest(iter([record]), timeout=10))
            if replies[0].outcome != IngestOutcome.INGEST_OUTCOME_ACCEPTED:
                raise RuntimeError(f"the street refused the record: {replies[0].message}")
            while _province_received(province_db) == before:
                if time.perf_counter() - started > 30:
                    raise TimeoutError("the province never saw the new case")
                time.sleep(0.01)
            timings.append(time.perf_counter() - started)
    return timings


# --- main -------------------------------------------------------------------------------------------


def _print_latency(latency: dict[str, Any], iterations: int) -> None:
    print(
        f"drill-down latency (mutual TLS), {iterations} calls each (one page of 10 cases), vs a bare gRPC relay "
        "over the same hops with mutual TLS (ratio) and in plaintext (for reference):"
    )
    print(
        f"{'hops':>4}  {'drill p50':>10} {'p99':>8}  {'mTLS relay p50':>14} {'p99':>8}  {'ratio p50':>9} {'p99':>6}"
        f"  {'plain relay p50':>15}  {'ratio':>6}"
    )
    for hops in (1, 2, 3):
        row = latency[f"{hops}_hop"]
        print(
            f"{hops:>4}  {row['drilldown']['p50_ms']:>8.2f}ms {row['drilldown']['p99_ms']:>6.2f}ms"
            f"  {row['relay_mtls']['p50_ms']:>12.2f}ms {row['relay_mtls']['p99_ms']:>6.2f}ms"
            f"  {row['ratio_p50']:>8.2f}x {row['ratio_p99']:>5.2f}x"
            f"  {row['relay']['p50_ms']:>13.2f}ms  {row['ratio_p50_vs_plaintext_relay']:>5.2f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--cases", type=int, default=300)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--debounce", type=float, default=0.2)
    parser.add_argument("--relay-server", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--reply-size", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--relay-data-dir", default="", help=argparse.SUPPRESS)
    parser.add_argument("--relay-next-id", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.relay_server is not None:
        serve_relay(args.relay_server, args.reply_size, args.relay_data_dir, args.relay_next_id)
        return
    topology = parse_topology(
        {
            "name": "bench-4",
            "generate": {"cases": args.cases, "seed": 11, "from": "2026-01-05", "to": "2026-06-30"},
            "config": {
                "federation": {
                    "report_on_change": True,
                    "report_debounce_seconds": args.debounce,
                    "retry_base_seconds": 0.2,
                    "retry_max_seconds": 2.0,
                }
            },
            "nodes": [{"id": node_id, "level": level} for node_id, level in zip(IDS, LEVELS, strict=True)],
        },
        "bench",
    )
    with tempfile.TemporaryDirectory(prefix="bench-drilldown-") as directory:
        state = up(topology, Path(directory), workers=2, progress=lambda message: print(f"  {message}"))
        try:
            latency = bench_latency(state, args.iterations)
            _print_latency(latency, args.iterations)
            freshness = bench_freshness(state, args.trials)
        finally:
            down(Path(directory))
    print(
        f"roll-up freshness street → province (3 tiers, debounce {args.debounce}s): "
        f"median {statistics.median(freshness):.2f}s, max {max(freshness):.2f}s over {len(freshness)} records "
        f"(target < 2 s)"
    )
    figures = {
        "benchmark": "federation_drilldown",
        "iterations": args.iterations,
        "latency": latency,
        "freshness_seconds": {
            "median": round(statistics.median(freshness), 3),
            "max": round(max(freshness), 3),
            "samples": [round(value, 3) for value in freshness],
            "debounce_seconds": args.debounce,
        },
        "targets": {"ratio_max": 3.0, "freshness_max_seconds": 2.0},
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
