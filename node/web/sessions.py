"""Console sessions: a random cookie token per login, stored only as its SHA-256, with its CSRF token.

A session ends at logout, when its account is disabled or gets a new password, and after ``idle`` without a
request. Last use is written at most once a minute (``TOUCH_EVERY``), so reading pages does not turn into a
write per request; the idle timeout is therefore exact to within that minute.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Engine, Table, delete, insert, select, update

from node.store import WebSession, WebUser
from node.web.accounts import Role, utc_now

TOUCH_EVERY = dt.timedelta(seconds=60)
_sessions = cast(Table, WebSession.__table__)
_users = cast(Table, WebUser.__table__)


def token_hash(token: str) -> str:
    """What the table keeps of a cookie token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """A fresh unguessable token (session cookie, CSRF)."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class SessionUser:
    """Who a valid session belongs to, and the CSRF token its forms must carry."""

    name: str
    role: Role
    csrf_token: str
    token_hash: str


def create_session(engine: Engine, user_id: int, *, idle: dt.timedelta) -> tuple[str, str]:
    """Open a session for an account; returns (cookie token, CSRF token). Expired sessions are purged here."""
    token, csrf = new_token(), new_token()
    now = utc_now()
    with engine.begin() as conn:
        conn.execute(delete(_sessions).where(_sessions.c.last_seen_at < now - idle))
        conn.execute(
            insert(_sessions).values(
                token_hash=token_hash(token), user_id=user_id, csrf_token=csrf, created_at=now, last_seen_at=now
            )
        )
    return token, csrf


def session_user(engine: Engine, token: str, *, idle: dt.timedelta) -> SessionUser | None:
    """The account behind a cookie token, if the session is live and the account enabled; else None."""
    if not token:
        return None
    hashed = token_hash(token)
    now = utc_now()
    query = (
        select(_users.c.name, _users.c.role, _users.c.disabled, _sessions.c.csrf_token, _sessions.c.last_seen_at)
        .select_from(_sessions.join(_users, _users.c.id == _sessions.c.user_id))
        .where(_sessions.c.token_hash == hashed)
    )
    with engine.connect() as conn:
        row = conn.execute(query).first()
    if row is None or row.disabled:
        return None
    if now - row.last_seen_at > idle:
        end_session(engine, token)
        return None
    if now - row.last_seen_at > TOUCH_EVERY:
        with engine.begin() as conn:
            conn.execute(update(_sessions).where(_sessions.c.token_hash == hashed).values(last_seen_at=now))
    return SessionUser(name=str(row.name), role=cast(Role, row.role), csrf_token=str(row.csrf_token), token_hash=hashed)


def end_session(engine: Engine, token: str) -> None:
    """Forget a session (logout, idle)."""
    with engine.begin() as conn:
        conn.execute(delete(_sessions).where(_sessions.c.token_hash == token_hash(token)))
