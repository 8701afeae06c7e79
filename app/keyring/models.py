"""The server secret as the database keeps it (when generated, not configured), and the
key derived from it for each purpose: the secret itself is never used bare."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.db_types import UTCDateTime


class ServiceSecret(Base):
    __tablename__ = "service_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ServerKey:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def derive(self, purpose: str, subject: str) -> bytes:
        """HMAC-SHA256(server secret, "purpose:subject")."""
        return hmac.new(self._secret, f"{purpose}:{subject}".encode(), hashlib.sha256).digest()
