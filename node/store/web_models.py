"""The console's accounts and sessions (node.web): who may log in, with which role, and the live sessions.

Passwords are kept only as argon2 hashes; sessions only as the SHA-256 of their cookie token, so a copy of the
database opens no session. Lockout state (failed logins in a row, locked until) lives on the account.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from node.store.models import Base

USER_NAME_MAX = 64


class WebUser(Base):
    """One console account: its role (viewer | supervisor | admin) and its argon2 password hash."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(USER_NAME_MAX), unique=True, comment="login name")
    role: Mapped[str] = mapped_column(String(16), comment="viewer | supervisor | admin")
    password_hash: Mapped[str] = mapped_column(String(255), comment="argon2id hash (PHC string)")
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0, comment="wrong passwords in a row")
    locked_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True, comment="UTC, naive")
    created_at: Mapped[datetime] = mapped_column(DateTime, comment="UTC, naive")
    password_changed_at: Mapped[datetime] = mapped_column(DateTime, comment="UTC, naive")
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True, comment="UTC, naive")


class WebSession(Base):
    """One logged-in browser: the hash of its cookie token, its CSRF token, when it was last used."""

    __tablename__ = "user_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True, comment="hex SHA-256 of the cookie token")
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64), comment="sent back with every form")
    created_at: Mapped[datetime] = mapped_column(DateTime, comment="UTC, naive")
    last_seen_at: Mapped[datetime] = mapped_column(DateTime, comment="UTC, naive; idle timeout counts from here")
