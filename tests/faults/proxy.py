"""A fault-injecting TCP proxy on loopback, put between two nodes: pass, delay, blackhole, drop or reset.

It forwards bytes (TLS passes through untouched) and obeys its current ``mode`` for every chunk and connection:

* ``pass``      forward;
* ``delay``     forward each chunk after ``delay_seconds``;
* ``blackhole`` accept and read, forward nothing (calls hang until their deadline);
* ``drop``      close every connection (FIN) and each new one at once;
* ``reset``     abort every connection with a TCP RST (SO_LINGER 0) and each new one at once.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from typing import Literal

Mode = Literal["pass", "delay", "blackhole", "drop", "reset"]
MODES: tuple[Mode, ...] = ("pass", "delay", "blackhole", "drop", "reset")
_CHUNK = 65536


def _abort(sock: socket.socket, reset: bool) -> None:
    with contextlib.suppress(OSError):
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()


class FaultProxy:
    """Listens on 127.0.0.1 (port 0: any free one) and forwards to ``target`` ("host:port")."""

    def __init__(self, target: str, name: str = "") -> None:
        host, _, port = target.rpartition(":")
        self.target = (host, int(port))
        self.name = name or target
        self.mode: Mode = "pass"
        self.delay_seconds = 0.3
        self.faults = 0  # connections or chunks the faults acted on
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self._sockets: set[socket.socket] = set()
        self._guard = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, name=f"proxy {self.name}", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._listener.getsockname()[1]}"

    def set_mode(self, mode: Mode, delay_seconds: float = 0.3) -> None:
        """Switch mode; ``drop`` and ``reset`` also end every open connection now."""
        self.mode, self.delay_seconds = mode, delay_seconds
        if mode in ("drop", "reset"):
            with self._guard:
                sockets = list(self._sockets)
                self._sockets.clear()
            for sock in sockets:
                _abort(sock, reset=mode == "reset")
                self.faults += 1

    def close(self) -> None:
        self._closed.set()
        self.set_mode("drop")
        self._listener.close()
        self._thread.join(timeout=2)

    # -- internals ------------------------------------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.mode in ("drop", "reset"):
                _abort(client, reset=self.mode == "reset")
                self.faults += 1
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _abort(client, reset=False)
                continue
            with self._guard:
                self._sockets.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(_CHUNK)
                if not data:
                    break
                mode = self.mode
                if mode == "blackhole":
                    self.faults += 1
                    continue  # read and dropped: the peer waits for an answer that never comes
                if mode == "delay":
                    self.faults += 1
                    time.sleep(self.delay_seconds)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with self._guard:
                    self._sockets.discard(sock)
                with contextlib.suppress(OSError):
                    sock.close()
