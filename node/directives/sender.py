"""Delivery of the directive outbox to the next hops: ``DirectiveSender``, a loop object ``supnet serve`` starts.

At least once: a message stays in ``directive_outbox`` until its next hop (the parent, or a child on the way to a
target) acknowledges it, which that hop does only after storing it; a hop that is down gets it when it is back,
retried at exponential backoff with jitter (``federation.retry_base_seconds`` … ``retry_max_seconds``). The messages
of one directive to one hop keep their order. A refusal that the same bytes can never overcome (not allowed,
malformed, conflicting) ends that message's delivery: it is marked refused, logged at ERROR and told to the
operators; everything else (the hop unreachable, not holding the directive yet, a certificate problem) is retried.

The loop also runs the deadline check (node.directives.deadlines) every ``directives.check_interval_seconds``, and
looks at the outbox for messages other processes queued (``supnet directive`` commands beside ``supnet serve``) when
the process's ``node.store.FileWatcher`` sees the database files change (at least every ``directives.poll_seconds``
without a watchable file, e.g. on PostgreSQL); ``wake()`` (called by the Deliver servicer) makes it send at once.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import grpc

from federation import BackoffPolicy, IntegrityError, SupnetError, short_hex, supnet_error_from_rpc
from federation.proto.v1.common_pb2 import SignedEnvelope
from federation.proto.v1.directive_pb2_grpc import DirectiveServiceStub
from node.app import Node
from node.directives.deadlines import check_deadlines
from node.directives.store import (
    OutboxItem,
    due_items,
    mark_acked,
    mark_failed,
    mark_refused,
    next_attempt_at,
    pending_count,
)
from node.errors import ConfigError
from node.notify import NoticeKind, notify_operators
from node.store import ChangeWatch, NextDue
from node.trust import DEFAULT_CHANNEL_OPTIONS, channel_to, credentials_stamp, pki_directory

__all__ = ["DirectiveSender", "SendResult"]

log = logging.getLogger(__name__)

# Refusals the same bytes can never overcome; any other failure is retried at the backoff.
FINAL_REFUSALS = frozenset({"PERMISSION_DENIED", "INVALID_ARGUMENT", "INVALID_RECORD", "CONFLICT", "NOT_FOUND"})


@dataclass(frozen=True, slots=True)
class SendResult:
    """What one ``send_pending`` pass did."""

    acked: int = 0
    failed: int = 0
    refused: int = 0
    pending: int = 0


class DirectiveSender:
    """Delivers ``directive_outbox`` to the next hops and runs the deadline check; ``start()``/``stop()``."""

    def __init__(self, node: Node) -> None:
        self.node = node
        federation = node.config.federation
        self._backoff = BackoffPolicy(federation.retry_base_seconds, federation.retry_max_seconds)
        self._channels: dict[str, tuple[Any, grpc.Channel, DirectiveServiceStub]] = {}
        self._send_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_check = 0.0
        # Idle passes read no table unless the database files changed; the outbox's next due time is kept between.
        self._watch = ChangeWatch(node.engine)
        self._due = NextDue(node.engine, next_attempt_at, node.now)

    # --- channels -------------------------------------------------------------------------------------------------

    def _address(self, hop: str) -> str:
        federation = self.node.config.federation
        if hop == self.node.config.parent_id:
            address = federation.parent_address
        else:
            address = next((child.address for child in federation.children if child.id == hop), "")
        if not address:
            raise ConfigError(f"node {self.node.config.id} has no address configured for {hop}")
        return address

    def _stub(self, hop: str) -> DirectiveServiceStub:
        address = self._address(hop)
        # Rebuilt when the address or our TLS files change (rotation): the hop's identity is part of the channel.
        stamp = (address, credentials_stamp(pki_directory(self.node.data_dir)))
        cached = self._channels.get(hop)
        if cached is not None and cached[0] == stamp:
            return cached[2]
        if cached is not None:
            cached[1].close()
        channel = channel_to(self.node, address, hop, options=DEFAULT_CHANNEL_OPTIONS)
        stub = DirectiveServiceStub(channel)
        self._channels[hop] = (stamp, channel, stub)
        return stub

    def _drop_channel(self, hop: str) -> None:
        cached = self._channels.pop(hop, None)
        if cached is not None:
            cached[1].close()

    # --- delivery -------------------------------------------------------------------------------------------------

    def send_pending(self, directive_id: str | None = None) -> SendResult:
        """Send what is due (only ``directive_id``'s messages, if given), in order; returns what happened."""
        if self._stopping.is_set():
            return SendResult()
        acked = failed = refused = 0
        with self._send_lock:
            with self.node.engine.connect() as conn:
                due = due_items(conn, self.node.now(), directive_id=directive_id)
            unreachable: set[str] = set()
            stopped: set[tuple[str, str]] = set()
            for item in due:
                if self._stopping.is_set():
                    break
                key = (item.next_hop, item.directive_id)
                if item.next_hop in unreachable or key in stopped:
                    continue  # keep a directive's order to a hop: nothing past a message of it that failed
                outcome = self._deliver(item)
                if outcome == "acked":
                    acked += 1
                    continue
                stopped.add(key)
                if outcome == "unreachable":
                    unreachable.add(item.next_hop)  # no point trying its other messages in this pass
                failed += outcome in ("failed", "unreachable")
                refused += outcome == "refused"
            with self.node.engine.connect() as conn:
                pending = pending_count(conn)
        return SendResult(acked=acked, failed=failed, refused=refused, pending=pending)

    def _deliver(self, item: OutboxItem) -> str:
        timeout = self.node.config.federation.rpc_timeout_seconds
        try:
            stub = self._stub(item.next_hop)
            ack = stub.Deliver(SignedEnvelope.FromString(item.envelope), timeout=timeout)
            if ack.digest != item.digest:
                raise IntegrityError(
                    f"{item.next_hop} acknowledged {short_hex(ack.digest)} for {item.message} {short_hex(item.digest)}"
                )
        except (grpc.RpcError, SupnetError) as failure:
            error = supnet_error_from_rpc(failure, item.next_hop) if isinstance(failure, grpc.RpcError) else failure
            if error.code == "UNAVAILABLE":
                self._drop_channel(item.next_hop)  # a fresh channel next time: the hop may be back by then
            return self._failed(item, error)
        with self.node.engine.begin() as conn:
            mark_acked(conn, item.id, self.node.now())
        log.info(
            "directive %s: %s message handed to %s (%s)",
            item.directive_id,
            item.message,
            item.next_hop,
            "stored" if ack.stored else "already held",
        )
        return "acked"

    def _failed(self, item: OutboxItem, error: SupnetError) -> str:
        text = f"[{error.code}] {error.message}"
        now = self.node.now()
        if error.code in FINAL_REFUSALS:
            with self.node.engine.begin() as conn:
                mark_refused(conn, item.id, text)
            log.error("directive %s: %s refused by %s: %s", item.directive_id, item.message, item.next_hop, text)
            notify_operators(
                self.node,
                NoticeKind.DIRECTIVE_REFUSED,
                f"{item.directive_id}>{item.next_hop}#{item.id}",
                f"directive {item.directive_id}: {item.message} refused by {item.next_hop}",
                f"{item.next_hop} refused the {item.message} message of directive {item.directive_id}: {text}\n"
                f"supnet directive show {item.directive_id}",
                now=now,
            )
            return "refused"
        delay = self._backoff.delay(item.attempts + 1)
        with self.node.engine.begin() as conn:
            attempts = mark_failed(conn, item.id, text, now + delay)
        unreachable = error.code == "UNAVAILABLE"
        # An unreachable hop only needs time; anything else needs an operator: once at ERROR, its repeats at WARNING.
        level = logging.ERROR if attempts == 1 and not unreachable else logging.WARNING
        log.log(
            level,
            "directive %s: %s not delivered to %s (attempt %s): %s; retry in %.1f s",
            item.directive_id,
            item.message,
            item.next_hop,
            attempts,
            text,
            delay.total_seconds(),
        )
        return "unreachable" if unreachable else "failed"

    # --- the loop -------------------------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while the background loop runs."""
        return self._thread is not None and self._thread.is_alive()

    def wake(self) -> None:
        """Send now (a Deliver queued something for a next hop)."""
        self._wake.set()

    def start(self) -> None:
        """Start the background loop (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        self._watch.attach(self._wake.set)  # writes by other processes wake the loop (node.store.FileWatcher)
        self._thread = threading.Thread(target=self._run, name=f"directive-sender-{self.node.config.id}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Close the channels (a sender used only for ``send_pending``, e.g. by a command)."""
        with self._send_lock:
            for hop in list(self._channels):
                self._drop_channel(hop)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop and close the channels; pending messages stay in the outbox."""
        self._stopping.set()
        self._watch.detach()
        self._wake.set()
        for _stamp, channel, _stub in list(self._channels.values()):
            channel.close()  # cancels an in-flight Deliver at once (retried after a restart)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        with self._send_lock:
            for hop in list(self._channels):
                self._drop_channel(hop)

    def _seconds_until_due(self, *, look: bool = True) -> float:
        """Seconds until the oldest message is due; ``look=False``: from the outbox as last read (idle passes)."""
        return self._due.seconds(look=look)

    def _run(self) -> None:
        config = self.node.config.directives
        woken = True
        while not self._stopping.is_set():
            try:
                self._wake.clear()  # before acting: a wake-up during this pass makes the next one start at once
                if self._stopping.is_set():
                    break
                # Idle passes read no table unless the database files changed (node.store.ChangeWatch).
                acted = False
                if self._seconds_until_due(look=self._watch.changed() or woken) <= 0:
                    self.send_pending()
                    acted = True
                if time.monotonic() >= self._next_check:
                    self._next_check = time.monotonic() + config.check_interval_seconds
                    check_deadlines(self.node)
                    acted = True
                    if self._seconds_until_due() <= 0:
                        continue  # an escalation queued a message
                due = self._seconds_until_due(look=acted)
                # Attached to the FileWatcher, a write by another process wakes us: no need to poll the outbox.
                poll = self._watch.seconds_to_recheck() if self._watch.attached else config.poll_seconds
                wait = min(due, poll, self._next_check - time.monotonic())
                woken = self._wake.wait(max(wait, 0.0))
            except Exception:
                # The loop must survive a bad moment (database locked, hop gone); the outbox keeps every message.
                log.exception("directive sender loop of %s failed; continuing", self.node.config.id)
                self._stopping.wait(1.0)
                woken = True
