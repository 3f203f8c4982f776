"""Idle CPU of many gRPC servers in one process: what a host of hosted nodes pays while nothing is asked.

A host process serves one gRPC server per hosted node (node.server.hosting; 85 in a city host of the issue 17
shape). Each sync ``grpc.server`` has a thread polling its completion queue, and grpcio's poll wakes every 200 ms to
check for signals (a constant compiled into grpcio's Cython layer), whatever the server does. This benchmark starts
``--servers`` idle servers in a fresh process and measures that process's CPU over ``--seconds``:

1. sync servers with NodeServer's options and one shared call pool (no services, interceptor or TLS);
2. the same with grpc's "deallocated server" check (``grpc._server._DEALLOCATED_SERVER_CHECK_PERIOD_S``, 1 s) set to
   60 s: shows the cost is not that Python-level check;
3. baseline, the honest floor for the same listening ports: ``grpc.aio`` servers on one asyncio loop, their sync
   handlers on one shared pool (``migration_thread_pool``), where one poller serves every server.

It also checks grpc.aio's own path for sync handlers (``migration_thread_pool``): does a client's cancel of a server
stream reach the handler's ``context.add_callback`` (the subtree search stops its fan-out by it)? Printed as
``aio_sync_stream_cancel_callback`` (false: it did not arrive within 2 s). The idle servers here are alone in their
process: in a working host their share is smaller (README, the province simulation's idle row).

    .venv/bin/python bench/grpc_idle.py                  # 85 servers (a city host), 10 s each
    .venv/bin/python bench/grpc_idle.py --servers 300
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

# Each measurement runs in a process of its own, so no server, thread or loop of another one is left running.
_CHILD = r"""
import asyncio, json, os, sys, threading, time
from concurrent import futures
import grpc
sys.path.insert(0, sys.argv[4])
from node.server.grpc_server import SERVER_OPTIONS
mode, count, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])

def idle_percent():
    time.sleep(2.0)  # past the servers' start-up
    wall, cpu = time.perf_counter(), time.process_time()
    time.sleep(seconds)
    return 100 * (time.process_time() - cpu) / (time.perf_counter() - wall)

pool = futures.ThreadPoolExecutor(max_workers=16)
if mode in ("sync", "sync_dealloc_60s"):
    if mode == "sync_dealloc_60s":
        import grpc._server
        grpc._server._DEALLOCATED_SERVER_CHECK_PERIOD_S = 60.0
    servers = [grpc.server(pool, options=SERVER_OPTIONS) for _ in range(count)]
    for server in servers:
        server.add_insecure_port("127.0.0.1:0")
        server.start()
    print(json.dumps({"idle_percent": idle_percent()}), flush=True)
    for server in servers:
        server.stop(0)
elif mode == "aio":
    async def main():
        servers = [grpc.aio.server(migration_thread_pool=pool, options=SERVER_OPTIONS) for _ in range(count)]
        for server in servers:
            server.add_insecure_port("127.0.0.1:0")
            await server.start()
        percent = await asyncio.get_running_loop().run_in_executor(None, idle_percent)
        print(json.dumps({"idle_percent": percent}), flush=True)
        for server in servers:
            await server.stop(0)
    asyncio.run(main())
elif mode == "aio_cancel":
    cancelled = threading.Event()
    def stream(request, context):
        context.add_callback(cancelled.set)
        for number in range(200):
            time.sleep(0.05)
            yield b"part"
    handler = grpc.method_handlers_generic_handler(
        "bench.Idle", {"Stream": grpc.unary_stream_rpc_method_handler(stream)}
    )
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    async def make():
        server = grpc.aio.server(migration_thread_pool=pool)
        server.add_generic_rpc_handlers((handler,))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port
    # The server is kept referenced: a collected grpc.aio server stops.
    server, port = asyncio.run_coroutine_threadsafe(make(), loop).result(10)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_stream("/bench.Idle/Stream")(b"", timeout=10)
        next(call)
        call.cancel()
        arrived = cancelled.wait(2.0)
    print(json.dumps({"cancel_callback": arrived}), flush=True)
    os._exit(0)  # the handler may still be running: nothing of this process is needed any more
"""


def _child(mode: str, servers: int, seconds: float) -> dict[str, object]:
    command = [sys.executable, "-c", _CHILD, mode, str(servers), str(seconds), str(REPO_ROOT)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=False)
    except subprocess.TimeoutExpired as timeout:
        raise SystemExit(f"{mode}: no answer within {seconds + 60:.0f} s (a server did not start or stop)") from timeout
    if result.returncode != 0:
        raise SystemExit(f"{mode} failed: {result.stderr[-2000:]}")
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise SystemExit(f"{mode}: no figure printed")
    figures: dict[str, object] = json.loads(lines[-1])
    return figures


def _idle_percent(mode: str, servers: int, seconds: float) -> float:
    value = _child(mode, servers, seconds)["idle_percent"]
    assert isinstance(value, float)
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", type=int, default=85, help="servers in the process (a city host: 85)")
    parser.add_argument("--seconds", type=float, default=10.0, help="idle seconds measured per mode")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    sync = _idle_percent("sync", args.servers, args.seconds)
    dealloc = _idle_percent("sync_dealloc_60s", args.servers, args.seconds)
    aio = _idle_percent("aio", args.servers, args.seconds)
    cancel = bool(_child("aio_cancel", 1, 0.0)["cancel_callback"])
    per_server = sync / args.servers
    print(
        f"{args.servers} idle gRPC servers in one process: sync {sync:.2f}% of a core "
        f"({per_server:.3f}% each; ×1,786 = {per_server * 1786:.1f}%), "
        f"sync with the dealloc check at 60 s {dealloc:.2f}%, baseline grpc.aio on one loop {aio:.2f}%, "
        f"ratio sync / aio {sync / max(aio, 0.01):.0f}x (aio's figure is near the clock's resolution)"
    )
    print(f"under grpc.aio a client's cancel reaches a sync stream handler's add_callback within 2 s: {cancel}")
    figures = {
        "benchmark": "grpc_idle",
        "servers": args.servers,
        "seconds": args.seconds,
        "sync_idle_percent": round(sync, 2),
        "sync_dealloc_60s_idle_percent": round(dealloc, 2),
        "aio_idle_percent": round(aio, 2),
        "sync_idle_percent_scaled_to_1786": round(per_server * 1786, 1),
        "aio_sync_stream_cancel_callback": cancel,
        "elapsed_seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
