"""Tamper harness: over 1,000 seeded random tampers of real signed reports, every one refused or caught by verify.

A real tree (``gd`` ← ``gd.a`` ← ``gd.a.x``, ``gd`` ← ``gd.b``) of nodes made by ``supnet init``, enrolled in the tree's
PKI (reports carry their signer's certificate chain), filled by the real generator and importer, builds its honest
report histories with the real builder. The parent ``gd``'s own ``ReportReceiver`` (the one its NodeServer serves,
on its real SQLite file) is then driven in-process: before each honest report is delivered, a batch of tampers
derived from it, from the child's older reports, from the sibling's and from outsiders' is offered, and each must
be refused with the expected error, leave the parent's database exactly as it was, and be in its audit log: an entry
of its own, or counted as a repeat of an identical refusal within the cooldown (node.audit_log.RefusalThrottle).
Byte-identical re-deliveries are acknowledged again without a change: counted apart, they are not detections.
A lying child (validly signed totals that do not match its own records) cannot be told apart by the receiver;
The drill-down verify totals check (what ``supnet verify`` runs) catches it. A few cases then go end to end over gRPC
(mutual TLS): SubmitReport status codes, and ``verify_target`` finding a lying leaf and a lying middle node.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import grpc
import pytest
from sqlalchemy import select

from federation import (
    COUNTER_FIELDS,
    REPORT_BODY_TYPE,
    AuditAction,
    ReportReceiver,
    SupnetError,
    child_chains,
    generate_keypair,
    key_id,
    load_child_chains,
    parse_body,
    received_reports,
    report_digest,
    serialize,
    sign_envelope,
)
from federation.proto.v1 import drilldown_pb2 as dd
from federation.proto.v1.common_pb2 import SignedEnvelope
from federation.proto.v1.report_pb2 import Bucket, ChildReportRef, ReportBody, ReportKind
from node.app import Node
from node.drilldown import GAUGES, answer_summary, replay, totals_differences, verify_target
from node.reporting import build_reports
from node.store import AuditLogEntry, ChildBucket, NodeCounter
from node.trust import PkiDirectory, SigningIdentity, chain_der, provision_tree, signing_identity
from tests.harness.reports import add_totals, nonzero, own_totals, subtree_of
from tests.harness.tree import Tree, build_tree

SEED = 20_250_324
MIN_TAMPERS = 1_000
TAMPERS_PER_ROUND = 95
LIES_PER_CHILD = 60
IDS = ["gd", "gd.a", "gd.a.x", "gd.b"]
CHILDREN = ("gd.a", "gd.b")
# Import slices: each is followed by one incremental report per node; a FULL report closes the history.
SLICES = [
    (date(2025, 3, 3), date(2025, 3, 5)),
    (date(2025, 3, 6), date(2025, 3, 10)),
    (date(2025, 3, 11), date(2025, 3, 13)),
    (date(2025, 3, 14), date(2025, 3, 18)),
    (date(2025, 3, 19), date(2025, 3, 21)),
]
HARD_COUNTERS = tuple(name for name in COUNTER_FIELDS if name not in GAUGES)

UNAUTH = frozenset({"UNAUTHENTICATED"})
DENIED = frozenset({"PERMISSION_DENIED"})
INVALID = frozenset({"INVALID_ARGUMENT"})
CHAIN = frozenset({"INTEGRITY"})
# A stored sequence re-signed with other content: HistoryRewrittenError (a StaleError: same status, own code).
STALE = frozenset({"STALE", "HISTORY_REWRITTEN"})
AGAIN = "ACK_AGAIN"  # an idempotent re-delivery: acknowledged, nothing applied

Histories = tuple[Tree, dict[str, list[SignedEnvelope]], list[SignedEnvelope]]


@dataclass(frozen=True)
class Tamper:
    """One tampered delivery and the refusal codes that count as the right detection."""

    kind: str
    variant: str
    envelope: SignedEnvelope
    expect: frozenset[str]


@dataclass
class Tally:
    """Per kind: applied, detected, and the codes seen."""

    applied: Counter[str] = field(default_factory=Counter)
    detected: Counter[str] = field(default_factory=Counter)
    codes: dict[str, Counter[str]] = field(default_factory=dict)
    redelivered: int = 0

    def record(self, kind: str, code: str, detected: bool) -> None:
        self.applied[kind] += 1
        self.detected[kind] += int(detected)
        self.codes.setdefault(kind, Counter())[code] += 1

    def table(self) -> str:
        lines = [f"{'kind':<24} {'applied':>8} {'detected':>9}  codes"]
        for kind in sorted(self.applied):
            codes = ", ".join(f"{code} {count}" for code, count in sorted(self.codes[kind].items()))
            lines.append(f"{kind:<24} {self.applied[kind]:>8} {self.detected[kind]:>9}  {codes}")
        total, found = sum(self.applied.values()), sum(self.detected.values())
        lines.append(f"tampers detected/applied: {found}/{total}")
        lines.append(f"byte-identical re-deliveries acknowledged again (not detections): {self.redelivered}")
        return "\n".join(lines)


def _copy(envelope: SignedEnvelope) -> SignedEnvelope:
    duplicate = SignedEnvelope()
    duplicate.CopyFrom(envelope)
    return duplicate


def _body(envelope: SignedEnvelope) -> ReportBody:
    return parse_body(envelope, ReportBody)


def _with_body(envelope: SignedEnvelope, body: ReportBody) -> SignedEnvelope:
    """The same envelope (signer, key id, signature) carrying an edited body: the edit is not re-signed."""
    edited = _copy(envelope)
    edited.body = serialize(body)
    return edited


def _sign(identity: SigningIdentity, signer: str, body: ReportBody) -> SignedEnvelope:
    """Signed with identity's key, carrying identity's certificate chain, in the name of ``signer``."""
    return sign_envelope(identity.private_key, signer, REPORT_BODY_TYPE, serialize(body), identity.certificate_chain)


def foreign_identities(folder: Path) -> dict[str, SigningIdentity]:
    """The same node ids enrolled under ANOTHER root: valid chains, but not of this tree."""
    provisioned = provision_tree({node_id: folder / node_id for node_id in ("gd", *CHILDREN)})
    identities = {}
    for node_id in CHILDREN:
        key, chain = PkiDirectory(provisioned[node_id].pki.path).load_report()
        identities[node_id] = SigningIdentity(node_id, key, tuple(chain_der(chain[0], chain[1:])), folder / node_id)
    return identities


class Harness:
    """Honest histories of gd's children, the parent's real receiver, and the tamper generators."""

    def __init__(self, tree: Tree, honest: dict[str, list[SignedEnvelope]], grandchild: list[SignedEnvelope]) -> None:
        server = tree.nodes["gd"].server
        assert server is not None
        self.tree = tree
        self.receiver: ReportReceiver = server.reports.receiver
        self.throttle = server.reports.audit.throttle
        self.engine = tree["gd"].engine
        self.rng = random.Random(SEED)
        self.keys = {child: signing_identity(tree[child]) for child in (*CHILDREN, "gd.a.x")}
        assert all(identity.certificate_chain for identity in self.keys.values())  # the tree runs with its PKI
        self.outsider = SigningIdentity("gd.zz", generate_keypair()[0], (), tree.root_dir)  # no chain at all
        self.foreign = foreign_identities(tree.root_dir / "foreign-pki")
        self.pending = {child: list(envelopes) for child, envelopes in honest.items()}
        self.accepted: dict[str, list[SignedEnvelope]] = {child: [] for child in CHILDREN}
        self.grandchild = grandchild
        self.tally = Tally()
        self._kinds: dict[str, Callable[[str], Tamper | None]] = {
            "edited_totals": self.edited_totals,
            "dropped_bucket": self.dropped_bucket,
            "reordered_buckets": self.reordered_buckets,
            "duplicated_bucket": self.duplicated_bucket,
            "swapped_signature": self.swapped_signature,
            "signer_changed": self.signer_changed,
            "key_id_changed": self.key_id_changed,
            "truncated_history": self.truncated_history,
            "resigned_fork": self.resigned_fork,
            "replayed_old": self.replayed_old,
            "changed_completeness": self.changed_completeness,
            "child_digests_edited": self.child_digests_edited,
            "noncanonical_encoding": self.noncanonical_encoding,
            "impossible_values": self.impossible_values,
            "certificate_chain_tampered": self.certificate_chain_tampered,
        }

    # -- state ------------------------------------------------------------------------------------------------------
    def snapshot(self) -> tuple[object, ...]:
        """Everything a report can change at the parent: its log, chain heads, child buckets, metric revision."""
        with self.engine.connect() as conn:
            return (
                conn.execute(select(received_reports).order_by("child_id", "sequence")).all(),
                conn.execute(select(child_chains).order_by("child_id")).all(),
                conn.execute(select(ChildBucket.__table__).order_by("child_id", "day", "basic_code")).all(),
                conn.execute(select(NodeCounter.__table__).order_by("name")).all(),
            )

    def refusals_audited(self) -> int:
        """Refusals the audit log accounts for: its entries, the repeats they name, and those counted for the next."""
        table = AuditLogEntry.__table__
        with self.engine.connect() as conn:
            query = select(table.c.detail).where(table.c.action == AuditAction.REPORT_REFUSED)
            details = [json.loads(detail) for detail in conn.execute(query).scalars()]
        return (
            len(details)
            + sum(detail.get("repeated", {}).get("count", 0) for detail in details)
            + (self.throttle.uncounted())
        )

    def sibling(self, child: str) -> str:
        return next(other for other in CHILDREN if other != child)

    # -- one round --------------------------------------------------------------------------------------------------
    def round(self, child: str, count: int) -> None:
        """Offer ``count`` random tampers aimed at ``child``'s next report, then deliver the honest one."""
        before = self.snapshot()
        audited_before = self.refusals_audited()
        detected_before = sum(self.tally.detected.values())
        offered = 0
        while offered < count:
            kind = self.rng.choice(sorted(self._kinds))
            tamper = self._kinds[kind](child)
            if tamper is None:  # not applicable here (no older report, no child references, ...)
                continue
            offered += 1
            self.offer(tamper, before)
        # Every refusal is in the parent's audit log, each once (re-deliveries are not refusals); identical ones
        # within the cooldown as repeats.
        refused = sum(self.tally.detected.values()) - detected_before
        assert self.refusals_audited() - audited_before == refused
        honest = self.pending[child].pop(0)
        ack = self.receiver.receive(honest)
        assert ack.stored, f"honest report {child} #{ack.sequence} was not stored"
        self.accepted[child].append(honest)

    def offer(self, tamper: Tamper, before: tuple[object, ...]) -> None:
        try:
            ack = self.receiver.receive(tamper.envelope)
        except SupnetError as error:
            code, message = error.code, error.message
        else:
            code, message = ("ACK_STORED" if ack.stored else AGAIN), ""
        assert code != "ACK_STORED", f"tamper slipped through and was stored: {tamper.kind}/{tamper.variant}"
        assert self.snapshot() == before, f"{tamper.kind}/{tamper.variant} ({code}) changed the parent's database"
        if AGAIN in tamper.expect:
            assert code == AGAIN, f"{tamper.kind}/{tamper.variant}: re-delivery answered {code}: {message}"
            self.tally.redelivered += 1
            return
        assert code in tamper.expect, (
            f"{tamper.kind}/{tamper.variant}: refused as {code} ({message}), expected {sorted(tamper.expect)}"
        )
        self.tally.record(tamper.kind, code, detected=True)

    # -- helpers for the generators ---------------------------------------------------------------------------------
    def next_report(self, child: str) -> SignedEnvelope:
        return self.pending[child][0]

    def forge(
        self, child: str, envelope: SignedEnvelope, body: ReportBody
    ) -> tuple[str, SignedEnvelope, frozenset[str]]:
        """An edited body under a signature that is not the child's: kept, an outsider's, a sibling's."""
        sibling = self.sibling(child)
        how = self.rng.choice(["unsigned", "outsider_key", "sibling_key", "sibling_speaks_for_child", "foreign_root"])
        if how == "unsigned":
            return how, _with_body(envelope, body), UNAUTH
        if how == "foreign_root":  # the same node id, enrolled under another root
            return how, _sign(self.foreign[child], child, body), UNAUTH
        if how == "outsider_key":
            return how, _sign(self.outsider, child, body), UNAUTH
        if how == "sibling_key":
            return how, _sign(self.keys[sibling], child, body), UNAUTH
        return how, _sign(self.keys[sibling], sibling, body), DENIED

    def edit_tamper(self, kind: str, child: str, edit: Callable[[ReportBody], bool]) -> Tamper | None:
        envelope = self.next_report(child)
        body = _body(envelope)
        if not edit(body):
            return None
        how, forged, expect = self.forge(child, envelope, body)
        return Tamper(kind, how, forged, expect)

    def some_bucket(self, body: ReportBody) -> Bucket | None:
        return self.rng.choice(body.buckets) if body.buckets else None

    # -- the tamper kinds -------------------------------------------------------------------------------------------
    def edited_totals(self, child: str) -> Tamper | None:
        def edit(body: ReportBody) -> bool:
            bucket = self.some_bucket(body)
            if bucket is None:
                return False
            name = self.rng.choice(COUNTER_FIELDS)
            value = getattr(bucket.counters, name)
            setattr(
                bucket.counters, name, value + self.rng.choice([-1, 1, 7, 1000]) if value else self.rng.randint(1, 9)
            )
            return True

        return self.edit_tamper("edited_totals", child, edit)

    def dropped_bucket(self, child: str) -> Tamper | None:
        def edit(body: ReportBody) -> bool:
            if not body.buckets:
                return False
            del body.buckets[self.rng.randrange(len(body.buckets))]
            return True

        return self.edit_tamper("dropped_bucket", child, edit)

    def _reorder(self, body: ReportBody) -> bool:
        if len(body.buckets) < 2:
            return False
        buckets = list(body.buckets)
        i, j = sorted(self.rng.sample(range(len(buckets)), 2))
        buckets[i], buckets[j] = buckets[j], buckets[i]
        del body.buckets[:]
        body.buckets.extend(buckets)
        return True

    def _duplicate(self, body: ReportBody) -> bool:
        if not body.buckets:
            return False
        index = self.rng.randrange(len(body.buckets))
        copy = Bucket()
        copy.CopyFrom(body.buckets[index])
        if self.rng.random() < 0.5:  # the copy counts something else: two values for one key
            copy.counters.received += 1
        buckets = list(body.buckets)
        buckets.insert(index + 1, copy)
        del body.buckets[:]
        body.buckets.extend(buckets)
        return True

    def _noncanonical(self, kind: str, child: str, edit: Callable[[ReportBody], bool]) -> Tamper | None:
        """Edited and left unsigned / forged, or even re-signed with the child's own key: never canonical."""
        if self.rng.random() < 0.4:
            envelope = self.next_report(child)
            body = _body(envelope)
            if not edit(body):
                return None
            return Tamper(kind, "resigned_by_child", _sign(self.keys[child], child, body), INVALID)
        return self.edit_tamper(kind, child, edit)

    def reordered_buckets(self, child: str) -> Tamper | None:
        return self._noncanonical("reordered_buckets", child, self._reorder)

    def duplicated_bucket(self, child: str) -> Tamper | None:
        return self._noncanonical("duplicated_bucket", child, self._duplicate)

    def swapped_signature(self, child: str) -> Tamper | None:
        envelope = _copy(self.next_report(child))
        sibling = self.sibling(child)
        donors = [*self.accepted[child], *self.accepted[sibling], *self.pending[sibling], *self.pending[child][1:]]
        how = self.rng.choice(["other_report", "other_report_with_key_id", "outsider_signature", "random", "truncated"])
        if how in ("other_report", "other_report_with_key_id"):
            donor = self.rng.choice(donors)
            envelope.signature = donor.signature
            if how == "other_report_with_key_id":
                envelope.key_id = donor.key_id
        elif how == "outsider_signature":
            envelope.signature = _sign(self.outsider, child, _body(envelope)).signature
        elif how == "random":
            envelope.signature = self.rng.randbytes(64)
        else:
            envelope.signature = envelope.signature[: self.rng.randrange(64)]
        return Tamper("swapped_signature", how, envelope, UNAUTH)

    def signer_changed(self, child: str) -> Tamper | None:
        envelope = _copy(self.next_report(child))
        how = self.rng.choice(["sibling", "unregistered", "empty", "grandchild_report", "sibling_speaks_for_child"])
        if how == "sibling":
            envelope.signer_id = self.sibling(child)
            return Tamper("signer_changed", how, envelope, UNAUTH)
        if how == "unregistered":
            envelope.signer_id = self.rng.choice(["gd", "gd.zz", f"{child}x", f"{child}.x", child.upper()])
            return Tamper("signer_changed", how, envelope, DENIED)
        if how == "empty":
            envelope.signer_id = ""
            return Tamper("signer_changed", how, envelope, DENIED)
        if how == "grandchild_report":
            # gd.a.x's own honest report, validly signed: but gd.a.x is not gd's child.
            return Tamper("signer_changed", how, _copy(self.rng.choice(self.grandchild)), DENIED)
        sibling = self.sibling(child)
        return Tamper("signer_changed", how, _sign(self.keys[sibling], sibling, _body(envelope)), DENIED)

    def key_id_changed(self, child: str) -> Tamper | None:
        envelope = _copy(self.next_report(child))
        how = self.rng.choice(["random", "sibling", "outsider", "empty", "truncated", "extended"])
        if how == "random":
            envelope.key_id = self.rng.randbytes(16)
        elif how == "sibling":
            envelope.key_id = key_id(self.keys[self.sibling(child)].private_key.public_key())
        elif how == "outsider":
            envelope.key_id = key_id(self.outsider.private_key.public_key())
        elif how == "empty":
            envelope.key_id = b""
        elif how == "truncated":
            envelope.key_id = envelope.key_id[:8]
        else:
            envelope.key_id = envelope.key_id + b"\x00" * 16
        return Tamper("key_id_changed", how, envelope, UNAUTH)

    def truncated_history(self, child: str) -> Tamper | None:
        how = self.rng.choice(["later_honest_report", "sequence_skipped", "older_previous_digest"])
        body = _body(self.next_report(child))
        if how == "later_honest_report":
            if len(self.pending[child]) < 2:
                return None
            # A real, validly signed later report of the child, delivered with the one before it missing.
            return Tamper("truncated_history", how, _copy(self.rng.choice(self.pending[child][1:])), CHAIN)
        if how == "sequence_skipped":
            body.sequence += self.rng.randint(1, 5)
            if not body.previous_digest:
                body.previous_digest = self.rng.randbytes(32)
        else:
            older = self.accepted[child][:-1]
            if not older:
                return None
            body.previous_digest = report_digest(self.rng.choice(older))
        return Tamper("truncated_history", how, _sign(self.keys[child], child, body), CHAIN)

    def resigned_fork(self, child: str) -> Tamper | None:
        """The child's own key signs a second history: another report at an accepted sequence, or a branch."""
        if not self.accepted[child]:
            return None
        how = self.rng.choice(["rewritten_accepted_sequence", "branch_on_forged_previous"])
        if how == "rewritten_accepted_sequence":
            body = _body(self.rng.choice(self.accepted[child]))
            bucket = self.some_bucket(body)
            if bucket is not None and self.rng.random() < 0.7:
                bucket.counters.received += self.rng.randint(1, 50)
            else:
                body.created_at_ms += self.rng.randint(1, 10**6)
            return Tamper("resigned_fork", how, _sign(self.keys[child], child, body), STALE)
        # A forged #n-1' (a rewrite of the accepted #n-1) and #n chained onto it: the branch point shows.
        forged_previous = _body(self.accepted[child][-1])
        forged_previous.created_at_ms += self.rng.randint(1, 10**6)
        body = _body(self.next_report(child))
        body.previous_digest = report_digest(_sign(self.keys[child], child, forged_previous))
        return Tamper("resigned_fork", how, _sign(self.keys[child], child, body), CHAIN)

    def replayed_old(self, child: str) -> Tamper | None:
        if not self.accepted[child]:
            return None
        old = self.rng.choice(self.accepted[child])
        if self.rng.random() < 0.2:
            return Tamper("replayed_old", "byte_identical", _copy(old), frozenset({AGAIN}))
        body = _body(old)
        how = self.rng.choice(["fresh_timestamp", "fresh_revision", "other_kind"])
        if how == "fresh_timestamp":
            body.created_at_ms = _body(self.next_report(child)).created_at_ms + self.rng.randint(1, 10**5)
        elif how == "fresh_revision":
            body.up_to_revision += self.rng.randint(1, 100)
        else:
            if body.kind == ReportKind.REPORT_KIND_FULL:
                body.kind = ReportKind.REPORT_KIND_INCREMENTAL
                body.window_start_day = body.window_end_day = ""
            else:
                body.kind = ReportKind.REPORT_KIND_FULL
                body.window_start_day, body.window_end_day = "2024-12-25", "2025-03-24"
        return Tamper("replayed_old", how, _sign(self.keys[child], child, body), STALE)

    def changed_completeness(self, child: str) -> Tamper | None:
        envelope = self.next_report(child)
        body = _body(envelope)
        completeness = body.completeness
        if self.rng.random() < 0.35:
            completeness.nodes_reported_in_window = completeness.nodes_in_subtree + self.rng.randint(1, 10)
            return Tamper("changed_completeness", "resigned_impossible", _sign(self.keys[child], child, body), INVALID)
        if self.rng.random() < 0.5:
            completeness.nodes_in_subtree += self.rng.randint(1, 20)
        else:
            completeness.nodes_reported_in_window = self.rng.randint(0, completeness.nodes_in_subtree)
            if completeness.nodes_reported_in_window == _body(envelope).completeness.nodes_reported_in_window:
                completeness.nodes_in_subtree += 1
        how, forged, expect = self.forge(child, envelope, body)
        return Tamper("changed_completeness", how, forged, expect)

    def child_digests_edited(self, child: str) -> Tamper | None:
        envelope = self.next_report(child)
        body = _body(envelope)
        if not body.child_reports:
            return None
        ref = body.child_reports[self.rng.randrange(len(body.child_reports))]
        if self.rng.random() < 0.35:
            how = self.rng.choice(["wrong_length", "duplicated_reference", "empty_child_id"])
            if how == "wrong_length":
                ref.digest = ref.digest[: self.rng.randrange(32)] if self.rng.random() < 0.5 else ref.digest + b"\x01"
            elif how == "duplicated_reference":
                body.child_reports.add().CopyFrom(ref)
            else:
                ref.child_id = ""
            return Tamper("child_digests_edited", f"resigned_{how}", _sign(self.keys[child], child, body), INVALID)
        change = self.rng.choice(["digest", "sequence", "dropped", "added"])
        if change == "digest":
            flipped = bytearray(ref.digest)
            flipped[self.rng.randrange(32)] ^= 1 << self.rng.randrange(8)
            ref.digest = bytes(flipped)
        elif change == "sequence":
            ref.sequence += self.rng.choice([-1, 1]) if ref.sequence > 1 else 1
        elif change == "dropped":
            del body.child_reports[:]
        else:
            body.child_reports.append(ChildReportRef(child_id=f"{child}.y", sequence=1, digest=self.rng.randbytes(32)))
        how, forged, expect = self.forge(child, envelope, body)
        return Tamper("child_digests_edited", f"{change}_{how}", forged, expect)

    def noncanonical_encoding(self, child: str) -> Tamper | None:
        """The child's own key signs bytes that parse to a report but are not its canonical encoding."""
        body = _body(self.next_report(child))
        canonical = serialize(body)
        how = self.rng.choice(["unknown_field", "repeated_field", "fields_out_of_order", "padded_varint"])
        if how == "unknown_field":
            raw = canonical + bytes([0xF8, 0x07, self.rng.randint(0, 0x7F)])  # field 127, a varint
        elif how == "repeated_field":
            # sequence (field 2) again with another value: a parser keeps the last one.
            raw = canonical + serialize(ReportBody(sequence=body.sequence + self.rng.randint(1, 3)))
        elif how == "fields_out_of_order":
            head = serialize(ReportBody(node_id=body.node_id))
            body.node_id = ""
            raw = serialize(body) + head
        else:
            # created_at_ms (field 4) re-encoded as a 10-byte varint with redundant continuation bytes.
            value = body.created_at_ms
            body.created_at_ms = 0
            varint = bytearray()
            for _ in range(9):
                varint.append((value & 0x7F) | 0x80)
                value >>= 7
            varint.append(value & 0x7F)
            raw = serialize(body) + bytes([0x20]) + bytes(varint)
        identity = self.keys[child]
        envelope = sign_envelope(identity.private_key, child, REPORT_BODY_TYPE, raw, identity.certificate_chain)
        return Tamper("noncanonical_encoding", how, envelope, INVALID)

    def certificate_chain_tampered(self, child: str) -> Tamper | None:
        """The signature stays the child's; the chain that binds its key to its id is changed (not signed)."""
        envelope = _copy(self.next_report(child))
        chain = list(envelope.certificate_chain)
        how = self.rng.choice(
            ["dropped", "sibling_chain", "grandchild_chain", "foreign_root_chain", "leaf_only", "reversed", "garbage"]
        )
        if how == "dropped":
            chain = []
        elif how == "sibling_chain":
            chain = list(self.keys[self.sibling(child)].certificate_chain)
        elif how == "grandchild_chain":
            chain = list(self.keys["gd.a.x"].certificate_chain)
        elif how == "foreign_root_chain":
            chain = list(self.foreign[child].certificate_chain)
        elif how == "leaf_only":
            if len(chain) < 2:
                return None
            chain = chain[:1]
        elif how == "reversed":
            if len(chain) < 2:
                return None
            chain.reverse()
        else:
            index = self.rng.randrange(len(chain))
            chain[index] = chain[index][: self.rng.randrange(len(chain[index]))] + self.rng.randbytes(3)
        del envelope.certificate_chain[:]
        envelope.certificate_chain.extend(chain)
        return Tamper("certificate_chain_tampered", how, envelope, UNAUTH)

    def impossible_values(self, child: str) -> Tamper | None:
        """Values no honest builder signs: a negative counter, a day that does not exist, a FULL window beyond."""
        body = _body(self.next_report(child))
        bucket = self.some_bucket(body)
        how = self.rng.choice(["negative_counter", "nonexistent_day", "nonexistent_window_day", "code_too_long"])
        if how == "negative_counter" and bucket is not None:
            setattr(bucket.counters, self.rng.choice(COUNTER_FIELDS), -self.rng.randint(1, 10**6))
        elif how == "code_too_long" and bucket is not None:
            # Longer than the contract's an..10 / n2 (and a parent's columns): kept last so the order holds.
            last = body.buckets[-1]
            last.basic_code += "9" * self.rng.randint(11 - len(last.basic_code), 300)
            if self.rng.random() < 0.5:
                last.item_type_code = "999"
        elif how == "nonexistent_day" and bucket is not None:
            # The last bucket moves to a day that looks right but does not exist, still sorting last (data is March).
            body.buckets[-1].day = self.rng.choice(["2025-04-31", "2025-06-31", "2025-09-31", "2025-11-31"])
            body.kind = ReportKind.REPORT_KIND_INCREMENTAL
            body.window_start_day = body.window_end_day = ""
        else:
            how = "nonexistent_window_day"
            body.kind = ReportKind.REPORT_KIND_FULL
            body.window_start_day, body.window_end_day = "2024-12-25", self.rng.choice(["2025-04-31", "2025-09-31"])
        return Tamper("impossible_values", how, _sign(self.keys[child], child, body), INVALID)


