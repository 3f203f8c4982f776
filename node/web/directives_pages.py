"""Directives (督办, 效能告诫书, 整改通知, 通报; docs/domain.md §8): inbox, outbox, one directive, issuing one.

Every page is a URL to bookmark: ``/directives?box=inbox|outbox|relayed``, ``/directives/<issuer>/<number>`` (a
directive's id is ``<issuer>/<YYYYMMDD>-<hex>``), ``/directives/new?target=…&case=…|department=…|item=…`` (the form
the unit, case and department pages link to, prefilled). The actions call the same lifecycle functions as
``supnet directive``, with the person logged in both as the official the signed message names (``by``) and as the
audit actor (``web:NAME@NODE``); the DirectiveSender of ``supnet serve`` delivers what they queue. Issuing, closing
and reopening are a supervisor's (capability ``direct``); acknowledging and responding need ``act``. A refusal of
either is audited by node.web.core.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from starlette.responses import Response

from federation import SupnetError
from node.directives import (
    KINDS,
    DirectiveView,
    FindingDraft,
    IssueRequest,
    acknowledge,
    close,
    directive_history,
    directives,
    issue,
    latest_responses,
    reopen,
    respond,
)
from node.errors import InvalidArgumentError
from node.trust import is_ancestor
from node.web.core import Ctx, route

DIRECTIVE_KINDS: tuple[str, ...] = tuple(KINDS)
BOXES = ("inbox", "outbox", "relayed")
SUBJECT_FIELDS = ("case", "department", "item")
DONE_MESSAGES = ("issued", "acknowledged", "responded", "closed", "reopened")
# What the target may still do, and what the issuer may (see node.directives.lifecycle).
ACKNOWLEDGEABLE = ("delivered",)
ANSWERABLE = ("delivered", "acknowledged", "reopened")
MAX_FINDINGS = 20


@dataclass(frozen=True)
class IssueForm:
    """The issue form's values (prefilled from a page's link, or as submitted when refused)."""

    target: str = ""
    kind: str = "supervise"
    case: str = ""
    department: str = ""
    item: str = ""
    text: str = ""
    within: str = ""
    whole_subtree: bool = False
    findings: str = ""


def directive_url(directive_id: str, **params: str) -> str:
    """The bookmarkable page of one directive."""
    query = "&".join(f"{key}={value}" for key, value in params.items() if value)
    return f"/directives/{directive_id}" + (f"?{query}" if query else "")


def may_direct(ctx: Ctx, target: str) -> bool:
    """True when the person may issue a directive to ``target`` here (a supervisor; a node below this one)."""
    return ctx.can("direct") and is_ancestor(ctx.console.node_id, target)


def issue_form_values(ctx: Ctx, target: str, **subject: str) -> dict[str, Any]:
    """What a page passes to ``directive_form.html`` to embed the form for ``target`` (and one subject)."""
    return {
        "issue_form": IssueForm(
            target=target,
            case=subject.get("case", ""),
            department=subject.get("department", ""),
            item=subject.get("item", ""),
        ),
        "kinds": DIRECTIVE_KINDS,
        "default_within": ctx.node.config.directives.default_respond_within_workdays,
    }


@route("/directives")
def directive_boxes(ctx: Ctx) -> Response:
    """Inbox (received from above), outbox (issued here, with the newest response) or relayed/escalated here."""
    box = ctx.arg("box", "inbox")
    if box not in BOXES:
        raise InvalidArgumentError(f"box must be one of {', '.join(BOXES)}, not {box!r}")
    open_only = ctx.arg("open") == "1"
    overdue_only = ctx.arg("overdue") == "1"
    node = ctx.node
    rows: list[DirectiveView]
    if box == "relayed":
        rows = [
            view
            for role in ("relayed", "escalated")
            for view in directives(node, role=role, open_only=open_only, overdue_only=overdue_only)
        ]
        rows.sort(key=lambda view: (view.issued_at, view.id), reverse=True)
    else:
        role = "received" if box == "inbox" else "issued"
        rows = directives(node, role=role, open_only=open_only, overdue_only=overdue_only)
    responses = latest_responses(node, [view.id for view in rows]) if box != "inbox" else {}
    return ctx.render(
        "directives.html",
        box=box,
        boxes=BOXES,
        rows=rows,
        responses=responses,
        open_only=open_only,
        overdue_only=overdue_only,
    )


@route("/directives/new", need="direct")
def new_directive(ctx: Ctx) -> Response:
    """The issue form, prefilled from the page that links here (target node, and a case, department or item)."""
    target = ctx.arg("target")
    kind = ctx.arg("kind", "supervise")
    form = IssueForm(
        target=target,
        kind=kind if kind in DIRECTIVE_KINDS else "supervise",
        case=ctx.arg("case"),
        department=ctx.arg("department"),
        item=ctx.arg("item"),
    )
    return _form_page(ctx, form)


def _form_page(ctx: Ctx, form: IssueForm, error: str = "", status: int = 200) -> Response:
    own = ctx.console.node_id
    targets = [child.id for child in ctx.node.config.federation.children]
    return ctx.render(
        "directive_new.html",
        status,
        issue_form=form,
        kinds=DIRECTIVE_KINDS,
        default_within=ctx.node.config.directives.default_respond_within_workdays,
        targets=targets,
        below=bool(form.target) and is_ancestor(own, form.target),
        error=error,
    )


def _submitted(ctx: Ctx) -> IssueForm:
    form = ctx.form
    return IssueForm(
        target=form.get("target", "").strip(),
        kind=form.get("kind", "").strip(),
        case=form.get("case", "").strip(),
        department=form.get("department", "").strip(),
        item=form.get("item", "").strip(),
        text=form.get("text", "").strip(),
        within=form.get("within", "").strip(),
        whole_subtree=form.get("whole_subtree", "") == "1",
        findings=form.get("findings", "").strip(),
    )


def _findings(text: str) -> list[FindingDraft]:
    drafts = []
    for number, line in enumerate((line for line in text.splitlines() if line.strip()), start=1):
        parts = [part.strip() for part in line.replace("｜", "|").split("|")]
        if len(parts) > 3:
            raise InvalidArgumentError(f"field 'findings', line {number}: text | department | post, at most 3 parts")
        parts += [""] * (3 - len(parts))
        drafts.append(FindingDraft(text=parts[0], owner_department=parts[1], owner_post=parts[2]))
    if len(drafts) > MAX_FINDINGS:
        raise InvalidArgumentError(f"field 'findings': {len(drafts)} findings; at most {MAX_FINDINGS}")
    return drafts


def _issue_request(ctx: Ctx, form: IssueForm) -> IssueRequest:
    """The form as an IssueRequest; InvalidArgumentError naming the form field and why."""
    if form.kind not in DIRECTIVE_KINDS:
        raise InvalidArgumentError(f"field 'kind': one of {', '.join(DIRECTIVE_KINDS)}, not {form.kind!r}")
    if not form.target:
        raise InvalidArgumentError("field 'target': required (the node the directive goes to)")
    if not form.text:
        raise InvalidArgumentError("field 'text': required (what the directive says)")
    given = [name for name in SUBJECT_FIELDS if getattr(form, name)]
    if len(given) > 1:
        raise InvalidArgumentError(f"fields {', '.join(given)}: a directive is about one subject, give at most one")
    within: int | None = None
    if form.within:
        if not form.within.isdigit():
            raise InvalidArgumentError(f"field 'within': a number of working days, not {form.within!r}")
        within = int(form.within)
    findings = _findings(form.findings)
    if findings and form.kind != "rectify":
        raise InvalidArgumentError("field 'findings': only a rectification notice (整改通知) lists findings")
    if form.kind == "rectify" and not findings:
        raise InvalidArgumentError("field 'findings': a rectification notice (整改通知) lists at least one finding")
    assert ctx.user is not None
    return IssueRequest(
        target_id=form.target,
        kind=form.kind,
        text=form.text,
        case_no=form.case,
        department=form.department,
        item_code=form.item,
        findings=findings,
        respond_within_workdays=within,
        whole_subtree=form.whole_subtree,
        issued_by=ctx.user.name,
    )


@route("/directives/issue", methods=("POST",), need="direct")
def issue_directive(ctx: Ctx) -> Response:
    """Issue a directive to a node below (supervisors only); a refused form comes back filled, saying why."""
    form = _submitted(ctx)
    try:
        view = issue(ctx.node, _issue_request(ctx, form), actor=ctx.actor)
    except SupnetError as error:
        return _form_page(ctx, form, error=error.message, status=400)
    return ctx.redirect(directive_url(view.id, done="issued"))


@route("/directives/{issuer}/{number}")
def directive_page(ctx: Ctx, issuer: str, number: str) -> Response:
    """One directive: what it says, its state and due time, its signed history verified again, the actions."""
    history = directive_history(ctx.node, f"{issuer}/{number}")
    view = history.view
    own = ctx.console.node_id
    done = ctx.arg("done")
    return ctx.render(
        "directive.html",
        d=view,
        history=history,
        done=done if done in DONE_MESSAGES else "",
        can_acknowledge=view.role == "received" and view.status in ACKNOWLEDGEABLE and ctx.can("act"),
        can_respond=view.role == "received" and view.target_id == own and view.status in ANSWERABLE and ctx.can("act"),
        can_close=view.role == "issued" and view.status in _closable(view) and ctx.can("direct"),
        can_reopen=view.role == "issued" and view.status == "responded" and ctx.can("direct"),
        case_url=_case_url(view),
    )


def _closable(view: DirectiveView) -> tuple[str, ...]:
    return ("responded",) if view.respond_within_workdays else ("delivered", "acknowledged", "responded")


def _case_url(view: DirectiveView) -> str:
    if view.subject_kind != "case" or not view.subject:
        return ""
    return f"/nodes/{view.target_id}/cases/{quote(view.subject)}"


def _person(ctx: Ctx) -> str:
    assert ctx.user is not None
    return ctx.user.name


@route("/directives/{issuer}/{number}/ack", methods=("POST",), need="act")
def acknowledge_directive(ctx: Ctx, issuer: str, number: str) -> Response:
    """签收: the person logged in has read it; signed and sent up to the issuer."""
    view = acknowledge(ctx.node, f"{issuer}/{number}", by=_person(ctx), actor=ctx.actor)
    return ctx.redirect(directive_url(view.id, done="acknowledged"))


@route("/directives/{issuer}/{number}/respond", methods=("POST",), need="act")
def respond_directive(ctx: Ctx, issuer: str, number: str) -> Response:
    """答复 with the form's text (required); for 整改 each finding ticked done, with its note."""
    text = ctx.form.get("text", "")
    if not text.strip():
        raise InvalidArgumentError("field 'text': a response needs its text")
    done = [
        (int(key.removeprefix("done_")), ctx.form.get(f"note_{key.removeprefix('done_')}", "").strip())
        for key, value in ctx.form.items()
        if key.startswith("done_") and key.removeprefix("done_").isdigit() and value == "1"
    ]
    view = respond(ctx.node, f"{issuer}/{number}", text.strip(), done=sorted(done), by=_person(ctx), actor=ctx.actor)
    return ctx.redirect(directive_url(view.id, done="responded"))


@route("/directives/{issuer}/{number}/close", methods=("POST",), need="direct")
def close_directive(ctx: Ctx, issuer: str, number: str) -> Response:
    """办结: the issuer accepts the response (the note is optional); signed and sent down."""
    text = ctx.form.get("text", "").strip()
    view = close(ctx.node, f"{issuer}/{number}", text=text, by=_person(ctx), actor=ctx.actor)
    return ctx.redirect(directive_url(view.id, done="closed"))


@route("/directives/{issuer}/{number}/reopen", methods=("POST",), need="direct")
def reopen_directive(ctx: Ctx, issuer: str, number: str) -> Response:
    """退回重办 with the reason the form gives (required); signed and sent down."""
    text = ctx.form.get("text", "")
    if not text.strip():
        raise InvalidArgumentError("field 'text': reopening needs the reason")
    view = reopen(ctx.node, f"{issuer}/{number}", text.strip(), by=_person(ctx), actor=ctx.actor)
    return ctx.redirect(directive_url(view.id, done="reopened"))
