"""Logging in and out.

The login form carries a CSRF token too: a random value in a short-lived cookie that the form must echo (no
session exists yet to hold one), so another site cannot log a browser in under its account.
"""

from __future__ import annotations

import datetime as dt
import hmac
from urllib.parse import urlsplit

from starlette.responses import Response

from node.web.accounts import Action, LoginRefusedError, authenticate
from node.web.core import CSRF_FIELD, Ctx, route
from node.web.sessions import create_session, end_session, new_token

LOGIN_CSRF_COOKIE = "supnet_login_csrf"


def _safe_next(value: str) -> str:
    """Only a path of this console (never another site) to go to after logging in."""
    parts = urlsplit(value)
    if not value.startswith("/") or value.startswith("//") or parts.scheme or parts.netloc or "\\" in value:
        return "/overview"
    return value


def _login_page(ctx: Ctx, status: int = 200, error: str = "") -> Response:
    token = new_token()
    follow = _safe_next(ctx.arg("next") or ctx.form.get("next", ""))
    response = ctx.render("login.html", status, login_csrf=token, next=follow, error=error)
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        max_age=1800,
        httponly=True,
        samesite="strict",
        secure=ctx.console.secure_cookies,
        path="/login",
    )
    return response


@route("/login", need="public")
def login_form(ctx: Ctx) -> Response:
    if ctx.user is not None:
        return ctx.redirect(_safe_next(ctx.arg("next")))
    return _login_page(ctx)


@route("/login", methods=("POST",), need="public")
def login(ctx: Ctx) -> Response:
    """Check the login CSRF token, then the password (lockout after repeated failures); open a session."""
    expected = ctx.request.cookies.get(LOGIN_CSRF_COOKIE, "")
    sent = ctx.form.get(CSRF_FIELD, "")
    if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        ctx.audit(Action.REFUSED, "/login", {"why": "csrf"}, "refused")
        return _login_page(ctx, 403, ctx.t("error.csrf"))
    settings = ctx.node.config.web
    name = ctx.form.get("name", "").strip()
    client = ctx.request.client.host if ctx.request.client else ""
    try:
        account = authenticate(
            ctx.node.engine,
            ctx.console.node_id,
            name,
            ctx.form.get("password", ""),
            max_failed=settings.max_failed_logins,
            lockout=dt.timedelta(minutes=settings.lockout_minutes),
            client=client,
        )
    except LoginRefusedError as refused:
        message = ctx.t(f"login.{refused.reason}", minutes=settings.lockout_minutes)
        return _login_page(ctx, 401, message)
    token, _csrf = create_session(ctx.node.engine, account.id, idle=dt.timedelta(minutes=settings.session_idle_minutes))
    response = ctx.redirect(_safe_next(ctx.form.get("next", "")))
    response.set_cookie(
        ctx.console.session_cookie, token, httponly=True, samesite="lax", secure=ctx.console.secure_cookies, path="/"
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


@route("/logout", methods=("POST",))
def logout(ctx: Ctx) -> Response:
    """End the session (the form carries the session's CSRF token, like every form)."""
    token = ctx.request.cookies.get(ctx.console.session_cookie, "")
    if token:
        end_session(ctx.node.engine, token)
    ctx.audit(Action.LOGOUT, f"user:{ctx.user.name if ctx.user else '?'}")
    response = ctx.redirect("/login")
    response.delete_cookie(ctx.console.session_cookie, path="/")
    return response
