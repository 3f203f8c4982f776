"""Directives (督办, 效能告诫书, 整改通知, 通报; docs/domain.md §8): inbox, outbox, issuing one from a case page.

Issue 13 brings the directives themselves (package ``node.directives``, ``supnet directive``), built in parallel.
Until the console is wired to it (``WIRED``), this module serves the page skeleton and the issue form behind
``directives_available()``, which asks whether ``node.directives`` is installed and the pages are wired; otherwise
the pages say which of the two is missing and issuing is refused. Only a supervisor may issue (capability
``direct``); the console audits the refusal of anyone else.
"""

from __future__ import annotations

import importlib.util

from starlette.responses import Response

from node.errors import InvalidArgumentError, UnavailableError
from node.web.core import Ctx, route

DIRECTIVE_KINDS = ("supervise", "warning", "rectification", "bulletin")
DIRECTIVES_MODULE = "node.directives"
# The pages below call node.directives (inbox, outbox, issue, acknowledge, respond, close): not yet.
WIRED = False


def directives_installed() -> bool:
    """True once the directives package of issue 13 (``node.directives``) is installed."""
    try:
        return importlib.util.find_spec(DIRECTIVES_MODULE) is not None
    except (ImportError, ValueError):
        return False


def directives_available() -> bool:
    """True when the console can show and issue directives: the package is installed and the pages are wired."""
    return WIRED and directives_installed()


@route("/directives")
def directives(ctx: Ctx) -> Response:
    """Inbox (directives from above) and outbox (issued here, with their responses); a notice until available."""
    box = ctx.arg("box", "inbox")
    if box not in ("inbox", "outbox"):
        raise InvalidArgumentError(f"box must be inbox or outbox, not {box!r}")
    return ctx.render(
        "directives.html",
        box=box,
        available=ctx.console.features.get("directives", False),
        installed=directives_installed(),
        kinds=DIRECTIVE_KINDS,
        inbox=[],
        outbox=[],
    )


@route("/directives/issue", methods=("POST",), need="direct")
def issue(ctx: Ctx) -> Response:
    """Issue a directive to a node below about a case, department or item (supervisors only)."""
    kind = ctx.form.get("kind", "")
    if kind not in DIRECTIVE_KINDS:
        raise InvalidArgumentError(f"field 'kind': one of {', '.join(DIRECTIVE_KINDS)}, not {kind!r}")
    for field in ("target", "subject", "text", "due"):
        if not ctx.form.get(field, "").strip():
            raise InvalidArgumentError(f"field '{field}': required")
    if not ctx.console.features.get("directives", False):
        raise UnavailableError("directives are not installed on this node yet (issue 13: node.directives)")
    # Wired once node.directives lands: issue through its API with actor=ctx.actor, then show the outbox.
    raise UnavailableError("issuing directives from the console is not wired to node.directives yet")
