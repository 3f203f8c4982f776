"""Subtree (province-wide) search, one hop: answer this node's own rows and fan the query out to the children.

A hop that lies inside the searched subtree streams, interleaved as they come: its own rows, in parts it signs
(one page of at most ``page_size`` rows each), and everything its children stream back, relayed unchanged. The
children are asked in parallel, each with a deadline slightly shorter than this hop's own, so a child that does
not answer in time is named in a gap this hop signs while its own caller still listens. A hop on the way down to
the searched subtree's root relays the one child's stream on the path.

Memory stays bounded: parts go through a small queue between the producers (own pages, one thread per child)
and the caller; a slow reader holds the producers back, it does not make the hop collect rows. Each hop
enforces the query's row limit on what it relays: past it, it signs a cut and stops asking.

Hops do not verify the parts they relay (the asker verifies every one through its signer's certificate chain,
node.drilldown.subtree_answer); they only refuse to relay a part whose signer lies outside the child's subtree.
"""

from __future__ import annotations

import collections
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import grpc
from google.protobuf.message import DecodeError

from federation import SupnetError, envelope_digest, supnet_error_from_rpc
from federation.proto.v1 import subtree_pb2 as st
from federation.proto.v1.common_pb2 import SignedEnvelope
from node.app import Node
from node.directives import directives as list_directives
from node.drilldown.answers import answer_alerts, answer_cases, answer_complaints
from node.drilldown.figures import answer_ranking
from node.drilldown.query_terms import decode_page_token, encode_page_token, to_ms
from node.drilldown.router import QueryRouter, never_reached
from node.drilldown.subtree_terms import (
    ANSWER_BODY_TYPES,
    DEFAULT_DEADLINE_SECONDS,
    GAP_DEADLINE,
    GAP_ERROR,
    GAP_REFUSED,
    GAP_UNREACHABLE,
    PART_BODY_TYPE,
    limit_of,
    part_rows_of,
    row_count,
)
from node.trust import SigningIdentity, is_in_subtree, signing_identity

__all__ = ["SubtreeRouter", "SubtreeStats", "child_timeout"]

log = logging.getLogger(__name__)

# Parts waiting between the producers and the caller: a slow reader holds the producers back.
QUEUE_PARTS = 64
# Children served by this same process (a host's nodes) are asked by this many producer threads, one child after the
# other, instead of one thread each: their work shares one interpreter, so more threads only interleave it, and a
# subtree answered depth-first delivers whole nodes before the deadline instead of all of them just after it.
LOCAL_PRODUCERS = 2
# Each hop gives its children this much less time than it has itself (seconds, plus a share of what is left),
# so the gap it signs for a child that did not answer still reaches its own caller in time.
HOP_MARGIN_SECONDS = 0.15
HOP_MARGIN_SHARE = 0.03
_POLL_SECONDS = 0.05


def child_timeout(time_remaining: float) -> float:
    """The deadline a hop with ``time_remaining`` seconds gives its children."""
    return time_remaining - HOP_MARGIN_SECONDS - HOP_MARGIN_SHARE * time_remaining


@dataclass
class SubtreeStats:
    """What one hop relayed: for the audit entry and the metrics."""

    own_parts: int = 0
    own_rows: int = 0
    relayed: int = 0
    rows: int = 0
    gaps: list[str] = field(default_factory=list)
    cut: bool = False


_DONE = object()
# What producers hand the relay: (envelope, rows in it, one of this node's own parts, the node a gap names).
_Item = tuple[SignedEnvelope, int, bool, str]


class _Fanout:
    """One subtree query at one hop: the producers, the queue they share and the calls to cancel at the end."""

    def __init__(self) -> None:
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=QUEUE_PARTS)
        self.stop = threading.Event()
        self._calls: list[Any] = []
        self._lock = threading.Lock()

    def put(self, item: object) -> bool:
        """Hand an item to the caller; False once the query is over (limit, deadline, caller gone)."""
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def track(self, call: Any) -> None:
        with self._lock:
            self._calls.append(call)
        if self.stop.is_set():
            call.cancel()

    def cancel_all(self) -> None:
        self.stop.set()
        with self._lock:
            calls = list(self._calls)
        for call in calls:
            call.cancel()


