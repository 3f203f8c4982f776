"""The console's request plumbing: routes with the capability they need, the per-request context, rendering.

Every route names what it needs (``view``, ``act`` on alerts, ``direct`` for directives); ``dispatch`` then, in
order: picks the language (``?lang=`` or its cookie, else ``web.language``), finds the session (redirects to the
login page without one), refuses a POST whose CSRF token is missing or wrong, refuses a role without the
capability (both audited as ``web.refused``), and runs the handler in a worker thread. A SupnetError becomes a
page saying what went wrong in the visitor's language; anything else a plain 500, its traceback in the log only.
"""

from __future__ import annotations

import datetime as dt
import hmac
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, TypeVar
from urllib.parse import quote, urlencode

from jinja2 import Environment
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from federation import SupnetError
from node.app import Node
from node.audit_log import AuditLog, AuditResult
from node.drilldown import DrilldownClient
from node.errors import (
    InvalidArgumentError,
    InvalidStateError,
    NotFoundError,
    PermissionDeniedError,
    UnavailableError,
    ValidationError,
)
from node.web.accounts import Action, Role, web_actor
from node.web.i18n import LANGUAGES, translate
from node.web.sessions import SessionUser, session_user

log = logging.getLogger(__name__)

Capability = Literal["public", "view", "act", "direct"]
# Who may do what: a viewer only reads; only a supervisor issues directives (issue 14).
CAPABILITIES: dict[Role, frozenset[Capability]] = {
    "viewer": frozenset({"public", "view"}),
    "supervisor": frozenset({"public", "view", "act", "direct"}),
    "admin": frozenset({"public", "view", "act"}),
}
LANG_COOKIE = "supnet_lang"
CSRF_FIELD = "csrf_token"
A = TypeVar("A")
B = TypeVar("B")
Handler = Callable[..., Response]


def together(first: Callable[[], A], second: Callable[[], B]) -> tuple[A, B]:
    """Two independent drill-down queries at once: the page waits for the slower, not for both in turn."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(second)
        return first(), pending.result()


@dataclass(frozen=True)
class RouteSpec:
    """One console route: path, handler, methods and the capability it needs."""

    path: str
    handler: Handler
    methods: tuple[str, ...]
    need: Capability
    name: str


ROUTES: list[RouteSpec] = []


def route(path: str, *, methods: tuple[str, ...] = ("GET",), need: Capability = "view") -> Callable[[Handler], Handler]:
    """Register ``handler(ctx, **path_params) -> Response`` for ``path`` (Starlette path syntax)."""

    def register(handler: Handler) -> Handler:
        ROUTES.append(RouteSpec(path, handler, methods, need, handler.__name__))
        return handler

    return register


@dataclass
class Console:
    """What every request shares: the node, templates, the drill-down client, the console settings."""

    node: Node
    env: Environment
    client: Callable[[], DrilldownClient]
    secure_cookies: bool

    @property
    def node_id(self) -> str:
        return self.node.config.id

    @property
    def session_cookie(self) -> str:
        """Cookie name per node: cookies ignore ports, and a tree on one machine serves many consoles on one host."""
        return "supnet_session_" + self.node_id.replace(".", "_").replace("-", "_")


@dataclass
class Ctx:
    """One request as a handler sees it."""

    console: Console
    request: Request
    lang: str
    user: SessionUser | None
    form: Mapping[str, str]
    set_lang: bool = False

    @property
    def node(self) -> Node:
        return self.console.node

    @property
    def query(self) -> Mapping[str, str]:
        return self.request.query_params

    def arg(self, name: str, default: str = "") -> str:
        """A query parameter, stripped."""
        return str(self.query.get(name, default)).strip()

    def t(self, key: str, **values: Any) -> str:
        """A message in the request's language."""
        return translate(key, self.lang, **values)

    @property
    def actor(self) -> str:
        """The audit actor: ``web:NAME@NODE``."""
        return web_actor(self.user.name if self.user else "anonymous", self.console.node_id)

    def can(self, capability: Capability) -> bool:
        return self.user is not None and capability in CAPABILITIES[self.user.role]

    def url(self, path: str, **params: Any) -> str:
        """``path`` with the non-empty ``params`` as its query string."""
        kept = {key: value for key, value in params.items() if value not in (None, "")}
        return path + ("?" + urlencode(kept) if kept else "")

    def lang_switch_url(self, lang: str) -> str:
        """The same page in another language (the choice is kept in a cookie)."""
        params = dict(self.query)
        params["lang"] = lang
        return self.request.url.path + "?" + urlencode(params)

    def render(self, template: str, status: int = 200, **values: Any) -> Response:
        """A page of the console (base layout, menus by capability) in the request's language."""
        html = self.console.env.get_template(template).render(
            ctx=self, t=self.t, user=self.user, node=self.node, lang=self.lang, csrf_field=CSRF_FIELD, **values
        )
        return self.finish(HTMLResponse(html, status_code=status))

    def finish(self, response: Response) -> Response:
        """Security headers on every page; the language cookie when it was just chosen."""
        headers = response.headers
        headers["Content-Security-Policy"] = (
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
            "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
        )
        headers["X-Frame-Options"] = "DENY"
        headers["X-Content-Type-Options"] = "nosniff"
        headers["Referrer-Policy"] = "same-origin"
        headers.setdefault("Cache-Control", "no-store")
        if self.set_lang:
            response.set_cookie(
                LANG_COOKIE,
                self.lang,
                max_age=365 * 86400,
                httponly=True,
                samesite="lax",
                secure=self.console.secure_cookies,
            )
        return response

    def redirect(self, url: str) -> Response:
        """See other (after a POST, or to the login page)."""
        return self.finish(RedirectResponse(url, status_code=303))

    def audit(self, action: str, target: str, detail: Mapping[str, Any] | None = None, result: str = "ok") -> None:
        """An audit entry in a transaction of its own, naming the person (refusals; actions audit in theirs)."""
        AuditLog(self.node.engine).record(actor=self.actor, action=action, target=target, detail=detail, result=result)