# -- the tree and its honest histories ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def histories(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Histories]:
    tree = Tree(tmp_path_factory.mktemp("tamper"), IDS)
    try:
        honest: dict[str, list[SignedEnvelope]] = {child: [] for child in CHILDREN}
        grandchild: list[SignedEnvelope] = []
        middle_server = tree.nodes["gd.a"].server
        assert middle_server is not None
        for index, (first, last) in enumerate(SLICES):
            for offset, node_id in enumerate(("gd.a.x", "gd.a", "gd.b")):
                tree.import_synthetic(node_id, cases=18, seed=100 * index + offset, date_from=first, date_to=last)
            for report in build_reports(tree["gd.a.x"]):
                grandchild.append(report.envelope)
                assert middle_server.reports.receiver.receive(report.envelope).stored
            for child in CHILDREN:
                honest[child] += [report.envelope for report in build_reports(tree[child])]
        for child in CHILDREN:
            honest[child] += [report.envelope for report in build_reports(tree[child], "full")]
        yield tree, honest, grandchild
    finally:
        tree.close()


def test_at_least_1000_random_tampers_are_all_refused_and_change_nothing(
    histories: Histories,
) -> None:
    tree, honest, grandchild = histories
    harness = Harness(tree, honest, grandchild)
    # Rounds alternate between the children, each aimed at that child's next honest report.
    order = [
        child for index in range(max(map(len, honest.values()))) for child in CHILDREN if index < len(honest[child])
    ]
    rounds = len(order)
    per_round = max(TAMPERS_PER_ROUND, -(-MIN_TAMPERS * 11 // 10 // rounds))
    for child in order:
        harness.round(child, per_round)
    table = harness.tally.table()
    print("\n" + table)
    applied, detected = sum(harness.tally.applied.values()), sum(harness.tally.detected.values())
    assert applied >= MIN_TAMPERS and detected == applied, table
    assert set(harness.tally.applied) == set(harness._kinds), table  # every kind was exercised
    assert harness.tally.redelivered > 0, table

    # Nothing any tamper did survives: the parent holds exactly its children's honest subtrees.
    expected = add_totals(own_totals(tree["gd.a"]), own_totals(tree["gd.a.x"]), own_totals(tree["gd.b"]))
    assert nonzero(subtree_of(tree["gd"])) == nonzero(expected)
    with tree["gd"].engine.connect() as conn:
        heads = {child: state.last_sequence for child, state in load_child_chains(conn).items()}
    assert heads == {child: len(honest[child]) for child in CHILDREN}


# -- lying children: validly signed, but the totals are not the child's data ----------------------------------------
def _own_from_records(node: Node, group_by: dd.SummaryGroupBy.ValueType) -> dict[str, dict[str, int]]:
    """What a node answers ``supnet verify`` for its own data, recomputed from its raw records."""
    rows: dict[str, dict[str, int]] = {}
    token = ""
    while True:
        request = dd.SummaryRequest(group_by=group_by, own_from_records=True)
        answer, token = answer_summary(node, request, 5000, token, own_from_records=True)
        for row in answer.rows:
            rows[row.key] = {name: int(getattr(row.counters, name)) for name in COUNTER_FIELDS}
        if not token:
            return rows


def _lie(rng: random.Random, latest: ReportBody) -> tuple[str, ReportBody]:
    body = ReportBody()
    body.CopyFrom(latest)
    how = rng.choice(["counter_changed", "bucket_invented", "bucket_left_out"])
    if how == "bucket_left_out" and body.kind == ReportKind.REPORT_KIND_FULL:
        candidates = [i for i, b in enumerate(body.buckets) if any(getattr(b.counters, n) for n in HARD_COUNTERS)]
        if candidates:
            del body.buckets[rng.choice(candidates)]
            return how, body
    if how == "bucket_invented":
        # A key the child never had (an item code nobody uses), inside the report's own days.
        day = rng.choice(body.buckets).day if body.buckets else "2025-03-10"
        invented = Bucket(day=day, basic_code=f"99{rng.randrange(10**8):08d}", item_type_code="01")
        setattr(invented.counters, rng.choice(HARD_COUNTERS), rng.randint(1, 40))
        buckets = sorted([*body.buckets, invented], key=lambda b: (b.day, b.basic_code, b.item_type_code))
        del body.buckets[:]
        body.buckets.extend(buckets)
        return how, body
    bucket = rng.choice(body.buckets)
    name = rng.choice(HARD_COUNTERS)
    value = getattr(bucket.counters, name)
    delta = rng.choice([d for d in (-3, -1, 1, 2, 10, 250) if value + d >= 0])
    setattr(bucket.counters, name, value + delta)
    return "counter_changed", body


def test_lying_children_are_caught_by_the_verify_totals_check(
    histories: Histories,
) -> None:
    tree, honest, grandchild = histories
    rng = random.Random(SEED + 1)
    children_state = {"gd.a": replay(_body(envelope) for envelope in grandchild), "gd.b": {}}
    tally = Tally()
    for child in CHILDREN:
        history = [_body(envelope) for envelope in honest[child]]
        by_day = _own_from_records(tree[child], dd.SUMMARY_GROUP_BY_DAY)
        by_item = _own_from_records(tree[child], dd.SUMMARY_GROUP_BY_ITEM)
        hard, _ = totals_differences(replay(history), by_day, by_item, children_state[child])
        assert hard == [], f"honest {child} must verify: {hard[:3]}"  # so the check below can tell lies apart
        key = signing_identity(tree[child])
        for _ in range(LIES_PER_CHILD):
            how, lie = _lie(rng, history[-1])
            signed = _sign(key, child, lie)  # the child's own key: the receiver has no way to tell
            hard, _ = totals_differences(replay([*history[:-1], _body(signed)]), by_day, by_item, children_state[child])
            tally.record("lying_child", how, detected=bool(hard))
    table = tally.table()
    print("\n" + table)
    assert tally.detected["lying_child"] == tally.applied["lying_child"] == LIES_PER_CHILD * len(CHILDREN), table


# -- end to end: SubmitReport status codes, and supnet verify on a lying child --------------------------------------
def test_tampered_reports_over_grpc_get_precise_status_codes(tmp_path: Path) -> None:
    tree = Tree(tmp_path, ["gd", "gd.a", "gd.b"])
    try:
        tree.import_synthetic("gd.a", cases=30, seed=1, date_to=date(2025, 3, 10))
        [first] = build_reports(tree["gd.a"])
        tree.import_synthetic("gd.a", cases=30, seed=2, date_from=date(2025, 3, 11))
        [second] = build_reports(tree["gd.a"])
        key = signing_identity(tree["gd.a"])
        stub, channel = tree.stub("gd")

        def status(envelope: SignedEnvelope) -> grpc.StatusCode:
            try:
                stub.SubmitReport(envelope, timeout=5)
            except grpc.RpcError as error:
                return error.code()
            return grpc.StatusCode.OK

        try:
            body = _body(first.envelope)
            body.buckets[0].counters.completed += 5
            assert status(_with_body(first.envelope, body)) is grpc.StatusCode.UNAUTHENTICATED
            assert status(_sign(signing_identity(tree["gd.b"]), "gd.b", _body(first.envelope))) is (
                grpc.StatusCode.PERMISSION_DENIED
            )
            reordered = _body(first.envelope)
            reordered.buckets.reverse()
            assert status(_sign(key, "gd.a", reordered)) is grpc.StatusCode.INVALID_ARGUMENT
            assert status(second.envelope) is grpc.StatusCode.FAILED_PRECONDITION  # #1 missing
            assert status(first.envelope) is grpc.StatusCode.OK
            assert status(first.envelope) is grpc.StatusCode.OK  # byte-identical: acknowledged again
            fork = _body(first.envelope)
            fork.buckets[0].counters.received += 1
            assert status(_sign(key, "gd.a", fork)) is grpc.StatusCode.ALREADY_EXISTS
            assert status(second.envelope) is grpc.StatusCode.OK
        finally:
            channel.close()
        with tree["gd"].engine.connect() as conn:
            stored = conn.execute(select(received_reports.c.sequence, received_reports.c.digest)).all()
        assert sorted(stored) == [(1, first.digest), (2, second.digest)]
        assert nonzero(subtree_of(tree["gd"])) == nonzero(own_totals(tree["gd.a"]))
    finally:
        tree.close()


def test_supnet_verify_finds_a_lying_leaf_and_a_middle_node_naming_a_false_child_digest(tmp_path: Path) -> None:
    from federation.proto.v1.node_service_pb2_grpc import NodeServiceStub

    tree = build_tree(tmp_path, {"gd": 0, "gd.a": 12, "gd.a.x": 20})
    try:
        tree.report_up()
        assert verify_target(tree["gd"], "gd.a", tree.nodes["gd"].address).ok

        def lie(liar: str, parent: str, change: Callable[[ReportBody], None]) -> None:
            with tree[parent].engine.connect() as conn:
                head = load_child_chains(conn)[liar]
            with tree[parent].engine.connect() as conn:
                raw = conn.execute(
                    select(received_reports.c.envelope).where(
                        received_reports.c.child_id == liar, received_reports.c.sequence == head.last_sequence
                    )
                ).scalar_one()
            body = _body(SignedEnvelope.FromString(raw))
            body.sequence, body.previous_digest = head.last_sequence + 1, head.last_digest
            change(body)
            channel = tree.channel(liar, parent)  # the liar's own TLS identity
            try:  # validly signed by the liar's own key and chain: the parent accepts it
                signed = _sign(signing_identity(tree[liar]), liar, body)
                ack = NodeServiceStub(channel).SubmitReport(signed, timeout=5)
            finally:
                channel.close()
            assert ack.stored

        def false_digest(body: ReportBody) -> None:
            body.child_reports[0].digest = bytes(32)

        lie("gd.a", "gd", false_digest)
        result = verify_target(tree["gd"], "gd.a", tree.nodes["gd"].address)
        failed = {(f.node_id, f.check) for f in result.findings if not f.ok and not f.warning}
        assert not result.ok and ("gd.a.x", "authenticated") in failed, result.findings

        def inflated(body: ReportBody) -> None:
            body.buckets[0].counters.completed_on_time += 3

        lie("gd.a.x", "gd.a", inflated)
        result = verify_target(tree["gd.a"], "gd.a.x", tree.nodes["gd.a"].address)
        failed_details = [f.detail for f in result.findings if not f.ok and not f.warning and f.check == "totals"]
        assert not result.ok and any("completed_on_time" in detail for detail in failed_details), result.findings
    finally:
        tree.close()