class SubtreeRouter:
    """Streams this node's part of an authorized subtree query, and its children's, as signed envelopes."""

    def __init__(
        self,
        node: Node,
        queries: QueryRouter,
        *,
        identity: SigningIdentity | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._node = node
        self._id = node.config.id
        self._queries = queries  # its channels to the children (kept per child, rebuilt on rotation)
        self._identity = identity
        self._wall_clock = wall_clock
        federation = node.config.federation
        self._children = sorted(child.id for child in federation.children)
        self._addresses = {child.id: child.address for child in federation.children}

    def _signer(self) -> SigningIdentity:
        return self._identity or signing_identity(self._node)

    def _now_ms(self) -> int:
        return int(self._wall_clock() * 1000)

    # --- entry point ----------------------------------------------------------------------------

    def stream(
        self,
        envelope: SignedEnvelope,
        body: st.SubtreeQueryBody,
        time_remaining: float | None,
        stats: SubtreeStats,
        *,
        on_cancel: Callable[[Callable[[], None]], object] | None = None,
        before_first: Callable[[], None] | None = None,
    ) -> Iterator[SignedEnvelope]:
        """The envelopes of this hop's answer, as they come; ``stats`` is filled in on the way.

        ``on_cancel`` registers what stops the producers when the caller goes away (the call context's add_callback).
        ``before_first`` runs once the children are being asked and before anything leaves (the audit entry: written
        while the subtree works, and always before this hop's answer goes out).
        """
        remaining = DEFAULT_DEADLINE_SECONDS if time_remaining is None else time_remaining
        deadline = time.monotonic() + remaining
        digest = envelope_digest(envelope)
        limit = limit_of(body.limit)
        resume = body.resume
        fanout = _Fanout()
        if on_cancel is not None and on_cancel(fanout.cancel_all) is False:
            fanout.cancel_all()  # the call ended before the callback could be added: nothing to fan out for
        own = is_in_subtree(self._id, body.target_id)
        own_done = self._id in resume.done_nodes  # its rows delivered before: it still says who its children are
        children = self.children_to_ask(body)
        if not children:
            # A leaf of the search (most nodes are streets): its own pages go out from this thread, no queue.
            items = self._own_items(fanout.stop, body, digest, limit, own_done=own_done) if own else iter(())
            if before_first is not None:
                before_first()
            try:
                yield from self._relay(
                    items, body, digest=digest, limit=limit, deadline=deadline, stats=stats, cut=fanout.cancel_all
                )
            finally:
                fanout.cancel_all()
            return
        producers: list[Callable[[], None]] = []
        if own:
            producers.append(functools.partial(self._own_parts, fanout, body, digest, limit, own_done=own_done))
        timeout = child_timeout(remaining)
        local: collections.deque[str] = collections.deque()
        for child in children:
            if self._queries.in_process(child, self._addresses.get(child, "")):
                local.append(child)
                continue
            producers.append(
                functools.partial(
                    self._child_parts, fanout, envelope, body, digest=digest, child=child, timeout=timeout
                )
            )
        answer_by = time.monotonic() + timeout
        for _ in range(min(LOCAL_PRODUCERS, len(local))):
            producers.append(
                functools.partial(
                    self._local_children, fanout, envelope, body, digest=digest, children=local, by=answer_by
                )
            )
        threads = [threading.Thread(target=self._run, args=(fanout, run), daemon=True) for run in producers]
        for thread in threads:
            thread.start()
        try:
            if before_first is not None:
                before_first()
            items = self._queued(
                fanout, body, digest, producers=len(threads), deadline=deadline, unasked=local, ask_by=answer_by
            )
            yield from self._relay(
                items, body, digest=digest, limit=limit, deadline=deadline, stats=stats, cut=fanout.cancel_all
            )
        finally:
            fanout.cancel_all()

    def children_to_ask(self, body: st.SubtreeQueryBody) -> list[str]:
        """The children this hop asks (NotFoundError if there is no child on the way to the subtree's root).

        Inside the subtree: all but those whose subtree a resumed search has done; above it: the one on the way.
        """
        if is_in_subtree(self._id, body.target_id):
            done = set(body.resume.done_subtrees)
            return [child for child in self._children if child not in done]
        return [self._queries.next_hop(body.target_id)]

    @staticmethod
    def _run(fanout: _Fanout, producer: Callable[[], None]) -> None:
        try:
            producer()
        except Exception:  # a producer must always say it is done, or the hop waits to its deadline
            log.exception("subtree query producer failed")
        finally:
            fanout.put(_DONE)

    def _queued(
        self,
        fanout: _Fanout,
        body: st.SubtreeQueryBody,
        digest: bytes,
        *,
        producers: int,
        deadline: float,
        unasked: collections.deque[str],
        ask_by: float,
    ) -> Iterator[_Item]:
        """The producers' items as they come, until all are done, the deadline passes or the caller goes away.

        ``unasked``: in-process children still waiting for a local producer; those left at ``ask_by`` (a slow sibling
        held the producers) are named here, in a gap each, since their producers may not get to them in time.
        """
        finished = 0
        while finished < producers:
            now = time.monotonic()
            left = deadline - now
            if left <= 0 or fanout.stop.is_set():
                return  # out of time, or the caller went away (the call's cancel callback stopped the fan-out)
            if unasked and now >= ask_by:
                for child in _drain(unasked):
                    yield (self._no_time_gap(body, digest, child), 0, False, child)
            wait = min(left, 1.0, ask_by - now) if unasked else min(left, 1.0)
            try:
                item = fanout.queue.get(timeout=max(wait, 0.001))
            except queue.Empty:
                continue
            if item is _DONE:
                finished += 1
                continue
            yield item

    def _relay(
        self,
        items: Iterator[_Item],
        body: st.SubtreeQueryBody,
        *,
        digest: bytes,
        limit: int,
        deadline: float,
        stats: SubtreeStats,
        cut: Callable[[], None],
    ) -> Iterator[SignedEnvelope]:
        """Items out as envelopes, counted in ``stats``; past the limit ``cut()`` stops producers, a signed cut ends."""
        for reply, rows, own, gap in items:
            if rows and stats.rows + rows > limit:
                stats.cut = True
                cut()
                yield self._signer().sign_message(
                    st.SubtreeCut(
                        node_id=self._id,
                        requester_id=body.requester_id,
                        query_digest=digest,
                        limit=limit,
                        at_ms=self._now_ms(),
                    )
                )
                return
            stats.rows += rows
            if own:
                stats.own_parts += 1
                stats.own_rows += rows
            else:
                stats.relayed += 1
            if gap:
                stats.gaps.append(gap)
            yield reply
            if time.monotonic() >= deadline:
                return

    # --- this node's own rows -------------------------------------------------------------------

    def _own_parts(
        self, fanout: _Fanout, body: st.SubtreeQueryBody, digest: bytes, limit: int, *, own_done: bool
    ) -> None:
        """A producer thread's work: this node's own parts into the fan-out's queue."""
        for item in self._own_items(fanout.stop, body, digest, limit, own_done=own_done):
            if not fanout.put(item):
                return

    def _own_items(
        self, stop: threading.Event, body: st.SubtreeQueryBody, digest: bytes, limit: int, *, own_done: bool
    ) -> Iterator[_Item]:
        """The node's own parts; if they cannot be read, a gap for itself that it signs (saying why)."""
        try:
            yield from self._own_pages(stop, body, digest, limit, own_done=own_done)
        except SupnetError as error:
            log.warning("subtree query: %s could not answer its own rows: %s", self._id, error.message)
            yield (self._gap(body, digest, self._id, GAP_ERROR, error.message), 0, False, self._id)
        except Exception as error:  # the database, a bug: the asker must hear this node failed, not wait for it
            log.exception("subtree query: %s could not answer its own rows", self._id)
            detail = f"{self._id} could not read its own rows ({type(error).__name__})"
            yield (self._gap(body, digest, self._id, GAP_ERROR, detail), 0, False, self._id)

    def _own_pages(
        self, stop: threading.Event, body: st.SubtreeQueryBody, digest: bytes, limit: int, *, own_done: bool
    ) -> Iterator[_Item]:
        kind = body.WhichOneof("request") or ""
        page_rows = part_rows_of(body.page_size, limit)
        token = next((cursor.page_token for cursor in body.resume.cursors if cursor.node_id == self._id), "")
        config = self._node.config
        index = 0
        while not stop.is_set():
            part = st.SubtreePart(
                node_id=self._id,
                requester_id=body.requester_id,
                query_digest=digest,
                part_index=index,
                children_ids=self._children,
                level=config.level,
                name=config.name,
            )
            token, rows = ("", 0) if own_done else self._own_page(part, kind, body, page_rows, token)
            part.last = not token
            part.next_page_token = token
            part.answered_at_ms = self._now_ms()
            yield (self._signer().sign_message(part), rows, True, "")
            if not token:
                return
            index += 1

    def _own_page(
        self, part: st.SubtreePart, kind: str, body: st.SubtreeQueryBody, page_rows: int, token: str
    ) -> tuple[str, int]:
        """Fill one part with one page of own rows; (the next page's token, rows in this page)."""
        node = self._node
        if kind == "cases":
            cases, next_token = answer_cases(node, body.cases, page_rows, token)
            part.cases.CopyFrom(cases)
            return next_token, len(cases.cases)
        if kind == "alerts":
            alerts, next_token = answer_alerts(node, body.alerts, page_rows, token)
            part.alerts.CopyFrom(alerts)
            return next_token, len(alerts.alerts)
        if kind == "complaints":
            complaints, next_token = answer_complaints(node, body.complaints, page_rows, token)
            part.complaints.CopyFrom(complaints)
            return next_token, len(complaints.complaints)
        if kind == "directives":
            return self._directives_page(part, body.directives, page_rows, token)
        if kind == "ranking":
            ranking, _ = answer_ranking(node, body.ranking)
            own = next(row for row in ranking.rows if row.node_id == self._id)
            own.rank = 0  # ranks among siblings mean nothing across the subtree: the asker ranks
            part.ranking.CopyFrom(own)
            return "", 1
        raise ValueError(f"subtree query kind {kind!r}")  # the authorizer let only the known kinds through

    def _directives_page(
        self, part: st.SubtreePart, request: st.SubtreeDirectivesRequest, page_rows: int, token: str
    ) -> tuple[str, int]:
        after = decode_page_token("directives", token)
        start = int(after[0]) if after else 0
        views = list_directives(
            self._node,
            role=request.role or None,
            open_only=request.open_only,
            overdue_only=request.overdue_only,
        )
        tz = self._node.tz
        page = views[start : start + page_rows]
        for view in page:
            row = part.directives.directives.add(
                directive_id=view.id,
                role=view.role,
                kind=view.kind,
                issuer_id=view.issuer_id,
                target_id=view.target_id,
                subject=view.subject,
                status=view.status,
                issued_at_ms=to_ms(view.issued_at, tz),
                overdue=view.overdue,
            )
            if view.due_at is not None:
                row.due_at_ms = to_ms(view.due_at, tz)
        end = start + len(page)
        return (encode_page_token("directives", [end]) if end < len(views) else ""), len(page)

    # --- the children ---------------------------------------------------------------------------

    def _gap(self, body: st.SubtreeQueryBody, digest: bytes, child: str, reason: str, detail: str) -> SignedEnvelope:
        return self._signer().sign_message(
            st.SubtreeGap(
                node_id=child,
                reported_by=self._id,
                requester_id=body.requester_id,
                query_digest=digest,
                at_ms=self._now_ms(),
                reason=reason,
                detail=detail[:500],
            )
        )

    def _no_time_gap(self, body: st.SubtreeQueryBody, digest: bytes, child: str) -> SignedEnvelope:
        return self._gap(body, digest, child, GAP_DEADLINE, f"no time left at {self._id} to ask {child}")

    def _child_parts(
        self,
        fanout: _Fanout,
        envelope: SignedEnvelope,
        body: st.SubtreeQueryBody,
        *,
        digest: bytes,
        child: str,
        timeout: float,
    ) -> None:
        address = self._addresses.get(child, "")
        if not address:
            gap = self._gap(body, digest, child, GAP_UNREACHABLE, f"{self._id} has no address for {child}")
            fanout.put((gap, 0, False, child))
            return
        if timeout <= 0:
            fanout.put((self._no_time_gap(body, digest, child), 0, False, child))
            return
        stub = self._queries.child_stub(child, address)
        started = time.monotonic()
        first_error: grpc.RpcError | None = None
        call = stub.QuerySubtree(envelope, timeout=timeout)
        while True:
            fanout.track(call)
            relayed = False
            try:
                for reply in call:
                    if reply.body_type not in ANSWER_BODY_TYPES or not is_in_subtree(reply.signer_id, child):
                        raise _MisbehavedError(
                            f"{child} relayed a {reply.body_type or 'message'} of {reply.signer_id or '?'}"
                        )
                    if not relayed:
                        self._queries.note_reached(child, True)
                    relayed = True
                    rows = _rows_in(reply) if reply.body_type == PART_BODY_TYPE else 0
                    if not fanout.put((reply, rows, False, "")):
                        return
                return
            except grpc.RpcError as error:
                if fanout.stop.is_set():
                    return  # cancelled here: limit reached or the caller went away
                grace = None
                if first_error is None and not relayed:
                    grace = self._queries.reconnect_grace(child, error, timeout - (time.monotonic() - started))
                if grace is not None:
                    # Not delivered (no connection): asked once more, waiting for the connection.
                    first_error = error
                    call = stub.QuerySubtree(envelope, timeout=grace, wait_for_ready=True)
                    continue
                if first_error is not None and cast(grpc.Call, error).code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    error = first_error  # still not connected: the first failure says why
                if not relayed and never_reached(error):
                    self._queries.note_reached(child, False)  # never reached: not waited for at the next search
                fanout.put((self._child_failed(body, digest, child, error), 0, False, child))
                return
            except _MisbehavedError as error:
                cast(Any, call).cancel()
                fanout.put((self._gap(body, digest, child, GAP_ERROR, str(error)), 0, False, child))
                return

    def _local_children(
        self,
        fanout: _Fanout,
        envelope: SignedEnvelope,
        body: st.SubtreeQueryBody,
        *,
        digest: bytes,
        children: collections.deque[str],
        by: float,
    ) -> None:
        """Ask children served in process one after the other (shared with the other local producers) until ``by``."""
        while not fanout.stop.is_set():
            try:
                child = children.popleft()
            except IndexError:
                return
            # Out of time: each child left still gets its gap ("no time left"), naming it.
            self._child_parts(fanout, envelope, body, digest=digest, child=child, timeout=by - time.monotonic())

    def _child_failed(
        self, body: st.SubtreeQueryBody, digest: bytes, child: str, error: grpc.RpcError
    ) -> SignedEnvelope:
        call: grpc.Call = error  # type: ignore[assignment]
        status = call.code()
        if status == grpc.StatusCode.DEADLINE_EXCEEDED:
            reason = GAP_DEADLINE
        elif status == grpc.StatusCode.UNAVAILABLE:
            reason = GAP_UNREACHABLE
        elif status in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
            reason = GAP_REFUSED
        else:
            reason = GAP_ERROR
        detail = supnet_error_from_rpc(error, child).message
        log.info("subtree query: %s did not answer %s: %s %s", child, self._id, reason, detail)
        return self._gap(body, digest, child, reason, detail)


def _drain(children: collections.deque[str]) -> list[str]:
    """Take every child left in the deque (popleft is atomic: a producer and the relay never take the same one)."""
    taken: list[str] = []
    while True:
        try:
            taken.append(children.popleft())
        except IndexError:
            return taken


class _MisbehavedError(Exception):
    """A child relayed something that is not a subtree answer of its own subtree."""


def _rows_in(reply: SignedEnvelope) -> int:
    """Rows in a relayed part, parsed only as far as counting them (the limit); 0 if it does not parse."""
    part = st.SubtreePart()
    try:
        part.ParseFromString(reply.body)
    except DecodeError:  # the asker rejects it with a reason; here it only must not break the relay
        return 0
    return row_count(part)