def _language(request: Request, default: str) -> tuple[str, bool]:
    chosen = request.query_params.get("lang", "")
    if chosen in LANGUAGES:
        return chosen, chosen != request.cookies.get(LANG_COOKIE)
    cookie = request.cookies.get(LANG_COOKIE, "")
    return (cookie if cookie in LANGUAGES else default), False


def _status_of(error: SupnetError) -> int:
    if isinstance(error, NotFoundError):
        return 404
    if isinstance(error, PermissionDeniedError):
        return 403
    if isinstance(error, InvalidArgumentError | ValidationError | InvalidStateError):
        return 400
    if isinstance(error, UnavailableError):
        return 502
    return 500


def dispatch(console: Console, spec: RouteSpec, request: Request, form: Mapping[str, str]) -> Response:
    """Run one request through language, session, CSRF and role checks, then its handler (see the module doc).

    The response says how long the server took (``Server-Timing: app;dur=MS``; bench/console.py reads it).
    """
    started = time.perf_counter()
    response = _checked(console, spec, request, form)
    response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
    return response


def _checked(console: Console, spec: RouteSpec, request: Request, form: Mapping[str, str]) -> Response:
    node = console.node
    settings = node.config.web
    lang, set_lang = _language(request, settings.language)
    idle = dt.timedelta(minutes=settings.session_idle_minutes)
    token = request.cookies.get(console.session_cookie, "")
    user = session_user(node.engine, token, idle=idle) if token else None
    ctx = Ctx(console, request, lang, user, form, set_lang)
    try:
        if spec.need != "public":
            if user is None:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return ctx.redirect("/login?next=" + quote(target, safe=""))
            if request.method == "POST" and not hmac.compare_digest(
                form.get(CSRF_FIELD, "").encode(), user.csrf_token.encode()
            ):
                ctx.audit(Action.REFUSED, request.url.path, {"why": "csrf"}, AuditResult.REFUSED)
                return ctx.render("error.html", 403, message=ctx.t("error.csrf"))
            if not ctx.can(spec.need):
                ctx.audit(Action.REFUSED, request.url.path, {"why": "role", "role": user.role}, AuditResult.REFUSED)
                return ctx.render("error.html", 403, message=ctx.t("error.role", role=ctx.t(f"role.{user.role}")))
        return spec.handler(ctx, **request.path_params)
    except SupnetError as error:
        log.info("console %s %s: %s", request.method, request.url.path, error)
        return ctx.render("error.html", _status_of(error), message=str(error), code=error.code)
    except Exception:
        log.exception("console %s %s failed", request.method, request.url.path)
        return ctx.render("error.html", 500, message=ctx.t("error.internal"))
