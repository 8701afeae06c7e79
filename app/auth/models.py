"""API keys (only a hash of the secret is kept), per-key rate-limit windows, and the
caller a key stands for."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Boolean, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.db_types import UTCDateTime


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    # The owner: keys sharing a name share their jobs, which makes rotation painless.
    name: Mapped[str] = mapped_column(String(64))
    secret_hash: Mapped[str] = mapped_column(String(64))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_api_keys_name", "name"),)


class RateLimitWindow(Base):
    __tablename__ = "rate_limit_windows"

    key_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    window_start: Mapped[int] = mapped_column(Integer, primary_key=True)
    count: Mapped[int] = mapped_column(Integer)


@dataclass(frozen=True)
class Caller:
    """Who is asking: the owner their jobs belong to, and whether they may see all jobs."""

    owner: str
    key_id: str | None = None
    is_admin: bool = False

    @property
    def scope(self) -> str | None:
        """The owner to filter by, or None for an admin."""
        return None if self.is_admin else self.owner


class UiSession(Base):
    """A dashboard sign-in: the API key it was made with, by the hash of its cookie token
    (the token itself is only in the browser), until `expires_at` or sign-out."""

    __tablename__ = "ui_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the token
    key_id: Mapped[str] = mapped_column(String(40))
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_ui_sessions_expires_at", "expires_at"),)
