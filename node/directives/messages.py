"""The directive wire messages as the node uses them: kinds and their names, building, checking, routing, times.

A directive (``DirectiveBody``) and each event of its life (``DirectiveEvent``) are signed once by whoever makes them
and never re-serialized; this module builds and checks their bodies, names the kinds (English words on the command
line and in the tables, the official Chinese names beside them) and says where a message goes next (docs/domain.md
§8). Times on the wire are Unix ms; the node keeps naive local times in its zone.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from federation.proto.v1.directive_pb2 import (
    DirectiveBody,
    DirectiveEvent,
    DirectiveEventKind,
    DirectiveKind,
    Finding,
    FindingStatus,
)
from node.domain import FREE_TEXT_MAX_LENGTH
from node.errors import InvalidArgumentError, NotFoundError
from node.store import DIRECTIVE_ID_MAX
from node.trust import is_ancestor, is_in_subtree

__all__ = [
    "EVENT_KINDS",
    "EVENT_LABELS",
    "KINDS",
    "KIND_LABELS",
    "NONCE_BYTES",
    "ROLE_LABELS",
    "STATUS_LABELS",
    "FindingDraft",
    "body_subject",
    "build_body",
    "child_towards",
    "event_kind_name",
    "finding_statuses",
    "from_ms",
    "kind_name",
    "new_directive_id",
    "to_ms",
    "validate_body",
    "validate_event",
]

NONCE_BYTES = 16
MAX_FINDINGS = 100
MAX_ATTACHMENTS = 50
SHA256_BYTES = 32

# Command-line and table names of the kinds (stable: stored in directives.kind and activity counts' kind).
KINDS: dict[str, int] = {
    "supervise": DirectiveKind.DIRECTIVE_KIND_SUPERVISE,
    "warning": DirectiveKind.DIRECTIVE_KIND_WARNING,
    "rectify": DirectiveKind.DIRECTIVE_KIND_RECTIFY,
    "bulletin": DirectiveKind.DIRECTIVE_KIND_BULLETIN,
}
KIND_LABELS: dict[str, str] = {
    "supervise": "督办",
    "warning": "效能告诫书",
    "rectify": "整改通知",
    "bulletin": "通报",
}
EVENT_KINDS: dict[str, int] = {
    "delivered": DirectiveEventKind.DIRECTIVE_EVENT_KIND_DELIVERED,
    "acknowledged": DirectiveEventKind.DIRECTIVE_EVENT_KIND_ACKNOWLEDGED,
    "responded": DirectiveEventKind.DIRECTIVE_EVENT_KIND_RESPONDED,
    "closed": DirectiveEventKind.DIRECTIVE_EVENT_KIND_CLOSED,
    "reopened": DirectiveEventKind.DIRECTIVE_EVENT_KIND_REOPENED,
    "escalated": DirectiveEventKind.DIRECTIVE_EVENT_KIND_ESCALATED,
}
EVENT_LABELS: dict[str, str] = {
    "issued": "下发",
    "delivered": "送达",
    "acknowledged": "签收",
    "responded": "答复",
    "closed": "办结",
    "reopened": "退回重办",
    "escalated": "逾期上报",
}
STATUS_LABELS: dict[str, str] = {
    "issued": "已下发",
    "delivered": "已送达",
    "acknowledged": "已签收",
    "responded": "已答复",
    "reopened": "退回重办",
    "closed": "已办结",
    "escalated": "逾期上报",
}
ROLE_LABELS: dict[str, str] = {
    "issued": "发出",
    "received": "收到",
    "relayed": "转送",
    "escalated": "上报",
}
_KIND_BY_NUMBER = {number: name for name, number in KINDS.items()}
_EVENT_BY_NUMBER = {number: name for name, number in EVENT_KINDS.items()}
_ID_SUFFIX = re.compile(r"^\d{8}-[0-9a-f]{8}$")
# Column sizes of the store (and so of what a node accepts on the wire).
_LIMITS = {"issued_by": 100, "department": 200, "post": 100, "case_no": 50, "item_code": 24}


@dataclass(frozen=True, slots=True)
class FindingDraft:
    """One finding of a rectification notice as the issuer writes it."""

    text: str
    owner_department: str = ""
    owner_post: str = ""


def kind_name(kind: int) -> str:
    """The name of a DirectiveKind ('supervise', ...); InvalidArgumentError for none or an unknown one."""
    name = _KIND_BY_NUMBER.get(kind)
    if name is None:
        raise InvalidArgumentError(f"directive kind {kind} is not one of {', '.join(KINDS)}")
    return name


def event_kind_name(kind: int) -> str:
    """The name of a DirectiveEventKind ('delivered', ...); InvalidArgumentError for an unknown one."""
    name = _EVENT_BY_NUMBER.get(kind)
    if name is None:
        raise InvalidArgumentError(f"directive event kind {kind} is not one of {', '.join(EVENT_KINDS)}")
    return name


def to_ms(value: datetime, tz: ZoneInfo) -> int:
    """A naive local time (in ``tz``) as Unix ms."""
    return int(value.replace(tzinfo=tz).timestamp() * 1000)


def from_ms(ms: int, tz: ZoneInfo) -> datetime:
    """Unix ms as a naive local time in ``tz``."""
    return datetime.fromtimestamp(ms / 1000, tz).replace(tzinfo=None)


def new_directive_id(issuer_id: str, now: datetime) -> str:
    """A fresh id naming its issuer: ``gd.gz/20260306-3f9a2c1b``."""
    return f"{issuer_id}/{now:%Y%m%d}-{os.urandom(4).hex()}"


def body_subject(body: DirectiveBody) -> tuple[str, str]:
    """(subject kind, value): ('case', NO), ('department', NAME), ('item', CODE) or ('', '')."""
    which = body.WhichOneof("subject")
    if which is None:
        return "", ""
    return {"case_no": "case", "department": "department", "item_code": "item"}[which], getattr(body, which)


def build_body(
    *,
    directive_id: str,
    kind: str,
    issuer_id: str,
    issued_by: str,
    target_id: str,
    text: str,
    issued_at_ms: int,
    respond_within_workdays: int,
    case_no: str = "",
    department: str = "",
    item_code: str = "",
    findings: Sequence[FindingDraft] = (),
    attachments: Sequence[bytes] = (),
    whole_subtree: bool = False,
) -> DirectiveBody:
    """A directive body, checked (InvalidArgumentError naming the field and why)."""
    if kind not in KINDS:
        raise InvalidArgumentError(f"--kind must be one of {', '.join(KINDS)}, got {kind!r}")
    subject = {"case_no": case_no, "department": department, "item_code": item_code}
    given = {name: value for name, value in subject.items() if value}
    if len(given) > 1:
        raise InvalidArgumentError("a directive is about one subject: give at most one of --case, --department, --item")
    body = DirectiveBody(
        id=directive_id,
        kind=KINDS[kind],  # type: ignore[arg-type]
        issuer_id=issuer_id,
        issued_by=issued_by,
        target_id=target_id,
        text=text,
        findings=[Finding(text=f.text, owner_department=f.owner_department, owner_post=f.owner_post) for f in findings],
        respond_within_workdays=respond_within_workdays,
        attachment_sha256=list(attachments),
        issued_at_ms=issued_at_ms,
        nonce=os.urandom(NONCE_BYTES),
        whole_subtree=whole_subtree,
    )
    for name, value in given.items():
        setattr(body, name, value)
    validate_body(body)
    return body


def _check_length(field: str, value: str, limit: int) -> None:
    if len(value) > limit:
        raise InvalidArgumentError(f"directive field '{field}' has {len(value)} characters; at most {limit}")


def validate_body(body: DirectiveBody) -> None:
    """Refuse a directive body this node could not store or act on faithfully, naming the field and why."""
    label = f"directive {body.id or '?'}"
    if len(body.id) > DIRECTIVE_ID_MAX or not body.id.startswith(f"{body.issuer_id}/"):
        raise InvalidArgumentError(f"{label}: id must be '<issuer>/<YYYYMMDD>-<8 hex>' naming issuer {body.issuer_id}")
    if not _ID_SUFFIX.match(body.id[len(body.issuer_id) + 1 :]):
        raise InvalidArgumentError(f"{label}: id must end in '<YYYYMMDD>-<8 hex>'")
    kind = kind_name(body.kind)
    if not body.text.strip():
        raise InvalidArgumentError(f"{label}: the text (--text) must not be empty")
    _check_length("text", body.text, FREE_TEXT_MAX_LENGTH)
    _check_length("issued_by", body.issued_by, _LIMITS["issued_by"])
    which = body.WhichOneof("subject")
    if which is not None:
        value = getattr(body, which)
        if not value:
            raise InvalidArgumentError(f"{label}: subject {which} is empty")
        _check_length(which, value, _LIMITS[which])
    if body.findings and kind != "rectify":
        raise InvalidArgumentError(f"{label}: findings (--finding) belong to a rectification notice (--kind rectify)")
    if kind == "rectify" and not body.findings:
        raise InvalidArgumentError(f"{label}: a rectification notice lists at least one finding (--finding TEXT)")
    if len(body.findings) > MAX_FINDINGS:
        raise InvalidArgumentError(f"{label}: {len(body.findings)} findings; at most {MAX_FINDINGS}")
    for index, finding in enumerate(body.findings, start=1):
        if not finding.text.strip():
            raise InvalidArgumentError(f"{label}: finding {index} has no text")
        _check_length(f"findings[{index}].text", finding.text, FREE_TEXT_MAX_LENGTH)
        _check_length(f"findings[{index}].owner_department", finding.owner_department, _LIMITS["department"])
        _check_length(f"findings[{index}].owner_post", finding.owner_post, _LIMITS["post"])
    if len(body.attachment_sha256) > MAX_ATTACHMENTS:
        raise InvalidArgumentError(f"{label}: {len(body.attachment_sha256)} attachments; at most {MAX_ATTACHMENTS}")
    for index, digest in enumerate(body.attachment_sha256, start=1):
        if len(digest) != SHA256_BYTES:
            raise InvalidArgumentError(f"{label}: attachment {index} is not a SHA-256 digest of {SHA256_BYTES} bytes")
    if body.respond_within_workdays > 120:
        raise InvalidArgumentError(f"{label}: respond within {body.respond_within_workdays} working days; at most 120")
    if body.whole_subtree and kind != "bulletin":
        raise InvalidArgumentError(f"{label}: only a bulletin (通报) goes to a whole subtree")
    if body.whole_subtree and body.respond_within_workdays:
        raise InvalidArgumentError(f"{label}: a bulletin to a whole subtree asks for no response (respond within 0)")
    if len(body.nonce) < NONCE_BYTES:
        raise InvalidArgumentError(f"{label}: nonce must have at least {NONCE_BYTES} random bytes")
    if body.issued_at_ms <= 0:
        raise InvalidArgumentError(f"{label}: issued_at_ms must be set")
    if not is_ancestor(body.issuer_id, body.target_id):
        raise InvalidArgumentError(
            f"{label}: target {body.target_id or '(none)'} is not a descendant of the issuer {body.issuer_id}"
        )


def validate_event(event: DirectiveEvent) -> str:
    """Check an event body's fields; returns its kind name (InvalidArgumentError naming the field and why)."""
    kind = event_kind_name(event.kind)
    label = f"{kind} event of directive {event.directive_id or '?'}"
    if len(event.directive_digest) != SHA256_BYTES:
        raise InvalidArgumentError(f"{label}: directive_digest must be {SHA256_BYTES} bytes")
    _check_length("actor_person", event.actor_person, _LIMITS["issued_by"])
    _check_length("text", event.text, FREE_TEXT_MAX_LENGTH)
    if len(event.nonce) < NONCE_BYTES:
        raise InvalidArgumentError(f"{label}: nonce must have at least {NONCE_BYTES} random bytes")
    if event.at_ms <= 0:
        raise InvalidArgumentError(f"{label}: at_ms must be set")
    for status in event.findings:
        _check_length(f"findings[{status.index}].note", status.note, FREE_TEXT_MAX_LENGTH)
    if event.HasField("directive") != (kind == "escalated"):
        raise InvalidArgumentError(f"{label}: only an escalated event carries the directive")
    return kind


def finding_statuses(count: int, done: Sequence[tuple[int, str]]) -> list[FindingStatus]:
    """The findings' statuses of a response: ``done`` as (1-based index, note); the others not done."""
    notes: dict[int, str] = {}
    for index, note in done:
        if not 1 <= index <= count:
            raise InvalidArgumentError(
                f"--finding-done {index}: the directive has {count} finding(s), numbered 1 to {count}"
                if count
                else f"--finding-done {index}: the directive lists no findings"
            )
        if index in notes:
            raise InvalidArgumentError(f"--finding-done {index} is given twice")
        notes[index] = note
    return [FindingStatus(index=index, done=index in notes, note=notes.get(index, "")) for index in range(1, count + 1)]


def child_towards(node_id: str, target_id: str, children: Sequence[str]) -> str:
    """The registered child of ``node_id`` on the way down to ``target_id`` (NotFoundError if none)."""
    for child_id in children:
        if is_in_subtree(target_id, child_id):
            return child_id
    raise NotFoundError(f"node {node_id} has no registered child on the path to {target_id}")
